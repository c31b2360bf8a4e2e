//! Caps on the number of active experts, masks and forced routes. With no caps set, selection is
//! exactly llama.cpp's top-k.

use super::{top_k_into, Choice};

/// How a layer's experts are selected beyond plain top-k.
#[derive(Clone, Debug, Default)]
pub struct RouterCaps {
    /// Disabled experts per layer (`true` = never routed).
    pub masks: Vec<Vec<bool>>,
}

impl RouterCaps {
    pub fn none() -> RouterCaps {
        RouterCaps::default()
    }

    pub fn mask_for(&self, layer: usize) -> Option<&[bool]> {
        self.masks.get(layer).map(|m| m.as_slice()).filter(|m| m.iter().any(|&x| x))
    }

    /// Selects experts into `out` (weights = probabilities) and returns how many.
    pub fn select(
        &self,
        layer: usize,
        probs: &[f32],
        top_k: usize,
        _is_resident: &dyn Fn(usize) -> bool,
        out: &mut Vec<Choice>,
    ) -> usize {
        let mask = self.mask_for(layer);
        let excluded = |i: usize| mask.is_some_and(|m| m[i]);
        top_k_into(probs, top_k, &excluded, out);
        out.len()
    }
}
