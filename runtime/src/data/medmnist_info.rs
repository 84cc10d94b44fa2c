//! Facts about the twelve 2D MedMNIST datasets: label names, task types, channel counts and official
//! split sizes and the modality of each dataset (published baseline scores: `published_results.rs`).
//!
//! The facts are those of `medmnist/info.py` in github.com/MedMNIST/MedMNIST (v2/v3 `INFO` table),
//! so that loaders, synthetic data and reports all agree with the files users download. The data
//! are published on Zenodo, DOI 10.5281/zenodo.10519652 (MedMNIST+, all sizes).

use std::collections::BTreeMap;
use std::fmt;

use crate::error::Result;

/// Where the official files are published; quoted by every "file not found" error.
pub const MEDMNIST_URL: &str = "https://zenodo.org/records/10519652";
pub const MEDMNIST_DOI: &str = "10.5281/zenodo.10519652";

/// Image sizes the MedMNIST+ release ships: `{flag}.npz` is 28 px, `{flag}_{size}.npz` the rest.
pub const MEDMNIST_SIZES: [u32; 4] = [28, 64, 128, 224];

/// The kind of prediction a dataset asks for, spelled as in `info.py`'s `task` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskType {
    MultiClass,
    BinaryClass,
    /// One 0/1 column per finding (chestmnist); `info.py` calls it "multi-label, binary-class".
    MultiLabel,
    /// Graded classes whose order matters (retinamnist); evaluated like multi-class.
    OrdinalRegression,
}

impl TaskType {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskType::MultiClass => "multi-class",
            TaskType::BinaryClass => "binary-class",
            TaskType::MultiLabel => "multi-label, binary-class",
            TaskType::OrdinalRegression => "ordinal-regression",
        }
    }
}

impl fmt::Display for TaskType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The imaging family a dataset belongs to; the paper reports support per modality.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Modality {
    Radiology,
    Microscopy,
    VisibleLight,
}

impl Modality {
    pub const ALL: [Modality; 3] = [Modality::Radiology, Modality::Microscopy, Modality::VisibleLight];

    /// The name scripts and reports use: `"radiology"`, `"microscopy"`, `"visible_light"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Modality::Radiology => "radiology",
            Modality::Microscopy => "microscopy",
            Modality::VisibleLight => "visible_light",
        }
    }

    /// How a prompt names the modality to the model.
    pub fn describe(self) -> &'static str {
        match self {
            Modality::Radiology => "radiology",
            Modality::Microscopy => "microscopy",
            Modality::VisibleLight => "visible-light",
        }
    }

    pub fn parse(name: &str) -> Result<Modality> {
        match name.trim().to_ascii_lowercase().replace(['-', ' '], "_").as_str() {
            "radiology" => Ok(Modality::Radiology),
            "microscopy" => Ok(Modality::Microscopy),
            "visible_light" => Ok(Modality::VisibleLight),
            _ => crate::bail!("unknown modality {name:?}: expected radiology, microscopy or visible_light"),
        }
    }
}

impl fmt::Display for Modality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Official sample counts of one dataset; the same at every image size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitSizes {
    pub train: usize,
    pub val: usize,
    pub test: usize,
}

/// One row of `info.py`'s `INFO` table.
#[derive(Debug)]
pub struct FlagInfo {
    pub flag: &'static str,
    pub task: TaskType,
    pub labels: &'static [&'static str],
    pub n_channels: u8,
    pub n_samples: SplitSizes,
}

impl FlagInfo {
    /// Classes for single-label tasks, findings for chestmnist.
    pub fn n_classes(&self) -> usize {
        self.labels.len()
    }

    /// Width of a row of the `*_labels` arrays: 14 for chestmnist, 1 otherwise.
    pub fn label_width(&self) -> usize {
        if self.task == TaskType::MultiLabel {
            self.labels.len()
        } else {
            1
        }
    }
}

