//! What a model's LoRA adapters are, read back from the model itself: their configuration (so a
//! trained model can be saved as a PEFT adapter without the options it was trained with) and a
//! check that every requested target adapted something (a misspelt target among good ones would
//! otherwise train fewer modules than asked, silently).
//!
//! `targets` is given as PEFT matches it — a module is adapted when its name is a target or ends
//! with `.target`, in the towers the `vision` flag allows: the module suffixes (`q_proj`) when
//! they pick out exactly the adapted modules, else each adapted module's name without the
//! layout-specific `model.` prefix (`layers.0.self_attn.q_proj`), which matches in both the
//! transformers 4 and 5 layouts.

use std::collections::BTreeSet;

use crate::error::Result;
use crate::models::qwen2_5_vl::weights::Param;
use crate::models::qwen2_5_vl::{LoraConfig, LoraInit, Qwen25VL};

/// One adapted module as found in a model.
struct Adapted {
    name: String,
    rank: usize,
    scale: f64,
    dropout: f64,
}

/// Every linear module's hub name, and the adapted ones.
fn linear_modules(model: &Qwen25VL) -> Result<(Vec<String>, Vec<Adapted>)> {
    let (mut all, mut adapted) = (Vec::new(), Vec::new());
    let mut visit = |name: &str, p: Param<'_>| -> Result<()> {
        if let Param::Linear(linear) = p {
            all.push(name.to_string());
            if let Some(a) = linear.adapter() {
                let rank = a.a.dims().first().copied().unwrap_or(0);
                adapted.push(Adapted { name: name.to_string(), rank, scale: a.scale, dropout: a.dropout });
            }
        }
        Ok(())
    };
    // Visiting needs `&mut`; a clone shares every tensor, so this copies nothing.
    let mut copy = model.clone();
    copy.text.visit(&mut visit)?;
    copy.vision.visit(&mut visit)?;
    Ok((all, adapted))
}

/// The LoRA configuration `model`'s adapters have (see the module header for `targets`).
pub fn lora_config_of(model: &Qwen25VL) -> Result<LoraConfig> {
    let (all, adapted) = linear_modules(model)?;
    let Some(first) = adapted.first() else { crate::bail!("this model has no LoRA adapters") };
    if let Some(odd) = adapted.iter().find(|m| m.rank != first.rank || m.scale != first.scale) {
        crate::bail!(
            "adapters of different ranks or scales ({} and {}) do not fit one PEFT adapter_config.json",
            first.name,
            odd.name
        );
    }
    let names: BTreeSet<&str> = adapted.iter().map(|m| m.name.as_str()).collect();
    let vision = names.iter().any(|n| n.starts_with("visual."));
    let suffixes: Vec<String> = names
        .iter()
        .map(|n| n.rsplit('.').next().unwrap_or(n).to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let by_suffix = LoraConfig { targets: suffixes, vision, ..LoraConfig::new(first.rank, 1.0) };
    let exact = all.iter().all(|n| by_suffix.matches(n) == names.contains(n.as_str()));
    let targets = if exact {
        by_suffix.targets
    } else {
        names.iter().map(|n| n.strip_prefix("model.").unwrap_or(n).to_string()).collect()
    };
    Ok(LoraConfig {
        rank: first.rank,
        alpha: first.scale * first.rank as f64,
        targets,
        dropout: first.dropout,
        init: LoraInit::Peft,
        seed: 0,
        vision,
    })
}

/// Fail, naming the target, when one of `cfg.targets` adapted no module of `adapted` (a model
/// made with `cfg`).
pub fn check_targets(adapted: &Qwen25VL, cfg: &LoraConfig) -> Result<()> {
    let (_, modules) = linear_modules(adapted)?;
    for target in &cfg.targets {
        if !modules.iter().any(|m| m.name == *target || m.name.ends_with(&format!(".{target}"))) {
            let tower =
                if cfg.vision { "" } else { " of the language model (vision: true adapts the vision tower)" };
            crate::bail!(
                "lora target `{target}` matches no module{tower}; targets are module names or their ends, e.g. {}",
                LoraConfig::ALL_LM_PROJECTIONS.join(", ")
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::sft::tests::tiny_vlm;

    fn lora(targets: &[&str]) -> LoraConfig {
        LoraConfig {
            targets: targets.iter().map(|t| t.to_string()).collect(),
            dropout: 0.1,
            ..LoraConfig::new(4, 8.0)
        }
    }

    #[test]
    fn the_configuration_is_read_back_from_the_adapters() {
        let base = tiny_vlm().model;
        let cfg = lora(&["v_proj", "q_proj"]);
        let read = lora_config_of(&base.with_lora(&cfg).unwrap()).unwrap();
        assert_eq!((read.rank, read.alpha, read.dropout, read.vision), (4, 8.0, 0.1, false));
        assert_eq!(read.targets, vec!["q_proj", "v_proj"]);
        // The vision MLP also has an `up_proj`: the `vision` flag says which towers are covered.
        let read = lora_config_of(&base.with_lora(&lora(&["up_proj"])).unwrap()).unwrap();
        assert_eq!((read.targets, read.vision), (vec!["up_proj".to_string()], false));
        let vision = LoraConfig { vision: true, ..lora(&["up_proj"]) };
        assert!(lora_config_of(&base.with_lora(&vision).unwrap()).unwrap().vision);
        // Adapters on some layers only are named one by one.
        let read = lora_config_of(&base.with_lora(&lora(&["layers.1.self_attn.q_proj"])).unwrap()).unwrap();
        assert_eq!(read.targets, vec!["layers.1.self_attn.q_proj"]);
        // Read-back configurations rebuild the same set of adapters.
        let some = ["layers.0.mlp.up_proj", "layers.2.self_attn.v_proj"];
        for targets in [&["q_proj", "v_proj"][..], &["up_proj"], &some, &LoraConfig::ALL_LM_PROJECTIONS] {
            let adapted = base.with_lora(&lora(targets)).unwrap();
            let again = base.with_lora(&lora_config_of(&adapted).unwrap()).unwrap();
            let names = |m: &Qwen25VL| m.trainable().iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
            assert_eq!(names(&adapted), names(&again), "{targets:?}");
        }
        assert!(lora_config_of(&base).unwrap_err().to_string().contains("no LoRA adapters"));
    }

    #[test]
    fn a_target_that_adapts_nothing_is_named() {
        let base = tiny_vlm().model;
        let typo = lora(&["q_proj", "qv_proj"]);
        let err = check_targets(&base.with_lora(&typo).unwrap(), &typo).unwrap_err().to_string();
        assert!(err.contains("lora target `qv_proj` matches no module of the language model"), "{err}");
        let fine = lora(&["q_proj", "mlp.up_proj"]);
        check_targets(&base.with_lora(&fine).unwrap(), &fine).unwrap();
    }
}
