//! Token choice from one row of logits: temperature, top-k, top-p (nucleus) and min-p, then a
//! categorical draw from the sample's own random stream.
//!
//! The filters run in Hugging Face transformers' order (`GenerationMixin._get_logits_processor`),
//! which TRL's GRPO rollouts also use: temperature, then top-k, then top-p on the renormalised top-k
//! distribution, then min-p. Like transformers, top-k keeps every token tied with the k-th largest
//! logit, top-p keeps the smallest set of most likely tokens whose mass reaches p (always at least
//! one), and min-p drops tokens below `min_p` times the most likely token's probability. Note that
//! transformers' `GenerationConfig` defaults to `top_k = 50`; ours is off, so pass `top_k = 0` to
//! transformers when comparing.
//!
//! Temperature 0 is greedy: the first index of the largest logit.

use candle_core::{DType, Device, Tensor};

use super::rng::SampleRng;
use crate::bail;
use crate::error::{Context, Result};
use crate::tensor::first_argmax;

/// Below this weight relative to the top token, tokens are sorted for top-p only if the heavier
/// ones do not already reach p (the exact answer either way; it just avoids sorting the whole
/// vocabulary on every token).
const NUCLEUS_PREFILTER: f64 = 1e-6;

/// The token-choice options of the sampler.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogitsOptions {
    /// 0 = greedy; otherwise logits are divided by it.
    pub temperature: f32,
    /// Keep the k most likely tokens (and ties); 0 = off.
    pub top_k: usize,
    /// Keep the smallest most-likely set with mass ≥ top_p; 1 = off.
    pub top_p: f32,
    /// Drop tokens with probability < min_p × the top probability; 0 = off.
    pub min_p: f32,
}

impl Default for LogitsOptions {
    fn default() -> Self {
        LogitsOptions { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0 }
    }
}

impl LogitsOptions {
    pub fn greedy() -> Self {
        LogitsOptions { temperature: 0.0, ..Default::default() }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            bail!("sampler option temperature = {} must be a finite number ≥ 0", self.temperature);
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            bail!("sampler option top_p = {} must be in (0, 1]", self.top_p);
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            bail!("sampler option min_p = {} must be in [0, 1]", self.min_p);
        }
        Ok(())
    }
}

/// A chosen token and its log-probabilities under three distributions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenChoice {
    pub token: u32,
    /// Under the distribution actually sampled from (after temperature and all filters); 0 for
    /// greedy. The exact importance weight of the behaviour policy.
    pub logprob: f32,
    /// Under `softmax(logits / temperature)` without filters (raw logits when greedy). This is what
    /// TRL's GRPO recomputes as the old-policy log-probability, so it matches a training forward
    /// pass that divides logits by the same temperature.
    pub logprob_tempered: f32,
    /// Under `softmax(logits)`, temperature 1: the model's own probability.
    pub logprob_raw: f32,
}

/// The tokens the sampler may choose and their probabilities (summing to 1), in the order the
/// categorical draw walks them: vocabulary order without filters, most likely first after top-p.
pub fn sampling_distribution(logits: &[f32], options: &LogitsOptions) -> Result<Vec<(u32, f64)>> {
    options.validate()?;
    let max = check_logits(logits)?;
    if options.is_greedy() {
        return Ok(vec![(first_argmax(logits), 1.0)]);
    }
    let tempered = Tempered::new(logits, max, options.temperature);
    Ok(match filtered(logits, &tempered, options) {
        Some(kept) => kept,
        None => tempered
            .weights
            .iter()
            .enumerate()
            .filter(|w| *w.1 > 0.0)
            .map(|(i, w)| (i as u32, w / tempered.total))
            .collect(),
    })
}

/// Choose one token, taking exactly one draw from `rng` (greedy too, so token positions and stream
/// positions stay aligned).
pub fn choose(logits: &[f32], options: &LogitsOptions, rng: &mut SampleRng) -> Result<TokenChoice> {
    options.validate()?;
    let max = check_logits(logits)?;
    let u = rng.next_uniform();
    if options.is_greedy() {
        let token = first_argmax(logits);
        let raw = log_softmax_at(logits, max, token) as f32;
        return Ok(TokenChoice { token, logprob: 0.0, logprob_tempered: raw, logprob_raw: raw });
    }
    let tempered = Tempered::new(logits, max, options.temperature);
    let (token, p) = match filtered(logits, &tempered, options) {
        Some(kept) => draw(kept.into_iter(), u),
        None => draw(tempered.weights.iter().enumerate().map(|(i, &w)| (i as u32, w / tempered.total)), u),
    };
    let logprob_tempered = tempered.log_prob(token);
    let logprob_raw =
        if options.temperature == 1.0 { logprob_tempered } else { log_softmax_at(logits, max, token) };
    Ok(TokenChoice {
        token,
        logprob: p.ln() as f32,
        logprob_tempered: logprob_tempered as f32,
        logprob_raw: logprob_raw as f32,
    })
}

