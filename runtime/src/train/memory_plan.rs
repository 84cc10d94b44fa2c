//! `memory_plan`: the bytes a training run needs, by part, before it runs — so a user can see
//! whether LoRA GRPO of the 7B model with G = 8 and 2,048-token completions fits one GPU, and
//! which knob (checkpointing, group, completion length) to turn when it does not.
//!
//! The parts: weights (base in the run's dtype, LoRA adapters in f32), gradients (f32
//! accumulators plus the backward's own copy in the parameter dtype), AdamW's state (an f32
//! master, first and second moments), the KV cache of the rollouts ([`kv_cache_bytes`]), and the
//! activations of one backward over a step's sequences — or over one micro-batch of them, when the
//! step scores them a micro-batch at a time (GRPO's `micro_batch`).
//!
//! Activations are counted op by op from what candle's autograd keeps: every tensor that is an
//! input of a recorded op stays alive until the backward is done with its graph (the test finds
//! this count within 1% of the bytes alive between forward and backward). Which tensors
//! exist depends on the kernels a step runs ([`Kernels`]): half precision adds the f32 copies
//! of the norms, the softmax and every LoRA branch (adapters compute in f32) and their casts
//! back; the CPU's fused f32 kernels keep only their inputs and outputs; a GPU composes the
//! softmax from elementary ops. On top of the graph: the gradients of frozen weights, which
//! candle's matmul backward computes and keeps (one layer's with checkpointing, which drops
//! them per layer; every layer's and the LM head's without), and the gradients in flight while
//! the backward crosses a layer (its MLP or its attention, whichever holds more). A test
//! holds the estimate within 25% of the measured peak on the CPU (it reads 0.89–1.04), in f32
//! and bf16, with and without checkpointing. The GPU's composed softmax is counted from its
//! ops but not measured here.

use candle_core::DType;

use crate::models::qwen2_5_vl::Config;

/// What is trained.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PlanMode {
    /// Adapters of this rank on the seven projections of every decoder layer.
    Lora { rank: usize },
    /// Every language-model weight.
    Full,
}

/// The run to plan for.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanRequest {
    pub mode: PlanMode,
    /// Sequences a step trains on in this process (GRPO: prompts × group; SFT: the micro-batch).
    pub sequences: usize,
    /// Sequences scored per backward (GRPO's `micro_batch`); `None`: all of `sequences` at once.
    /// Activations are one micro-batch's; gradients accumulate in the f32 sums counted anyway.
    pub micro_batch: Option<usize>,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// The weights' and activations' dtype.
    pub dtype: DType,
    /// Per-layer activation checkpointing of the autograd pass.
    pub checkpointing: bool,
    /// Sequences sampled at once for rollouts (their KV cache); 0 for SFT.
    pub rollout_sequences: usize,
    /// Whether AdamW's state is counted (false: plain SGD keeps none).
    pub adamw: bool,
    /// Planning for the CPU, whose f32 kernels are fused (see [`Kernels`]). The plan counts the
    /// autograd pass; CPU f32 training with LoRA takes the hand-derived pass, which keeps less.
    pub on_cpu: bool,
}

impl Default for PlanRequest {
    fn default() -> Self {
        Self {
            mode: PlanMode::Lora { rank: 8 },
            sequences: 1,
            micro_batch: None,
            prompt_tokens: 0,
            completion_tokens: 0,
            dtype: DType::F32,
            checkpointing: true,
            rollout_sequences: 0,
            adamw: true,
            on_cpu: false,
        }
    }
}

/// Bytes by part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryPlan {
    pub weights: u64,
    pub gradients: u64,
    pub optimizer_state: u64,
    pub activations: u64,
    pub kv_cache: u64,
    pub total: u64,
    /// What `activations` is made of.
    pub activation_parts: ActivationParts,
}

impl MemoryPlan {
    /// The most one step holds at once: rollouts and the backward do not overlap, so the larger
    /// of the KV cache and the activations, beside the weights, gradients and optimizer state.
    /// (`total` adds both, an upper bound.)
    pub fn peak(&self) -> u64 {
        self.weights + self.gradients + self.optimizer_state + self.activations.max(self.kv_cache)
    }
}

/// The activations of one backward, by part; they sum to [`MemoryPlan::activations`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ActivationParts {
    /// Each decoder layer's input and the last one's output, kept by the checkpointed forward
    /// (0 without checkpointing).
    pub layer_inputs: u64,
    /// The decoder layers' autograd graphs alive at the peak: one recomputed layer with
    /// checkpointing, every layer without.
    pub layer_graphs: u64,
    /// The final norm, the LM head at the scored tokens and their log-softmax.
    pub head: u64,
    /// The attention mask, the rotary tables and, without checkpointing, the embeddings.
    pub shared: u64,
    /// Gradients candle's backward computes for what nothing trains (frozen weights, the
    /// mask's broadcast) and keeps to the end of a backward.
    pub untracked_gradients: u64,
    /// Gradients alive while the backward crosses one layer: the larger of its MLP and its
    /// attention.
    pub backward_in_flight: u64,
}

