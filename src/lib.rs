//! moe-edge: run sparse Mixture-of-Experts GGUF models on small CPUs.

pub mod experts;
pub mod gguf;
pub mod model;
pub mod router;