/// [`choose`] for each row of a `[batch, vocab]` tensor (any dtype or device; copied to the CPU as
/// f32), row `i` drawing from `rngs[i]`.
pub fn choose_batch(
    logits: &Tensor,
    options: &LogitsOptions,
    rngs: &mut [SampleRng],
) -> Result<Vec<TokenChoice>> {
    let (batch, _vocab) = logits.dims2().context("choose_batch: logits must be [batch, vocab]")?;
    if batch != rngs.len() {
        bail!("choose_batch: {batch} rows of logits but {} random streams", rngs.len());
    }
    let rows = logits.to_dtype(DType::F32)?.to_device(&Device::Cpu)?.to_vec2::<f32>()?;
    rows.iter().zip(rngs.iter_mut()).map(|(row, rng)| choose(row, options, rng)).collect()
}

/// `exp((logits - max) / temperature)` for the whole vocabulary (the top token weighs 1) and
/// their sum: one pass of exponentials serves the draw and the tempered log-probability.
struct Tempered {
    weights: Vec<f64>,
    total: f64,
}

impl Tempered {
    fn new(logits: &[f32], max: f32, temperature: f32) -> Self {
        let scale = 1.0 / f64::from(temperature);
        let weights: Vec<f64> = logits.iter().map(|&x| (f64::from(x - max) * scale).exp()).collect();
        let total = weights.iter().sum();
        Tempered { weights, total }
    }

    /// `log softmax(logits / temperature)[token]`.
    fn log_prob(&self, token: u32) -> f64 {
        self.weights[token as usize].ln() - self.total.ln()
    }
}

/// The normalised kept tokens when any filter is on; `None` means the whole tempered distribution.
fn filtered(logits: &[f32], tempered: &Tempered, options: &LogitsOptions) -> Option<Vec<(u32, f64)>> {
    let (top_k, top_p, min_p) = (options.top_k, f64::from(options.top_p), f64::from(options.min_p));
    let weights = &tempered.weights;
    let finite = weights.iter().filter(|&&w| w > 0.0).count();
    let top_k_on = top_k > 0 && top_k < finite;
    if !top_k_on && top_p >= 1.0 && min_p <= 0.0 {
        return None;
    }
    let collect = |keep: &dyn Fn(usize) -> bool| -> Vec<(u32, f64)> {
        (0..weights.len()).filter(|&i| weights[i] > 0.0 && keep(i)).map(|i| (i as u32, weights[i])).collect()
    };
    let mut kept = if top_k_on {
        // Everything tied with the k-th largest logit stays, as in transformers.
        let mut values = logits.to_vec();
        let (_, kth, _) = values.select_nth_unstable_by(top_k - 1, |a, b| b.total_cmp(a));
        let kth = *kth;
        collect(&|i| logits[i] >= kth)
    } else if top_p < 1.0 {
        // Tokens lighter than the pre-filter only matter if the heavier ones cannot reach p.
        let heavy = collect(&|i| weights[i] >= NUCLEUS_PREFILTER);
        if heavy.iter().map(|w| w.1).sum::<f64>() >= top_p * tempered.total {
            heavy
        } else {
            collect(&|_| true)
        }
    } else {
        // Only min-p: the top token weighs 1, so lighter tokens than min_p can never pass.
        collect(&|i| weights[i] >= min_p)
    };
    if top_p < 1.0 {
        let mass = if top_k_on { kept.iter().map(|w| w.1).sum() } else { tempered.total };
        kept = nucleus(kept, top_p * mass);
    }
    if min_p > 0.0 {
        let floor = min_p * kept.iter().map(|w| w.1).fold(0.0, f64::max);
        kept.retain(|w| w.1 >= floor);
    }
    let total: f64 = kept.iter().map(|w| w.1).sum();
    Some(kept.into_iter().map(|(i, w)| (i, w / total)).collect())
}

/// The smallest set of heaviest candidates whose weight reaches `target`, heaviest first (ties by
/// token id), at least one token.
fn nucleus(mut candidates: Vec<(u32, f64)>, target: f64) -> Vec<(u32, f64)> {
    candidates.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut cumulative = 0.0;
    let mut keep = candidates.len();
    for (i, w) in candidates.iter().enumerate() {
        cumulative += w.1;
        if cumulative >= target {
            keep = i + 1;
            break;
        }
    }
    candidates.truncate(keep.max(1));
    candidates
}

