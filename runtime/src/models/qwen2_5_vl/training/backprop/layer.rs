//! One decoder layer forward, keeping what its backward needs, and that backward: RMSNorm, the
//! q/k/v projections, M-RoPE, grouped attention, the output projection, the residual, RMSNorm,
//! SwiGLU and the second residual, on rows `(batch · seq, hidden)`.

use candle_core::Tensor;

use super::kernels::{
    attention_backward, attention_forward, swiglu_backward, swiglu_forward, tensor, view, AttnMask, AttnShape,
};
use super::linear::{self, Grads};
use crate::error::Result;
use crate::models::qwen2_5_vl::ops::fused::{rms_norm_grads, rms_norm_plain, rotary_rows};
use crate::models::qwen2_5_vl::ops::RmsNorm;
use crate::models::qwen2_5_vl::text::DecoderLayer;

/// The rows' rotary tables `(rows, head_dim)`, the attention mask and sizes.
pub(super) struct Context<'a> {
    pub cos: &'a Tensor,
    pub sin: &'a Tensor,
    pub mask: &'a AttnMask,
    pub batch: usize,
    pub seq: usize,
}

/// What [`forward`] keeps.
pub(super) struct Saved {
    input: Tensor,
    q: linear::Saved,
    k: linear::Saved,
    v: linear::Saved,
    /// Rotated queries and keys, values, the attention output and its log-sum-exp.
    rq: Tensor,
    rk: Tensor,
    values: Tensor,
    attn: Tensor,
    lse: Vec<f32>,
    o: linear::Saved,
    mid: Tensor,
    gate: Tensor,
    up: Tensor,
    gate_saved: linear::Saved,
    up_saved: linear::Saved,
    down: linear::Saved,
}

fn norm_forward(norm: &RmsNorm, x: &Tensor) -> Result<Tensor> {
    rms_norm_plain(x, &norm.weight, norm.eps)
}

/// The input gradient of `norm` at `x` for output gradient `g`, recording its weight's.
fn norm_backward(norm: &RmsNorm, x: &Tensor, g: &Tensor, grads: &mut Grads) -> Result<Tensor> {
    let (dx, dw) = rms_norm_grads(x, &norm.weight, g, norm.eps, grads.wants(&norm.weight))?;
    if let Some(dw) = dw {
        grads.add(&norm.weight, dw)?;
    }
    Ok(dx)
}

fn shape(layer: &DecoderLayer, ctx: &Context) -> AttnShape {
    let a = &layer.self_attn;
    AttnShape { batch: ctx.batch, seq: ctx.seq, heads: a.heads, kv_heads: a.kv_heads, head_dim: a.head_dim }
}

/// Rotate rows `(rows, heads · head_dim)` by the tables (their transpose when `transposed`).
fn rotate(x: &Tensor, heads: usize, ctx: &Context, transposed: bool) -> Result<Tensor> {
    let (rows, width) = x.dims2()?;
    let rotated = rotary_rows(&x.reshape((rows, heads, width / heads))?, ctx.cos, ctx.sin, transposed)?;
    Ok(rotated.reshape((rows, width))?)
}

