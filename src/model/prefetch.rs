//! Bookkeeping for speculative expert prefetch: what was predicted for each layer and how often
//! the prediction matched the experts the router then chose. The buffers are reused from token
//! to token (no allocation once sized).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::router::Choice;

/// The experts predicted for one layer: token `t`'s are `experts[starts[t]..starts[t + 1]]`.
#[derive(Default)]
struct Prediction {
    valid: bool,
    experts: Vec<usize>,
    starts: Vec<usize>,
}

pub struct Prefetcher {
    /// Predict and prefetch the next layer's experts (on for cached stores).
    pub enabled: bool,
    predictions: Mutex<Vec<Prediction>>,
    predicted: AtomicU64,
    correct: AtomicU64,
}

impl Prefetcher {
    pub fn new(n_layer: usize, enabled: bool) -> Prefetcher {
        Prefetcher {
            enabled,
            predictions: Mutex::new((0..n_layer).map(|_| Prediction::default()).collect()),
            predicted: AtomicU64::new(0),
            correct: AtomicU64::new(0),
        }
    }

    /// Records the experts predicted for `layer`, token by token (`starts` as in `Prediction`,
    /// one more entry than tokens).
    pub fn set_prediction(&self, layer: usize, experts: &[usize], starts: &[usize]) {
        let mut p = self.predictions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = p.get_mut(layer) {
            slot.valid = true;
            slot.experts.clear();
            slot.experts.extend_from_slice(experts);
            slot.starts.clear();
            slot.starts.extend_from_slice(starts);
        }
    }

    /// Scores `layer`'s prediction for token `t` against the router's `actual` choices. No-op
    /// when nothing was predicted.
    pub fn score(&self, layer: usize, t: usize, actual: &[Choice]) {
        let p = self.predictions.lock().unwrap_or_else(|e| e.into_inner());
        let Some(slot) = p.get(layer).filter(|s| s.valid) else {
            return;
        };
        let Some(predicted) = slot.starts.get(t..t + 2).map(|r| &slot.experts[r[0]..r[1]]) else {
            return;
        };
        let hit = actual
            .iter()
            .filter(|c| predicted.contains(&c.expert))
            .count();
        self.predicted
            .fetch_add(actual.len() as u64, Ordering::Relaxed);
        self.correct.fetch_add(hit as u64, Ordering::Relaxed);
    }

    /// Forgets `layer`'s prediction once its tokens are routed.
    pub fn consume(&self, layer: usize) {
        let mut p = self.predictions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = p.get_mut(layer) {
            slot.valid = false;
        }
    }

    /// Fraction of routed experts that had been predicted (None before any prediction).
    pub fn accuracy(&self) -> Option<f64> {
        let n = self.predicted.load(Ordering::Relaxed);
        (n > 0).then(|| self.correct.load(Ordering::Relaxed) as f64 / n as f64)
    }
}
