//! The sampling API every path uses (`sample`, `generate`, `evaluate`, GRPO rollouts): requests,
//! rows, samples, and the checks made before any work (options, context length, memory budget,
//! a request that cannot fit the KV budget even alone). The decoding itself is the rollout
//! engine's (`engine/`): continuous batching over a paged KV cache whose prompt blocks the K
//! samples of a prompt share.
//!
//! Sample `i` of question `q` draws from `SampleRng::new(seed, q, i)`, one number per token, so
//! its tokens do not depend on the batch size, the order of the prompts or the other samples.
//! Each sample keeps the log-probability of every token under `softmax(logits / temperature)`:
//! the old-policy log-probs GRPO compares its training forward pass against.

use super::engine::rows::Stops;
use super::engine::scheduler::Need;
use super::engine::{self, pool_blocks, EngineOptions, EngineStats, BLOCK_SIZE};
use super::logits::LogitsOptions;
use super::memory::{sampling_memory, EngineShape, SamplingMemory};
use super::options::SamplerOptions;
use crate::device::on_cpu_pool;
use crate::error::{Context, Result};
use crate::image::Image;
use crate::models::vlm::Vlm;
use crate::run::memory::Size;
use crate::run::{CancelFlag, ProgressMode};

/// One prompt to sample from; `question_id` keys the samples' random streams.
#[derive(Debug, Clone)]
pub struct SampleRequest {
    pub question_id: String,
    pub image: Option<Image>,
    pub prompt: String,
}

/// Why a sample ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// It produced a stop token (kept as its last token, left out of its text).
    Stop,
    /// It reached `max_new_tokens`.
    Length,
    /// Its text reached a stop string (the text is cut before it).
    StopString,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::StopString => "stop_string",
        }
    }
}

/// One generated completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Decoded without special tokens, cut before a stop string.
    pub text: String,
    /// Every generated token, the stop token included.
    pub token_ids: Vec<u32>,
    /// Per token, `log softmax(logits / temperature)` at the chosen id (raw logits when greedy).
    pub logprobs: Vec<f32>,
    pub finish_reason: FinishReason,
}

/// One row to decode from a prompt: how it chooses tokens and which random stream it uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowSpec {
    pub logits: LogitsOptions,
    pub sample_index: u64,
}

/// A prompt and the rows decoded from its one prefill.
#[derive(Debug, Clone)]
pub struct Job<'a> {
    pub request: &'a SampleRequest,
    pub rows: Vec<RowSpec>,
}

/// `opts.n` samples of each prompt, in prompt order, each in sample-index order.
pub fn sample(
    vlm: &Vlm,
    requests: &[SampleRequest],
    opts: &SamplerOptions,
    cancel: Option<&CancelFlag>,
    progress: ProgressMode,
) -> Result<Vec<Vec<Sample>>> {
    opts.validate()?;
    let rows: Vec<RowSpec> =
        (0..opts.n as u64).map(|sample_index| RowSpec { logits: opts.logits, sample_index }).collect();
    let jobs: Vec<Job> = requests.iter().map(|request| Job { request, rows: rows.clone() }).collect();
    generate(vlm, &jobs, opts, cancel, progress)
}

/// The rows of every job, in job order and row order. `opts` gives everything but the token
/// choice and the sample count, which come from each job's rows.
pub fn generate(
    vlm: &Vlm,
    jobs: &[Job],
    opts: &SamplerOptions,
    cancel: Option<&CancelFlag>,
    progress: ProgressMode,
) -> Result<Vec<Vec<Sample>>> {
    Ok(generate_with(vlm, jobs, opts, &engine_options(opts), cancel, progress)?.0)
}

/// How `opts` sets the engine: continuous batching, the in-place CPU kernel where it applies.
pub fn engine_options(opts: &SamplerOptions) -> EngineOptions {
    EngineOptions {
        block_size: BLOCK_SIZE,
        max_batch_tokens: opts.max_batch_tokens,
        max_seqs: opts.max_seqs,
        max_requests: opts.batch,
        continuous: true,
        cpu_kernel: true,
    }
}

/// [`generate`] under explicit engine options, with what the engine did.
pub fn generate_with(
    vlm: &Vlm,
    jobs: &[Job],
    opts: &SamplerOptions,
    engine_opts: &EngineOptions,
    cancel: Option<&CancelFlag>,
    progress: ProgressMode,
) -> Result<(Vec<Vec<Sample>>, EngineStats)> {
    on_cpu_pool(|| {
        opts.validate()?;
        for row in jobs.iter().flat_map(|j| &j.rows) {
            row.logits.validate()?;
        }
        let prompt_lens = plan(vlm, jobs, opts, engine_opts)?;
        let stops = Stops {
            token_ids: opts.stop_token_ids.clone().unwrap_or_else(|| vlm.processor.eos_token_ids().to_vec()),
            strings: &opts.stop_strings,
            max_new_tokens: opts.max_new_tokens,
        };
        let work = engine::Work { jobs, prompt_lens: &prompt_lens, seed: opts.seed, stops };
        let bar = progress.bar(jobs.len() as u64, "sampling");
        bar.inc(jobs.iter().filter(|j| j.rows.is_empty()).count() as u64);
        let done = engine::run(vlm, &work, engine_opts, cancel, &bar)?;
        bar.finish_and_clear();
        Ok(done)
    })
}

