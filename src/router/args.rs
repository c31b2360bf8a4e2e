//! Command-line flags that change routing, and their checks. See docs/routing.md.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use super::caps::{
    load_routing_override, masks_from_list, parse_expert_list, parse_layer_caps, RouterCaps,
    ThresholdRule,
};

/// Routing flags shared by every command that runs a model.
#[derive(Args, Debug, Clone, Default)]
pub struct RouterArgs {
    /// Route at most K experts per token in every layer (below the model's top-k to save compute
    /// and expert loads; K at or above top-k changes nothing)
    #[arg(long = "max-active-experts", value_name = "K")]
    pub max_active_experts: Option<usize>,

    /// Per-layer expert caps: one number for all layers or one per layer (2,2,4,4), or @FILE
    #[arg(long = "layer-caps", value_name = "LIST")]
    pub layer_caps: Option<String>,

    /// Threshold routing: after the first --router-kmin experts keep the next ones only while
    /// their probability is at least T times the top expert's (T in [0, 1])
    #[arg(long = "router-threshold", value_name = "T")]
    pub router_threshold: Option<f32>,

    /// Experts always kept under --router-threshold (default 1)
    #[arg(long = "router-kmin", value_name = "K", requires = "router_threshold")]
    pub router_kmin: Option<usize>,

    /// Top-p routing: keep the fewest top experts whose probabilities sum to at least P (in (0, 1])
    #[arg(long = "router-top-p", value_name = "P")]
    pub router_top_p: Option<f32>,

    /// Cache-aware routing: swap a selected expert that is not in memory for an unselected one
    /// that is, when their probabilities differ by at most M (absolute, in [0, 1])
    #[arg(long = "cache-aware-margin", value_name = "M")]
    pub cache_aware_margin: Option<f32>,

    /// Never route these experts (layer:expert list, e.g. 0:3,1:7, or @FILE)
    #[arg(long = "expert-mask", value_name = "LIST")]
    pub expert_mask: Option<String>,

    /// Force the experts of given (layer, position) pairs, for testing (text or JSON file; see
    /// docs/routing.md)
    #[arg(long = "routing-override", value_name = "FILE")]
    pub routing_override: Option<PathBuf>,
}

impl RouterArgs {
    /// Checks the flags against the model and builds the caps. `RouterCaps::none()` when no flag
    /// is given.
    pub fn to_caps(
        &self,
        n_layer: usize,
        n_expert: usize,
        n_expert_used: usize,
    ) -> Result<RouterCaps> {
        let mut caps = RouterCaps::none();
        if let Some(k) = self.max_active_experts {
            if k == 0 {
                bail!("--max-active-experts must be at least 1");
            }
            caps.max_active = Some(k);
        }
        if let Some(spec) = &self.layer_caps {
            caps.layer_caps = Some(parse_layer_caps(spec, n_layer).context("--layer-caps")?);
        }
        if self.router_kmin.is_some() && self.router_threshold.is_none() {
            bail!("--router-kmin needs --router-threshold");
        }
        if let Some(t) = self.router_threshold {
            if !(0.0..=1.0).contains(&t) {
                bail!("--router-threshold {t} is outside [0, 1]");
            }
            let k_min = self.router_kmin.unwrap_or(1);
            if k_min == 0 {
                bail!("--router-kmin must be at least 1");
            }
            if k_min > n_expert_used {
                bail!(
                    "--router-kmin {k_min} is more than the model's {n_expert_used} experts per token"
                );
            }
            caps.threshold = Some(ThresholdRule {
                threshold: t,
                k_min,
            });
        }
        if let Some(p) = self.router_top_p {
            if !(p > 0.0 && p <= 1.0) {
                bail!("--router-top-p {p} is outside (0, 1]");
            }
            caps.top_p = Some(p);
        }
        if let Some(m) = self.cache_aware_margin {
            if !(0.0..=1.0).contains(&m) {
                bail!("--cache-aware-margin {m} is outside [0, 1] (an absolute probability difference)");
            }
            caps.cache_aware_margin = Some(m);
        }
        if let Some(spec) = &self.expert_mask {
            let pairs = parse_expert_list(spec, n_layer, n_expert).context("--expert-mask")?;
            caps.masks = masks_from_list(&pairs, n_layer, n_expert).context("--expert-mask")?;
        }
        if let Some(path) = &self.routing_override {
            caps.overrides = load_routing_override(path, n_layer, n_expert, n_expert_used)
                .context("--routing-override")?;
            for (&(layer, _), experts) in &caps.overrides.rules {
                if let Some(&e) = experts
                    .iter()
                    .find(|&&e| caps.masks.get(layer).is_some_and(|m| m[e]))
                {
                    bail!("--routing-override forces expert {layer}:{e}, which --expert-mask disables");
                }
            }
        }
        Ok(caps)
    }
}