pub(super) fn forward(layer: &DecoderLayer, x: &Tensor, ctx: &Context) -> Result<(Tensor, Saved)> {
    let a = &layer.self_attn;
    let normed = norm_forward(&layer.input_layernorm, x)?;
    let (q, q_saved) = linear::forward(&a.q_proj, &normed)?;
    let (k, k_saved) = linear::forward(&a.k_proj, &normed)?;
    let (values, v_saved) = linear::forward(&a.v_proj, &normed)?;
    let (rq, rk) = (rotate(&q, a.heads, ctx, false)?, rotate(&k, a.kv_heads, ctx, false)?);
    let (attn, lse) =
        attention_forward(&view(&rq)?, &view(&rk)?, &view(&values)?, ctx.mask, shape(layer, ctx));
    let attn = tensor(attn, &[x.dim(0)?, a.heads * a.head_dim])?;
    let (o, o_saved) = linear::forward(&a.o_proj, &attn)?;
    let mid = (x + o)?;
    let normed = norm_forward(&layer.post_attention_layernorm, &mid)?;
    let (gate, gate_saved) = linear::forward(&layer.mlp.gate_proj, &normed)?;
    let (up, up_saved) = linear::forward(&layer.mlp.up_proj, &normed)?;
    let act = tensor(swiglu_forward(&view(&gate)?, &view(&up)?), gate.dims())?;
    let (down, down_saved) = linear::forward(&layer.mlp.down_proj, &act)?;
    let out = (&mid + down)?;
    let saved = Saved {
        input: x.clone(),
        q: q_saved,
        k: k_saved,
        v: v_saved,
        rq,
        rk,
        values,
        attn,
        lse,
        o: o_saved,
        mid,
        gate,
        up,
        gate_saved,
        up_saved,
        down: down_saved,
    };
    Ok((out, saved))
}

/// The gradient of the layer's input for output gradient `dy`, recording parameter gradients.
/// Without `need_input` only the parameters' are computed (nothing below needs the input's).
pub(super) fn backward(
    layer: &DecoderLayer,
    s: &Saved,
    dy: &Tensor,
    ctx: &Context,
    grads: &mut Grads,
    need_input: bool,
) -> Result<Option<Tensor>> {
    let a = &layer.self_attn;
    let d_act = need(linear::backward(&layer.mlp.down_proj, &s.down, dy, grads, true)?)?;
    let (d_gate, d_up) = swiglu_backward(&view(&s.gate)?, &view(&s.up)?, &view(&d_act.contiguous()?)?);
    let (d_gate, d_up) = (tensor(d_gate, s.gate.dims())?, tensor(d_up, s.up.dims())?);
    let d_normed = (need(linear::backward(&layer.mlp.gate_proj, &s.gate_saved, &d_gate, grads, true)?)?
        + need(linear::backward(&layer.mlp.up_proj, &s.up_saved, &d_up, grads, true)?)?)?;
    let d_mid =
        (dy + norm_backward(&layer.post_attention_layernorm, &s.mid, &d_normed.contiguous()?, grads)?)?;
    let d_attn = need(linear::backward(&a.o_proj, &s.o, &d_mid, grads, true)?)?;
    let (dq, dk, dv) = attention_backward(
        &view(&s.rq)?,
        &view(&s.rk)?,
        &view(&s.values)?,
        &view(&s.attn)?,
        &s.lse,
        &view(&d_attn.contiguous()?)?,
        ctx.mask,
        shape(layer, ctx),
    );
    let dq = rotate(&tensor(dq, s.rq.dims())?, a.heads, ctx, true)?;
    let dk = rotate(&tensor(dk, s.rk.dims())?, a.kv_heads, ctx, true)?;
    let dv = tensor(dv, s.values.dims())?;
    let need_normed = need_input || grads.wants(&layer.input_layernorm.weight);
    let mut d_normed: Option<Tensor> = None;
    for (proj, saved, d) in [(&a.q_proj, &s.q, &dq), (&a.k_proj, &s.k, &dk), (&a.v_proj, &s.v, &dv)] {
        if let Some(dx) = linear::backward(proj, saved, d, grads, need_normed)? {
            d_normed = Some(match d_normed {
                Some(sum) => (sum + dx)?,
                None => dx,
            });
        }
    }
    let Some(d_normed) = d_normed else { return Ok(None) };
    let d_input = norm_backward(&layer.input_layernorm, &s.input, &d_normed.contiguous()?, grads)?;
    Ok(if need_input { Some((d_mid + d_input)?) } else { None })
}

fn need(dx: Option<Tensor>) -> Result<Tensor> {
    dx.ok_or_else(|| crate::error::Error::msg("an input gradient was asked for but not computed"))
}