/// Every job's prompt length, after checking, before any work, that every prompt and its
/// completion fit the model's context, that every request fits the KV budget alone, and that
/// the call fits the memory budget.
fn plan(vlm: &Vlm, jobs: &[Job], opts: &SamplerOptions, engine_opts: &EngineOptions) -> Result<Vec<usize>> {
    // Positions past the model's context have no meaning for it, and a huge max_new_tokens would
    // size the KV cache past any memory: refuse both before sampling.
    let text = &vlm.model.config().text;
    let context = text.max_position_embeddings;
    if opts.max_new_tokens > context {
        crate::bail!(
            "sampler option max_new_tokens = {} is more than the model's context length of {context} tokens (max_position_embeddings)",
            opts.max_new_tokens
        );
    }
    let block = engine_opts.block_size;
    let mut lens = Vec::with_capacity(jobs.len());
    let mut needs = Vec::with_capacity(jobs.len());
    for job in jobs {
        let id = &job.request.question_id;
        let len = vlm
            .processor
            .prompt_len(job.request.image.as_ref(), &job.request.prompt)
            .with_context(|| format!("sampling question {id}: encoding the prompt"))?;
        if len + opts.max_new_tokens > context {
            crate::bail!(
                "sampling question {id}: a prompt of {len} tokens plus max_new_tokens = {} is more than the model's context length of {context} tokens (max_position_embeddings)",
                opts.max_new_tokens
            );
        }
        let need = Need::new(len, opts.max_new_tokens, block);
        if !job.rows.is_empty() && need.alone() * block > engine_opts.max_batch_tokens {
            crate::bail!(
                "sampling question {id}: a prompt of {len} tokens and one sample of up to max_new_tokens = {} tokens need {} KV positions ({} blocks of {block}), more than sampler option max_batch_tokens = {}; raise max_batch_tokens to at least {} or lower max_new_tokens",
                opts.max_new_tokens,
                need.alone() * block,
                need.alone(),
                engine_opts.max_batch_tokens,
                need.alone() * block
            );
        }
        lens.push(len);
        needs.push((need, job.rows.len()));
    }
    let rows: usize = jobs.iter().map(|j| j.rows.len()).sum();
    let shape = EngineShape {
        pool_blocks: pool_blocks(engine_opts, &needs),
        block_size: block,
        rows: rows.min(engine_opts.max_seqs),
        longest_prompt: lens.iter().copied().max().unwrap_or(0),
        samples: rows,
    };
    let need = sampling_memory(text, vlm.model.dtype(), &shape, opts.max_new_tokens);
    opts.memory.check("sampling", need.total(), &breakdown(&need, opts), &what_to_lower(&need, opts))?;
    Ok(lens)
}

/// What the estimate is made of, for the over-budget error.
fn breakdown(need: &SamplingMemory, opts: &SamplerOptions) -> String {
    let shape = need.shape;
    format!(
        "paged KV cache {} of {} blocks of {} positions (max_batch_tokens = {}); decode steps of up to {} rows (max_seqs = {}) and prefills of up to {} tokens {}; {} kept samples of up to max_new_tokens = {} tokens, {}",
        Size(need.kv_cache),
        shape.pool_blocks,
        shape.block_size,
        opts.max_batch_tokens,
        shape.rows,
        opts.max_seqs,
        shape.longest_prompt,
        Size(need.activations),
        shape.samples,
        opts.max_new_tokens,
        Size(need.records)
    )
}

