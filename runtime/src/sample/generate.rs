//! Batched generation: many prompts per forward pass, K samples of a prompt from one prefill.
//!
//! Prompts are left-padded into one batch with an attention mask (the model gives each row its
//! own M-RoPE delta), prefilled once, and the cache is then copied into one row per sample. Each
//! step decodes only the rows still running: a row that stops is dropped from the cache, so the
//! work follows the live rows. Sample `i` of question `q` draws from
//! `SampleRng::new(seed, q, i)`, one number per token, so its tokens do not depend on the batch
//! size, the order of the prompts or the other samples.
//!
//! Each sample keeps the log-probability of every token under `softmax(logits / temperature)`:
//! the old-policy log-probs GRPO compares its training forward pass against.

use std::ops::Range;

use candle_core::{DType, Device, Tensor};

use super::logits::{choose, LogitsOptions};
use super::memory::{sampling_memory, PassShape, SamplingMemory};
use super::options::SamplerOptions;
use super::rng::SampleRng;
use crate::device::on_cpu_pool;
use crate::error::{Context, Result};
use crate::image::Image;
use crate::models::qwen2_5_vl::{Encoded, KvCache};
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
    on_cpu_pool(|| generate_on_pool(vlm, jobs, opts, cancel, progress))
}

fn generate_on_pool(
    vlm: &Vlm,
    jobs: &[Job],
    opts: &SamplerOptions,
    cancel: Option<&CancelFlag>,
    progress: ProgressMode,
) -> Result<Vec<Vec<Sample>>> {
    opts.validate()?;
    for row in jobs.iter().flat_map(|j| &j.rows) {
        row.logits.validate()?;
    }
    let stop = Stops {
        token_ids: opts.stop_token_ids.clone().unwrap_or_else(|| vlm.processor.eos_token_ids().to_vec()),
        strings: &opts.stop_strings,
    };
    let passes = plan(vlm, jobs, opts)?;
    let bar = progress.bar(jobs.len() as u64, "sampling");
    let mut out = Vec::with_capacity(jobs.len());
    for pass in passes {
        if let Some(flag) = cancel {
            flag.check(|| format!("sampling, before question {}", jobs[pass.start].request.question_id))?;
        }
        let chunk = jobs[pass.clone()]
            .iter()
            .map(|job| {
                let enc = vlm.encode(job.request.image.as_ref(), &job.request.prompt).with_context(|| {
                    format!("sampling question {}: encoding the prompt", job.request.question_id)
                })?;
                Ok((job, enc))
            })
            .collect::<Result<Vec<_>>>()?;
        run_chunk(vlm, &chunk, opts, &stop, cancel, &mut out)?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok(out)
}

/// The forward passes `jobs` will be decoded in, after checking, before any work, that every
/// prompt and its completion fit the model's context and that the call fits the memory budget.
fn plan(vlm: &Vlm, jobs: &[Job], opts: &SamplerOptions) -> Result<Vec<Range<usize>>> {
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
    let mut prompts = Vec::with_capacity(jobs.len());
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
        prompts.push((len, job.rows.len()));
    }
    let passes = opts.passes(&prompts);
    let shapes: Vec<PassShape> = passes
        .iter()
        .map(|p| PassShape {
            prompts: p.len(),
            rows: prompts[p.clone()].iter().map(|&(_, rows)| rows).sum(),
            longest_prompt: prompts[p.clone()].iter().map(|&(len, _)| len).max().unwrap_or(0),
        })
        .collect();
    let need = sampling_memory(text, vlm.model.dtype(), &shapes, opts.max_new_tokens);
    opts.memory.check("sampling", need.total(), &breakdown(&need, opts), &what_to_lower(&need, opts))?;
    Ok(passes)
}