impl ActivationParts {
    fn total(&self) -> u64 {
        self.layer_inputs
            + self.layer_graphs
            + self.head
            + self.shared
            + self.untracked_gradients
            + self.backward_in_flight
    }
}

/// The KV cache of `sequences` sampled sequences of `tokens` positions each (prompt plus
/// completion) in `dtype`, counted as the rollout engine sizes its paged cache: every sequence at
/// full length in whole blocks. An upper bound of what the engine holds for them, since the K
/// samples of a prompt share its blocks (`sample::engine` tests it against a real pool).
pub fn kv_cache_bytes(cfg: &Config, sequences: usize, tokens: usize, dtype: DType) -> u64 {
    crate::sample::kv_cache_bytes(&cfg.text, dtype, crate::sample::BLOCK_SIZE, sequences, tokens)
}

/// Which kernels the autograd pass runs, which decides the tensors it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernels {
    /// f32 on the CPU: fused norm, rotary and scaled-masked softmax (`ops/fused.rs`), each
    /// keeping its input and output only.
    CpuF32,
    /// Half precision on the CPU: elementary norm and rotary, the attention softmax fused on
    /// its f32 upcast.
    CpuHalf,
    /// A GPU: every op elementary, the softmax composed (shift, exp, divide) in f32.
    Elementary,
}

impl Kernels {
    pub fn of(on_cpu: bool, dtype: DType) -> Self {
        match (on_cpu, dtype) {
            (true, DType::F32) => Kernels::CpuF32,
            (true, _) => Kernels::CpuHalf,
            (false, _) => Kernels::Elementary,
        }
    }
}

/// Widths of the model and the byte sizes of a run, for the per-op counts below.
struct Sizes {
    h: u64,
    kv: u64,
    i: u64,
    v: u64,
    /// LoRA rank, when adapters are trained.
    rank: Option<u64>,
    /// Bytes of the run's dtype.
    s: u64,
    /// Half precision: f32 copies (upcasts, the LoRA branch) and casts back exist.
    half: bool,
    kernels: Kernels,
}

impl Sizes {
    /// Bytes per token one projection keeps: `x Wᵀ` (and with a bias the sum), and with an
    /// adapter its f32 branch: the input's f32 copy (half precision only), `x Aᵀ`, `· Bᵀ`,
    /// `· scale`, the cast back (half only) and the sum with the base output.
    fn linear(&self, d_in: u64, d_out: u64, bias: bool, input_tracks: bool) -> u64 {
        let mut bytes = d_out * self.s;
        // Without a tracked input the bias add is not recorded, so `x Wᵀ` is freed.
        if bias && input_tracks {
            bytes += d_out * self.s;
        }
        if let Some(r) = self.rank {
            let copies = if self.half { d_in * 4 + d_out * self.s } else { 0 };
            bytes += copies + r * 4 + 2 * d_out * 4 + d_out * self.s;
        }
        bytes
    }

    /// Bytes per token an RMSNorm of width `w` keeps. Elementary: the f32 upcast (half only),
    /// its square, the per-token mean, shifted and square-rooted, the quotient, its cast back
    /// (half only) and the product with the weight. Fused: its output. Untracked (layer 0's input
    /// norm when nothing before it trains): the output, only where the adapters read it in place
    /// (not in half precision, where they read their own f32 copy).
    fn norm(&self, w: u64, tracks: bool) -> u64 {
        match (tracks, self.kernels) {
            (false, _) if self.half => 0,
            (false, _) | (true, Kernels::CpuF32) => w * self.s,
            (true, _) => {
                let copies = if self.half { w * 4 + w * self.s } else { 0 };
                copies + 2 * w * 4 + 3 * 4 + w * self.s
            }
        }
    }

    /// Bytes per token rotary of width `w` keeps. Fused: a contiguous copy of the head-split
    /// input and the output. Elementary rotate-half: the negated half, the concatenation, the
    /// two products and their sum.
    fn rotary(&self, w: u64) -> u64 {
        match self.kernels {
            Kernels::CpuF32 => 2 * w * 4,
            _ => 9 * w * self.s / 2,
        }
    }