/// The categorical draw: the first token whose cumulative probability exceeds `u` (the last one
/// if rounding leaves the sum just below 1).
fn draw(distribution: impl Iterator<Item = (u32, f64)>, u: f64) -> (u32, f64) {
    let mut cumulative = 0.0;
    let mut last = (0, 0.0);
    for (token, p) in distribution {
        if p <= 0.0 {
            continue;
        }
        cumulative += p;
        last = (token, p);
        if u < cumulative {
            break;
        }
    }
    last
}

/// Rejects rows no token can be drawn from and returns the largest logit.
fn check_logits(logits: &[f32]) -> Result<f32> {
    if logits.is_empty() {
        bail!("sampler: empty logits row");
    }
    if logits.iter().any(|x| x.is_nan() || *x == f32::INFINITY) {
        bail!("sampler: logits contain NaN or +inf (the model produced invalid numbers)");
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        bail!("sampler: every logit is -inf, no token can be chosen");
    }
    Ok(max)
}

/// `log softmax(logits)[token]` at temperature 1, in f64.
fn log_softmax_at(logits: &[f32], max: f32, token: u32) -> f64 {
    let sum: f64 = logits.iter().map(|&x| f64::from(x - max).exp()).sum();
    f64::from(logits[token as usize] - max) - sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOGITS: [f32; 6] = [2.0, 1.0, 0.5, 0.0, -1.0, -3.0];

    fn softmax(x: &[f64]) -> Vec<f64> {
        let max = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = x.iter().map(|v| (v - max).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    }

    /// transformers' warpers written out literally on a full vector with -inf masking, as the
    /// independent reference for the filter order.
    fn reference(logits: &[f32], o: &LogitsOptions) -> Vec<f64> {
        let mut s: Vec<f64> = logits.iter().map(|&x| f64::from(x) / f64::from(o.temperature)).collect();
        if o.top_k > 0 {
            let mut sorted = s.clone();
            sorted.sort_by(|a, b| b.total_cmp(a));
            let kth = sorted[o.top_k.min(s.len()) - 1];
            s.iter_mut().filter(|v| **v < kth).for_each(|v| *v = f64::NEG_INFINITY);
        }
        if o.top_p < 1.0 {
            let p = softmax(&s);
            let mut order: Vec<usize> = (0..s.len()).collect();
            order.sort_by(|&a, &b| p[a].total_cmp(&p[b])); // ascending, as transformers does
            let mut cum = 0.0;
            for (pos, &i) in order.iter().enumerate() {
                cum += p[i];
                if cum <= 1.0 - f64::from(o.top_p) && pos + 1 < order.len() {
                    s[i] = f64::NEG_INFINITY;
                }
            }
        }
        if o.min_p > 0.0 {
            let p = softmax(&s);
            let top = p.iter().cloned().fold(0.0, f64::max);
            for (v, pi) in s.iter_mut().zip(&p) {
                if *pi < f64::from(o.min_p) * top {
                    *v = f64::NEG_INFINITY;
                }
            }
        }
        softmax(&s)
    }

    fn dense(distribution: &[(u32, f64)], vocab: usize) -> Vec<f64> {
        let mut out = vec![0.0; vocab];
        for &(i, p) in distribution {
            out[i as usize] = p;
        }
        out
    }

    fn cases() -> Vec<(&'static str, LogitsOptions)> {
        let d = LogitsOptions::default();
        vec![
            ("temperature 1", d),
            ("temperature 0.7", LogitsOptions { temperature: 0.7, ..d }),
            ("temperature 2", LogitsOptions { temperature: 2.0, ..d }),
            ("top_k 3", LogitsOptions { top_k: 3, ..d }),
            ("top_p 0.8", LogitsOptions { top_p: 0.8, ..d }),
            ("top_p 0.1", LogitsOptions { top_p: 0.1, ..d }),
            ("min_p 0.2", LogitsOptions { min_p: 0.2, ..d }),
            ("all four", LogitsOptions { temperature: 1.5, top_k: 4, top_p: 0.9, min_p: 0.05 }),
        ]
    }

    #[test]
    fn distributions_match_the_transformers_warpers() {
        for (name, o) in cases() {
            let got = dense(&sampling_distribution(&LOGITS, &o).unwrap(), LOGITS.len());
            let want = reference(&LOGITS, &o);
            assert!(got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-9), "{name}: {got:?} vs {want:?}");
        }
    }

    /// 200,000 draws per sampler; the total-variation distance from the target must be below 0.01
    /// (its expected value here is about 0.002), and no token outside the target's support appears.
    #[test]
    fn draws_follow_the_target_distribution() {
        let draws = 200_000;
        for (name, o) in cases() {
            let want = reference(&LOGITS, &o);
            let mut counts = vec![0usize; LOGITS.len()];
            let mut rng = SampleRng::new(1, name, 0);
            for _ in 0..draws {
                counts[choose(&LOGITS, &o, &mut rng).unwrap().token as usize] += 1;
            }
            let tv: f64 =
                counts.iter().zip(&want).map(|(&c, p)| (c as f64 / draws as f64 - p).abs()).sum::<f64>()
                    / 2.0;
            assert!(tv < 0.01, "{name}: total variation {tv}");
            assert!(counts.iter().zip(&want).all(|(&c, &p)| p > 0.0 || c == 0), "{name}: {counts:?}");
        }
    }

    #[test]
    fn greedy_is_first_argmax_with_zero_sampling_logprob() {
        let logits = [0.1, 3.0, -2.0, 3.0];
        let mut rng = SampleRng::new(0, "q", 0);
        let c = choose(&logits, &LogitsOptions::greedy(), &mut rng).unwrap();
        assert_eq!((c.token, c.logprob), (1, 0.0));
        let want = softmax(&logits.map(f64::from))[1].ln();
        assert!((f64::from(c.logprob_raw) - want).abs() < 1e-6);
        assert_eq!(c.logprob_tempered, c.logprob_raw);
        assert_eq!(rng.draws(), 1, "greedy still advances the stream once");
    }

    #[test]
    fn logprobs_name_their_distributions() {
        let o = LogitsOptions { temperature: 0.5, top_k: 2, ..Default::default() };
        let c = choose(&LOGITS, &o, &mut SampleRng::new(3, "q", 0)).unwrap();
        let raw = softmax(&LOGITS.map(f64::from));
        let tempered = softmax(&LOGITS.map(|x| f64::from(x) / 0.5));
        let sampled = reference(&LOGITS, &o);
        let t = c.token as usize;
        assert!((f64::from(c.logprob_raw) - raw[t].ln()).abs() < 1e-6);
        assert!((f64::from(c.logprob_tempered) - tempered[t].ln()).abs() < 1e-6);
        assert!((f64::from(c.logprob) - sampled[t].ln()).abs() < 1e-6);
    }

    #[test]
    fn nucleus_prefilter_gives_the_full_sort_answer() {
        let mut rng = SampleRng::new(5, "vocab", 0);
        for spread in [0.5f32, 30.0] {
            let logits: Vec<f32> = (0..5000).map(|_| (rng.next_uniform() as f32 - 0.5) * spread).collect();
            for p in [0.05f32, 0.5, 0.9, 0.999] {
                let o = LogitsOptions { top_p: p, ..Default::default() };
                let got = dense(&sampling_distribution(&logits, &o).unwrap(), logits.len());
                let want = reference(&logits, &o);
                let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
                assert!(diff < 1e-9, "spread {spread} p {p}: {diff}");
            }
        }
    }

    #[test]
    fn masked_tokens_are_never_chosen_and_bad_input_is_refused() {
        let logits = [f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY];
        let d = sampling_distribution(&logits, &LogitsOptions { top_k: 2, ..Default::default() }).unwrap();
        assert_eq!(d, [(1, 1.0)]);
        assert!(sampling_distribution(&[f32::NAN, 1.0], &LogitsOptions::default()).is_err());
        assert!(sampling_distribution(&[], &LogitsOptions::default()).is_err());
        let err = LogitsOptions { top_p: 0.0, ..Default::default() }.validate().unwrap_err().to_string();
        assert!(err.contains("top_p"), "{err}");
        assert!(LogitsOptions { temperature: -1.0, ..Default::default() }.validate().is_err());
        assert!(LogitsOptions { min_p: 1.5, ..Default::default() }.validate().is_err());
    }

    /// Each row's choice depends only on its row and its own stream: a batch gives the same tokens
    /// as choosing row by row.
    #[test]
    fn batch_rows_match_single_rows() {
        let rows: Vec<f32> = (0..3).flat_map(|r| LOGITS.map(|x| x * (r as f32 + 1.0))).collect();
        let logits = Tensor::from_vec(rows, (3, 6), &Device::Cpu).unwrap();
        let o = LogitsOptions { temperature: 1.3, ..Default::default() };
        let streams = |order: &[u64]| order.iter().map(|&i| SampleRng::new(9, "q", i)).collect::<Vec<_>>();
        let forward: Vec<u32> = (0..50)
            .scan(streams(&[0, 1, 2]), |s, _| Some(choose_batch(&logits, &o, s).unwrap()))
            .flat_map(|c| c.into_iter().map(|c| c.token))
            .collect();
        let single: Vec<u32> = (0..50)
            .scan(streams(&[0, 1, 2]), |s, _| {
                Some(
                    (0..3)
                        .map(|r| choose(&LOGITS.map(|x| x * (r as f32 + 1.0)), &o, &mut s[r]).unwrap().token)
                        .collect::<Vec<_>>(),
                )
            })
            .flatten()
            .collect();
        assert_eq!(forward, single);
        assert!(choose_batch(&logits, &o, &mut streams(&[0, 1])).is_err());
    }
}
