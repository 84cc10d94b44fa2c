//! Turns a labelled MedMNIST `Dataset` into a multiple-choice task.
//!
//! Single-label items become one question whose options are the class names (all of them, or
//! the gold class plus N-1 distractors drawn from the other classes); chestmnist items become one
//! yes/no question per finding. With `shuffle`, each question's letters are a seeded permutation,
//! so the gold letter is uniform over positions. The RNG of a question is derived from
//! (seed, flag, split, row, finding), so a question does not change when the dataset around it is
//! filtered, reordered or concatenated.

use rand::seq::{IndexedRandom, SliceRandom};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::data::dataset::{Dataset, Item};
use crate::data::medmnist_info::{flag_info, FlagInfo, TaskType};
use crate::error::Result;
use crate::task::mcq::{AnswerFormat, McqItem, McqTask};

/// How many options a question shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionCount {
    All,
    /// The gold class and N-1 distractors; capped at the number of classes.
    N(usize),
}

#[derive(Clone, Debug)]
pub struct McqOptions {
    pub options: OptionCount,
    pub shuffle: bool,
    pub seed: u64,
    /// A prompt template (see `mcq::DEFAULT_TEMPLATE` for the placeholders); `None` = default.
    pub template: Option<String>,
    pub answer_format: AnswerFormat,
    /// The task's name in reports; `None` = the flags joined by `+`.
    pub name: Option<String>,
}

impl Default for McqOptions {
    fn default() -> Self {
        McqOptions {
            options: OptionCount::All,
            shuffle: true,
            seed: 0,
            template: None,
            answer_format: AnswerFormat::Letter,
            name: None,
        }
    }
}

impl Dataset {
    /// The multiple-choice task of this dataset's items.
    pub fn to_mcq(&self, opts: &McqOptions) -> Result<McqTask> {
        if let OptionCount::N(n) = opts.options {
            if n < 2 {
                crate::bail!("to_mcq: options must be \"all\" or at least 2, got {n}");
            }
        }
        let mut items = Vec::new();
        for item in self.iter() {
            let info = flag_info(&item.flag)?;
            if info.task == TaskType::MultiLabel {
                for finding in 0..info.n_classes() {
                    items.push(finding_question(info, item, finding, opts));
                }
            } else {
                items.push(class_question(info, item, opts)?);
            }
        }
        let flags: Vec<String> = self.flags().iter().map(|f| f.to_string()).collect();
        let name = opts.name.clone().unwrap_or_else(|| flags.join("+"));
        McqTask::new(&name, items, opts.template.as_deref(), opts.answer_format)
    }
}

fn question_rng(seed: u64, item: &Item, finding: usize) -> ChaCha8Rng {
    let mut h = seed ^ 0x6a09_e667_f3bc_c909;
    let mut mix = |v: u64| {
        h = (h ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 31;
    };
    item.flag.bytes().for_each(|b| mix(b as u64));
    mix(item.split as u64);
    mix(item.index as u64);
    mix(finding as u64);
    ChaCha8Rng::seed_from_u64(h)
}

fn class_question(info: &FlagInfo, item: &Item, opts: &McqOptions) -> Result<McqItem> {
    let gold = item
        .label
        .ok_or_else(|| crate::error::Error::msg(format!("{} item {} has no label", info.flag, item.index)))?;
    let n = info.n_classes();
    let mut rng = question_rng(opts.seed, item, 0);
    let mut classes: Vec<usize> = match opts.options {
        OptionCount::All => (0..n).collect(),
        OptionCount::N(k) => {
            let others: Vec<usize> = (0..n).filter(|&c| c != gold).collect();
            let mut chosen: Vec<usize> = others.choose_multiple(&mut rng, k.min(n) - 1).copied().collect();
            chosen.push(gold);
            chosen.sort_unstable();
            chosen
        }
    };
    if opts.shuffle {
        classes.shuffle(&mut rng);
    }
    let answer = classes.iter().position(|&c| c == gold).unwrap_or_default();
    Ok(McqItem {
        id: format!("{}/{}/{}", info.flag, item.split, item.index),
        image: Some(item.image.clone()),
        question: question(info.flag).to_string(),
        options: classes.iter().map(|&c| display_label(info, c)).collect(),
        answer,
        answer_text: None,
        rationale: None,
        class_id: Some(gold),
        class_name: Some(display_label(info, gold)),
        task: info.flag.to_string(),
        modality: Some(item.modality),
    })
}

fn finding_question(info: &FlagInfo, item: &Item, finding: usize, opts: &McqOptions) -> McqItem {
    let name = display_label(info, finding);
    let present = item.labels.get(finding) == Some(&1);
    let mut options = vec!["yes".to_string(), "no".to_string()];
    if opts.shuffle {
        options.shuffle(&mut question_rng(opts.seed, item, finding + 1));
    }
    let gold = if present { "yes" } else { "no" };
    McqItem {
        id: format!("{}/{}/{}/{}", info.flag, item.split, item.index, info.labels[finding]),
        image: Some(item.image.clone()),
        question: format!("Does this chest X-ray show {name}?"),
        answer: options.iter().position(|o| o == gold).unwrap_or_default(),
        options,
        answer_text: None,
        rationale: None,
        class_id: Some(finding),
        class_name: Some(name),
        task: info.flag.to_string(),
        modality: Some(item.modality),
    }
}

/// The question asked for each flag.
fn question(flag: &str) -> &'static str {
    match flag {
        "pathmnist" => "Which tissue type is shown in this colorectal histology patch?",
        "dermamnist" => "Which type of skin lesion is shown in this dermatoscopic image?",
        "octmnist" => "Which diagnosis does this retinal OCT scan show?",
        "pneumoniamnist" => "What does this pediatric chest X-ray show?",
        "retinamnist" => "What is the diabetic retinopathy severity grade of this fundus photograph?",
        "breastmnist" => "How should the finding in this breast ultrasound image be classified?",
        "bloodmnist" => "Which type of blood cell is shown in this microscopy image?",
        "tissuemnist" => "Which type of kidney cortex cell is shown in this microscopy image?",
        "organamnist" => "Which organ is shown in this axial abdominal CT slice?",
        "organcmnist" => "Which organ is shown in this coronal abdominal CT slice?",
        "organsmnist" => "Which organ is shown in this sagittal abdominal CT slice?",
        _ => "Which of the following best describes this image?",
    }
}

