//! Conversions between script values and runtime values: JSON-like data, nested numeric arrays.
//! Option maps have their own module, `options.rs`.

use medbridge_runtime::run::memory::{process_memory_limit, Size};
use rhai::{Array, Dynamic};

use crate::error::{script_msg, ScriptResult};
use crate::script_types::type_of;

/// Script data (maps, arrays, numbers, strings, bools, unit) as JSON.
pub fn to_json(value: &Dynamic) -> ScriptResult<serde_json::Value> {
    rhai::serde::from_dynamic(value)
        .map_err(|e| script_msg(format!("cannot convert {} to JSON: {e}", type_of(value))))
}

/// JSON as script data.
pub fn from_json(value: &serde_json::Value) -> ScriptResult<Dynamic> {
    rhai::serde::to_dynamic(value)
}

/// A number (int or float) as f64.
pub fn as_f64(value: &Dynamic) -> Option<f64> {
    value.as_float().ok().or_else(|| value.as_int().ok().map(|i| i as f64))
}

/// A nested, rectangular array of numbers as (row-major values, shape).
pub fn nested_numbers(array: &Array) -> ScriptResult<(Vec<f64>, Vec<usize>)> {
    let mut values = Vec::new();
    let shape = walk(array, &mut values, 0)?;
    Ok((values, shape))
}

fn walk(array: &Array, out: &mut Vec<f64>, depth: usize) -> ScriptResult<Vec<usize>> {
    let mut inner_shape: Option<Vec<usize>> = None;
    for (i, item) in array.iter().enumerate() {
        let shape = if let Some(x) = as_f64(item) {
            out.push(x);
            Vec::new()
        } else if let Some(sub) = item.read_lock::<Array>() {
            walk(&sub, out, depth + 1)?
        } else {
            return Err(script_msg(format!(
                "tensor data must be numbers or arrays of numbers, found {} at depth {depth}, index {i}",
                type_of(item)
            )));
        };
        match &inner_shape {
            None => inner_shape = Some(shape),
            Some(s) if *s != shape => {
                return Err(script_msg(format!(
                    "ragged tensor data at depth {depth}: element {i} has shape {shape:?}, expected {s:?}"
                )))
            }
            Some(_) => {}
        }
    }
    let mut shape = vec![array.len()];
    shape.extend(inner_shape.unwrap_or_default());
    Ok(shape)
}

/// A shape given as an array of non-negative ints, refused when its f32 elements could not fit in
/// the memory this process may use (a product that overflows would otherwise wrap to a small tensor).
pub fn shape_of(array: &Array) -> ScriptResult<Vec<usize>> {
    let shape = array
        .iter()
        .map(|d| match d.as_int() {
            Ok(n) if n >= 0 => Ok(n as usize),
            _ => Err(script_msg(format!(
                "a shape is an array of non-negative ints, found {d} ({})",
                type_of(d)
            ))),
        })
        .collect::<ScriptResult<Vec<usize>>>()?;
    let limit = process_memory_limit();
    let bytes = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).and_then(|n| n.checked_mul(4));
    match bytes {
        Some(b) if b as u64 <= limit => Ok(shape),
        _ => Err(script_msg(format!(
            "shape {shape:?} is too large: its f32 elements need more than the {} of memory this process may use",
            Size(limit)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(dims: &[i64]) -> Array {
        dims.iter().map(|&d| Dynamic::from_int(d)).collect()
    }

    #[test]
    fn shapes_whose_element_count_overflows_or_outgrows_memory_are_refused() {
        assert_eq!(shape_of(&shape(&[2, 3])).unwrap(), vec![2, 3]);
        assert_eq!(shape_of(&shape(&[0, 1 << 40])).unwrap(), vec![0, 1 << 40]);
        for dims in [&[1 << 32, 1 << 32, 1 << 32][..], &[1_000_000, 1_000_000], &[1 << 62]] {
            let err = shape_of(&shape(dims)).unwrap_err().to_string();
            assert!(err.contains("is too large"), "{err}");
        }
    }
}
