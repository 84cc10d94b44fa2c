//! The `tensor` family: candle tensors in scripts.
//!
//! Construction (`tensor`, `zeros`, `ones`, `randn`), inspection, arithmetic with tensors and
//! scalars, reductions, `.npy` / `.safetensors` files. Tensors are created on the run's device.
//! Binary operations broadcast; incompatible shapes are script errors naming both shapes.

use candle_core::{DType, Tensor};
use rhai::plugin::*;

use crate::context::session;
use crate::convert::{nested_numbers, shape_of};
use crate::error::{script_msg, IntoScript, ScriptResult};

/// Promote integer tensors to f32 so arithmetic with floats is defined.
fn float(t: &Tensor) -> ScriptResult<Tensor> {
    if t.dtype().is_float() {
        Ok(t.clone())
    } else {
        t.to_dtype(DType::F32).script()
    }
}

/// Apply a broadcasting binary op, naming both shapes if they are incompatible.
fn binary(
    op: &str,
    a: &Tensor,
    b: &Tensor,
    f: impl Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>,
) -> ScriptResult<Tensor> {
    let (a, b) = (float(a)?, float(b)?);
    let b = if b.dtype() == a.dtype() { b } else { b.to_dtype(a.dtype()).script()? };
    f(&a, &b).map_err(|e| {
        script_msg(format!(
            "tensor {op}: shapes {:?} and {:?} are incompatible ({})",
            a.dims(),
            b.dims(),
            e.to_string().lines().next().unwrap_or_default()
        ))
    })
}

fn scalar(a: &Tensor, mul: f64, add: f64) -> ScriptResult<Tensor> {
    float(a)?.affine(mul, add).script()
}

fn dim_index(t: &Tensor, dim: i64) -> ScriptResult<usize> {
    let rank = t.rank() as i64;
    let d = if dim < 0 { rank + dim } else { dim };
    if d < 0 || d >= rank {
        return Err(script_msg(format!(
            "dimension {dim} is out of range for a tensor of shape {:?}",
            t.dims()
        )));
    }
    Ok(d as usize)
}

fn scalar_value(t: &Tensor) -> ScriptResult<f64> {
    t.to_dtype(DType::F64).and_then(|t| t.to_scalar::<f64>()).script()
}

fn to_dynamic(values: &[f64], shape: &[usize], int: bool) -> Dynamic {
    match shape.split_first() {
        None => {
            let v = values.first().copied().unwrap_or_default();
            if int {
                Dynamic::from_int(v as i64)
            } else {
                Dynamic::from_float(v)
            }
        }
        Some((&n, rest)) => {
            let stride: usize = rest.iter().product();
            let items: rhai::Array =
                (0..n).map(|i| to_dynamic(&values[i * stride..(i + 1) * stride], rest, int)).collect();
            Dynamic::from_array(items)
        }
    }
}

#[export_module]
pub mod tensor_api {
    use super::*;

    /// A candle tensor on the run's device.
    pub type Tensor = candle_core::Tensor;

    /// Build an f32 tensor from a (nested) array of numbers: `tensor([[1, 2], [3, 4]])`.
    #[rhai_fn(return_raw)]
    pub fn tensor(ctx: NativeCallContext, data: rhai::Array) -> Result<Tensor, Box<EvalAltResult>> {
        let (values, shape) = nested_numbers(&data)?;
        medbridge_runtime::tensor::from_values(values, &shape, &session(&ctx)?.device).script()
    }

    /// An f32 tensor of zeros: `zeros([2, 3])`.
    #[rhai_fn(return_raw)]
    pub fn zeros(ctx: NativeCallContext, shape: rhai::Array) -> Result<Tensor, Box<EvalAltResult>> {
        Tensor::zeros(shape_of(&shape)?, DType::F32, &session(&ctx)?.device).script()
    }

    /// An f32 tensor of ones: `ones([2, 3])`.
    #[rhai_fn(return_raw)]
    pub fn ones(ctx: NativeCallContext, shape: rhai::Array) -> Result<Tensor, Box<EvalAltResult>> {
        Tensor::ones(shape_of(&shape)?, DType::F32, &session(&ctx)?.device).script()
    }

    /// Standard-normal f32 draws, identical for the same shape and seed on every machine:
    /// `randn([2, 3], 42)`.
    #[rhai_fn(return_raw)]
    pub fn randn(
        ctx: NativeCallContext,
        shape: rhai::Array,
        seed: i64,
    ) -> Result<Tensor, Box<EvalAltResult>> {
        let seed = crate::context::seed_or_next(&ctx, Some(seed))?;
        medbridge_runtime::tensor::randn(&shape_of(&shape)?, seed, &session(&ctx)?.device).script()
    }

