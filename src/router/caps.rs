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
        self.masks
            .get(layer)
            .map(|m| m.as_slice())
            .filter(|m| m.iter().any(|&x| x))
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

/// Parses a `layer:expert` list (`0:3,1:7`, `2:*` for every expert of layer 2) or `@FILE` with
/// one or more such items per line (`#` starts a comment).
pub fn parse_expert_list(
    spec: &str,
    n_layer: usize,
    n_expert: usize,
) -> anyhow::Result<Vec<(usize, usize)>> {
    use anyhow::{bail, Context};
    let text = match spec.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?
        }
        None => spec.to_string(),
    };
    let mut out = Vec::new();
    for item in text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.split([',', ' ', '\t']))
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let (l, e) = item
            .split_once(':')
            .with_context(|| format!("'{item}' is not layer:expert (e.g. 3:17)"))?;
        let layer: usize = l
            .trim()
            .parse()
            .with_context(|| format!("'{item}': bad layer number"))?;
        if layer >= n_layer {
            bail!("'{item}': layer {layer} does not exist (the model has {n_layer} layers)");
        }
        if e.trim() == "*" {
            out.extend((0..n_expert).map(|x| (layer, x)));
            continue;
        }
        let expert: usize = e
            .trim()
            .parse()
            .with_context(|| format!("'{item}': bad expert number"))?;
        if expert >= n_expert {
            bail!("'{item}': expert {expert} does not exist (the model has {n_expert} experts per layer)");
        }
        if !out.contains(&(layer, expert)) {
            out.push((layer, expert));
        }
    }
    Ok(out)
}
