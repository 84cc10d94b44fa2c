//! GRPO's per-token clipped surrogate with an optional k3 KL penalty, and its three ways of
//! averaging over tokens, written as TRL's `GRPOTrainer._compute_loss` computes them.
//!
//! For completion token t with ratio `r = exp(logp - old_logp)` and advantage `A`:
//! `loss_t = -min(r A, clip(r, 1 - epsilon_low, 1 + epsilon_high) A) + beta * kl_t`, where
//! `kl_t = exp(ref - logp) - (ref - logp) - 1` (Schulman's k3, always ≥ 0). Then
//! `token_mean` (DAPO) averages over every completion token of the batch, `seq_mean` (original
//! GRPO) over each completion's tokens and then over completions, and `dr_grpo` divides the sum
//! by `completions × max_completion_length`, so no length is favoured.
//!
//! Under MPI each rank computes the loss of its share of the completions over the whole batch's
//! token and completion counts ([`LossTotals`]), so the ranks' losses and gradients sum to one
//! process's.

use candle_core::{DType, Tensor};

use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossAggregation {
    TokenMean,
    SeqMean,
    DrGrpo,
}

impl LossAggregation {
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "token_mean" | "dapo" | "bnpo" => LossAggregation::TokenMean,
            "seq_mean" | "grpo" => LossAggregation::SeqMean,
            "dr_grpo" => LossAggregation::DrGrpo,
            other => crate::bail!("unknown loss `{other}`: use token_mean, seq_mean or dr_grpo"),
        })
    }

    /// The canonical name [`Self::parse`] reads.
    pub fn as_str(self) -> &'static str {
        match self {
            LossAggregation::TokenMean => "token_mean",
            LossAggregation::SeqMean => "seq_mean",
            LossAggregation::DrGrpo => "dr_grpo",
        }
    }
}

/// The loss's hyper-parameters; the defaults are TRL's `GRPOConfig`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GrpoLossConfig {
    pub epsilon_low: f64,
    pub epsilon_high: f64,
    pub beta: f64,
    pub aggregation: LossAggregation,
    /// `dr_grpo`'s constant denominator per completion.
    pub max_completion_length: usize,
}

impl Default for GrpoLossConfig {
    fn default() -> Self {
        Self {
            epsilon_low: 0.2,
            epsilon_high: 0.2,
            beta: 0.0,
            aggregation: LossAggregation::TokenMean,
            max_completion_length: 256,
        }
    }
}

/// The denominators of the aggregations: the whole batch's counted tokens and completions (across
/// ranks under MPI).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossTotals {
    pub tokens: f64,
    pub completions: f64,
}

impl LossTotals {
    /// This batch's own counts.
    pub fn of(mask: &Tensor) -> Result<Self> {
        let tokens = mask.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()? as f64;
        Ok(LossTotals { tokens, completions: mask.dims2()?.0 as f64 })
    }
}

/// Per-token inputs, all `[completions, width]` f32 except `advantages` `[completions]`.
#[derive(Debug, Clone, Copy)]
pub struct GrpoLossInputs<'a> {
    /// Log-probs under the policy being optimised (differentiable).
    pub logprobs: &'a Tensor,
    /// Log-probs under the policy that sampled the completions.
    pub old_logprobs: &'a Tensor,
    /// Log-probs under the reference; needed when `beta > 0`.
    pub ref_logprobs: Option<&'a Tensor>,
    pub advantages: &'a Tensor,
    /// 1 for a completion token that counts, 0 for padding (and for masked truncated completions).
    pub mask: &'a Tensor,
    /// The denominators; `None`: this batch's own ([`LossTotals::of`]).
    pub totals: Option<LossTotals>,
}

/// The loss and what is logged beside it.
#[derive(Debug, Clone)]
pub struct GrpoLoss {
    pub loss: Tensor,
    /// Fraction of tokens whose ratio fell below `1 - epsilon_low` with a negative advantage.
    pub clip_low: f64,
    /// Fraction of tokens whose ratio rose above `1 + epsilon_high` with a positive advantage.
    pub clip_high: f64,
    /// Token mean of the k3 KL (0 when `beta = 0`).
    pub kl: f64,
}