const ORGAN_LABELS: &[&str] = &[
    "bladder",
    "femur-left",
    "femur-right",
    "heart",
    "kidney-left",
    "kidney-right",
    "liver",
    "lung-left",
    "lung-right",
    "pancreas",
    "spleen",
];

const fn sizes(train: usize, val: usize, test: usize) -> SplitSizes {
    SplitSizes { train, val, test }
}

/// The twelve 2D datasets, in `info.py`'s order.
pub const MEDMNIST_2D: [FlagInfo; 12] = [
    FlagInfo {
        flag: "pathmnist",
        task: TaskType::MultiClass,
        labels: &[
            "adipose",
            "background",
            "debris",
            "lymphocytes",
            "mucus",
            "smooth muscle",
            "normal colon mucosa",
            "cancer-associated stroma",
            "colorectal adenocarcinoma epithelium",
        ],
        n_channels: 3,
        n_samples: sizes(89996, 10004, 7180),
    },
    FlagInfo {
        flag: "chestmnist",
        task: TaskType::MultiLabel,
        labels: &[
            "atelectasis",
            "cardiomegaly",
            "effusion",
            "infiltration",
            "mass",
            "nodule",
            "pneumonia",
            "pneumothorax",
            "consolidation",
            "edema",
            "emphysema",
            "fibrosis",
            "pleural",
            "hernia",
        ],
        n_channels: 1,
        n_samples: sizes(78468, 11219, 22433),
    },
    FlagInfo {
        flag: "dermamnist",
        task: TaskType::MultiClass,
        labels: &[
            "actinic keratoses and intraepithelial carcinoma",
            "basal cell carcinoma",
            "benign keratosis-like lesions",
            "dermatofibroma",
            "melanoma",
            "melanocytic nevi",
            "vascular lesions",
        ],
        n_channels: 3,
        n_samples: sizes(7007, 1003, 2005),
    },
    FlagInfo {
        flag: "octmnist",
        task: TaskType::MultiClass,
        labels: &["choroidal neovascularization", "diabetic macular edema", "drusen", "normal"],
        n_channels: 1,
        n_samples: sizes(97477, 10832, 1000),
    },
    FlagInfo {
        flag: "pneumoniamnist",
        task: TaskType::BinaryClass,
        labels: &["normal", "pneumonia"],
        n_channels: 1,
        n_samples: sizes(4708, 524, 624),
    },
    FlagInfo {
        flag: "retinamnist",
        task: TaskType::OrdinalRegression,
        labels: &["0", "1", "2", "3", "4"],
        n_channels: 3,
        n_samples: sizes(1080, 120, 400),
    },
    FlagInfo {
        flag: "breastmnist",
        task: TaskType::BinaryClass,
        labels: &["malignant", "normal, benign"],
        n_channels: 1,
        n_samples: sizes(546, 78, 156),
    },
    FlagInfo {
        flag: "bloodmnist",
        task: TaskType::MultiClass,
        labels: &[
            "basophil",
            "eosinophil",
            "erythroblast",
            "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)",
            "lymphocyte",
            "monocyte",
            "neutrophil",
            "platelet",
        ],
        n_channels: 3,
        n_samples: sizes(11959, 1712, 3421),
    },
    FlagInfo {
        flag: "tissuemnist",
        task: TaskType::MultiClass,
        labels: &[
            "Collecting Duct, Connecting Tubule",
            "Distal Convoluted Tubule",
            "Glomerular endothelial cells",
            "Interstitial endothelial cells",
            "Leukocytes",
            "Podocytes",
            "Proximal Tubule Segments",
            "Thick Ascending Limb",
        ],
        n_channels: 1,
        n_samples: sizes(165466, 23640, 47280),
    },
    FlagInfo {
        flag: "organamnist",
        task: TaskType::MultiClass,
        labels: ORGAN_LABELS,
        n_channels: 1,
        n_samples: sizes(34581, 6491, 17778),
    },
    FlagInfo {
        flag: "organcmnist",
        task: TaskType::MultiClass,
        labels: ORGAN_LABELS,
        n_channels: 1,
        n_samples: sizes(13000, 2392, 8268),
    },
    FlagInfo {
        flag: "organsmnist",
        task: TaskType::MultiClass,
        labels: ORGAN_LABELS,
        n_channels: 1,
        n_samples: sizes(13940, 2452, 8829),
    },
];

