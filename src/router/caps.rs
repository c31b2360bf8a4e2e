//! Caps on the number of active experts, masks and forced routes. With no caps set, selection is
//! exactly llama.cpp's top-k.
//!
//! `select` works on the softmax probabilities `Router::route` computed (masked experts already at
//! zero) and runs these steps, each optional:
//!
//! 1. **Override** (`--routing-override`): if a rule names this (layer, position) — or failing that
//!    this layer at every position — its experts are the answer; no other step runs.
//! 2. **Cap**: `k = min(top_k, --max-active-experts, --layer-caps[layer])`, then plain top-k
//!    (ties to the lower expert id; masked experts are never chosen, even to fill up `k`).
//! 3. **Threshold** (`--router-threshold T --router-kmin K`, SER-style): keep the first `K` (or all
//!    `k` if fewer), then the following ones, in order, while `p_i ≥ T · p_top`.
//! 4. **Top-p** (`--router-top-p P`): the shortest prefix whose probability mass (of the softmax over
//!    all experts, not renormalised) reaches `P`; at least one expert. With a threshold too, the
//!    shorter of the two prefixes is kept.
//! 5. **Cache-aware swap** (`--cache-aware-margin M`): selected experts that are not resident, from
//!    the least probable up, are each replaced by the most probable unselected, unmasked resident
//!    expert when `p_selected − p_resident ≤ M` (an absolute probability difference).
//!
//! The choice weights are always the kept experts' softmax probabilities, highest first; the
//! router then renormalises them over the kept set for architectures that do (llama, qwen3moe)
//! and leaves them raw for those that don't (olmoe, qwen2moe).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::{top_k_into, Choice};

/// Threshold routing in the style of ik_llama.cpp's SER: always `k_min` experts, more only while
/// they are close enough to the best one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ThresholdRule {
    /// Keep expert `i` (after the first `k_min`) only while `p_i ≥ threshold · p_top`; in [0, 1].
    pub threshold: f32,
    /// Experts always kept (capped by the layer's `k`); at least 1.
    pub k_min: usize,
}

/// Forced routes: `(layer, Some(pos))` for one position, `(layer, None)` for every position of a
/// layer. A position rule wins over the layer rule.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoutingOverrides {
    pub rules: HashMap<(usize, Option<usize>), Vec<usize>>,
}

impl RoutingOverrides {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The forced experts for `layer` at `pos` (`None`: the position is unknown, only layer-wide
    /// rules apply).
    pub fn lookup(&self, layer: usize, pos: Option<usize>) -> Option<&[usize]> {
        if self.rules.is_empty() {
            return None;
        }
        pos.and_then(|p| self.rules.get(&(layer, Some(p))))
            .or_else(|| self.rules.get(&(layer, None)))
            .map(|v| v.as_slice())
    }
}

/// How a layer's experts are selected beyond plain top-k. `RouterCaps::none()` is plain top-k.
#[derive(Clone, Debug, Default)]
pub struct RouterCaps {
    /// Disabled experts per layer (`true` = never routed).
    pub masks: Vec<Vec<bool>>,
    /// At most this many experts per token in every layer (`--max-active-experts`).
    pub max_active: Option<usize>,
    /// At most `layer_caps[layer]` experts per token in that layer (`--layer-caps`); layers past
    /// the end of the list are not capped.
    pub layer_caps: Option<Vec<usize>>,
    /// Threshold routing (`--router-threshold`, `--router-kmin`).
    pub threshold: Option<ThresholdRule>,
    /// Top-p mass routing (`--router-top-p`), in (0, 1].
    pub top_p: Option<f32>,
    /// Cache-aware swap margin (`--cache-aware-margin`), an absolute probability difference.
    pub cache_aware_margin: Option<f32>,
    /// Forced routes (`--routing-override`).
    pub overrides: RoutingOverrides,
}

impl RouterCaps {
    pub fn none() -> RouterCaps {
        RouterCaps::default()
    }

    /// True when selection is plain top-k (masks aside).
    pub fn is_plain(&self) -> bool {
        self.max_active.is_none()
            && self.layer_caps.is_none()
            && self.threshold.is_none()
            && self.top_p.is_none()
            && self.cache_aware_margin.is_none()
            && self.overrides.is_empty()
    }

    pub fn mask_for(&self, layer: usize) -> Option<&[bool]> {
        self.masks
            .get(layer)
            .map(|m| m.as_slice())
            .filter(|m| m.iter().any(|&x| x))
    }

    /// The most experts a token may use in `layer`, given the model's `top_k`.
    pub fn cap_for(&self, layer: usize, top_k: usize) -> usize {
        let mut k = top_k;
        if let Some(m) = self.max_active {
            k = k.min(m);
        }
        if let Some(c) = self.layer_caps.as_ref().and_then(|c| c.get(layer)) {
            k = k.min(*c);
        }
        k
    }

    /// Selects experts into `out` (weights = probabilities) and returns how many. The position is
    /// unknown here, so only layer-wide overrides apply; see [`RouterCaps::select_at`].
    pub fn select(
        &self,
        layer: usize,
        probs: &[f32],
        top_k: usize,
        is_resident: &dyn Fn(usize) -> bool,
        out: &mut Vec<Choice>,
    ) -> usize {
        self.select_at(layer, None, probs, top_k, is_resident, out)
    }

