//! Bookkeeping for speculative expert prefetch: what was predicted for each layer and how often
//! the prediction matched the experts the router then chose.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::router::Choice;

pub struct Prefetcher {
    /// Predict and prefetch the next layer's experts (on for cached stores).
    pub enabled: bool,
    predictions: Mutex<Vec<Option<Vec<Vec<usize>>>>>,
    predicted: AtomicU64,
    correct: AtomicU64,
}

impl Prefetcher {
    pub fn new(n_layer: usize, enabled: bool) -> Prefetcher {
        Prefetcher {
            enabled,
            predictions: Mutex::new(vec![None; n_layer]),
            predicted: AtomicU64::new(0),
            correct: AtomicU64::new(0),
        }
    }

    pub fn set_prediction(&self, layer: usize, per_token: Vec<Vec<usize>>) {
        let mut p = self.predictions.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = p.get_mut(layer) {
            *slot = Some(per_token);
        }
    }

    pub fn take_prediction(&self, layer: usize) -> Option<Vec<Vec<usize>>> {
        let mut p = self.predictions.lock().unwrap_or_else(|e| e.into_inner());
        p.get_mut(layer).and_then(|s| s.take())
    }

    /// Counts how many of the experts actually chosen had been predicted.
    pub fn score(&self, predicted: &[usize], actual: &[Choice]) {
        let hit = actual
            .iter()
            .filter(|c| predicted.contains(&c.expert))
            .count();
        self.predicted
            .fetch_add(actual.len() as u64, Ordering::Relaxed);
        self.correct.fetch_add(hit as u64, Ordering::Relaxed);
    }

    /// Fraction of routed experts that had been predicted (None before any prediction).
    pub fn accuracy(&self) -> Option<f64> {
        let n = self.predicted.load(Ordering::Relaxed);
        (n > 0).then(|| self.correct.load(Ordering::Relaxed) as f64 / n as f64)
    }
}
