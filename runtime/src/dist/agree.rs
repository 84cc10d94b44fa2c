//! The start-of-call check that every rank holds the same model and options: each rank hashes
//! what it has, the hashes are gathered, and a rank that differs from rank 0 is named. Ranks that
//! disagree would average gradients of different models (or shard different batches) and the run
//! would be silently wrong.

use candle_core::DType;
use sha2::{Digest, Sha256};

use super::World;
use crate::error::Result;
use crate::models::qwen2_5_vl::Qwen25VL;

/// Fail, on every rank alike, unless every rank's `digest` of `what` equals rank 0's.
pub fn check_agreement(world: &World, what: &str, digest: &[u8]) -> Result<()> {
    if !world.is_distributed() {
        return Ok(());
    }
    let all = world.all_gather(&format!("agreement on {what}"), digest)?;
    let differ: Vec<String> =
        all.iter().enumerate().filter(|(_, d)| **d != all[0]).map(|(r, _)| r.to_string()).collect();
    if !differ.is_empty() {
        crate::bail!(
            "ranks disagree about {what}: rank{} {} differ{} from rank 0 (every rank must run the same \
             script with the same arguments, model files and options)",
            if differ.len() == 1 { "" } else { "s" },
            differ.join(", "),
            if differ.len() == 1 { "s" } else { "" }
        );
    }
    Ok(())
}

/// The check every distributed call (`sft`, `grpo`, `evaluate`) makes at its start: the same
/// model and the same options (`options`, written with `{:?}`) on every rank. Free in a world of
/// one.
pub fn check_call(world: &World, function: &str, model: &Qwen25VL, options: &str) -> Result<()> {
    if !world.is_distributed() {
        return Ok(());
    }
    check_agreement(world, &format!("the model given to {function}"), &model_fingerprint(model)?)?;
    check_agreement(world, &format!("the options of {function}"), &text_fingerprint(options))
}

/// A hash of the model's configuration and every tensor it holds (adapters apart): each tensor's
/// name, shape, dtype, and f32 sum and sum of squares, computed where the tensor lives, so the
/// check costs one reduction per tensor rather than a copy of the model.
pub fn model_fingerprint(model: &Qwen25VL) -> Result<Vec<u8>> {
    let mut hash = Sha256::new();
    hash.update(model.config().to_hub_json().to_string().as_bytes());
    model.each_tensor(&mut |name, t| {
        let f = t.to_dtype(DType::F32)?;
        let sum = f.sum_all()?.to_scalar::<f32>()?;
        let sq = f.sqr()?.sum_all()?.to_scalar::<f32>()?;
        hash.update(name.as_bytes());
        hash.update(format!("{:?}{:?}", t.dims(), t.dtype()).as_bytes());
        hash.update(sum.to_le_bytes());
        hash.update(sq.to_le_bytes());
        Ok(())
    })?;
    Ok(hash.finalize().to_vec())
}

/// A hash of `text` (options written with `{:?}`, say).
pub fn text_fingerprint(text: &str) -> Vec<u8> {
    Sha256::digest(text.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::qwen2_5_vl::LoraConfig;
    use crate::models::Vlm;
    use candle_core::Device;

    #[test]
    fn the_fingerprint_tells_models_apart_and_agrees_with_itself() {
        let tiny = |seed| Vlm::new_preset("qwen2_5_vl_tiny", seed, &Device::Cpu).unwrap().model;
        let (a, b) = (tiny(3), tiny(4));
        let print = |m: &Qwen25VL| model_fingerprint(m).unwrap();
        assert_eq!(print(&a), print(&tiny(3)));
        assert_ne!(print(&a), print(&b));
        let cfg = LoraConfig { seed: 1, ..LoraConfig::new(4, 8.0) };
        let random = LoraConfig { init: crate::models::qwen2_5_vl::LoraInit::Random, ..cfg.clone() };
        assert_ne!(print(&a), print(&a.with_lora(&random).unwrap()), "adapters count");
        // A world of one checks nothing.
        check_agreement(&World::single(), "anything", b"x").unwrap();
    }
}
