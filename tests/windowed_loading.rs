//! 32-bit-style loading: with a map limit far below the file size (`MOE_EDGE_MAP_LIMIT`), only
//! the non-expert tensors are mapped, one by one, and experts are read into cache slots. The
//! logits must be bit-identical to the whole-file mapping. (CI also runs this under qemu-arm.)

use std::path::{Path, PathBuf};

use moe_edge::model::{LogitsWanted, Model};

fn moe_fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/parity");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("fixtures exist")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
        .collect();
    v.sort();
    v
}

fn logits(path: &Path, tokens: &[u32]) -> (Vec<f32>, Model) {
    let model = Model::open(path).unwrap();
    let mut st = model.new_state(tokens.len());
    let out = model
        .forward(&mut st, tokens, LogitsWanted::All, None)
        .unwrap();
    (out.logits, model)
}

#[test]
fn windowed_mapping_gives_identical_logits_and_never_maps_experts() {
    let tokens = [1u32, 15, 300, 7, 42, 999, 3, 64];
    let mut checked = 0;
    for path in moe_fixtures() {
        std::env::remove_var("MOE_EDGE_MAP_LIMIT");
        let (whole, m1) = logits(&path, &tokens);
        assert!(m1.file.is_mapped_whole());
        drop(m1);
        std::env::set_var("MOE_EDGE_MAP_LIMIT", "65536");
        let (windowed, m2) = logits(&path, &tokens);
        std::env::remove_var("MOE_EDGE_MAP_LIMIT");
        assert!(
            !m2.file.is_mapped_whole(),
            "{}: the map limit was not applied",
            path.display()
        );
        let mapped = m2.file.mapped_tensor_names();
        assert!(!mapped.is_empty());
        if m2.cfg.is_moe() {
            assert_eq!(m2.store.kind(), "cached", "{}", path.display());
            assert!(
                mapped.iter().all(|n| !n.contains("_exps")),
                "{}: expert tensors were mapped: {mapped:?}",
                path.display()
            );
        }
        assert_eq!(whole.len(), windowed.len());
        let same = whole
            .iter()
            .zip(&windowed)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(
            same,
            "{}: windowed logits differ from the whole-file mapping",
            path.display()
        );
        checked += 1;
    }
    assert!(checked > 0, "no fixtures were checked");
}
