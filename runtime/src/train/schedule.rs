//! Learning-rate schedules with linear warmup, as transformers' `get_*_schedule_with_warmup`.
//!
//! Steps count from 0: the first update uses `lr_at(0)`, which is 0 when there is warmup, as in
//! transformers, so a run compared side by side with TRL sees the same learning rates.

use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    Constant,
    Linear,
    Cosine,
}

impl Schedule {
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "constant" => Schedule::Constant,
            "linear" => Schedule::Linear,
            "cosine" => Schedule::Cosine,
            other => crate::bail!("unknown schedule `{other}`: use constant, linear or cosine"),
        })
    }

    /// The name [`Self::parse`] reads.
    pub fn as_str(self) -> &'static str {
        match self {
            Schedule::Constant => "constant",
            Schedule::Linear => "linear",
            Schedule::Cosine => "cosine",
        }
    }

    /// The learning rate of update `step` (0-based) out of `total`, after `warmup` warmup steps.
    pub fn lr_at(self, base: f64, step: u64, total: u64, warmup: u64) -> f64 {
        if step < warmup {
            return base * step as f64 / warmup as f64;
        }
        let decay_steps = total.saturating_sub(warmup).max(1) as f64;
        let progress = ((step - warmup) as f64 / decay_steps).min(1.0);
        match self {
            Schedule::Constant => base,
            Schedule::Linear => base * (1.0 - progress),
            Schedule::Cosine => base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_decay_matches_transformers() {
        let lr = |s: Schedule, step| s.lr_at(1.0, step, 10, 2);
        assert_eq!([lr(Schedule::Linear, 0), lr(Schedule::Linear, 1)], [0.0, 0.5]);
        assert_eq!(lr(Schedule::Constant, 9), 1.0);
        assert!((lr(Schedule::Linear, 6) - 0.5).abs() < 1e-12);
        assert!((lr(Schedule::Cosine, 6) - 0.5).abs() < 1e-12);
        assert!((lr(Schedule::Cosine, 4) - 0.5 * (1.0 + (std::f64::consts::PI / 4.0).cos())).abs() < 1e-12);
        assert_eq!(lr(Schedule::Linear, 10), 0.0);
        assert!(Schedule::parse("step").unwrap_err().to_string().contains("cosine"));
    }
}
