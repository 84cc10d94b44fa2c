//! The memory budget: how much a primitive that sizes its own buffers (sampling's KV cache,
//! logits and kept samples) may ask for, checked against an estimate before the work starts, so
//! a careless option is an error naming it instead of an allocation that aborts the process.
//!
//! By default the budget is [`DEFAULT_FRACTION`] of the memory this process may use: the least of
//! the machine's physical memory (`MemTotal`), its cgroup's limit (containers) and its
//! address-space limit (`ulimit -v`). `--max-memory SIZE` replaces it. The weights of models
//! already loaded are not counted against it: it bounds what one call adds.

use std::fmt;
use std::sync::OnceLock;

use crate::error::Result;

/// The share of the process's memory a call may use when `--max-memory` is not given; the rest is
/// left for the weights already loaded, the allocator's slack and everything else running.
pub const DEFAULT_FRACTION: f64 = 0.75;

/// Assumed when the process's memory cannot be read (not Linux, no `/proc`).
const UNKNOWN_MEMORY: u64 = 16 << 30;

/// How much memory one call may use, and where that number came from (for the error message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryBudget {
    pub bytes: u64,
    pub source: BudgetSource,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetSource {
    /// `--max-memory`.
    Flag,
    /// [`DEFAULT_FRACTION`] of the process's memory limit of this many bytes.
    Default { limit: u64 },
}

impl MemoryBudget {
    /// `--max-memory`'s value.
    pub fn given(bytes: u64) -> Self {
        MemoryBudget { bytes, source: BudgetSource::Flag }
    }

    /// [`DEFAULT_FRACTION`] of [`process_memory_limit`], read once per process.
    pub fn machine_default() -> Self {
        static DEFAULT: OnceLock<MemoryBudget> = OnceLock::new();
        *DEFAULT.get_or_init(|| Self::fraction_of(process_memory_limit()))
    }

    /// [`DEFAULT_FRACTION`] of `limit` bytes.
    pub fn fraction_of(limit: u64) -> Self {
        MemoryBudget {
            bytes: (limit as f64 * DEFAULT_FRACTION) as u64,
            source: BudgetSource::Default { limit },
        }
    }

    /// `Err` when `needed` bytes are over the budget: `what` says which call, `breakdown` what the
    /// bytes are for and `lower` which options shrink them.
    pub fn check(&self, what: &str, needed: u64, breakdown: &str, lower: &str) -> Result<()> {
        if needed <= self.bytes {
            return Ok(());
        }
        crate::bail!(
            "{what} needs about {} ({breakdown}), more than the memory budget of {self}; {lower}, \
             or raise the budget with --max-memory (e.g. --max-memory {})",
            Size(needed),
            Size(needed.saturating_add(needed / 4)).rounded_up_gib()
        )
    }
}

impl Default for MemoryBudget {
    fn default() -> Self {
        Self::machine_default()
    }
}

impl fmt::Display for MemoryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.source {
            BudgetSource::Flag => write!(f, "{} (--max-memory)", Size(self.bytes)),
            BudgetSource::Default { limit } => write!(
                f,
                "{} ({:.0}% of the {} this process may use)",
                Size(self.bytes),
                DEFAULT_FRACTION * 100.0,
                Size(limit)
            ),
        }
    }
}

/// Bytes written for people: `512 B`, `3.0 KiB`, `21.3 GiB`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size(pub u64);

impl Size {
    /// Whole GiB at or above this size, as `--max-memory` takes it (`32GiB`).
    fn rounded_up_gib(self) -> String {
        format!("{}GiB", self.0.div_ceil(1 << 30).max(1))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
        if self.0 < 1024 {
            return write!(f, "{} B", self.0);
        }
        let mut value = self.0 as f64 / 1024.0;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        write!(f, "{value:.1} {}", UNITS[unit])
    }
}

