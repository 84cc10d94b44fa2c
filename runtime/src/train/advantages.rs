//! Group-relative advantages: each completion's reward minus its group's mean, scaled by the
//! group's standard deviation (GRPO), the whole batch's (`scale_rewards = batch`, as TRL), or
//! not at all (Dr. GRPO). Standard deviations are unbiased (`torch.std`) and get TRL's 1e-4
//! added. Groups whose rewards are all equal carry no signal; they are reported so a trainer can
//! filter them or draw more prompts (dynamic sampling).

use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleRewards {
    Group,
    Batch,
    None,
}

impl ScaleRewards {
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "group" => ScaleRewards::Group,
            "batch" => ScaleRewards::Batch,
            "none" => ScaleRewards::None,
            other => crate::bail!("unknown scale_rewards `{other}`: use group, batch or none"),
        })
    }

    /// The name [`Self::parse`] reads.
    pub fn as_str(self) -> &'static str {
        match self {
            ScaleRewards::Group => "group",
            ScaleRewards::Batch => "batch",
            ScaleRewards::None => "none",
        }
    }
}

/// Advantages in rollout order and the groups whose rewards do not vary.
#[derive(Debug, Clone, PartialEq)]
pub struct Advantages {
    pub values: Vec<f64>,
    /// Indices of the groups (not rollouts) with zero reward variance.
    pub zero_variance_groups: Vec<usize>,
}

impl Advantages {
    /// Fraction of groups with zero variance.
    pub fn zero_variance_fraction(&self, groups: usize) -> f64 {
        self.zero_variance_groups.len() as f64 / groups.max(1) as f64
    }
}

const STD_EPS: f64 = 1e-4;

fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = if xs.len() > 1 { xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}

/// `rewards` holds consecutive groups of `group` completions of the same prompt.
pub fn group_advantages(rewards: &[f64], group: usize, scale: ScaleRewards) -> Result<Advantages> {
    if group == 0 || rewards.is_empty() || rewards.len() % group != 0 {
        crate::bail!("{} rewards do not split into groups of {group}", rewards.len());
    }
    if let Some(bad) = rewards.iter().find(|r| !r.is_finite()) {
        crate::bail!("reward {bad} is not finite: check the reward functions");
    }
    let batch_std = mean_std(rewards).1;
    let mut values = Vec::with_capacity(rewards.len());
    let mut zero_variance_groups = Vec::new();
    for (g, chunk) in rewards.chunks(group).enumerate() {
        let (mean, std) = mean_std(chunk);
        if chunk.iter().all(|&r| r == chunk[0]) {
            zero_variance_groups.push(g);
        }
        let denom = match scale {
            ScaleRewards::Group => std + STD_EPS,
            ScaleRewards::Batch => batch_std + STD_EPS,
            ScaleRewards::None => 1.0,
        };
        values.extend(chunk.iter().map(|r| (r - mean) / denom));
    }
    Ok(Advantages { values, zero_variance_groups })
}

/// Which standard deviation scales a group: `torch.std`'s unbiased one (GRPO's, TRL's and the
/// paper's released trainer) or the population one (divide by n).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupStd {
    Unbiased,
    Population,
}

impl GroupStd {
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "unbiased" => GroupStd::Unbiased,
            "population" => GroupStd::Population,
            other => crate::bail!("unknown std `{other}`: use unbiased or population"),
        })
    }
}

/// `(r − group mean) / (group std + eps)` for consecutive groups of `group` rewards, with the
/// standard deviation `std` names; `(GroupStd::Unbiased, 1e-4)` is [`group_advantages`] with
/// [`ScaleRewards::Group`].
pub fn scaled_group_advantages(rewards: &[f64], group: usize, std: GroupStd, eps: f64) -> Result<Vec<f64>> {
    if group == 0 || rewards.is_empty() || rewards.len() % group != 0 {
        crate::bail!("{} rewards do not split into groups of {group}", rewards.len());
    }
    if let Some(bad) = rewards.iter().chain([&eps]).find(|r| !r.is_finite()) {
        crate::bail!("{bad} is not a finite reward or eps");
    }
    let mut values = Vec::with_capacity(rewards.len());
    for chunk in rewards.chunks(group) {
        let (mean, unbiased) = mean_std(chunk);
        let n = chunk.len() as f64;
        let sd = match std {
            GroupStd::Unbiased => unbiased,
            GroupStd::Population => (chunk.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt(),
        };
        values.extend(chunk.iter().map(|r| (r - mean) / (sd + eps)));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_batch_and_unscaled_advantages() {
        let rewards = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0];
        let g = group_advantages(&rewards, 4, ScaleRewards::Group).unwrap();
        // Group 0: mean 0.25, unbiased std sqrt(0.25) = 0.5.
        assert!((g.values[0] - 0.75 / 0.5001).abs() < 1e-12);
        assert!((g.values[1] + 0.25 / 0.5001).abs() < 1e-12);
        assert_eq!(&g.values[4..], &[0.0; 4]);
        assert_eq!(g.zero_variance_groups, vec![1]);
        assert_eq!(g.zero_variance_fraction(2), 0.5);
        let none = group_advantages(&rewards, 4, ScaleRewards::None).unwrap();
        assert_eq!(none.values[..4], [0.75, -0.25, -0.25, -0.25]);
        let batch = group_advantages(&rewards, 4, ScaleRewards::Batch).unwrap();
        let std = (rewards.iter().map(|r| (r - 0.625f64).powi(2)).sum::<f64>() / 7.0).sqrt();
        assert!((batch.values[0] - 0.75 / (std + 1e-4)).abs() < 1e-12);
        assert!(group_advantages(&rewards, 3, ScaleRewards::Group).is_err());
        assert!(ScaleRewards::parse("std").unwrap_err().to_string().contains("group, batch or none"));
    }

    #[test]
    fn scaled_advantages_by_unbiased_or_population_std() {
        let rewards = [1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0];
        let unbiased = scaled_group_advantages(&rewards, 4, GroupStd::Unbiased, STD_EPS).unwrap();
        assert_eq!(unbiased, group_advantages(&rewards, 4, ScaleRewards::Group).unwrap().values);
        // Group 0: population std sqrt(0.1875).
        let population = scaled_group_advantages(&rewards, 4, GroupStd::Population, 0.0).unwrap();
        assert!((population[0] - 0.75 / 0.1875f64.sqrt()).abs() < 1e-12);
        assert!(scaled_group_advantages(&rewards, 3, GroupStd::Unbiased, 1e-4).is_err());
        assert!(GroupStd::parse("biased").is_err());
    }
}
