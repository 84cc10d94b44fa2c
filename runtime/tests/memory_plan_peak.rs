//! `memory_plan`'s activation estimate against the measured peak of a training pass on the CPU.
//!
//! A counting global allocator (this test binary only) records the bytes alive at the peak of
//! one forward-and-backward over a LoRA batch, above what was alive before it (the weights and
//! adapters), and those alive between the forward and the backward (the autograd graph). CPU
//! tensors are plain heap allocations, so these are what the plan models: the graph, counted op
//! by op, must be within 10%, the peak within 25%, with and without checkpointing, whole batches
//! and micro-batches (a backward per micro-batch, gradients accumulated), in f32 (the
//! CPU's fused kernels) and in bf16 (the elementary ops a GPU runs, except the CPU's fused
//! softmax on the f32 upcast), at shapes where attention or the MLP dominates.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use candle_core::{DType, Device};
use medbridge_runtime::models::qwen2_5_vl::{Config, LoraConfig, Qwen25VL, TokenIds};
use medbridge_runtime::train::grad::GradAccumulator;
use medbridge_runtime::train::memory_plan::{memory_plan, PlanMode, PlanRequest};
use medbridge_runtime::train::token_logprobs::{score_tokens, score_tokens_checkpointed, Sequence};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { System.dealloc(p, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A small model whose attention and MLP both matter at 256 tokens.
fn config() -> Config {
    let mut cfg = Config::tiny();
    let vocab = 512;
    cfg.text.vocab_size = vocab;
    cfg.tokens = TokenIds::at_top(vocab);
    cfg.text.hidden_size = 128;
    cfg.text.num_attention_heads = 4;
    cfg.text.num_key_value_heads = 2;
    cfg.text.mrope_section = vec![4, 6, 6];
    cfg.text.intermediate_size = 352;
    cfg.text.num_hidden_layers = 3;
    cfg
}

/// A batch: sequences, prompt tokens, completion tokens (all scored), and sequences per backward
/// (as GRPO's `micro_batch`; `None`: all at once).
#[derive(Clone, Copy)]
struct Shape(usize, usize, usize, Option<usize>);

/// Bytes alive at the peak of scored forwards and backwards over the batch, a micro-batch at a
/// time with the gradients accumulated, and those kept between a forward and its backward (the
/// graph, the largest micro-batch's), above those alive before (the accumulator's sums, which
/// the plan counts as gradients, included).
fn measured_peak(
    model: &Qwen25VL,
    Shape(seqs, prompt, completion, micro): Shape,
    checkpointed: bool,
) -> (usize, usize) {
    let rows: Vec<(Vec<u32>, Vec<bool>)> = (0..seqs)
        .map(|r| {
            let ids = (0..prompt + completion).map(|i| ((i * 7 + r * 13) % 400) as u32).collect();
            (ids, (0..prompt + completion).map(|i| i >= prompt).collect())
        })
        .collect();
    let seqs: Vec<Sequence> =
        rows.iter().map(|(ids, scored)| Sequence { ids, scored, pixel_values: None, grid: None }).collect();
    let vars = model.trainable();
    let mut acc = GradAccumulator::new(vars.iter().map(|(_, v)| v)).unwrap();
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let mut kept = 0;
    for part in seqs.chunks(micro.unwrap_or(seqs.len())) {
        let scores = match checkpointed {
            true => score_tokens_checkpointed(model, part, 0, 1.0).unwrap(),
            false => score_tokens(model, part, 0, 1.0).unwrap(),
        };
        let loss = scores.logprobs.mean_all().unwrap().neg().unwrap();
        kept = kept.max(LIVE.load(Ordering::Relaxed) - before);
        let grads = scores.backward(&loss).unwrap();
        assert!(grads.get(vars[0].1.as_tensor()).is_some());
        acc.add(&grads, vars.iter().map(|(_, v)| v), 1.0).unwrap();
    }
    (PEAK.load(Ordering::Relaxed) - before, kept)
}

fn check(shape: Shape, dtype: DType, checkpointing: bool) {
    let Shape(seqs, prompt, completion, micro_batch) = shape;
    let cfg = config();
    let model = Qwen25VL::new_random(&cfg, 1, dtype, &Device::Cpu)
        .unwrap()
        .with_lora(&LoraConfig::new(8, 16.0))
        .unwrap();
    // The first pass also fills the matmul kernels' per-thread packing buffers, which stay.
    measured_peak(&model, shape, checkpointing);
    let (measured, measured_kept) = measured_peak(&model, shape, checkpointing);
    let plan = memory_plan(
        &cfg,
        &PlanRequest {
            mode: PlanMode::Lora { rank: 8 },
            sequences: seqs,
            micro_batch,
            prompt_tokens: prompt,
            completion_tokens: completion,
            dtype,
            checkpointing,
            on_cpu: true,
            ..PlanRequest::default()
        },
    );
    let parts = plan.activation_parts;
    let what =
        format!("{seqs}x({prompt}+{completion}) by {micro_batch:?} {dtype:?}, checkpointing {checkpointing}");
    // The graph between forward and backward is counted op by op, so it must be close.
    let kept =
        parts.layer_inputs + if checkpointing { 0 } else { parts.layer_graphs } + parts.head + parts.shared;
    let kept_ratio = kept as f64 / measured_kept as f64;
    let ratio = plan.activations as f64 / measured as f64;
    eprintln!("{what}: graph planned {kept} measured {measured_kept} ({kept_ratio:.3}); peak planned {} measured {measured} ({ratio:.3}); {parts:?}", plan.activations);
    assert!(
        (0.9..=1.1).contains(&kept_ratio),
        "{what}: planned {kept} bytes of graph, measured {measured_kept}"
    );
    assert!(
        (0.75..=1.25).contains(&ratio),
        "{what}: planned {} bytes of activations, measured {measured}",
        plan.activations
    );
}

#[test]
fn activation_estimate_is_within_a_quarter_of_the_measured_peak() {
    // f32 takes the CPU's fused kernels; bf16 the elementary ops a GPU runs.
    for dtype in [DType::F32, DType::BF16] {
        for shape in [
            Shape(4, 192, 64, None),
            Shape(2, 448, 64, None),
            Shape(8, 64, 32, None),
            // GRPO's micro-batches: one backward's activations, the gradients accumulated.
            Shape(6, 192, 64, Some(2)),
            Shape(4, 192, 64, Some(1)),
        ] {
            check(shape, dtype, true);
            check(shape, dtype, false);
        }
    }
}