    /// Bytes kept per attention score (`batch × heads × seq × seq`). Fused: the scores and the
    /// probabilities. Otherwise the scores, scaled, upcast (half only), masked, then the CPU's
    /// fused softmax output or the GPU's shifted, exponentiated and divided tensors, and the
    /// probabilities cast back (half only).
    fn per_score(&self) -> u64 {
        let (up, cast) = if self.half { (4, self.s) } else { (0, 0) };
        match self.kernels {
            Kernels::CpuF32 => 8,
            Kernels::CpuHalf => 2 * self.s + up + 4 + 4 + cast,
            Kernels::Elementary => 2 * self.s + up + 4 + 3 * 4 + cast,
        }
    }

    /// Bytes per token one decoder layer keeps, besides its attention scores.
    fn layer(&self, grouped: bool, input_tracks: bool) -> u64 {
        let (h, kv, i, s) = (self.h, self.kv, self.i, self.s);
        let attention = self.norm(h, input_tracks)
            + self.linear(h, h, true, input_tracks)
            + 2 * self.linear(h, kv, true, input_tracks)
            + self.rotary(h)
            + self.rotary(kv)
            // Keys and values repeated for grouped heads (else values made contiguous), keys
            // transposed contiguous, the attention output and its heads merged back.
            + if grouped { 2 * h * s } else { h * s }
            + 3 * h * s
            + self.linear(h, h, false, true)
            + h * s;
        let mlp = self.norm(h, true)
            + 2 * self.linear(h, i, false, true)
            + 2 * i * s
            + self.linear(i, h, false, true)
            + h * s;
        attention + mlp
    }

    /// Bytes of gradients alive at once while the backward crosses one layer, counted from the
    /// backward ops' allocations: each op's incoming gradient, its outputs, and candle's
    /// zeros-then-sum accumulation of every output (two tensors until the sum replaces the
    /// zeros). Gradients take their tensor's dtype, so the LoRA branch's are f32.
    ///
    /// MLP: for each of the gate and up projections, its output's gradient with the
    /// accumulation and the base part (three in the dtype) and, with an adapter, the branch's
    /// delta and scaled parts (f32) and its cast back; SiLU's backward builds its derivative from
    /// five temporaries. Attention, per score: the probabilities' gradient (in the dtype, then
    /// its f32 cast in half precision) and the softmax backward's f32 tensors: its incoming
    /// gradient, output and accumulation (three, the CPU's fused kernel on a half-precision
    /// upcast); six with the fused f32 kernel, whose incoming gradient is accumulated from the
    /// value matmul's; six with the GPU's composition (the divide's and the exponential's
    /// accumulations). Beside either, eleven hidden-wide gradients: the residual stream's, the
    /// projections' inputs and outputs. The test measures these moments' counts on the CPU.
    fn backward_in_flight(&self, tokens: u64, scores: u64) -> u64 {
        let (h, i, s) = (self.h, self.i, self.s);
        let branch = match self.rank {
            Some(_) => 2 * 4 + if self.half { s } else { 0 },
            None => 0,
        };
        let mlp = tokens * i * (2 * (3 * s + branch) + 5 * s);
        let per_score = match self.kernels {
            Kernels::CpuF32 => 24,
            Kernels::CpuHalf => s + 4 + 3 * 4,
            Kernels::Elementary => s + if self.half { 4 } else { 0 } + 6 * 4,
        };
        mlp.max(scores * per_score) + 11 * tokens * h * s
    }
}

/// Parameters of the model's language model and vision tower, and the trainable ones.
fn parameter_counts(cfg: &Config, mode: PlanMode) -> (u64, u64) {
    let t = &cfg.text;
    let (h, i, v) = (t.hidden_size as u64, t.intermediate_size as u64, t.vocab_size as u64);
    let kv = (t.num_key_value_heads * t.head_dim()) as u64;
    let layer = 2 * h * h + h + 2 * (h * kv + kv) + 3 * h * i + 2 * h;
    let head = if t.tie_word_embeddings { 0 } else { v * h };
    let text = v * h + t.num_hidden_layers as u64 * layer + h + head;
    let vc = &cfg.vision;
    let (w, vi) = (vc.hidden_size as u64, vc.intermediate_size as u64);
    let merged = w * (vc.spatial_merge_size * vc.spatial_merge_size) as u64;
    let block = w * 3 * w + 3 * w + w * w + w + 3 * w * vi + 2 * vi + w + 2 * w;
    let patch = (vc.in_chans * vc.temporal_patch_size * vc.patch_size * vc.patch_size) as u64 * w;
    let merger =
        w + merged * merged + merged + merged * vc.out_hidden_size as u64 + vc.out_hidden_size as u64;
    let total = text + patch + vc.depth as u64 * block + merger;
    let trainable = match mode {
        PlanMode::Full => text,
        PlanMode::Lora { rank } => rank as u64 * (9 * h + 2 * kv + 3 * i) * t.num_hidden_layers as u64,
    };
    (total, trainable)
}

