//! The grid of a sweep: `--grid name=v1,v2,...` axes, expanded into cells in row-major order (the
//! first axis varies slowest), each named `name=value,...` — the name of its folder.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One `--grid name=v1,v2,...`: a script argument and the values it takes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GridAxis {
    pub name: String,
    pub values: Vec<String>,
}

/// One point of the grid: its position in the expansion, its folder name and its values in axis
/// order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GridCell {
    pub index: usize,
    pub name: String,
    pub values: Vec<(String, String)>,
}

/// The longest cell name: one folder-name component on common filesystems is 255 bytes.
const MAX_CELL_NAME: usize = 200;

impl GridAxis {
    /// Parse `name=v1,v2,...`. Values become folder names, so they may not be empty, repeat, or
    /// hold `/`, `\`, control characters or be `.`/`..`; whether the name and each value are a
    /// valid `--set` pair is the caller's check (the CLI's `--set` parser).
    pub fn parse(spec: &str) -> Result<Self> {
        let (name, list) = spec
            .split_once('=')
            .ok_or_else(|| Error::msg(format!("--grid `{spec}`: expected name=v1,v2,...")))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(Error::msg(format!("--grid `{spec}`: the name before `=` is empty")));
        }
        if list.trim().is_empty() {
            return Err(Error::msg(format!("--grid `{spec}`: `{name}` has no values; give name=v1,v2,...")));
        }
        let mut values: Vec<String> = Vec::new();
        for value in list.split(',') {
            let value = value.trim();
            if value.is_empty() {
                return Err(Error::msg(format!(
                    "--grid `{spec}`: an empty value (two commas in a row, or a comma at an end)"
                )));
            }
            if let Some(bad) = value.chars().find(|c| matches!(c, '/' | '\\') || c.is_control()) {
                return Err(Error::msg(format!(
                    "--grid `{spec}`: value `{}` holds {bad:?}, which cannot be part of a cell's folder name",
                    value.escape_default()
                )));
            }
            if value == "." || value == ".." {
                return Err(Error::msg(format!("--grid `{spec}`: `{value}` cannot be a cell's folder name")));
            }
            if values.iter().any(|v| v == value) {
                return Err(Error::msg(format!("--grid `{spec}`: value `{value}` is given twice")));
            }
            values.push(value.to_string());
        }
        Ok(GridAxis { name: name.to_string(), values })
    }
}

/// Every cell of the grid, the first axis varying slowest. An empty grid and a name given twice
/// are errors.
pub fn expand(axes: &[GridAxis]) -> Result<Vec<GridCell>> {
    if axes.is_empty() {
        return Err(Error::msg(
            "the grid is empty: give at least one --grid name=v1,v2,... (a sweep runs one cell per point)",
        ));
    }
    for (i, axis) in axes.iter().enumerate() {
        if axes[..i].iter().any(|a| a.name == axis.name) {
            return Err(Error::msg(format!(
                "--grid `{}` is given twice; give all its values in one --grid {}=v1,v2,...",
                axis.name, axis.name
            )));
        }
        if axis.values.is_empty() {
            return Err(Error::msg(format!("--grid `{}` has no values", axis.name)));
        }
    }
    let total = axes.iter().map(|a| a.values.len()).product::<usize>();
    let mut cells = Vec::with_capacity(total);
    for index in 0..total {
        let mut rest = index;
        let mut values = vec![(String::new(), String::new()); axes.len()];
        for (slot, axis) in values.iter_mut().zip(axes).rev() {
            let n = axis.values.len();
            *slot = (axis.name.clone(), axis.values[rest % n].clone());
            rest /= n;
        }
        let name = cell_name(&values);
        if name.len() > MAX_CELL_NAME {
            return Err(Error::msg(format!(
                "cell `{name}` is {} bytes long, too long for a folder name (at most {MAX_CELL_NAME}); use shorter grid names or values",
                name.len()
            )));
        }
        cells.push(GridCell { index, name, values });
    }
    Ok(cells)
}

/// `a=1,b=x`: the cell's folder name.
pub fn cell_name(values: &[(String, String)]) -> String {
    values.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axes(specs: &[&str]) -> Vec<GridAxis> {
        specs.iter().map(|s| GridAxis::parse(s).unwrap()).collect()
    }

    #[test]
    fn cells_expand_row_major_with_folder_names() {
        let cells = expand(&axes(&["lr=1e-3,1e-2", "seed=0,1,2"])).unwrap();
        let names: Vec<&str> = cells.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "lr=1e-3,seed=0",
                "lr=1e-3,seed=1",
                "lr=1e-3,seed=2",
                "lr=1e-2,seed=0",
                "lr=1e-2,seed=1",
                "lr=1e-2,seed=2"
            ]
        );
        assert_eq!(cells[4].index, 4);
        assert_eq!(cells[4].values, [("lr".to_string(), "1e-2".to_string()), ("seed".into(), "1".into())]);
    }

    #[test]
    fn bad_grids_say_what_is_wrong() {
        let err = |spec: &str| GridAxis::parse(spec).unwrap_err().to_string();
        assert!(err("lr").contains("expected name=v1,v2"));
        assert!(err("=1,2").contains("name before `=` is empty"));
        assert!(err("lr=").contains("has no values"));
        assert!(err("lr=1,,2").contains("empty value"));
        assert!(err("path=a/b").contains("folder name"));
        assert!(err("x=..").contains("folder name"));
        assert!(err("seed=1,1").contains("given twice"));
        assert!(expand(&[]).unwrap_err().to_string().contains("the grid is empty"));
        let twice = expand(&axes(&["seed=0,1", "seed=2"])).unwrap_err().to_string();
        assert!(twice.contains("`seed` is given twice"), "{twice}");
        let long = format!("x={}", "a".repeat(300));
        assert!(expand(&axes(&[&long])).unwrap_err().to_string().contains("too long"));
    }
}
