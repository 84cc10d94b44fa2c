//! Adapter interop with PEFT on the parity checkpoint, against the fixtures that
//! `tests/fixtures/make_peft_fixture.py` writes and checks by hand:
//! - `peft_adapter_tiny/`, saved by PEFT's `save_pretrained`, loads here (in both key layouts)
//!   and gives PEFT's logits;
//! - `medbridge_adapter_tiny/` is still exactly what `save_adapter` writes for the same seed, so
//!   the Python check recorded in its `peft_check.json` (PEFT's logits with it against ours)
//!   still holds, and that check passed.
//!
//! Both sides are fed the parity fixture's own inputs (`reference_grid.safetensors`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, D};

use super::super::{grids_from_tensor, LoraConfig, LoraInit, Qwen25VL};

/// The logits kept in the fixtures: the last prompt positions (text after the image).
const POSITIONS: usize = 24;
const TOLERANCE: f32 = 2e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn base() -> Qwen25VL {
    Qwen25VL::load(fixtures().join("qwen2_5_vl_tiny").to_str().unwrap(), DType::F32, &Device::Cpu).unwrap()
}

fn load(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu).unwrap()
}

/// Logits `[POSITIONS, vocab]` of `model` on the parity fixture's grid image and prompt.
fn logits(model: &Qwen25VL) -> Tensor {
    let r = load(&fixtures().join("qwen2_5_vl_tiny/reference_grid.safetensors"));
    let ids = r["input_ids"].to_dtype(DType::U32).unwrap().unsqueeze(0).unwrap();
    let grids = grids_from_tensor(&r["image_grid_thw"]).unwrap();
    let out = model.forward(&ids, Some(&r["pixel_values"]), &grids).unwrap().squeeze(0).unwrap();
    let seq = out.dim(0).unwrap();
    out.narrow(0, seq - POSITIONS, POSITIONS).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

fn argmax(t: &Tensor) -> Vec<u32> {
    t.argmax(D::Minus1).unwrap().to_vec1().unwrap()
}

/// Loading `dir` gives PEFT's logits, and the adapter moves them far more than the tolerance.
fn assert_gives_peft_logits(dir: &Path) {
    let base = base();
    let peft = &load(&fixtures().join("peft_adapter_tiny/logits.safetensors"))["logits"];
    let ours = logits(&base.with_adapter(dir).unwrap());
    let diff = max_abs_diff(&ours, peft);
    assert!(diff <= TOLERANCE, "{}: logits max |Δ| {diff} against PEFT's", dir.display());
    assert_eq!(argmax(&ours), argmax(peft));
    assert!(max_abs_diff(&logits(&base), peft) > 100.0 * TOLERANCE, "the adapter barely matters");
}

#[test]
fn peft_saved_adapter_gives_peft_logits() {
    assert_gives_peft_logits(&fixtures().join("peft_adapter_tiny"));
}

/// The same adapter with the key names PEFT wrote against transformers 4.x
/// (`base_model.model.model.layers.*`).
#[test]
fn peft_adapter_in_the_transformers4_layout_loads_too() {
    let source = fixtures().join("peft_adapter_tiny");
    let dir = tempfile::tempdir().unwrap();
    let tensors = load(&source.join("adapter_model.safetensors"));
    let renamed: HashMap<String, Tensor> =
        tensors.into_iter().map(|(k, t)| (k.replace(".model.language_model.", ".model."), t)).collect();
    assert!(renamed.keys().all(|k| k.starts_with("base_model.model.model.layers.")));
    candle_core::safetensors::save(&renamed, dir.path().join("adapter_model.safetensors")).unwrap();
    std::fs::copy(source.join("adapter_config.json"), dir.path().join("adapter_config.json")).unwrap();
    assert_gives_peft_logits(dir.path());
}

/// The adapter of `medbridge_adapter_tiny/`: random LoRA on both towers.
fn medbridge_adapter() -> (Qwen25VL, LoraConfig) {
    let cfg = LoraConfig { init: LoraInit::Random, seed: 11, vision: true, ..LoraConfig::new(4, 8.0) };
    (base().with_lora(&cfg).unwrap(), cfg)
}

fn write_medbridge_adapter(dir: &Path) {
    let (model, cfg) = medbridge_adapter();
    model.save_adapter(dir, &cfg, "tests/fixtures/qwen2_5_vl_tiny").unwrap();
    let logits = HashMap::from([("logits".to_string(), logits(&model))]);
    candle_core::safetensors::save(&logits, dir.join("logits.safetensors")).unwrap();
}

/// Rewrites `tests/fixtures/medbridge_adapter_tiny/`; run by hand before `make_peft_fixture.py`.
#[test]
#[ignore]
fn write_medbridge_adapter_fixture() {
    write_medbridge_adapter(&fixtures().join("medbridge_adapter_tiny"));
}

#[test]
fn committed_medbridge_adapter_is_what_save_adapter_writes_and_peft_agreed() {
    let committed = fixtures().join("medbridge_adapter_tiny");
    let fresh = tempfile::tempdir().unwrap();
    write_medbridge_adapter(fresh.path());
    for file in ["adapter_config.json", "adapter_model.safetensors"] {
        let (a, b) = (std::fs::read(committed.join(file)).unwrap(), std::fs::read(fresh.path().join(file)));
        assert!(b.is_ok_and(|b| a == b), "{file} differs from what medbridge writes today");
    }
    // Logits may differ in the last bits with the thread count, not more.
    let logits = |dir: &Path| load(&dir.join("logits.safetensors"))["logits"].clone();
    assert!(max_abs_diff(&logits(&committed), &logits(fresh.path())) <= 1e-5);
    let check = std::fs::read_to_string(committed.join("peft_check.json")).unwrap();
    let check: serde_json::Value = serde_json::from_str(&check).unwrap();
    let diff = check["max_abs_diff"].as_f64().unwrap();
    assert!(diff <= TOLERANCE as f64, "PEFT's logits with medbridge's adapter differ by {diff}");
    assert_eq!(check["argmax_agree"], true);
    assert!(check["adapter_effect"].as_f64().unwrap() > 100.0 * TOLERANCE as f64);
}
