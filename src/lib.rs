//! moe-edge: run sparse Mixture-of-Experts GGUF models on small CPUs.

pub mod analysis;
pub mod budget;
pub mod chat;
pub mod cli;
pub mod experts;
pub mod generate;
pub mod gguf;
pub mod model;
pub mod pages;
pub mod rng;
pub mod router;
pub mod sampling;
pub mod tokenizer;
pub mod trace;