fn masked_mean(x: &Tensor, mask: &Tensor) -> Result<f64> {
    let n = mask.sum_all()?.to_scalar::<f32>()?.max(1.0);
    Ok((x * mask)?.sum_all()?.to_scalar::<f32>()? as f64 / n as f64)
}

pub fn grpo_loss(cfg: &GrpoLossConfig, x: &GrpoLossInputs) -> Result<GrpoLoss> {
    let mask = x.mask.to_dtype(DType::F32)?;
    let totals = match x.totals {
        Some(t) => t,
        None => LossTotals::of(&mask)?,
    };
    let ratio = (x.logprobs - x.old_logprobs)?.exp()?;
    let clipped = ratio.clamp(1.0 - cfg.epsilon_low, 1.0 + cfg.epsilon_high)?;
    let adv = x.advantages.to_dtype(DType::F32)?.unsqueeze(1)?;
    let surrogate = ratio.broadcast_mul(&adv)?.minimum(&clipped.broadcast_mul(&adv)?)?;
    let mut per_token = surrogate.neg()?;
    let mut kl_mean = 0.0;
    if cfg.beta != 0.0 {
        let Some(reference) = x.ref_logprobs else {
            crate::bail!("beta = {} needs reference log-probs", cfg.beta);
        };
        let diff = (reference - x.logprobs)?;
        let kl = ((diff.exp()? - &diff)? - 1.0)?;
        kl_mean = masked_mean(&kl.detach(), &mask)?;
        per_token = (per_token + (kl * cfg.beta)?)?;
    }
    let masked = (per_token * &mask)?;
    let loss = match cfg.aggregation {
        LossAggregation::TokenMean => (masked.sum_all()? / totals.tokens.max(1.0))?,
        LossAggregation::SeqMean => {
            let lengths = mask.sum(1)?.clamp(1.0, f64::INFINITY)?;
            ((masked.sum(1)? / lengths)?.sum_all()? / totals.completions.max(1.0))?
        }
        LossAggregation::DrGrpo => {
            (masked.sum_all()? / (totals.completions * cfg.max_completion_length.max(1) as f64).max(1.0))?
        }
    };
    let ratio_d = ratio.detach();
    let adv_sign = adv.broadcast_as(ratio_d.shape())?;
    let low = ratio_d.lt(1.0 - cfg.epsilon_low)?.mul(&adv_sign.lt(0.0)?)?.to_dtype(DType::F32)?;
    let high = ratio_d.gt(1.0 + cfg.epsilon_high)?.mul(&adv_sign.gt(0.0)?)?.to_dtype(DType::F32)?;
    Ok(GrpoLoss {
        loss,
        clip_low: masked_mean(&low, &mask)?,
        clip_high: masked_mean(&high, &mask)?,
        kl: kl_mean,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Two completions of widths 3 and 2 (the second padded). Ratios: row 0 = [1.5, 0.5, 1.0],
    /// row 1 = [0.7, 1.1]; advantages [+1, -2]. Row 0 token 0 is clipped high (min(1.5, 1.2) =
    /// 1.2), row 1 token 0 is clipped low (min(-1.4, -1.6) = -1.6).
    fn inputs(dev: &Device) -> (Tensor, Tensor, Tensor, Tensor, Tensor) {
        let ratios = [[1.5f32, 0.5, 1.0], [0.7, 1.1, 1.0]];
        let old = Tensor::new(&[[-1.0f32, -2.0, -0.5], [-1.5, -0.3, 0.0]], dev).unwrap();
        let logp = (old.clone() + Tensor::new(&ratios, dev).unwrap().log().unwrap()).unwrap();
        let reference = Tensor::new(&[[-1.2f32, -2.0, -0.4], [-1.0, -0.5, 0.0]], dev).unwrap();
        let adv = Tensor::new(&[1.0f32, -2.0], dev).unwrap();
        let mask = Tensor::new(&[[1.0f32, 1.0, 1.0], [1.0, 1.0, 0.0]], dev).unwrap();
        (logp, old, reference, adv, mask)
    }

    // Per-token surrogate losses: row 0 = [-1.2, -0.5, -1.0], row 1 = [1.6, 2.2] (ratio 1.1
    // with A = -2: min(-2.2, -2.2)).
    const ROW0: [f64; 3] = [-1.2, -0.5, -1.0];
    const ROW1: [f64; 2] = [1.6, 2.2];

    fn run(agg: LossAggregation, beta: f64) -> GrpoLoss {
        let dev = &Device::Cpu;
        let (logp, old, reference, adv, mask) = inputs(dev);
        let cfg = GrpoLossConfig { beta, aggregation: agg, max_completion_length: 4, ..Default::default() };
        let x = GrpoLossInputs {
            logprobs: &logp,
            old_logprobs: &old,
            ref_logprobs: Some(&reference),
            advantages: &adv,
            mask: &mask,
            totals: None,
        };
        grpo_loss(&cfg, &x).unwrap()
    }

    fn scalar(t: &Tensor) -> f64 {
        t.to_scalar::<f32>().unwrap() as f64
    }

    #[test]
    fn aggregations_match_hand_computed_values() {
        let sum: f64 = ROW0.iter().chain(&ROW1).sum();
        let token = run(LossAggregation::TokenMean, 0.0);
        assert!((scalar(&token.loss) - sum / 5.0).abs() < 1e-6);
        let seq = run(LossAggregation::SeqMean, 0.0);
        let want = (ROW0.iter().sum::<f64>() / 3.0 + ROW1.iter().sum::<f64>() / 2.0) / 2.0;
        assert!((scalar(&seq.loss) - want).abs() < 1e-6);
        let dr = run(LossAggregation::DrGrpo, 0.0);
        assert!((scalar(&dr.loss) - sum / (2.0 * 4.0)).abs() < 1e-6);
        assert!((token.clip_high - 0.2).abs() < 1e-9 && (token.clip_low - 0.2).abs() < 1e-9);
        assert_eq!(token.kl, 0.0);
    }

    #[test]
    fn k3_kl_is_added_with_beta() {
        let dev = &Device::Cpu;
        let (logp, _, reference, _, _) = inputs(dev);
        let d: Vec<Vec<f32>> = (reference - logp).unwrap().to_vec2().unwrap();
        let k3 = |x: f32| (x.exp() - x - 1.0) as f64;
        let kl: Vec<f64> = [d[0][0], d[0][1], d[0][2], d[1][0], d[1][1]].into_iter().map(k3).collect();
        let with = run(LossAggregation::TokenMean, 0.5);
        let sum: f64 = ROW0.iter().chain(&ROW1).sum();
        let want = (sum + 0.5 * kl.iter().sum::<f64>()) / 5.0;
        assert!((scalar(&with.loss) - want).abs() < 1e-6);
        assert!((with.kl - kl.iter().sum::<f64>() / 5.0).abs() < 1e-6);
        assert!(kl.iter().all(|&k| k >= 0.0));
    }

    #[test]
    fn clipped_tokens_get_no_gradient() {
        let dev = &Device::Cpu;
        let (logp, old, _, adv, mask) = inputs(dev);
        let var = candle_core::Var::from_tensor(&logp).unwrap();
        let x = GrpoLossInputs {
            logprobs: var.as_tensor(),
            old_logprobs: &old,
            ref_logprobs: None,
            advantages: &adv,
            mask: &mask,
            totals: None,
        };
        let out = grpo_loss(&GrpoLossConfig::default(), &x).unwrap();
        let g: Vec<Vec<f32>> = out.loss.backward().unwrap().get(var.as_tensor()).unwrap().to_vec2().unwrap();
        // d/dlogp of -r A / 5 is -r A / 5 where unclipped; zero where clipped or padded.
        assert_eq!(g[0][0], 0.0);
        assert!((g[0][1] as f64 + 0.5 / 5.0).abs() < 1e-6);
        assert_eq!(g[1][0], 0.0);
        assert!((g[1][1] as f64 - 2.2 / 5.0).abs() < 1e-6);
        assert_eq!(g[1][2], 0.0);
        assert!(LossAggregation::parse("sum").unwrap_err().to_string().contains("dr_grpo"));
    }
}
