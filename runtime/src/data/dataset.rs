//! `Dataset`: an immutable, cheaply cloned list of labelled images, with the subset operations the
//! experiments need (balanced samples, train/val splits, filters, concatenation).
//!
//! Items sit behind one `Arc`, so handing a dataset to a script, a probe or a task copies nothing.
//! Every sampling operation takes a seed and keeps the items' original order, so a subset is a
//! pure function of (dataset, arguments).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::data::dataset_stratify::{stratified_sample, StratifiedSample};
use crate::data::medmnist_info::Modality;
use crate::error::Result;
use crate::image::Image;

/// One of MedMNIST's three official splits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }

    pub fn parse(name: &str) -> Result<Split> {
        match name.trim().to_ascii_lowercase().as_str() {
            "train" => Ok(Split::Train),
            "val" | "valid" | "validation" => Ok(Split::Val),
            "test" => Ok(Split::Test),
            _ => crate::bail!("unknown split {name:?}: expected train, val or test"),
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One labelled picture.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    pub image: Image,
    /// The class id for single-label tasks; `None` for multi-label ones (chestmnist).
    pub label: Option<usize>,
    /// The file's raw label row: one value, or 14 multi-hot values for chestmnist.
    pub labels: Vec<i64>,
    pub flag: Arc<str>,
    pub modality: Modality,
    pub split: Split,
    /// Row of this item in its file's split, so results can be traced back to the source.
    pub index: usize,
}

/// What [`Dataset::balanced`] equalises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BalanceBy {
    Modality,
    /// The class (the label row for multi-label items) within each flag.
    Label,
    Flag,
}

impl BalanceBy {
    pub fn parse(name: &str) -> Result<BalanceBy> {
        match name.trim().to_ascii_lowercase().as_str() {
            "modality" => Ok(BalanceBy::Modality),
            "label" | "class" => Ok(BalanceBy::Label),
            "flag" | "task" => Ok(BalanceBy::Flag),
            _ => crate::bail!("unknown balance key {name:?}: expected modality, label or flag"),
        }
    }
}

/// A list of items plus the warnings raised while loading it.
#[derive(Clone, Debug, Default)]
pub struct Dataset {
    items: Arc<[Item]>,
    warnings: Arc<[String]>,
}

impl Dataset {
    pub fn new(items: Vec<Item>) -> Self {
        Dataset { items: items.into(), warnings: Arc::from(Vec::new()) }
    }