    /// Selects experts for the token at position `pos` (when known) into `out` (cleared first;
    /// weights = probabilities, highest first) and returns how many.
    pub fn select_at(
        &self,
        layer: usize,
        pos: Option<usize>,
        probs: &[f32],
        top_k: usize,
        is_resident: &dyn Fn(usize) -> bool,
        out: &mut Vec<Choice>,
    ) -> usize {
        out.clear();
        let mask = self.mask_for(layer);
        let masked = |i: usize| mask.is_some_and(|m| m.get(i).copied().unwrap_or(false));

        // 1. Forced routes.
        if let Some(forced) = self.overrides.lookup(layer, pos) {
            for &e in forced {
                if e < probs.len() && !masked(e) && !out.iter().any(|c| c.expert == e) {
                    out.push(Choice {
                        expert: e,
                        weight: probs[e],
                    });
                }
            }
            sort_by_weight(out);
            return out.len();
        }

        // 2. Plain top-k under the cap.
        let k = self.cap_for(layer, top_k);
        top_k_into(probs, k, &masked, out);
        if out.is_empty() {
            return 0;
        }

        // 3 and 4. Shorten the prefix.
        let mut keep = out.len();
        if let Some(rule) = self.threshold {
            let p_top = out[0].weight;
            let mut n = rule.k_min.min(out.len()).max(1);
            while n < out.len() && out[n].weight >= rule.threshold * p_top {
                n += 1;
            }
            keep = keep.min(n);
        }
        if let Some(p) = self.top_p {
            let mut mass = 0f32;
            let mut n = 0;
            for c in out.iter() {
                mass += c.weight;
                n += 1;
                if mass >= p {
                    break;
                }
            }
            keep = keep.min(n.max(1));
        }
        out.truncate(keep);

        // 5. Prefer resident experts that are nearly as probable.
        if let Some(margin) = self.cache_aware_margin {
            self.swap_in_resident(probs, margin, &masked, is_resident, out);
        }
        out.len()
    }

    fn swap_in_resident(
        &self,
        probs: &[f32],
        margin: f32,
        masked: &dyn Fn(usize) -> bool,
        is_resident: &dyn Fn(usize) -> bool,
        out: &mut [Choice],
    ) {
        // Selected non-resident slots, least probable first.
        let mut cold: Vec<usize> = (0..out.len())
            .filter(|&s| !is_resident(out[s].expert))
            .collect();
        if cold.is_empty() {
            return;
        }
        cold.reverse();
        let selected: Vec<usize> = out.iter().map(|c| c.expert).collect();
        let mut candidates = Vec::with_capacity(cold.len());
        let exclude = |i: usize| masked(i) || selected.contains(&i) || !is_resident(i);
        top_k_into(probs, cold.len(), &exclude, &mut candidates);
        let mut swapped = false;
        for (slot, cand) in cold.into_iter().zip(candidates) {
            if out[slot].weight - cand.weight <= margin {
                out[slot] = cand;
                swapped = true;
            } else {
                // Later slots are more probable and later candidates less: none can pass.
                break;
            }
        }
        if swapped {
            sort_by_weight(out);
        }
    }
}

/// Highest weight first; ties keep the lower expert id first.
fn sort_by_weight(out: &mut [Choice]) {
    out.sort_by(|a, b| b.weight.total_cmp(&a.weight).then(a.expert.cmp(&b.expert)));
}

/// Reads `spec` itself, or the file it names when it starts with `@`.
fn spec_text(spec: &str) -> Result<String> {
    match spec.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read {path}")),
        None => Ok(spec.to_string()),
    }
}

