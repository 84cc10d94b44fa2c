//! The `metrics` family: the statistics of support — the unbiased Pass@k estimator for now;
//! support reports arrive with `evaluate`.

use rhai::plugin::*;

use crate::error::IntoScript;

#[export_module]
pub mod metrics_api {
    /// The unbiased Pass@k of Chen et al. (2021) for `c` correct among `n` samples, in its
    /// stable product form: `pass_at_k(16, 3, 4)`.
    #[rhai_fn(return_raw)]
    pub fn pass_at_k(n: i64, c: i64, k: i64) -> Result<f64, Box<EvalAltResult>> {
        let count = |x: i64, name: &str| {
            usize::try_from(x).map_err(|_| {
                crate::error::script_msg(format!("pass_at_k: {name} must be non-negative, got {x}"))
            })
        };
        medbridge_runtime::metrics::pass_at_k::pass_at_k(count(n, "n")?, count(c, "c")?, count(k, "k")?)
            .script()
    }
}