/// The official label name, made readable where the original is terse.
fn display_label(info: &FlagInfo, class: usize) -> String {
    let label = info.labels[class];
    match (info.flag, label) {
        ("retinamnist", grade) => format!("grade {grade}"),
        ("breastmnist", "normal, benign") => "normal or benign".to_string(),
        ("chestmnist", "pleural") => "pleural thickening".to_string(),
        ("bloodmnist", l) => l.replace("s(", "s ("),
        _ => label.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::dataset::tests::toy;
    use crate::data::medmnist_info::Modality;
    use crate::image::Image;

    fn chi_square(counts: &[usize]) -> f64 {
        let expected = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
        counts.iter().map(|&c| (c as f64 - expected).powi(2) / expected).sum()
    }

    fn derma(n: usize) -> Dataset {
        toy("dermamnist", Modality::VisibleLight, &(0..n).map(|i| (i * 5 + i / 7) % 7).collect::<Vec<_>>())
    }

    #[test]
    fn gold_letters_are_uniform_and_options_never_repeat() {
        let ds = derma(2100);
        for (count, critical) in [(OptionCount::N(4), 16.27), (OptionCount::All, 22.46)] {
            let task = ds.to_mcq(&McqOptions { options: count, seed: 11, ..Default::default() }).unwrap();
            let width = task.items()[0].options.len();
            let mut positions = vec![0usize; width];
            for (q, item) in task.items().iter().zip(ds.iter()) {
                positions[q.answer] += 1;
                assert_eq!(q.options.len(), width);
                let mut unique = q.options.clone();
                unique.sort();
                unique.dedup();
                assert_eq!(unique.len(), width, "{:?}", q.options);
                assert_eq!(q.options[q.answer], flag_info("dermamnist").unwrap().labels[item.label.unwrap()]);
            }
            // Critical values of chi-square at p = 0.001 for 3 and 6 degrees of freedom.
            assert!(chi_square(&positions) < critical, "{positions:?}");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_questions_whatever_the_order() {
        let ds = derma(50);
        let opts = McqOptions { options: OptionCount::N(3), seed: 5, ..Default::default() };
        let a = ds.to_mcq(&opts).unwrap();
        let b = ds.to_mcq(&opts).unwrap();
        for i in 0..a.len() {
            assert_eq!(a.prompt(i).unwrap(), b.prompt(i).unwrap());
            assert_eq!(a.items()[i].answer, b.items()[i].answer);
        }
        let reversed = Dataset::new(ds.iter().rev().cloned().collect()).to_mcq(&opts).unwrap();
        assert_eq!(reversed.prompt(0).unwrap(), a.prompt(a.len() - 1).unwrap());
        let other = ds.to_mcq(&McqOptions { seed: 6, ..opts.clone() }).unwrap();
        assert!((0..a.len()).any(|i| a.prompt(i).unwrap() != other.prompt(i).unwrap()));
    }

    #[test]
    fn unshuffled_options_keep_class_order_and_counts_are_checked() {
        let ds = toy("pneumoniamnist", Modality::Radiology, &[1, 0]);
        let task = ds
            .to_mcq(&McqOptions { shuffle: false, options: OptionCount::N(9), ..Default::default() })
            .unwrap();
        assert_eq!(task.items()[0].options, ["normal", "pneumonia"]);
        assert_eq!((task.items()[0].answer, task.items()[1].answer), (1, 0));
        assert!(task.prompt(0).unwrap().starts_with("This is a radiology image.\nWhat does this pediatric chest X-ray show?\nA. normal\nB. pneumonia\n"));
        assert!(ds.to_mcq(&McqOptions { options: OptionCount::N(1), ..Default::default() }).is_err());
    }

    #[test]
    fn chest_items_become_one_yes_no_question_per_finding() {
        let mut labels = vec![0i64; 14];
        labels[2] = 1;
        let item = Item {
            image: Image::new(1, 1, 1, vec![0]).unwrap(),
            label: None,
            labels,
            flag: "chestmnist".into(),
            modality: Modality::Radiology,
            split: crate::data::Split::Test,
            index: 3,
        };
        let task = Dataset::new(vec![item]).to_mcq(&McqOptions { seed: 2, ..Default::default() }).unwrap();
        assert_eq!(task.len(), 14);
        for q in task.items() {
            let gold = &q.options[q.answer];
            assert_eq!(gold, if q.class_id == Some(2) { "yes" } else { "no" }, "{}", q.id);
        }
        assert_eq!(task.items()[2].question, "Does this chest X-ray show effusion?");
        assert_eq!(task.items()[12].class_name.as_deref(), Some("pleural thickening"));
        assert_eq!(task.items()[2].id, "chestmnist/test/3/effusion");
    }
}