/// What the estimate is made of, for the over-budget error.
fn breakdown(need: &SamplingMemory, opts: &SamplerOptions) -> String {
    let peak = need.peak_pass;
    format!(
        "KV cache {} for {} rows decoded at once from {} prompt(s) of up to {} tokens, each row holding {} positions; \
         logits and activations {}; {} kept samples of up to max_new_tokens = {} tokens, {}",
        Size(need.kv_cache),
        peak.rows,
        peak.prompts,
        peak.longest_prompt,
        need.positions,
        Size(need.activations),
        need.samples,
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
    if need.peak_pass.prompts > 1 {
        options.push(match opts.batch {
            Some(b) => format!("batch = {b} (prompts per forward pass)"),
            None => format!("max_batch_tokens = {} (positions per forward pass)", opts.max_batch_tokens),
        });
    }
    let last = options.pop().unwrap_or_default();
    if options.is_empty() {
        format!("lower {last}")
    } else {
        format!("lower {} or {last}", options.join(", "))
    }
}

struct Stops<'a> {
    token_ids: Vec<u32>,
    strings: &'a [String],
}

/// A row being decoded.
struct Row {
    job: usize,
    logits: LogitsOptions,
    rng: SampleRng,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    finish: Option<FinishReason>,
    /// Set when a stop string ended the row: the text before it.
    text: Option<String>,
}

/// Prefill the chunk's prompts together, then decode every row until all have stopped, pushing
/// one `Vec<Sample>` per job onto `out`.
fn run_chunk(
    vlm: &Vlm,
    chunk: &[(&Job, Encoded)],
    opts: &SamplerOptions,
    stop: &Stops,
    cancel: Option<&CancelFlag>,
    out: &mut Vec<Vec<Sample>>,
) -> Result<()> {
    let mut rows: Vec<Row> = Vec::new();
    for (j, (job, _)) in chunk.iter().enumerate() {
        for spec in &job.rows {
            rows.push(Row {
                job: j,
                logits: spec.logits,
                rng: SampleRng::new(opts.seed, &job.request.question_id, spec.sample_index),
                tokens: Vec::with_capacity(opts.max_new_tokens),
                logprobs: Vec::with_capacity(opts.max_new_tokens),
                finish: None,
                text: None,
            });
        }
    }
    if !rows.is_empty() {
        decode_rows(vlm, chunk, opts, stop, cancel, &mut rows)?;
    }
    let mut per_job: Vec<Vec<Sample>> = (0..chunk.len()).map(|_| Vec::new()).collect();
    for row in rows {
        let sample = finish_sample(vlm, row.tokens, row.logprobs, row.finish, row.text)?;
        per_job[row.job].push(sample);
    }
    out.extend(per_job);
    Ok(())
}

fn decode_rows(
    vlm: &Vlm,
    chunk: &[(&Job, Encoded)],
    opts: &SamplerOptions,
    stop: &Stops,
    cancel: Option<&CancelFlag>,
    rows: &mut [Row],
) -> Result<()> {
    let device = vlm.device();
    let (logits, cache) = prefill(vlm, chunk)?;
    let owners: Vec<usize> = rows.iter().map(|r| r.job).collect();
    let owner_ids = Tensor::new(owners.iter().map(|&j| j as u32).collect::<Vec<_>>(), device)?;
    let mut logits = logits.index_select(&owner_ids, 0)?;
    let mut cache = cache.select(&owners)?;
    // Indices into `rows` of the rows still decoding, in cache order.
    let mut live: Vec<usize> = (0..rows.len()).collect();
    for step in 0..opts.max_new_tokens {
        if let Some(flag) = cancel {
            flag.check(|| format!("sampling, at new token {step}"))?;
        }
        let values = logits.to_dtype(DType::F32)?.to_device(&Device::Cpu)?.to_vec2::<f32>()?;
        for (values, &r) in values.iter().zip(&live) {
            let row = &mut rows[r];
            crate::tensor::check_logits_finite(values, "sample", || {
                format!("new token {step} of question {:?} (row {r})", chunk[row.job].0.request.question_id)
            })?;
            let choice = choose(values, &row.logits, &mut row.rng)?;
            row.tokens.push(choice.token);
            row.logprobs.push(choice.logprob_tempered);
            if stop.token_ids.contains(&choice.token) {
                row.finish = Some(FinishReason::Stop);
            } else if let Some(text) = text_before_stop_string(vlm, &row.tokens, stop.strings)? {
                row.finish = Some(FinishReason::StopString);
                row.text = Some(text);
            }
        }
        if step + 1 == opts.max_new_tokens {
            break;
        }
        let keep: Vec<usize> = (0..live.len()).filter(|&i| rows[live[i]].finish.is_none()).collect();
        if keep.is_empty() {
            break;
        }
        if keep.len() < live.len() {
            cache = cache.select(&keep)?;
            live = keep.iter().map(|&i| live[i]).collect();
        }
        let last: Vec<u32> = live.iter().map(|&r| rows[r].tokens[rows[r].tokens.len() - 1]).collect();
        let next = Tensor::new(last, device)?.unsqueeze(1)?;
        logits = vlm.model.decode_step(&next, &mut cache)?.squeeze(1)?;
    }
    Ok(())
}