/// The activations of one forward and backward over one micro-batch of `req`'s sequences.
fn activation_parts(cfg: &Config, req: &PlanRequest) -> ActivationParts {
    let t = &cfg.text;
    let s = req.dtype.size_in_bytes() as u64;
    let sizes = Sizes {
        h: t.hidden_size as u64,
        kv: (t.num_key_value_heads * t.head_dim()) as u64,
        i: t.intermediate_size as u64,
        v: t.vocab_size as u64,
        rank: match req.mode {
            PlanMode::Lora { rank } => Some(rank as u64),
            PlanMode::Full => None,
        },
        s,
        half: s < 4,
        kernels: Kernels::of(req.on_cpu, req.dtype),
    };
    let Sizes { h, kv, i, v, .. } = sizes;
    let (b, seq, scored) = (
        req.micro_batch.map_or(req.sequences, |m| m.min(req.sequences)) as u64,
        (req.prompt_tokens + req.completion_tokens) as u64,
        req.completion_tokens as u64,
    );
    let (n, rows) = (b * seq, b * scored);
    let layers = t.num_hidden_layers as u64;
    let grouped = t.num_key_value_heads != t.num_attention_heads;
    let scores = b * t.num_attention_heads as u64 * seq * seq;
    let graph = |input_tracks| n * sizes.layer(grouped, input_tracks) + scores * sizes.per_score();
    // Without checkpointing layer 0's input is the frozen embedding: with LoRA nothing before
    // its first projection tracks. Full fine-tuning trains the embedding, so every input does.
    let first_tracks = req.checkpointing || req.mode == PlanMode::Full;
    let (layer_inputs, layer_graphs) = match req.checkpointing {
        // The last layer's output is kept too: the root of the loss's graph.
        true => ((layers + 1) * n * h * s, graph(true)),
        false => (0, graph(first_tracks) + layers.saturating_sub(1) * graph(true)),
    };
    // The final norm over every position, the scored rows picked, the head's logits, their f32
    // copy (half only), the log-softmax's shifted, exponentiated and result tensors.
    let head =
        n * sizes.norm(h, true) + rows * h * s + rows * v * (s + if sizes.half { 4 } else { 0 } + 3 * 4);
    // The additive mask (f32), the rotary tables, and without checkpointing the embeddings
    // (layer 0's input, which its residual keeps).
    let shared =
        b * seq * seq * 4 + 2 * n * t.head_dim() as u64 * s + if req.checkpointing { 0 } else { n * h * s };
    // candle's backward also computes gradients for what nothing trains and keeps them to the
    // end: every frozen weight a matmul reads (none in full fine-tuning, where they are the
    // gradients) and, where the mask is added by an elementary op, its broadcast onto the
    // scores (f32, score-sized). Checkpointing drops them after each layer.
    let frozen = |w: u64| match req.mode {
        PlanMode::Lora { .. } => w * s,
        PlanMode::Full => 0,
    };
    let mask_gradient = match sizes.kernels {
        Kernels::CpuF32 => 0,
        _ => scores * 4,
    };
    let per_layer = frozen(2 * h * h + 2 * h * kv + 3 * h * i) + mask_gradient;
    let untracked_gradients = match req.checkpointing {
        true => per_layer,
        false => layers * per_layer + frozen(v * h),
    };
    let backward_in_flight = sizes.backward_in_flight(n, scores);
    ActivationParts { layer_inputs, layer_graphs, head, shared, untracked_gradients, backward_in_flight }
}

/// The plan for `req` on a model of `cfg`.
pub fn memory_plan(cfg: &Config, req: &PlanRequest) -> MemoryPlan {
    let s = req.dtype.size_in_bytes() as u64;
    let (params, trainable) = parameter_counts(cfg, req.mode);
    let (weights, grad_copy) = match req.mode {
        PlanMode::Lora { .. } => (params * s + trainable * 4, trainable * 4),
        PlanMode::Full => (params * s, trainable * s),
    };
    let gradients = trainable * 4 + grad_copy;
    let optimizer_state = if req.adamw { trainable * 12 } else { 0 };
    let activation_parts = activation_parts(cfg, req);
    let activations = activation_parts.total();
    let kv_cache =
        kv_cache_bytes(cfg, req.rollout_sequences, req.prompt_tokens + req.completion_tokens, req.dtype);
    let total = weights + gradients + optimizer_state + activations + kv_cache;
    MemoryPlan { weights, gradients, optimizer_state, activations, kv_cache, total, activation_parts }
}
