//! The rollout engine: continuous batching over a paged, prefix-shared KV cache. It serves every
//! sampling path (`sample`, `generate`, `evaluate`, GRPO rollouts) through
//! [`super::generate::generate`].
//!
//! A request (a prompt and its rows, e.g. K samples) is prefilled once, alone: the vision tower
//! runs once per image, and the prompt's keys and values are written into fixed-size blocks of
//! one pool that its rows then share (copy-on-write of the partly filled last block at each row's
//! first write). Rows run in one decode step whatever their lengths, each at its own M-RoPE
//! position. When a row ends its blocks go back to the free list and the next waiting row is
//! admitted before the next step (its request prefilled first if it is new), under
//! `max_batch_tokens` KV positions and `max_seqs` rows (`scheduler.rs`).
//!
//! Sample i of a request draws from `SampleRng::new(seed, question id, i)`, one number per token,
//! so its tokens do not depend on what else runs beside it.
//!
//! | file | job |
//! | --- | --- |
//! | `blocks.rs` | block allocator (free list, reference counts) and block tables with copy-on-write |
//! | `pool.rs` | the per-layer key/value slot tensors; `kv_cache_bytes`, the cache size of a shape |
//! | `scheduler.rs` | the admission rule: rows, requests and blocks reserved at worst case |
//! | `attention.rs` | a decode step's attention over block tables: candle gather + mask, or the in-place f32 CPU kernel |
//! | `rows.rs` | one running sample: token choice, stops, the finished `Sample` |
//! | `tests.rs` | end to end: continuous admission mid-decode, fixed batching, refusals |

pub mod attention;
pub mod blocks;
pub mod pool;
pub mod rows;
pub mod scheduler;

use candle_core::{DType, Device, Tensor};
use indicatif::ProgressBar;

use super::generate::{Job, Sample};
use super::rng::SampleRng;
use crate::error::{Context, Result};
use crate::models::vlm::Vlm;
use crate::run::CancelFlag;
use attention::{PagedLayer, StepLayout};
use blocks::{BlockAllocator, BlockTable};
use pool::KvPool;
use rows::{Row, Stops};
use scheduler::{Limits, Need, Scheduler};

pub use pool::{kv_cache_bytes, BLOCK_SIZE};

/// How the engine batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineOptions {
    pub block_size: usize,
    /// KV positions the running set may hold (reserved at full length, in whole blocks).
    pub max_batch_tokens: usize,
    /// Rows decoded at once.
    pub max_seqs: usize,
    /// Requests live at once; `None` = no limit of its own.
    pub max_requests: Option<usize>,
    /// Admit rows as others end (`true`), or only into an empty running set (the benchmark's
    /// fixed-batch baseline).
    pub continuous: bool,
    /// Use the in-place CPU attention kernel where the pool is f32 on the CPU.
    pub cpu_kernel: bool,
}

/// What a run did, for tests and the benchmark.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub prefills: usize,
    pub decode_steps: usize,
    /// Rows admitted while others were mid-decode (continuous batching at work).
    pub rows_admitted_mid_decode: usize,
    pub peak_rows: usize,
    pub pool_blocks: usize,
    /// Bytes of the KV pool.
    pub kv_cache_bytes: u64,
}

/// A request's state between its prefill and its last row's end.
struct Live {
    /// The prompt's blocks, held for rows not admitted yet.
    prompt: BlockTable,
    /// The logits after the prompt, from which each row draws its first token.
    first_logits: Vec<f32>,
    rope_delta: i64,
}

/// A request's place in the run.
struct Request {
    need: Need,
    next_row: usize,
    rows_running_or_waiting: usize,
    live: Option<Live>,
}

/// The pool's size: the budget, or less when every request at once needs less.
pub fn pool_blocks(opts: &EngineOptions, needs: &[(Need, usize)]) -> usize {
    let all: usize = needs.iter().map(|(n, rows)| n.prompt_blocks + rows * n.row_blocks).sum();
    (opts.max_batch_tokens / opts.block_size).min(all)
}

/// What one call decodes: the jobs, their prompt lengths (checked by the caller against the
/// context), the seed of the rows' random streams and what ends a row.
pub struct Work<'a> {
    pub jobs: &'a [Job<'a>],
    pub prompt_lens: &'a [usize],
    pub seed: u64,
    pub stops: Stops<'a>,
}