    /// The shape as an array of ints: `t.shape()` → `[2, 3]`.
    pub fn shape(t: &mut Tensor) -> rhai::Array {
        t.dims().iter().map(|&d| Dynamic::from_int(d as i64)).collect()
    }

    /// The element type: `"f32"`, `"bf16"`, `"u32"`, ...
    pub fn dtype(t: &mut Tensor) -> String {
        t.dtype().as_str().to_string()
    }

    /// The device: `"cpu"` or `"cuda:N"`.
    pub fn device(t: &mut Tensor) -> String {
        medbridge_runtime::device::device_name(t.device())
    }

    /// The values as nested arrays (ints for integer tensors, floats otherwise).
    #[rhai_fn(return_raw)]
    pub fn to_array(t: &mut Tensor) -> Result<Dynamic, Box<EvalAltResult>> {
        let values = medbridge_runtime::tensor::to_f64_vec(t).script()?;
        Ok(to_dynamic(&values, t.dims(), !t.dtype().is_float()))
    }

    /// The single value of a one-element tensor, as a float.
    #[rhai_fn(return_raw)]
    pub fn item(t: &mut Tensor) -> Result<f64, Box<EvalAltResult>> {
        if t.elem_count() != 1 {
            return Err(script_msg(format!("item() needs a one-element tensor, got shape {:?}", t.dims())));
        }
        scalar_value(&t.flatten_all().and_then(|x| x.squeeze(0)).script()?)
    }

    /// Shape, dtype, device and the first values.
    #[rhai_fn(global, name = "to_string", name = "to_debug")]
    pub fn to_string(t: &mut Tensor) -> String {
        medbridge_runtime::tensor::summary(t)
    }

    /// Element-wise sum with broadcasting.
    #[rhai_fn(global, name = "+", return_raw)]
    pub fn add(a: Tensor, b: Tensor) -> Result<Tensor, Box<EvalAltResult>> {
        binary("+", &a, &b, |a, b| a.broadcast_add(b))
    }

    /// Element-wise difference with broadcasting.
    #[rhai_fn(global, name = "-", return_raw)]
    pub fn sub(a: Tensor, b: Tensor) -> Result<Tensor, Box<EvalAltResult>> {
        binary("-", &a, &b, |a, b| a.broadcast_sub(b))
    }

    /// Element-wise product with broadcasting.
    #[rhai_fn(global, name = "*", return_raw)]
    pub fn mul(a: Tensor, b: Tensor) -> Result<Tensor, Box<EvalAltResult>> {
        binary("*", &a, &b, |a, b| a.broadcast_mul(b))
    }

    /// Element-wise quotient with broadcasting.
    #[rhai_fn(global, name = "/", return_raw)]
    pub fn div(a: Tensor, b: Tensor) -> Result<Tensor, Box<EvalAltResult>> {
        binary("/", &a, &b, |a, b| a.broadcast_div(b))
    }

    /// Tensor plus a number.
    #[rhai_fn(global, name = "+", return_raw)]
    pub fn add_f(a: Tensor, b: f64) -> Result<Tensor, Box<EvalAltResult>> {
        scalar(&a, 1.0, b)
    }

    /// Number plus a tensor.
    #[rhai_fn(global, name = "+", return_raw)]
    pub fn f_add(a: f64, b: Tensor) -> Result<Tensor, Box<EvalAltResult>> {
        scalar(&b, 1.0, a)
    }

    /// Tensor minus a number.
    #[rhai_fn(global, name = "-", return_raw)]
    pub fn sub_f(a: Tensor, b: f64) -> Result<Tensor, Box<EvalAltResult>> {
        scalar(&a, 1.0, -b)
    }

    /// Number minus a tensor.
    #[rhai_fn(global, name = "-", return_raw)]
    pub fn f_sub(a: f64, b: Tensor) -> Result<Tensor, Box<EvalAltResult>> {
        scalar(&b, -1.0, a)
    }

    /// Tensor times a number.
    #[rhai_fn(global, name = "*", return_raw)]
    pub fn mul_f(a: Tensor, b: f64) -> Result<Tensor, Box<EvalAltResult>> {
        scalar(&a, b, 0.0)
    }

    /// Number times a tensor.
    #[rhai_fn(global, name = "*", return_raw)]
    pub fn f_mul(a: f64, b: Tensor) -> Result<Tensor, Box<EvalAltResult>> {
        scalar(&b, a, 0.0)
    }

