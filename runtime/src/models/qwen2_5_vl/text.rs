//! The language model: a Qwen2 decoder (GQA, q/k/v biases, RMSNorm, SwiGLU) with multimodal
//! rotary embedding (M-RoPE) and a KV cache, as transformers' `Qwen2_5_VLTextModel`.
//!
//! M-RoPE gives each token three position ids (temporal, height, width); the rotary half-dims
//! are split by `mrope_section` and each slice rotates by one of the three ids. Text tokens
//! carry equal ids, which reduces M-RoPE to ordinary RoPE. Weight names are the hub's
//! (`model.layers.N.self_attn.q_proj`, `model.embed_tokens`, `model.norm`, `lm_head`).

use candle_core::{DType, Device, Tensor};

use super::cache::LayerKv;
use super::config::TextConfig;
use super::lora::{Linear, INIT_STD};
use super::ops::decode::decode_attention;
use super::ops::{apply_rotary, attention, RmsNorm};
use super::weights::{join, Init, Param, Visitor, Weights};
use crate::error::Result;

/// M-RoPE position ids, shape `(3, batch, seq)` stored row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MropePositions {
    pub batch: usize,
    pub seq: usize,
    pub ids: Vec<i64>,
}

impl MropePositions {
    /// The id on `axis` (0 = t, 1 = h, 2 = w) of token `s` in row `b`.
    pub fn get(&self, axis: usize, b: usize, s: usize) -> i64 {
        self.ids[(axis * self.batch + b) * self.seq + s]
    }
}

/// Precomputed inverse frequencies and the axis each rotary half-dim follows.
#[derive(Debug, Clone)]
pub(super) struct MropeRotary {
    pub(super) inv_freq: Vec<f32>,
    pub(super) axis_of: Vec<usize>,
}

impl MropeRotary {
    fn new(cfg: &TextConfig) -> Self {
        let dim = cfg.head_dim();
        let base = cfg.rope_theta as f32;
        let inv_freq = (0..dim / 2).map(|i| 1.0 / base.powf((2 * i) as f32 / dim as f32)).collect();
        let axis_of = cfg
            .mrope_section
            .iter()
            .enumerate()
            .flat_map(|(axis, &n)| std::iter::repeat_n(axis, n))
            .collect();
        Self { inv_freq, axis_of }
    }

    /// `cos` and `sin` of shape `(batch, 1, seq, head_dim)`, computed in f32 as transformers does.
    pub(super) fn cos_sin(
        &self,
        pos: &MropePositions,
        dtype: DType,
        device: &Device,
    ) -> Result<(Tensor, Tensor)> {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(pos.batch * pos.seq * half * 2);
        let mut sin = Vec::with_capacity(cos.capacity());
        for b in 0..pos.batch {
            for s in 0..pos.seq {
                let angles: Vec<f32> =
                    (0..half).map(|j| pos.get(self.axis_of[j], b, s) as f32 * self.inv_freq[j]).collect();
                for _ in 0..2 {
                    cos.extend(angles.iter().map(|a| a.cos()));
                    sin.extend(angles.iter().map(|a| a.sin()));
                }
            }
        }
        let shape = (pos.batch, 1, pos.seq, 2 * half);
        let cos = Tensor::from_vec(cos, shape, device)?.to_dtype(dtype)?;
        let sin = Tensor::from_vec(sin, shape, device)?.to_dtype(dtype)?;
        Ok((cos, sin))
    }
}

#[derive(Debug, Clone)]
pub(super) struct Attention {
    pub(super) q_proj: Linear,
    pub(super) k_proj: Linear,
    pub(super) v_proj: Linear,
    pub(super) o_proj: Linear,
    pub(super) heads: usize,
    pub(super) kv_heads: usize,
    pub(super) head_dim: usize,
}

