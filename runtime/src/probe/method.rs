//! One entry point for every probe method, so a binding turns a script's `method` option into a
//! variant and runs it on features extracted once (`features::probe_inputs`).

use crate::error::{Context, Result};
use crate::probe::bn_linear::{bn_linear_probe, BnLinearOptions};
use crate::probe::features::ProbeInputs;
use crate::probe::knn::{knn_probe, KnnOptions};
use crate::probe::logistic::{linear_probe, ProbeOptions};
use crate::probe::report::ProbeReport;
use crate::run::CancelFlag;

/// A probe and its settings.
#[derive(Clone, Debug, PartialEq)]
pub enum ProbeMethod {
    /// Logistic regression, L2 chosen on a validation split (medbridge's own).
    Logistic(ProbeOptions),
    /// The paper's `linprobe.py`: BatchNorm + linear layer, SGD with a cosine schedule.
    BnLinear(BnLinearOptions),
    /// The paper's `knn.py`: cosine k-nearest neighbours, majority vote.
    Knn(KnnOptions),
}

impl ProbeMethod {
    pub fn name(&self) -> &'static str {
        match self {
            ProbeMethod::Logistic(_) => "logistic",
            ProbeMethod::BnLinear(_) => "bn_linear",
            ProbeMethod::Knn(_) => "knn",
        }
    }

    /// Fit on `inputs`' training features and score its test features, polling `cancel` at every
    /// optimisation step (every block of test rows for kNN).
    pub fn run(&self, inputs: &ProbeInputs, cancel: Option<&CancelFlag>) -> Result<ProbeReport> {
        let i = inputs;
        let (x, y, tx, ty) = (&i.train, &i.train_labels, &i.test, &i.test_labels);
        match self {
            ProbeMethod::Logistic(o) => linear_probe(x, y, tx, ty, i.task, i.n_classes, o, cancel),
            ProbeMethod::BnLinear(o) => bn_linear_probe(x, y, tx, ty, i.task, i.n_classes, o, cancel),
            ProbeMethod::Knn(o) => knn_probe(x, y, tx, ty, i.task, i.n_classes, o, cancel),
        }
        .with_context(|| format!("{} probe on {}", self.name(), i.flag))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::data::medmnist_info::TaskType;
    use crate::probe::reference_fixture;

    fn inputs() -> ProbeInputs {
        let r = reference_fixture::load();
        let dev = Device::Cpu;
        ProbeInputs {
            flag: "reference".into(),
            task: TaskType::MultiClass,
            n_classes: r.classes,
            train: r.train.features(r.dim, &dev),
            train_labels: r.train.label_rows(),
            test: r.test.features(r.dim, &dev),
            test_labels: r.test.label_rows(),
        }
    }

    #[test]
    fn every_method_reports_acc_and_auc_on_the_same_features() {
        let inputs = inputs();
        let methods = [
            ProbeMethod::Logistic(ProbeOptions { l2: vec![1e-2], ..Default::default() }),
            ProbeMethod::BnLinear(BnLinearOptions { batch: 16, ..Default::default() }),
            ProbeMethod::Knn(KnnOptions::default()),
        ];
        for method in &methods {
            let report = method.run(&inputs, None).unwrap();
            assert_eq!(report.method, method.name());
            assert_eq!((report.n_train, report.n_test, report.dim), (64, 32, 16));
            // Six classes: chance is 1/6, and the features carry the class.
            assert!(report.acc > 0.3 && report.auc > 0.6 && report.top5.is_some(), "{report:?}");
        }
    }

    #[test]
    fn errors_name_the_method_and_the_flag() {
        let err =
            ProbeMethod::Knn(KnnOptions { k: 100, ..Default::default() }).run(&inputs(), None).unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("knn probe on reference") && err.contains("k = 100"), "{err}");
    }
}