/// The facts of one 2D flag (lower-case, as in the file names), or an error listing the known ones.
pub fn flag_info(flag: &str) -> Result<&'static FlagInfo> {
    let wanted = flag.trim().to_ascii_lowercase();
    MEDMNIST_2D.iter().find(|info| info.flag == wanted).ok_or_else(|| {
        let known: Vec<&str> = MEDMNIST_2D.iter().map(|i| i.flag).collect();
        crate::error::Error::msg(format!(
            "unknown MedMNIST flag {flag:?}: the 2D flags are {}",
            known.join(", ")
        ))
    })
}

/// The paper's grouping of the twelve datasets into three modalities.
///
/// radiology: chest and pneumonia (X-ray), breast (ultrasound), organ{a,c,s} (CT);
/// microscopy: path (histology), blood (cytology), tissue (fluorescence);
/// visible light / ophthalmic imaging: derma (dermatoscopy), retina (fundus photography) and oct
/// (optical coherence tomography, grouped with retina as ophthalmic imaging).
pub fn official_modality(flag: &str) -> Option<Modality> {
    match flag {
        "chestmnist" | "pneumoniamnist" | "breastmnist" | "organamnist" | "organcmnist" | "organsmnist" => {
            Some(Modality::Radiology)
        }
        "pathmnist" | "bloodmnist" | "tissuemnist" => Some(Modality::Microscopy),
        "dermamnist" | "retinamnist" | "octmnist" => Some(Modality::VisibleLight),
        _ => None,
    }
}

/// The modality of each flag: the official grouping unless a user overrides it (e.g. to study OCT
/// as radiology). Kept as one value passed to the loader so every dataset of a run agrees.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModalityTable {
    overrides: BTreeMap<String, Modality>,
}

impl ModalityTable {
    /// Reassign one flag; later calls win.
    pub fn with(mut self, flag: &str, modality: Modality) -> Self {
        self.overrides.insert(flag.trim().to_ascii_lowercase(), modality);
        self
    }

    pub fn get(&self, flag: &str) -> Result<Modality> {
        let flag = flag.trim().to_ascii_lowercase();
        match self.overrides.get(&flag).copied().or_else(|| official_modality(&flag)) {
            Some(m) => Ok(m),
            None => crate::bail!("no modality known for {flag:?}: add it to the modality table"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_has_a_modality_and_consistent_facts() {
        let table = ModalityTable::default();
        for info in &MEDMNIST_2D {
            assert!(table.get(info.flag).is_ok(), "{}", info.flag);
            assert!(info.n_channels == 1 || info.n_channels == 3);
            assert!(info.n_classes() >= 2);
        }
        assert_eq!(flag_info("chestmnist").unwrap().label_width(), 14);
        assert_eq!(flag_info("PathMNIST").unwrap().n_classes(), 9);
        assert_eq!(flag_info("retinamnist").unwrap().task, TaskType::OrdinalRegression);
    }

    #[test]
    fn modality_groups_match_the_paper() {
        let t = ModalityTable::default();
        let count = |m| MEDMNIST_2D.iter().filter(|i| t.get(i.flag).unwrap() == m).count();
        assert_eq!(
            (count(Modality::Radiology), count(Modality::Microscopy), count(Modality::VisibleLight)),
            (6, 3, 3)
        );
    }

    #[test]
    fn overrides_win_and_unknown_flags_are_named() {
        let t = ModalityTable::default().with("octmnist", Modality::Radiology);
        assert_eq!(t.get("octmnist").unwrap(), Modality::Radiology);
        assert!(flag_info("mnist").unwrap_err().to_string().contains("pathmnist"));
        assert!(Modality::parse("visible light").is_ok());
    }
}