/// Decode every job's rows; `bar` counts finished jobs. Rows come back in job and row order.
pub fn run(
    vlm: &Vlm,
    work: &Work,
    opts: &EngineOptions,
    cancel: Option<&CancelFlag>,
    bar: &ProgressBar,
) -> Result<(Vec<Vec<Sample>>, EngineStats)> {
    let (jobs, seed, stops) = (work.jobs, work.seed, &work.stops);
    let text = &vlm.model.config().text;
    let device = vlm.device().clone();
    let mut requests: Vec<Request> = jobs
        .iter()
        .zip(work.prompt_lens)
        .map(|(job, &len)| Request {
            need: Need::new(len, stops.max_new_tokens, opts.block_size),
            next_row: 0,
            rows_running_or_waiting: job.rows.len(),
            live: None,
        })
        .collect();
    let needs: Vec<(Need, usize)> = requests.iter().zip(jobs).map(|(r, j)| (r.need, j.rows.len())).collect();
    let blocks = pool_blocks(opts, &needs);
    let mut stats = EngineStats { pool_blocks: blocks, ..Default::default() };
    let pool = KvPool::new(text, vlm.model.dtype(), &device, blocks * opts.block_size)?;
    stats.kv_cache_bytes = pool.bytes();
    let mut alloc = BlockAllocator::new(blocks, opts.block_size);
    let mut sched = Scheduler::new(Limits {
        budget_blocks: blocks,
        max_seqs: opts.max_seqs,
        max_requests: opts.max_requests,
        continuous: opts.continuous,
    });
    let mut out: Vec<Vec<Option<Sample>>> = jobs.iter().map(|j| vec![None; j.rows.len()]).collect();
    let mut running: Vec<Row> = Vec::new();
    // Requests before `head` have admitted all their rows.
    let mut head = 0;
    loop {
        sched.begin_round();
        // Rows that were decoding before this round: admissions beside them are mid-decode.
        let decoding = running.len();
        while head < jobs.len() {
            let req = &mut requests[head];
            if req.next_row == jobs[head].rows.len() {
                head += 1;
                continue;
            }
            let new_request = req.live.is_none();
            if !sched.can_admit(req.need, new_request) {
                break;
            }
            if let Some(flag) = cancel {
                flag.check(|| format!("sampling, before question {}", jobs[head].request.question_id))?;
            }
            sched.admit(req.need, new_request);
            if new_request {
                let planned = work.prompt_lens[head];
                req.live = Some(prefill(vlm, &jobs[head], planned, &pool, &mut alloc, &device)?);
                stats.prefills += 1;
            }
            if decoding > 0 {
                stats.rows_admitted_mid_decode += 1;
            }
            let index = req.next_row;
            req.next_row += 1;
            let live = req.live.as_mut().expect("prefilled above");
            let spec = jobs[head].rows[index];
            let mut row = Row {
                job: head,
                index,
                logits: spec.logits,
                rng: SampleRng::new(seed, &jobs[head].request.question_id, spec.sample_index),
                table: live.prompt.share(&mut alloc),
                rope_delta: live.rope_delta,
                tokens: Vec::with_capacity(stops.max_new_tokens),
                logprobs: Vec::with_capacity(stops.max_new_tokens),
                finish: None,
                text: None,
            };
            let qid = &jobs[head].request.question_id;
            row.push(vlm, &live.first_logits, stops, || {
                format!("new token 0 of question {qid:?} (row {index})")
            })?;
            if req.next_row == jobs[head].rows.len() {
                live.prompt.release(&mut alloc);
            }
            if row.finish.is_some() {
                finish(vlm, row, &mut requests, &mut sched, &mut alloc, &mut out, bar)?;
            } else {
                running.push(row);
            }
        }
        stats.peak_rows = stats.peak_rows.max(running.len());
        if running.is_empty() {
            if head == jobs.len() {
                break;
            }
            crate::bail!("the sampling engine could not admit question {}", jobs[head].request.question_id);
        }
        if let Some(flag) = cancel {
            flag.check(|| format!("sampling, at decode step {}", stats.decode_steps))?;
        }
        let logits = decode_step(vlm, &mut running, &pool, &mut alloc, opts, &device)?;
        stats.decode_steps += 1;
        let mut still = Vec::with_capacity(running.len());
        for (mut row, values) in running.drain(..).zip(&logits) {
            let (qid, step, index) = (&jobs[row.job].request.question_id, row.tokens.len(), row.index);
            row.push(vlm, values, stops, || format!("new token {step} of question {qid:?} (row {index})"))?;
            if row.finish.is_some() {
                finish(vlm, row, &mut requests, &mut sched, &mut alloc, &mut out, bar)?;
            } else {
                still.push(row);
            }
        }
        running = still;
    }
    let samples =
        out.into_iter().map(|rows| rows.into_iter().map(|s| s.expect("every row ran")).collect()).collect();
    Ok((samples, stats))
}

