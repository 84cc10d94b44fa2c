//! `memory_plan`: the bytes a training run needs, by part, before it runs — so a user can see
//! whether LoRA GRPO of the 7B model with G = 8 and 2,048-token completions fits one GPU, and
//! which knob (checkpointing, group, completion length) to turn when it does not.
//!
//! The parts: weights (base in the run's dtype, LoRA adapters in f32), gradients (f32
//! accumulators plus the backward's own copy in the parameter dtype), AdamW's state (an f32
//! master, first and second moments), the KV cache of the rollouts, and the activations of one
//! backward over a step's sequences.
//!
//! Activations are counted from the ops this crate's autograd pass runs, per token: in one
//! decoder layer about 32.5 hidden-wide, 14.5 kv-wide and 10 MLP-wide tensors (norms, projections
//! with their LoRA branch, rotary, the kv heads repeated, copies to contiguous) and 6
//! `heads × seq × seq` attention tensors (scores, scaled, masked, shifted, exp, probs; f32 from
//! the mask on). On the CPU in f32 fused kernels keep fewer: 25 hidden-wide, 11 kv-wide and 2
//! attention tensors.
//! candle's backward frees each intermediate's gradient once it has passed it on, so on top of
//! the graph only the gradients in flight count. Without checkpointing every layer's graph is
//! alive at the peak; with it, each layer's input plus one layer's graph. The LM head runs only over scored tokens: 4
//! vocabulary-wide f32 tensors per completion token (logits, shifted, exp, log-probs), which the
//! loss keeps alive through the backward. A test holds the estimate within 25% of the measured
//! peak on the CPU.

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
    /// Sequences scored in one backward (GRPO: prompts × group; SFT: the micro-batch).
    pub sequences: usize,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// The weights' and activations' dtype.
    pub dtype: DType,
    /// Per-layer activation checkpointing of the autograd pass.
    pub checkpointing: bool,
    /// Sequences sampled at once for rollouts (their KV cache); 0 for SFT.
    pub rollout_sequences: usize,
    /// Planning for the CPU: in f32 there, attention's softmax, the rotary embedding and the
    /// norms run as fused kernels that keep only their outputs.
    pub on_cpu: bool,
}

impl Default for PlanRequest {
    fn default() -> Self {
        Self {
            mode: PlanMode::Lora { rank: 8 },
            sequences: 1,
            prompt_tokens: 0,
            completion_tokens: 0,
            dtype: DType::F32,
            checkpointing: true,
            rollout_sequences: 0,
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
}

/// Parameters of the model's language model and vision tower, and of its LoRA adapters.
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

/// The plan for `req` on a model of `cfg`.
pub fn memory_plan(cfg: &Config, req: &PlanRequest) -> MemoryPlan {
    let t = &cfg.text;
    let s = req.dtype.size_in_bytes() as u64;
    let (params, trainable) = parameter_counts(cfg, req.mode);
    let (weights, grad_copy) = match req.mode {
        PlanMode::Lora { .. } => (params * s + trainable * 4, trainable * 4),
        PlanMode::Full => (params * s, trainable * s),
    };
    let gradients = trainable * 4 + grad_copy;
    let optimizer_state = trainable * 12;

    let (b, seq, scored) = (
        req.sequences as u64,
        (req.prompt_tokens + req.completion_tokens) as u64,
        req.completion_tokens as u64,
    );
    let n = b * seq;
    let (h, i, v) = (t.hidden_size as u64, t.intermediate_size as u64, t.vocab_size as u64);
    let kv = (t.num_key_value_heads * t.head_dim()) as u64;
    let layers = t.num_hidden_layers as u64;
    // Forward intermediates of one layer, in halves of a token's width (14.5 = 29 / 2).
    // Counts in halves of a token's width, per layer: (hidden-wide, kv-wide) tensors, and bytes
    // kept per attention score and in flight per score during the backward.
    let fused = req.on_cpu && req.dtype == DType::F32;
    let (hidden_halves, kv_halves, kept_per_score, front_per_score) = match fused {
        // Scores and probabilities only; norms and rotary keep their outputs.
        true => (50, 22, 8, 24),
        // Scores and their scaled copy in the dtype, then masked, shifted, exp and probs in
        // f32 (and probs back in the dtype when it is not f32).
        false if s == 4 => (65, 29, 24, 24),
        false => (65, 29, 3 * s + 20, 24),
    };
    let scores = b * t.num_attention_heads as u64 * seq * seq;
    let layer_forward =
        (hidden_halves * n * h + kv_halves * n * kv) * s / 2 + 10 * n * i * s + kept_per_score * scores;
    // The gradients in flight while the backward crosses a layer: through the softmax six
    // score-sized f32 ones (the incoming gradient, the softmax backward's two temporaries, the
    // outgoing one, and the zeros-then-sum of its accumulation); through SwiGLU about ten
    // MLP-wide ones (candle's SiLU backward builds its derivative from five temporaries, next to
    // the product's two gradients and their accumulations) and four hidden-wide ones.
    let backward_front = front_per_score * scores + (10 * n * i + 4 * n * h) * s;
    let head = 4 * b * scored * v * 4 + 4 * n * h * s + b * scored * h * s;
    let mask = b * seq * seq * 4;
    // candle's matmul backward computes a gradient for every weight it multiplies, frozen or
    // not, and keeps it until its backward returns: one layer's worth with checkpointing (which
    // drops the LM head's at once), every layer's and the head's without.
    let layer_weights = (2 * h * h + 2 * h * kv + 3 * h * i) * s;
    let head_weights = v * h * s;
    let activations = match req.checkpointing {
        true => layers * n * h * s + layer_forward + backward_front + head + mask + layer_weights,
        false => layers * (layer_forward + layer_weights) + head_weights + backward_front + head + mask,
    };

    let kv_cache = 2
        * layers
        * kv
        * (req.prompt_tokens + req.completion_tokens) as u64
        * req.rollout_sequences as u64
        * s;
    let total = weights + gradients + optimizer_state + activations + kv_cache;
    MemoryPlan { weights, gradients, optimizer_state, activations, kv_cache, total }
}