/// One forward pass over the left-padded prompts: last-position logits `[prompts, vocab]` and the
/// cache to decode from.
fn prefill(vlm: &Vlm, chunk: &[(&Job, Encoded)]) -> Result<(Tensor, KvCache)> {
    let device = vlm.device();
    let longest = chunk.iter().map(|(_, e)| e.input_ids.len()).max().unwrap_or(0);
    let pad = vlm.processor.endoftext_id();
    let (mut ids, mut mask) = (Vec::new(), Vec::new());
    let (mut pixels, mut grids) = (Vec::new(), Vec::new());
    for (_, enc) in chunk {
        let padding = longest - enc.input_ids.len();
        ids.extend(std::iter::repeat_n(pad, padding));
        ids.extend(&enc.input_ids);
        mask.extend(std::iter::repeat_n(0u32, padding));
        mask.extend(std::iter::repeat_n(1u32, enc.input_ids.len()));
        if let (Some(px), Some(grid)) = (&enc.pixel_values, enc.grid_thw) {
            pixels.push(px.clone());
            grids.push(grid);
        }
    }
    let ids = Tensor::from_vec(ids, (chunk.len(), longest), device)?;
    let mask = Tensor::from_vec(mask, (chunk.len(), longest), device)?;
    let pixels = if pixels.is_empty() { None } else { Some(Tensor::cat(&pixels, 0)?) };
    let (logits, cache) = vlm.model.prefill(&ids, Some(&mask), pixels.as_ref(), &grids)?;
    Ok((logits.narrow(1, longest - 1, 1)?.squeeze(1)?.contiguous()?, cache))
}

/// The text before the earliest stop string, once the decoded tokens contain one.
fn text_before_stop_string(vlm: &Vlm, tokens: &[u32], stops: &[String]) -> Result<Option<String>> {
    if stops.is_empty() {
        return Ok(None);
    }
    let text = vlm.processor.decode(tokens, true)?;
    let cut = stops.iter().filter_map(|s| text.find(s.as_str())).min();
    Ok(cut.map(|at| text[..at].to_string()))
}

fn finish_sample(
    vlm: &Vlm,
    token_ids: Vec<u32>,
    logprobs: Vec<f32>,
    finish: Option<FinishReason>,
    text: Option<String>,
) -> Result<Sample> {
    let finish_reason = finish.unwrap_or(FinishReason::Length);
    let text = match text {
        Some(text) => text,
        None => {
            let shown = if finish_reason == FinishReason::Stop {
                &token_ids[..token_ids.len() - 1]
            } else {
                &token_ids[..]
            };
            vlm.processor.decode(shown, true)?
        }
    };
    Ok(Sample { text, token_ids, logprobs, finish_reason })
}

#[cfg(test)]
pub(crate) mod tests {
    use candle_core::D;

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
