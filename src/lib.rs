//! moe-edge: run sparse Mixture-of-Experts GGUF models on small CPUs.

pub mod analysis;
pub mod budget;
pub mod cli;
pub mod experts;
pub mod gguf;
pub mod model;
pub mod router;
pub mod tokenizer;
pub mod trace;
pub mod sampling;