    /// Tensor divided by a number.
    #[rhai_fn(global, name = "/", return_raw)]
    pub fn div_f(a: Tensor, b: f64) -> Result<Tensor, Box<EvalAltResult>> {
        scalar(&a, 1.0 / b, 0.0)
    }

    /// Number divided by a tensor, element-wise.
    #[rhai_fn(global, name = "/", return_raw)]
    pub fn f_div(a: f64, b: Tensor) -> Result<Tensor, Box<EvalAltResult>> {
        float(&b)?.recip().and_then(|r| r.affine(a, 0.0)).script()
    }

    /// Tensor plus an int.
    #[rhai_fn(global, name = "+", return_raw)]
    pub fn add_i(a: Tensor, b: i64) -> Result<Tensor, Box<EvalAltResult>> {
        scalar(&a, 1.0, b as f64)
    }

    /// Int plus a tensor.
    #[rhai_fn(global, name = "+", return_raw)]
    pub fn i_add(a: i64, b: Tensor) -> Result<Tensor, Box<EvalAltResult>> {
        scalar(&b, 1.0, a as f64)
    }

    /// Tensor minus an int.
    #[rhai_fn(global, name = "-", return_raw)]
    pub fn sub_i(a: Tensor, b: i64) -> Result<Tensor, Box<EvalAltResult>> {
        scalar(&a, 1.0, -(b as f64))
    }

    /// Int minus a tensor.
    #[rhai_fn(global, name = "-", return_raw)]
    pub fn i_sub(a: i64, b: Tensor) -> Result<Tensor, Box<EvalAltResult>> {
        scalar(&b, -1.0, a as f64)
    }

    /// Tensor times an int.
    #[rhai_fn(global, name = "*", return_raw)]
    pub fn mul_i(a: Tensor, b: i64) -> Result<Tensor, Box<EvalAltResult>> {
        scalar(&a, b as f64, 0.0)
    }

    /// Int times a tensor.
    #[rhai_fn(global, name = "*", return_raw)]
    pub fn i_mul(a: i64, b: Tensor) -> Result<Tensor, Box<EvalAltResult>> {
        scalar(&b, a as f64, 0.0)
    }

    /// Tensor divided by an int.
    #[rhai_fn(global, name = "/", return_raw)]
    pub fn div_i(a: Tensor, b: i64) -> Result<Tensor, Box<EvalAltResult>> {
        scalar(&a, 1.0 / b as f64, 0.0)
    }

    /// Negation.
    #[rhai_fn(global, name = "-", return_raw)]
    pub fn neg(a: Tensor) -> Result<Tensor, Box<EvalAltResult>> {
        scalar(&a, -1.0, 0.0)
    }

    /// Matrix product (batched over leading dims): `a.matmul(b)`.
    #[rhai_fn(return_raw)]
    pub fn matmul(a: &mut Tensor, b: Tensor) -> Result<Tensor, Box<EvalAltResult>> {
        binary("matmul", a, &b, |a, b| a.broadcast_matmul(b))
    }

    /// Sum of all elements, as a float.
    #[rhai_fn(name = "sum", return_raw)]
    pub fn sum_all(t: &mut Tensor) -> Result<f64, Box<EvalAltResult>> {
        scalar_value(&float(t)?.sum_all().script()?)
    }

    /// Sum over one dimension (negative counts from the end).
    #[rhai_fn(name = "sum", return_raw)]
    pub fn sum_dim(t: &mut Tensor, dim: i64) -> Result<Tensor, Box<EvalAltResult>> {
        float(t)?.sum(dim_index(t, dim)?).script()
    }

    /// Mean of all elements, as a float.
    #[rhai_fn(name = "mean", return_raw)]
    pub fn mean_all(t: &mut Tensor) -> Result<f64, Box<EvalAltResult>> {
        scalar_value(&float(t)?.mean_all().script()?)
    }

    /// Mean over one dimension (negative counts from the end).
    #[rhai_fn(name = "mean", return_raw)]
    pub fn mean_dim(t: &mut Tensor, dim: i64) -> Result<Tensor, Box<EvalAltResult>> {
        float(t)?.mean(dim_index(t, dim)?).script()
    }

    /// Largest element, as a float.
    #[rhai_fn(name = "max", return_raw)]
    pub fn max_all(t: &mut Tensor) -> Result<f64, Box<EvalAltResult>> {
        scalar_value(&float(t)?.flatten_all().and_then(|x| x.max(0)).script()?)
    }