/// Items of a list: separated by commas, blanks or lines; `#` starts a comment.
fn list_items(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(|l| l.split([',', ' ', '\t']))
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Parses a `layer:expert` list (`0:3,1:7`, `2:*` for every expert of layer 2) or `@FILE` with
/// one or more such items per line (`#` starts a comment).
pub fn parse_expert_list(
    spec: &str,
    n_layer: usize,
    n_expert: usize,
) -> Result<Vec<(usize, usize)>> {
    let text = spec_text(spec)?;
    let mut out = Vec::new();
    for item in list_items(&text) {
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

/// Builds per-layer masks from `(layer, expert)` pairs. A layer with every expert masked is an
/// error: its tokens could not be routed at all.
pub fn masks_from_list(
    pairs: &[(usize, usize)],
    n_layer: usize,
    n_expert: usize,
) -> Result<Vec<Vec<bool>>> {
    let mut masks = vec![vec![false; n_expert]; n_layer];
    for &(l, e) in pairs {
        if l >= n_layer || e >= n_expert {
            bail!("expert {l}:{e} does not exist ({n_layer} layers of {n_expert} experts)");
        }
        masks[l][e] = true;
    }
    for (l, m) in masks.iter().enumerate() {
        if n_expert > 0 && m.iter().all(|&x| x) {
            bail!("the mask disables every expert of layer {l}: its tokens could not be routed");
        }
    }
    Ok(masks)
}

/// Parses `--layer-caps`: either one number (every layer) or exactly `n_layer` numbers, separated
/// by commas or blanks, or `@FILE` holding them (`#` starts a comment). Other lengths are an
/// error rather than silently repeated or cut, so a list written for another model is caught.
pub fn parse_layer_caps(spec: &str, n_layer: usize) -> Result<Vec<usize>> {
    let text = spec_text(spec)?;
    let mut caps = Vec::new();
    for item in list_items(&text) {
        let k: usize = item
            .parse()
            .with_context(|| format!("'{item}' is not a number of experts"))?;
        if k == 0 {
            bail!(
                "entry {} is 0: every layer needs at least one expert",
                caps.len()
            );
        }
        caps.push(k);
    }
    match caps.len() {
        0 => bail!("the list is empty"),
        1 => Ok(vec![caps[0]; n_layer]),
        n if n == n_layer => Ok(caps),
        n => bail!(
            "{n} values for {n_layer} layers: give one value for every layer, or a single value for all"
        ),
    }
}

/// Parses a routing override file: JSON (text starting with `[` or `{`) or lines of text.
///
/// Text: one rule per line, `LAYER POSITION EXPERTS`, where POSITION is a token position or `*`
/// (every position) and EXPERTS a comma-separated list; `#` starts a comment:
///
/// ```text
/// 3 * 5,7     # layer 3, every position: experts 5 and 7
/// 3 12 1      # layer 3, position 12: expert 1 only (wins over the line above)
/// ```
///
/// JSON: a list of rules, or `{"overrides": [...]}`; `pos` missing or null means every position:
/// `[{"layer": 3, "experts": [5, 7]}, {"layer": 3, "pos": 12, "experts": [1]}]`.
///
/// Each rule names 1 to `n_expert_used` distinct experts; the same (layer, position) twice is an
/// error.
pub fn parse_routing_override(
    text: &str,
    n_layer: usize,
    n_expert: usize,
    n_expert_used: usize,
) -> Result<RoutingOverrides> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct JsonRule {
        layer: usize,
        #[serde(default)]
        pos: Option<usize>,
        experts: Vec<usize>,
    }
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum JsonFile {
        List(Vec<JsonRule>),
        Wrapped { overrides: Vec<JsonRule> },
    }

    let mut rules: Vec<(String, usize, Option<usize>, Vec<usize>)> = Vec::new();
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') || trimmed.starts_with('{') {
        let file: JsonFile = serde_json::from_str(text).context(
            "not a JSON list of {\"layer\": L, \"pos\": P (optional), \"experts\": [..]} rules",
        )?;
        let list = match file {
            JsonFile::List(l) => l,
            JsonFile::Wrapped { overrides } => overrides,
        };
        for (i, r) in list.into_iter().enumerate() {
            rules.push((format!("rule {}", i + 1), r.layer, r.pos, r.experts));
        }
    } else {
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let what = format!("line {}", i + 1);
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [layer, pos, experts] = fields[..] else {
                bail!("{what}: '{line}' is not 'LAYER POSITION|* EXPERT,EXPERT,...'");
            };
            let layer: usize = layer
                .parse()
                .with_context(|| format!("{what}: bad layer '{layer}'"))?;
            let pos = match pos {
                "*" => None,
                p => Some(
                    p.parse::<usize>()
                        .with_context(|| format!("{what}: bad position '{p}' (a number or *)"))?,
                ),
            };
            let experts = experts
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|e| {
                    e.parse::<usize>()
                        .with_context(|| format!("{what}: bad expert '{e}'"))
                })
                .collect::<Result<Vec<_>>>()?;
            rules.push((what, layer, pos, experts));
        }
    }
    let mut out = RoutingOverrides::default();
    for (what, layer, pos, experts) in rules {
        if layer >= n_layer {
            bail!("{what}: layer {layer} does not exist (the model has {n_layer} layers)");
        }
        if experts.is_empty() || experts.len() > n_expert_used {
            bail!(
                "{what}: {} experts; a rule forces 1 to {n_expert_used} (the model's experts per token)",
                experts.len()
            );
        }
        for (j, &e) in experts.iter().enumerate() {
            if e >= n_expert {
                bail!("{what}: expert {e} does not exist (the model has {n_expert} experts per layer)");
            }
            if experts[..j].contains(&e) {
                bail!("{what}: expert {e} is listed twice");
            }
        }
        if out.rules.insert((layer, pos), experts).is_some() {
            let at = pos.map_or("every position".to_string(), |p| format!("position {p}"));
            bail!("{what}: layer {layer}, {at} already has a rule");
        }
    }
    Ok(out)
}

/// Reads and parses a routing override file; errors name the file.
pub fn load_routing_override(
    path: &Path,
    n_layer: usize,
    n_expert: usize,
    n_expert_used: usize,
) -> Result<RoutingOverrides> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_routing_override(&text, n_layer, n_expert, n_expert_used)
        .with_context(|| format!("{}", path.display()))
}