/// The options that shrink the estimate, with their values.
fn what_to_lower(need: &SamplingMemory, opts: &SamplerOptions) -> String {
    let mut options = Vec::new();
    if opts.n > 1 {
        options.push(format!("n = {} (samples per prompt)", opts.n));
    }
    options.push(format!("max_new_tokens = {}", opts.max_new_tokens));
    if need.kv_cache.saturating_add(need.activations) > need.records {
        options.push(format!("max_batch_tokens = {} (KV positions held at once)", opts.max_batch_tokens));
        options.push(format!("max_seqs = {} (rows decoded at once)", opts.max_seqs));
    }
    let last = options.pop().unwrap_or_default();
    if options.is_empty() {
        format!("lower {last}")
    } else {
        format!("lower {} or {last}", options.join(", "))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use candle_core::{Device, Tensor, D};

    use super::*;

    fn tiny() -> Vlm {
        Vlm::new_preset("qwen2_5_vl_tiny", 3, &Device::Cpu).unwrap()
    }

    fn image(side: u32, shade: u8) -> Image {
        let pixels: Vec<u8> =
            (0..side * side * 3).map(|i| (i as u8).wrapping_mul(37).wrapping_add(shade)).collect();
        Image::new(side, side, 3, pixels).unwrap()
    }

    /// Prompts of different lengths, with images of different sizes and one without, so batches
    /// need left padding.
    pub(crate) fn requests() -> Vec<SampleRequest> {
        let texts = [
            "What is shown?",
            "Is there a lesion in this image? Answer yes or no.",
            "Grade it.",
            "A or B?",
            "Describe the tissue in one word.",
            "Which organ?",
        ];
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| SampleRequest {
                question_id: format!("q{i}"),
                image: (i != 3).then(|| image(28 + 14 * (i as u32 % 3), i as u8 * 40)),
                prompt: t.to_string(),
            })
            .collect()
    }

    fn opts(temperature: f32, n: usize, batch: usize) -> SamplerOptions {
        SamplerOptions {
            logits: LogitsOptions { temperature, ..Default::default() },
            n,
            max_new_tokens: 10,
            seed: 11,
            batch: Some(batch),
            ..Default::default()
        }
    }

    fn run(vlm: &Vlm, reqs: &[SampleRequest], o: &SamplerOptions) -> Vec<Vec<Sample>> {
        sample(vlm, reqs, o, None, ProgressMode::Quiet).unwrap()
    }

    #[test]
    fn greedy_sampling_equals_the_models_greedy_generation() {
        let vlm = tiny();
        let reqs = requests();
        let samples = run(&vlm, &reqs, &opts(0.0, 1, 4));
        for (req, got) in reqs.iter().zip(&samples) {
            let enc = vlm.encode(req.image.as_ref(), &req.prompt).unwrap();
            let grids: Vec<_> = enc.grid_thw.into_iter().collect();
            let ids = vlm
                .model
                .generate(
                    &enc.input_ids,
                    enc.pixel_values.as_ref(),
                    &grids,
                    10,
                    vlm.processor.eos_token_ids(),
                )
                .unwrap();
            assert_eq!(got[0].token_ids, ids, "{}", req.question_id);
            assert_eq!(got[0].text, vlm.generate_greedy(req.image.as_ref(), &req.prompt, 10).unwrap());
        }
    }

    fn assert_same(a: &[Vec<Sample>], b: &[Vec<Sample>]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
            assert_eq!(x.token_ids, y.token_ids);
            assert_eq!((&x.text, x.finish_reason), (&y.text, y.finish_reason));
            for (p, q) in x.logprobs.iter().zip(&y.logprobs) {
                assert!((p - q).abs() < 1e-4, "{p} vs {q}");
            }
        }
    }

    #[test]
    fn samples_do_not_depend_on_batch_size_or_order() {
        let vlm = tiny();
        let reqs = requests();
        let one = run(&vlm, &reqs, &opts(1.0, 4, 1));
        assert_same(&one, &run(&vlm, &reqs, &opts(1.0, 4, 3)));
        assert_same(&one, &run(&vlm, &reqs, &opts(1.0, 4, 8)));
        let budget = SamplerOptions { batch: None, max_batch_tokens: 700, ..opts(1.0, 4, 1) };
        assert_same(&one, &run(&vlm, &reqs, &budget));
        let reversed: Vec<SampleRequest> = reqs.iter().rev().cloned().collect();
        let mut back = run(&vlm, &reversed, &opts(1.0, 4, 3));
        back.reverse();
        assert_same(&one, &back);
        let distinct: std::collections::HashSet<&Vec<u32>> =
            one.iter().flatten().map(|s| &s.token_ids).collect();
        assert!(distinct.len() > one.len(), "samples of one prompt should differ");
    }

    #[test]
    fn one_shared_prefill_equals_separate_prefills() {
        let vlm = tiny();
        let reqs = requests();
        let o = opts(0.8, 5, 6);
        let shared = run(&vlm, &reqs, &o);
        let jobs: Vec<Job> = reqs
            .iter()
            .flat_map(|request| {
                (0..5).map(move |sample_index| Job {
                    request,
                    rows: vec![RowSpec { logits: o.logits, sample_index }],
                })
            })
            .collect();
        let separate =
            generate(&vlm, &jobs, &SamplerOptions { batch: Some(4), ..o.clone() }, None, ProgressMode::Quiet)
                .unwrap();
        let regrouped: Vec<Vec<Sample>> =
            separate.chunks(5).map(|c| c.iter().flatten().cloned().collect()).collect();
        assert_same(&shared, &regrouped);
    }

    #[test]
    fn logprobs_equal_a_full_forward_over_prompt_and_completion() {
        let vlm = tiny();
        let reqs = requests();
        let temperature = 0.7;
        let samples = run(&vlm, &reqs, &opts(temperature, 3, 3));
        for (req, group) in reqs.iter().zip(&samples) {
            let enc = vlm.encode(req.image.as_ref(), &req.prompt).unwrap();
            let grids: Vec<_> = enc.grid_thw.into_iter().collect();
            for s in group {
                let ids: Vec<u32> = enc.input_ids.iter().chain(&s.token_ids).copied().collect();
                let input = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
                let logits = vlm.model.forward(&input, enc.pixel_values.as_ref(), &grids).unwrap();
                let logp = candle_nn::ops::log_softmax(
                    &(logits.squeeze(0).unwrap() / temperature as f64).unwrap(),
                    D::Minus1,
                )
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
                let start = enc.input_ids.len() - 1;
                for (t, (&token, &lp)) in s.token_ids.iter().zip(&s.logprobs).enumerate() {
                    let want = logp[start + t][token as usize];
                    assert!((want - lp).abs() < 1e-4, "{}: token {t}: {lp} vs {want}", req.question_id);
                }
            }
        }
    }

    #[test]
    fn stop_tokens_stop_strings_and_length_end_samples() {
        let vlm = tiny();
        let reqs = &requests()[..1];
        let free = SamplerOptions { stop_token_ids: Some(vec![]), max_new_tokens: 12, ..opts(0.0, 1, 1) };
        let full = run(&vlm, reqs, &free).remove(0).remove(0);
        assert_eq!((full.token_ids.len(), full.finish_reason), (12, FinishReason::Length));

        let third = full.token_ids[2];
        let stopped = run(&vlm, reqs, &SamplerOptions { stop_token_ids: Some(vec![third]), ..free.clone() })
            .remove(0)
            .remove(0);
        let first = full.token_ids.iter().position(|&t| t == third).unwrap();
        assert_eq!(stopped.finish_reason, FinishReason::Stop);
        assert_eq!(stopped.token_ids, full.token_ids[..=first]);
        assert_eq!(stopped.text, vlm.processor.decode(&full.token_ids[..first], true).unwrap());

        let chars: Vec<char> = full.text.chars().collect();
        assert!(chars.len() >= 6, "{:?}", full.text);
        let needle: String = chars[3..5].iter().collect();
        let cut = run(&vlm, reqs, &SamplerOptions { stop_strings: vec![needle.clone()], ..free.clone() })
            .remove(0)
            .remove(0);
        assert_eq!(cut.finish_reason, FinishReason::StopString);
        assert_eq!(cut.text, full.text[..full.text.find(&needle).unwrap()]);
        assert!(full.token_ids.starts_with(&cut.token_ids) && cut.token_ids.len() < 12);

        let short = run(&vlm, reqs, &SamplerOptions { max_new_tokens: 3, ..free }).remove(0).remove(0);
        assert_eq!((short.token_ids.len(), short.finish_reason), (3, FinishReason::Length));
    }

    #[test]
    fn bad_options_fail_before_any_work() {
        let vlm = tiny();
        let err = sample(&vlm, &requests(), &opts(1.0, 0, 1), None, ProgressMode::Quiet).unwrap_err();
        assert!(err.to_string().contains("n = 0"), "{err}");
        let hot =
            SamplerOptions { logits: LogitsOptions { top_p: 0.0, ..Default::default() }, ..opts(1.0, 1, 1) };
        let err = sample(&vlm, &requests(), &hot, None, ProgressMode::Quiet).unwrap_err();
        assert!(err.to_string().contains("top_p"), "{err}");
        let flag = CancelFlag::new();
        flag.cancel();
        let err = sample(&vlm, &requests(), &opts(1.0, 1, 1), Some(&flag), ProgressMode::Quiet).unwrap_err();
        assert!(err.is_cancelled());
    }

    #[test]
    fn non_finite_logits_stop_sampling_with_an_error_naming_the_token() {
        let vlm = tiny();
        let broken = vlm.with_lora(&crate::models::qwen2_5_vl::LoraConfig::new(4, f64::NAN)).unwrap();
        for temperature in [0.0, 0.7] {
            let err = sample(&broken, &requests()[..2], &opts(temperature, 2, 4), None, ProgressMode::Quiet)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("sample: the model's logits are not finite at new token 0 of question \"q0\""),
                "{err}"
            );
            assert!(err.contains("(NaN); check the weights, the LoRA alpha or the dtype"), "{err}");
        }
    }
}