    /// Largest values over one dimension.
    #[rhai_fn(name = "max", return_raw)]
    pub fn max_dim(t: &mut Tensor, dim: i64) -> Result<Tensor, Box<EvalAltResult>> {
        float(t)?.max(dim_index(t, dim)?).script()
    }

    /// Indices of the largest values over one dimension (a u32 tensor).
    #[rhai_fn(return_raw)]
    pub fn argmax(t: &mut Tensor, dim: i64) -> Result<Tensor, Box<EvalAltResult>> {
        float(t)?.argmax(dim_index(t, dim)?).script()
    }

    /// Softmax over one dimension.
    #[rhai_fn(return_raw)]
    pub fn softmax(t: &mut Tensor, dim: i64) -> Result<Tensor, Box<EvalAltResult>> {
        softmax_over(&float(t)?, dim_index(t, dim)?)
    }

    /// The same values in a new shape with the same element count.
    #[rhai_fn(return_raw)]
    pub fn reshape(t: &mut Tensor, shape: rhai::Array) -> Result<Tensor, Box<EvalAltResult>> {
        let shape = shape_of(&shape)?;
        t.reshape(shape.clone())
            .map_err(|_| script_msg(format!("reshape: cannot view shape {:?} as {shape:?}", t.dims())))
    }

    /// Swap two dimensions.
    #[rhai_fn(return_raw)]
    pub fn transpose(t: &mut Tensor, d0: i64, d1: i64) -> Result<Tensor, Box<EvalAltResult>> {
        let (a, b) = (dim_index(t, d0)?, dim_index(t, d1)?);
        t.transpose(a, b).and_then(|x| x.contiguous()).script()
    }

    /// Element-wise exponential.
    #[rhai_fn(return_raw)]
    pub fn exp(t: &mut Tensor) -> Result<Tensor, Box<EvalAltResult>> {
        float(t)?.exp().script()
    }

    /// Element-wise absolute value.
    #[rhai_fn(return_raw)]
    pub fn abs(t: &mut Tensor) -> Result<Tensor, Box<EvalAltResult>> {
        float(t)?.abs().script()
    }

    /// Element-wise natural logarithm.
    #[rhai_fn(return_raw)]
    pub fn log(t: &mut Tensor) -> Result<Tensor, Box<EvalAltResult>> {
        float(t)?.log().script()
    }

    /// Copy to another device: `t.to_device("cuda:0")`.
    #[rhai_fn(return_raw)]
    pub fn to_device(t: &mut Tensor, device: &str) -> Result<Tensor, Box<EvalAltResult>> {
        let d = medbridge_runtime::device::parse_device(device).script()?;
        t.to_device(&d).script()
    }

    /// Write the tensor as a `.npy` file inside the run directory; returns the path written.
    #[rhai_fn(return_raw)]
    pub fn save_npy(
        ctx: NativeCallContext,
        t: &mut Tensor,
        path: &str,
    ) -> Result<String, Box<EvalAltResult>> {
        let target = session(&ctx)?.sandbox.resolve_write(path).script()?;
        medbridge_runtime::tensor::save_npy(t, &target).script()?;
        Ok(target.display().to_string())
    }

    /// Read a `.npy` file onto the run's device.
    #[rhai_fn(return_raw)]
    pub fn load_npy(ctx: NativeCallContext, path: &str) -> Result<Tensor, Box<EvalAltResult>> {
        let s = session(&ctx)?;
        let source = s.sandbox.resolve_read(path).script()?;
        medbridge_runtime::tensor::load_npy(&source, &s.device).script()
    }

    /// Read every tensor of a `.safetensors` file: a map of name → Tensor.
    #[rhai_fn(return_raw)]
    pub fn load_safetensors(ctx: NativeCallContext, path: &str) -> Result<rhai::Map, Box<EvalAltResult>> {
        let s = session(&ctx)?;
        let source = s.sandbox.resolve_read(path).script()?;
        let tensors = medbridge_runtime::tensor::load_safetensors(&source, &s.device).script()?;
        Ok(tensors.into_iter().map(|(k, v)| (k.into(), Dynamic::from(v))).collect())
    }
}

fn softmax_over(t: &Tensor, dim: usize) -> ScriptResult<Tensor> {
    let max = t.max_keepdim(dim).script()?;
    let exp = t.broadcast_sub(&max).and_then(|x| x.exp()).script()?;
    let sum = exp.sum_keepdim(dim).script()?;
    exp.broadcast_div(&sum).script()
}
