//! A prompt long enough that the elementwise work between the products runs over the thread
//! pool (norms, RoPE, residuals, silu·up, quantization, the expert-output sums: 64 Ki elements
//! and up) gives the same logits, bit for bit, as the same tokens in micro-batches small enough
//! that all of it stays on one thread.

use moe_edge::model::{LogitsWanted, Model};
use moe_edge::rng::XorShift64;

fn logits_in_batches(model: &Model, tokens: &[u32], batch: usize) -> Vec<f32> {
    let mut state = model.new_state(tokens.len());
    let mut out = Vec::new();
    for chunk in tokens.chunks(batch) {
        let step = model
            .forward(&mut state, chunk, LogitsWanted::All, None)
            .expect("forward");
        out.extend_from_slice(&step.logits);
    }
    out
}

#[test]
fn a_long_batch_matches_short_micro_batches() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/rustdoc-moe-q8_0.gguf");
    let model = Model::open(std::path::Path::new(path)).expect("bundled model");
    // 320 tokens × 256 = 81,920 values per activation: over the threshold in one batch; in
    // batches of 32 the widest elementwise step (32 tokens × 2 experts × 512) stays under it.
    let (n, short) = (320, 32);
    let ff = model.weights.expert_layouts()[0]
        .as_ref()
        .expect("an MoE layer")
        .gate
        .rows;
    let widest = |tokens: usize| tokens * model.cfg.n_embd.max(model.cfg.n_expert_used * ff);
    assert!(n * model.cfg.n_embd >= 1 << 16 && widest(short) < 1 << 16);
    let mut rng = XorShift64::new(0x2545_F491_4F6C_DD1D);
    let tokens: Vec<u32> = (0..n)
        .map(|_| rng.below(model.cfg.n_vocab as u64) as u32)
        .collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let (long, short) = pool.install(|| {
        (
            logits_in_batches(&model, &tokens, n),
            logits_in_batches(&model, &tokens, short),
        )
    });
    assert_eq!(long.len(), n * model.cfg.n_vocab);
    let differ = long
        .iter()
        .zip(&short)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    assert_eq!(differ, 0, "{differ} of {} logits differ", long.len());
}