/// Prefill one request alone and store its prompt's keys and values in fresh blocks.
/// `planned` is the prompt length its blocks were reserved for.
fn prefill(
    vlm: &Vlm,
    job: &Job,
    planned: usize,
    pool: &KvPool,
    alloc: &mut BlockAllocator,
    device: &Device,
) -> Result<Live> {
    let id = &job.request.question_id;
    let enc = vlm
        .encode(job.request.image.as_ref(), &job.request.prompt)
        .with_context(|| format!("sampling question {id}: encoding the prompt"))?;
    let len = enc.input_ids.len();
    if len != planned {
        crate::bail!(
            "sampling question {id}: the prompt encodes to {len} tokens, but the processor counted {planned} when the KV cache was planned"
        );
    }
    let ids = Tensor::new(enc.input_ids.as_slice(), device)?.unsqueeze(0)?;
    let grids: Vec<_> = enc.grid_thw.into_iter().collect();
    let (hidden, cache) = vlm.model.prefill_hidden(&ids, None, enc.pixel_values.as_ref(), &grids)?;
    let logits = vlm.model.lm_head(&hidden.narrow(1, len - 1, 1)?)?;
    let first_logits =
        logits.flatten_all()?.to_dtype(DType::F32)?.to_device(&Device::Cpu)?.to_vec1::<f32>()?;
    let mut prompt = BlockTable::default();
    let mut slots = Vec::with_capacity(len);
    for _ in 0..len {
        slots.push(prompt.append_slot(alloc)?.0);
    }
    let index = pool.write_index(&slots, device)?;
    for (layer, kv) in cache.layers.iter().enumerate() {
        let (k, v) = kv.filled()?.context("the prefill left a layer's cache empty")?;
        let rows = |t: Tensor| -> Result<Tensor> { Ok(t.squeeze(0)?.transpose(0, 1)?.contiguous()?) };
        pool.write(layer, &index, &rows(k)?, &rows(v)?)?;
    }
    Ok(Live { prompt, first_logits, rope_delta: cache.rope_deltas()[0] })
}

/// Feed every running row its last token: logits `[rows][vocab]` on the host.
fn decode_step(
    vlm: &Vlm,
    running: &mut [Row],
    pool: &KvPool,
    alloc: &mut BlockAllocator,
    opts: &EngineOptions,
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    let size = opts.block_size;
    let (mut write, mut positions, mut ids) = (Vec::new(), Vec::new(), Vec::new());
    let (mut copy_from, mut copy_to) = (Vec::new(), Vec::new());
    for row in running.iter_mut() {
        let (slot, copy) = row.table.append_slot(alloc)?;
        if let Some(c) = copy {
            copy_from.extend((0..c.filled as u32).map(|o| c.from * size as u32 + o));
            copy_to.extend((0..c.filled as u32).map(|o| c.to * size as u32 + o));
        }
        write.push(slot);
        positions.push((row.table.len() - 1) as i64 + row.rope_delta);
        ids.push(*row.tokens.last().expect("a running row has a token"));
    }
    pool.copy(&copy_from, &copy_to)?;
    let read = running.iter().map(|r| r.table.slots(size).collect()).collect();
    let step = StepLayout::new(pool, &write, read, opts.cpu_kernel, device)?;
    let mut layers: Vec<PagedLayer> =
        (0..pool.layers.len()).map(|layer| PagedLayer { pool, layer, step: &step }).collect();
    let logits = vlm.model.decode_rows(&ids, &positions, &mut layers)?;
    Ok(logits.to_dtype(DType::F32)?.to_device(&Device::Cpu)?.to_vec2::<f32>()?)
}

/// Store a finished row's sample and give back its blocks and reservation.
fn finish(
    vlm: &Vlm,
    mut row: Row,
    requests: &mut [Request],
    sched: &mut Scheduler,
    alloc: &mut BlockAllocator,
    out: &mut [Vec<Option<Sample>>],
    bar: &ProgressBar,
) -> Result<()> {
    row.table.release(alloc);
    let req = &mut requests[row.job];
    sched.finish_row(req.need);
    req.rows_running_or_waiting -= 1;
    if req.rows_running_or_waiting == 0 {
        sched.finish_request(req.need);
        req.live = None;
        bar.inc(1);
    }
    let (job, index) = (row.job, row.index);
    out[job][index] = Some(row.into_sample(vlm)?);
    Ok(())
}

#[cfg(test)]
mod tests;