/// `--max-memory`'s syntax: plain bytes, or a number with `K`/`M`/`G`/`T` (powers of 1024, with
/// or without `iB`/`B`): `8GiB`, `512MiB`, `1.5G`, `1073741824`.
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let trimmed = text.trim();
    let split = trimmed.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}`; write bytes or a size such as 8GiB or 512MiB"
            ))
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size; write e.g. 8GiB, 512MiB or 1073741824"))?;
    let bytes = value * (1u64 << shift) as f64;
    if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("`{text}` must be at least 1 byte and below 16 EiB"));
    }
    Ok(bytes as u64)
}

/// The memory this process may use: the least of physical memory, the cgroup's limit and the
/// address-space limit, read once; 16 GiB when none can be read.
pub fn process_memory_limit() -> u64 {
    static LIMIT: OnceLock<u64> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        [
            read("/proc/meminfo").as_deref().and_then(mem_total),
            read("/sys/fs/cgroup/memory.max").as_deref().and_then(cgroup_limit),
            read("/sys/fs/cgroup/memory/memory.limit_in_bytes").as_deref().and_then(cgroup_limit),
            read("/proc/self/limits").as_deref().and_then(address_space_limit),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(UNKNOWN_MEMORY)
    })
}

/// `MemTotal:  23987654 kB` in `/proc/meminfo`, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// A cgroup limit file: bytes, or `max` (cgroup v2) / a huge number (v1) for none.
fn cgroup_limit(text: &str) -> Option<u64> {
    text.trim().parse::<u64>().ok().filter(|&b| b < 1 << 60)
}

/// `Max address space  <soft>  <hard>  bytes` in `/proc/self/limits`; `unlimited` is none.
fn address_space_limit(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max address space"))?;
    line.trim_start_matches("Max address space").split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_powers_of_1024() {
        assert_eq!(parse_size("8GiB"), Ok(8 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("512 mb"), Ok(512 << 20));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("1073741824"), Ok(1 << 30));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        for bad in ["", "GiB", "8 parsecs", "-1G", "0", "0.1", "1e3", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn sizes_print_for_people() {
        assert_eq!(Size(512).to_string(), "512 B");
        assert_eq!(Size(3 << 10).to_string(), "3.0 KiB");
        assert_eq!(Size((21 << 30) + (3 << 29) / 5).to_string(), "21.3 GiB");
        assert_eq!(Size(5 << 40).to_string(), "5.0 TiB");
        assert_eq!(Size(5 << 30).rounded_up_gib(), "5GiB");
        assert_eq!(Size((5 << 30) + 1).rounded_up_gib(), "6GiB");
    }

    #[test]
    fn limits_are_read_from_proc_and_cgroup_files() {
        assert_eq!(mem_total("MemTotal:       24000000 kB\nMemFree: 1 kB\n"), Some(24_000_000 * 1024));
        assert_eq!(cgroup_limit("max\n"), None);
        assert_eq!(cgroup_limit("9223372036854771712\n"), None);
        assert_eq!(cgroup_limit("8589934592\n"), Some(8 << 30));
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max stack size            8388608              unlimited            bytes     \n\
                      Max address space         4294967296           unlimited            bytes     \n";
        assert_eq!(address_space_limit(limits), Some(4 << 30));
        assert_eq!(address_space_limit(&limits.replace("4294967296", "unlimited")), None);
        let limit = process_memory_limit();
        assert!(
            limit > 0 && MemoryBudget::machine_default().bytes == (limit as f64 * DEFAULT_FRACTION) as u64
        );
    }

    #[test]
    fn an_estimate_over_budget_names_the_budget_and_the_flag() {
        let budget = MemoryBudget::given(1 << 30);
        assert!(budget.check("sampling", 1 << 30, "x", "lower n").is_ok());
        let err =
            budget.check("sampling", 3 << 30, "KV cache 3.0 GiB", "lower n = 9").unwrap_err().to_string();
        assert_eq!(
            err,
            "sampling needs about 3.0 GiB (KV cache 3.0 GiB), more than the memory budget of 1.0 GiB \
             (--max-memory); lower n = 9, or raise the budget with --max-memory (e.g. --max-memory 4GiB)"
        );
        let default = MemoryBudget::fraction_of(8 << 30).to_string();
        assert_eq!(default, "6.0 GiB (75% of the 8.0 GiB this process may use)");
    }
}