    /// Attach loader warnings (e.g. sample counts that differ from the official ones).
    pub fn with_warnings(mut self, warnings: Vec<String>) -> Self {
        self.warnings = warnings.into();
        self
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<&Item> {
        self.items.get(i)
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Item> {
        self.items.iter()
    }

    pub fn items(&self) -> &[Item] {
        &self.items
    }

    /// Non-fatal problems found while loading, for the caller to print.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The distinct flags, in order of first appearance.
    pub fn flags(&self) -> Vec<Arc<str>> {
        let mut seen: Vec<Arc<str>> = Vec::new();
        for item in self.iter() {
            if !seen.contains(&item.flag) {
                seen.push(item.flag.clone());
            }
        }
        seen
    }

    /// A sample of `n` items with the groups of `by` as equal as the data allow: a group smaller
    /// than its share gives all it has and the rest is spread over the others. Asking for more
    /// items than exist returns all of them.
    pub fn balanced(&self, by: BalanceBy, n: usize, seed: u64) -> Dataset {
        self.balanced_sample(by, n, seed).0
    }

    /// [`Dataset::balanced`] together with what each stratum had and gave. The sample's
    /// warnings are this dataset's followed by its own shortfalls (a stratum that gave all it had).
    pub fn balanced_sample(&self, by: BalanceBy, n: usize, seed: u64) -> (Dataset, StratifiedSample) {
        let keys: Vec<String> = self
            .iter()
            .map(|item| match by {
                BalanceBy::Modality => item.modality.as_str().to_string(),
                BalanceBy::Flag => item.flag.to_string(),
                BalanceBy::Label => format!("{}:{:?}", item.flag, item.labels),
            })
            .collect();
        let sample = stratified_sample(&keys, n, seed);
        let items: Vec<Item> = sample.positions.iter().map(|&i| self.items[i].clone()).collect();
        let mut warnings = self.warnings.to_vec();
        warnings.extend(sample.warnings(&format!("balanced by {by:?}").to_lowercase()));
        (Dataset { items: items.into(), warnings: warnings.into() }, sample)
    }

    /// Split into (train, val) with `val_fraction` of each (flag, label) group in val, so both
    /// sides keep the class proportions.
    pub fn split(&self, val_fraction: f64, seed: u64) -> Result<(Dataset, Dataset)> {
        if !(0.0..=1.0).contains(&val_fraction) {
            crate::bail!("split: val must be a fraction in [0, 1], got {val_fraction}");
        }
        let groups = self.groups(|item| format!("{}:{:?}", item.flag, item.labels));
        let total = (val_fraction * self.len() as f64).round() as usize;
        let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
        let counts = proportional_counts(&sizes, total);
        let val = self.pick(&groups, &counts, seed);
        let in_val: std::collections::HashSet<(Arc<str>, Split, usize)> =
            val.iter().map(|i| (i.flag.clone(), i.split, i.index)).collect();
        let train = self.filter(|i| !in_val.contains(&(i.flag.clone(), i.split, i.index)));
        Ok((train, val))
    }

    /// The items for which `keep` is true, in order.
    pub fn filter(&self, mut keep: impl FnMut(&Item) -> bool) -> Dataset {
        let items: Vec<Item> = self.iter().filter(|i| keep(i)).cloned().collect();
        Dataset { items: items.into(), warnings: self.warnings.clone() }
    }

    /// This dataset's items followed by `other`'s; warnings of both are kept.
    pub fn concat(&self, other: &Dataset) -> Dataset {
        let items: Vec<Item> = self.iter().chain(other.iter()).cloned().collect();
        let warnings: Vec<String> = self.warnings.iter().chain(other.warnings.iter()).cloned().collect();
        Dataset { items: items.into(), warnings: warnings.into() }
    }

    /// Positions of the items of each group, groups in a stable (sorted key) order.
    fn groups(&self, key: impl Fn(&Item) -> String) -> Vec<Vec<usize>> {
        let mut by_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, item) in self.iter().enumerate() {
            by_key.entry(key(item)).or_default().push(i);
        }
        by_key.into_values().collect()
    }

    /// `counts[g]` random members of each group, returned in the dataset's order.
    fn pick(&self, groups: &[Vec<usize>], counts: &[usize], seed: u64) -> Dataset {
        let chosen = pick_positions(groups, counts, seed);
        let items: Vec<Item> = chosen.into_iter().map(|i| self.items[i].clone()).collect();
        Dataset { items: items.into(), warnings: self.warnings.clone() }
    }
}

impl<'a> IntoIterator for &'a Dataset {
    type Item = &'a Item;
    type IntoIter = std::slice::Iter<'a, Item>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// `counts[g]` seeded random positions from each group, sorted ascending.
pub(crate) fn pick_positions(groups: &[Vec<usize>], counts: &[usize], seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut chosen: Vec<usize> = Vec::new();
    for (members, &count) in groups.iter().zip(counts) {
        let mut members = members.clone();
        members.shuffle(&mut rng);
        chosen.extend_from_slice(&members[..count.min(members.len())]);
    }
    chosen.sort_unstable();
    chosen
}

/// Share `total` over groups in proportion to their sizes (largest remainder), never exceeding a
/// group's size.
pub(crate) fn proportional_counts(sizes: &[usize], total: usize) -> Vec<usize> {
    let all: usize = sizes.iter().sum();
    let total = total.min(all);
    if all == 0 {
        return vec![0; sizes.len()];
    }
    let exact: Vec<f64> = sizes.iter().map(|&s| s as f64 * total as f64 / all as f64).collect();
    let mut counts: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by(|&a, &b| {
        (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())).then(a.cmp(&b))
    });
    let mut missing = total - counts.iter().sum::<usize>();
    for &g in order.iter().cycle().take(order.len() * 2) {
        if missing == 0 {
            break;
        }
        if counts[g] < sizes[g] {
            counts[g] += 1;
            missing -= 1;
        }
    }
    counts
}

/// Share `total` as equally as possible over groups, capped by each group's size (water filling).
pub(crate) fn equal_counts(sizes: &[usize], total: usize) -> Vec<usize> {
    let mut counts = vec![0; sizes.len()];
    let mut left = total.min(sizes.iter().sum());
    while left > 0 {
        let open: Vec<usize> = (0..sizes.len()).filter(|&g| counts[g] < sizes[g]).collect();
        let share = (left / open.len()).max(1);
        for g in open {
            let add = share.min(sizes[g] - counts[g]).min(left);
            counts[g] += add;
            left -= add;
        }
    }
    counts
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn toy(flag: &str, modality: Modality, labels: &[usize]) -> Dataset {
        let items = labels
            .iter()
            .enumerate()
            .map(|(index, &l)| Item {
                image: Image::new(1, 1, 1, vec![l as u8]).unwrap(),
                label: Some(l),
                labels: vec![l as i64],
                flag: flag.into(),
                modality,
                split: Split::Test,
                index,
            })
            .collect();
        Dataset::new(items)
    }

    fn count(ds: &Dataset, f: impl Fn(&Item) -> bool) -> usize {
        ds.iter().filter(|i| f(i)).count()
    }

    #[test]
    fn balanced_by_modality_equalises_and_spills_over() {
        let ds = toy("a", Modality::Radiology, &[0; 50])
            .concat(&toy("b", Modality::Microscopy, &[1; 50]))
            .concat(&toy("c", Modality::VisibleLight, &[2; 4]));
        let b = ds.balanced(BalanceBy::Modality, 30, 7);
        assert_eq!(b.len(), 30);
        assert_eq!(count(&b, |i| i.modality == Modality::VisibleLight), 4);
        assert_eq!(count(&b, |i| i.modality == Modality::Radiology), 13);
        // The shortfall the caller warns about stays with the sample, for `warnings()`.
        assert_eq!(b.warnings().len(), 1, "{:?}", b.warnings());
        assert!(b.warnings()[0].starts_with("balanced by modality: stratum"), "{:?}", b.warnings());
        assert!(b.warnings()[0].contains("has only 4 items"), "{:?}", b.warnings());
        assert_eq!(
            b.iter().map(|i| i.index).collect::<Vec<_>>(),
            ds.balanced(BalanceBy::Modality, 30, 7).iter().map(|i| i.index).collect::<Vec<_>>()
        );
    }

    #[test]
    fn split_keeps_class_proportions_and_partitions() {
        let labels: Vec<usize> = (0..100).map(|i| if i < 80 { 0 } else { 1 }).collect();
        let ds = toy("a", Modality::Radiology, &labels);
        let (train, val) = ds.split(0.25, 3).unwrap();
        assert_eq!((train.len(), val.len()), (75, 25));
        assert_eq!(count(&val, |i| i.label == Some(1)), 5);
        let mut all: Vec<usize> = train.iter().chain(val.iter()).map(|i| i.index).collect();
        all.sort();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert!(ds.split(1.5, 0).is_err());
    }

    #[test]
    fn filter_and_concat_keep_order() {
        let ds = toy("a", Modality::Radiology, &[0, 1, 2, 1]);
        let ones = ds.filter(|i| i.label == Some(1));
        assert_eq!(ones.iter().map(|i| i.index).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(ones.concat(&ds).len(), 6);
    }

    #[test]
    fn allocation_rules_hit_their_totals() {
        assert_eq!(proportional_counts(&[80, 20], 10), [8, 2]);
        assert_eq!(proportional_counts(&[1, 1, 1], 2).iter().sum::<usize>(), 2);
        assert_eq!(equal_counts(&[100, 2, 100], 30), [14, 2, 14]);
        assert_eq!(equal_counts(&[3, 3], 100), [3, 3]);
    }
}
