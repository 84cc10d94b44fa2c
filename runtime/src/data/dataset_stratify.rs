//! Stratified sampling shared by every collection that offers `balanced`: MedMNIST datasets
//! (`Dataset::balanced`) and question lists (`McqTask::balanced`, e.g. the paper's
//! modality-balanced 8k subset of PMC-VQA after `label_modality`).
//!
//! The caller gives one stratum key per item; the sample takes the same number from each stratum
//! where it can. A stratum smaller than its share gives all it has, the rest is spread over the
//! others (water filling), and the result says which strata were short so the caller can warn.

use std::collections::BTreeMap;

use crate::data::dataset::{equal_counts, pick_positions};

/// How much one stratum had and how much of it the sample took.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stratum {
    pub key: String,
    pub available: usize,
    pub taken: usize,
}

/// The chosen positions (ascending, so the sample keeps the source order) and the strata in key
/// order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StratifiedSample {
    pub positions: Vec<usize>,
    pub strata: Vec<Stratum>,
    pub requested: usize,
}

impl StratifiedSample {
    /// Strata that gave everything they had and still fewer items than some other stratum.
    pub fn short(&self) -> Vec<&Stratum> {
        let most = self.strata.iter().map(|s| s.taken).max().unwrap_or(0);
        self.strata.iter().filter(|s| s.taken == s.available && s.taken < most).collect()
    }

    /// One line per shortfall, naming `what` (e.g. `balanced by modality`), for the run log.
    pub fn warnings(&self, what: &str) -> Vec<String> {
        let taken = self.positions.len();
        let most = self.strata.iter().map(|s| s.taken).max().unwrap_or(0);
        let mut out: Vec<String> = self
            .short()
            .into_iter()
            .map(|s| {
                format!(
                    "{what}: stratum {:?} has only {} items, all taken (other strata give up to {most})",
                    s.key, s.available
                )
            })
            .collect();
        if taken < self.requested {
            out.push(format!(
                "{what}: asked for {} items but only {taken} exist; the sample holds all of them",
                self.requested
            ));
        }
        out
    }
}

/// Sample `n` of the items whose stratum keys are `keys` (one per item), as equal across strata as
/// the data allow; deterministic for a given `seed`.
pub fn stratified_sample<K: AsRef<str>>(keys: &[K], n: usize, seed: u64) -> StratifiedSample {
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, key) in keys.iter().enumerate() {
        by_key.entry(key.as_ref()).or_default().push(i);
    }
    let groups: Vec<Vec<usize>> = by_key.values().cloned().collect();
    let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
    let counts = equal_counts(&sizes, n);
    let strata = by_key
        .keys()
        .zip(sizes.iter().zip(&counts))
        .map(|(key, (&available, &taken))| Stratum { key: key.to_string(), available, taken })
        .collect();
    StratifiedSample { positions: pick_positions(&groups, &counts, seed), strata, requested: n }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(spec: &[(&str, usize)]) -> Vec<String> {
        spec.iter().flat_map(|&(k, n)| std::iter::repeat_n(k.to_string(), n)).collect()
    }

    #[test]
    fn equal_strata_when_every_stratum_can_fill_its_share() {
        let ks = keys(&[("radiology", 40), ("microscopy", 25), ("visible_light", 30)]);
        let s = stratified_sample(&ks, 60, 1);
        assert_eq!(s.positions.len(), 60);
        assert!(s.strata.iter().all(|st| st.taken == 20), "{:?}", s.strata);
        assert!(s.short().is_empty() && s.warnings("x").is_empty());
        assert!(s.positions.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_short_stratum_gives_all_and_is_reported() {
        let ks = keys(&[("a", 50), ("b", 3), ("c", 50)]);
        let s = stratified_sample(&ks, 30, 9);
        let taken: Vec<usize> = s.strata.iter().map(|st| st.taken).collect();
        assert_eq!(taken, [14, 3, 13]);
        assert_eq!(s.positions.len(), 30);
        assert_eq!(s.short().iter().map(|st| st.key.as_str()).collect::<Vec<_>>(), ["b"]);
        let w = s.warnings("balanced by modality");
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("\"b\" has only 3 items"), "{w:?}");
    }

    #[test]
    fn asking_for_more_than_exists_takes_everything_and_says_so() {
        let ks = keys(&[("a", 4), ("b", 2)]);
        let s = stratified_sample(&ks, 10, 0);
        assert_eq!(s.positions, (0..6).collect::<Vec<_>>());
        assert!(s.warnings("t").iter().any(|w| w.contains("asked for 10 items but only 6")));
    }

    #[test]
    fn the_same_seed_gives_the_same_sample() {
        let ks = keys(&[("a", 30), ("b", 30)]);
        assert_eq!(stratified_sample(&ks, 10, 5), stratified_sample(&ks, 10, 5));
        assert_ne!(stratified_sample(&ks, 10, 5).positions, stratified_sample(&ks, 10, 6).positions);
    }
}