impl Attention {
    fn new(cfg: &TextConfig, w: &Weights) -> Result<Self> {
        let (h, d) = (cfg.hidden_size, cfg.head_dim());
        let (heads, kv_heads) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        Ok(Self {
            q_proj: Linear::new(&w.pp("q_proj"), h, heads * d, true)?,
            k_proj: Linear::new(&w.pp("k_proj"), h, kv_heads * d, true)?,
            v_proj: Linear::new(&w.pp("v_proj"), h, kv_heads * d, true)?,
            o_proj: Linear::new(&w.pp("o_proj"), heads * d, h, false)?,
            heads,
            kv_heads,
            head_dim: d,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        kv: &mut impl KvLayer,
    ) -> Result<Tensor> {
        let (b, s, _) = x.dims3()?;
        let split = |t: Tensor, n: usize| -> Result<Tensor> {
            Ok(t.reshape((b, s, n, self.head_dim))?.transpose(1, 2)?)
        };
        let q = apply_rotary(&split(self.q_proj.forward(x)?, self.heads)?, cos, sin)?;
        let k = apply_rotary(&split(self.k_proj.forward(x)?, self.kv_heads)?, cos, sin)?;
        let v = split(self.v_proj.forward(x)?, self.kv_heads)?;
        let out = kv.attend(&q, k, v, mask)?;
        let out = out.transpose(1, 2)?.reshape((b, s, self.heads * self.head_dim))?;
        self.o_proj.forward(&out)
    }

    fn visit(&mut self, prefix: &str, f: &mut Visitor) -> Result<()> {
        f(&join(prefix, "q_proj"), Param::Linear(&mut self.q_proj))?;
        f(&join(prefix, "k_proj"), Param::Linear(&mut self.k_proj))?;
        f(&join(prefix, "v_proj"), Param::Linear(&mut self.v_proj))?;
        f(&join(prefix, "o_proj"), Param::Linear(&mut self.o_proj))
    }
}

/// Where a decoder layer keeps its keys and values: it stores the new ones and attends over
/// everything it holds. The dense [`LayerKv`] serves prefills, training and greedy generation;
/// the sampling engine's paged cache (`sample/engine/`) serves decoding from shared blocks.
pub trait KvLayer {
    /// Store `k`, `v` `(b, kv_heads, s, d)` of the new positions and return the attention output
    /// `(b, heads, s, d)` of the queries `q` `(b, heads, s, d)` over every held key. `mask` is the
    /// caller's additive mask for the dense layout; a cache with its own layout may ignore it.
    fn attend(&mut self, q: &Tensor, k: Tensor, v: Tensor, mask: Option<&Tensor>) -> Result<Tensor>;
}

impl KvLayer for LayerKv {
    fn attend(&mut self, q: &Tensor, k: Tensor, v: Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (k, v) = self.append(k, v)?;
        dense_attention(q, &k, &v, mask)
    }
}

/// Attention of `q` `(b, heads, s, d)` over grouped keys and values `(b, kv_heads, keys, d)`:
/// the decode kernel when it applies, else `repeat_kv` and the general attention.
pub(crate) fn dense_attention(q: &Tensor, k: &Tensor, v: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    if let Some(out) = decode_attention(q, k, v, mask)? {
        return Ok(out);
    }
    let n = q.dim(1)? / k.dim(1)?;
    attention(q, &repeat_kv(k, n)?, &repeat_kv(v, n)?, mask)
}

/// `(b, kv_heads, s, d)` -> `(b, kv_heads * n, s, d)`, each kv head serving `n` query heads.
fn repeat_kv(x: &Tensor, n: usize) -> Result<Tensor> {
    if n == 1 {
        return Ok(x.clone());
    }
    let (b, kvh, s, d) = x.dims4()?;
    Ok(x.unsqueeze(2)?.broadcast_as((b, kvh, n, s, d))?.reshape((b, kvh * n, s, d))?)
}

/// `down(silu(gate(x)) * up(x))`.
#[derive(Debug, Clone)]
pub(crate) struct SwiGlu {
    pub(super) gate_proj: Linear,
    pub(super) up_proj: Linear,
    pub(super) down_proj: Linear,
}

impl SwiGlu {
    pub(crate) fn new(w: &Weights, hidden: usize, inner: usize, bias: bool) -> Result<Self> {
        Ok(Self {
            gate_proj: Linear::new(&w.pp("gate_proj"), hidden, inner, bias)?,
            up_proj: Linear::new(&w.pp("up_proj"), hidden, inner, bias)?,
            down_proj: Linear::new(&w.pp("down_proj"), inner, hidden, bias)?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gated = (self.gate_proj.forward(x)?.silu()? * self.up_proj.forward(x)?)?;
        self.down_proj.forward(&gated)
    }

    pub(crate) fn visit(&mut self, prefix: &str, f: &mut Visitor) -> Result<()> {
        f(&join(prefix, "gate_proj"), Param::Linear(&mut self.gate_proj))?;
        f(&join(prefix, "up_proj"), Param::Linear(&mut self.up_proj))?;
        f(&join(prefix, "down_proj"), Param::Linear(&mut self.down_proj))
    }
}

#[derive(Debug, Clone)]
pub(super) struct DecoderLayer {
    pub(super) input_layernorm: RmsNorm,
    pub(super) self_attn: Attention,
    pub(super) post_attention_layernorm: RmsNorm,
    pub(super) mlp: SwiGlu,
}

impl DecoderLayer {
    fn new(cfg: &TextConfig, w: &Weights) -> Result<Self> {
        Ok(Self {
            input_layernorm: RmsNorm::new(&w.pp("input_layernorm"), cfg.hidden_size, cfg.rms_norm_eps)?,
            self_attn: Attention::new(cfg, &w.pp("self_attn"))?,
            post_attention_layernorm: RmsNorm::new(
                &w.pp("post_attention_layernorm"),
                cfg.hidden_size,
                cfg.rms_norm_eps,
            )?,
            mlp: SwiGlu::new(&w.pp("mlp"), cfg.hidden_size, cfg.intermediate_size, false)?,
        })
    }

    pub(super) fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        kv: &mut impl KvLayer,
    ) -> Result<Tensor> {
        let h = (x + self.self_attn.forward(&self.input_layernorm.forward(x)?, cos, sin, mask, kv)?)?;
        Ok((&h + self.mlp.forward(&self.post_attention_layernorm.forward(&h)?)?)?)
    }

    fn visit(&mut self, prefix: &str, f: &mut Visitor) -> Result<()> {
        f(&join(prefix, "input_layernorm.weight"), Param::Tensor(&mut self.input_layernorm.weight))?;
        self.self_attn.visit(&join(prefix, "self_attn"), f)?;
        f(
            &join(prefix, "post_attention_layernorm.weight"),
            Param::Tensor(&mut self.post_attention_layernorm.weight),
        )?;
        self.mlp.visit(&join(prefix, "mlp"), f)
    }
}

/// The decoder with its embedding and LM head.
#[derive(Debug, Clone)]
pub struct TextModel {
    pub(super) embed_tokens: Tensor,
    pub(super) layers: Vec<DecoderLayer>,
    pub(super) norm: RmsNorm,
    /// `None` when `tie_word_embeddings`: the head is the embedding matrix.
    pub(super) lm_head: Option<Linear>,
    pub(super) rotary: MropeRotary,
    pub(super) cfg: TextConfig,
}

impl TextModel {
    /// Build from the root of a hub-layout checkpoint (`model.*`, `lm_head`).
    pub fn new(cfg: &TextConfig, w: &Weights) -> Result<Self> {
        let m = w.pp("model");
        let embed_tokens =
            m.pp("embed_tokens").get(&[cfg.vocab_size, cfg.hidden_size], "weight", Init::Normal(INIT_STD))?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::new(cfg, &m.pp("layers").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(Linear::new(&w.pp("lm_head"), cfg.hidden_size, cfg.vocab_size, false)?)
        };
        Ok(Self {
            embed_tokens,
            layers,
            norm: RmsNorm::new(&m.pp("norm"), cfg.hidden_size, cfg.rms_norm_eps)?,
            lm_head,
            rotary: MropeRotary::new(cfg),
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &TextConfig {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.embed_tokens.dtype()
    }

    pub fn device(&self) -> &Device {
        self.embed_tokens.device()
    }

    /// Token embeddings `(batch, seq, hidden)` for ids `(batch, seq)`.
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, s) = ids.dims2()?;
        let flat = ids.flatten_all()?.to_dtype(DType::U32)?;
        Ok(self.embed_tokens.index_select(&flat, 0)?.reshape((b, s, self.cfg.hidden_size))?)
    }

    /// Run the decoder over `embeds` and return the final-normed hidden states. `mask` is the
    /// additive `(batch, 1, seq, past + seq)` mask; `kv` holds one entry per layer and grows.
    /// `pos` may give each row its own positions (rows of a paged decode step differ in length).
    pub fn forward(
        &self,
        embeds: &Tensor,
        pos: &MropePositions,
        mask: Option<&Tensor>,
        kv: &mut [impl KvLayer],
    ) -> Result<Tensor> {
        if kv.len() != self.layers.len() {
            crate::bail!("kv cache has {} layers, the model {}", kv.len(), self.layers.len());
        }
        let (cos, sin) = self.rotary.cos_sin(pos, embeds.dtype(), embeds.device())?;
        let mut x = embeds.clone();
        for (layer, layer_kv) in self.layers.iter().zip(kv.iter_mut()) {
            x = layer.forward(&x, &cos, &sin, mask, layer_kv)?;
        }
        self.norm.forward(&x)
    }

    /// Logits `(.., vocab)` from final hidden states.
    pub fn lm_head(&self, hidden: &Tensor) -> Result<Tensor> {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => {
                let tied = Linear { weight: self.embed_tokens.clone(), bias: None, lora: None };
                tied.forward(hidden)
            }
        }
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Walk every parameter with its hub-layout name.
    pub fn visit(&mut self, f: &mut Visitor) -> Result<()> {
        f("model.embed_tokens.weight", Param::Tensor(&mut self.embed_tokens))?;
        for (i, layer) in self.layers.iter_mut().enumerate() {
            layer.visit(&format!("model.layers.{i}"), f)?;
        }
        f("model.norm.weight", Param::Tensor(&mut self.norm.weight))?;
        if let Some(head) = &mut self.lm_head {
            f("lm_head", Param::Linear(head))?;
        }
        Ok(())
    }
}
