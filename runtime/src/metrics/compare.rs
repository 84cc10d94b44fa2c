//! Side-by-side comparison of support reports (e.g. base, SFT and GRPO checkpoints), as table rows
//! and as markdown. Pass@K, the gap and maj@K are read at the largest K all reports share.

use super::bootstrap::Estimate;
use super::support::SupportReport;
use crate::bail;
use crate::error::Result;

/// A table: one header row and one row per report, all cells already formatted.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// The K the Pass@K, gap and maj@K columns are read at (0 when some report has no samples).
    pub k: usize,
}

pub fn compare(reports: &[&SupportReport], labels: &[String]) -> Result<Comparison> {
    if reports.is_empty() {
        bail!("compare: no reports");
    }
    if labels.len() != reports.len() {
        bail!("compare: {} labels for {} reports", labels.len(), reports.len());
    }
    let k = reports.iter().map(|r| r.n()).min().unwrap_or(0);
    let header = [
        "report".to_string(),
        "questions".to_string(),
        "n".to_string(),
        "Acc@1 [95% CI]".to_string(),
        format!("Pass@{k} [95% CI]"),
        format!("gap@{k} [95% CI]"),
        "mean@n".to_string(),
        format!("maj@{k}"),
        "format fail (greedy / samples)".to_string(),
        "entropy (norm.)".to_string(),
    ]
    .to_vec();
    let mut rows = Vec::with_capacity(reports.len());
    for (report, label) in reports.iter().zip(labels) {
        let at_k = k.checked_sub(1).and_then(|i| report.curve().get(i));
        let ff = report.format_failures();
        rows.push(vec![
            label.clone(),
            report.questions().to_string(),
            report.n().to_string(),
            interval(&report.acc1()),
            at_k.map_or("-".into(), |p| interval(&p.pass)),
            at_k.map_or("-".into(), |p| interval(&p.gap)),
            format!("{:.3}", report.mean_at_n().value),
            at_k.map_or("-".into(), |p| format!("{:.3}", p.maj)),
            format!("{:.3} / {:.3}", ff.greedy, ff.samples),
            format!("{:.3}", report.entropy().normalised),
        ]);
    }
    Ok(Comparison { header, rows, k })
}

impl Comparison {
    /// The table as GitHub-flavoured markdown.
    pub fn markdown(&self) -> String {
        let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
        let mut out = line(&self.header);
        out.push_str(&line(&vec!["---".to_string(); self.header.len()]));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

fn interval(e: &Estimate) -> String {
    format!("{:.3} [{:.3}, {:.3}]", e.value, e.lo, e.hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::bootstrap::BootstrapOptions;
    use crate::metrics::support::tests::record;

    #[test]
    fn reads_every_report_at_the_shared_k() {
        let opts = BootstrapOptions { resamples: 50, ..Default::default() };
        let a = SupportReport::new(
            vec![record("1", "t", 0, Some(1), &[Some(0), Some(1), Some(1), Some(1)])],
            opts,
        )
        .unwrap();
        let b = SupportReport::new(vec![record("1", "t", 0, Some(0), &[Some(1), Some(0)])], opts).unwrap();
        let table = compare(&[&a, &b], &["base".into(), "grpo".into()]).unwrap();
        assert_eq!(table.k, 2);
        assert_eq!(table.header[4], "Pass@2 [95% CI]");
        assert_eq!(table.rows[0][..5], ["base", "1", "4", "0.000 [0.000, 0.000]", "0.500 [0.500, 0.500]"]);
        assert_eq!(table.rows[1][4], "1.000 [1.000, 1.000]");
        let md = table.markdown();
        assert!(md.starts_with("| report | questions | n |"), "{md}");
        assert_eq!(md.lines().count(), 4);
        assert_eq!(md.lines().nth(1).unwrap(), "| --- ".repeat(10).trim_end().to_string() + " |");
    }

    #[test]
    fn label_count_must_match() {
        let r =
            SupportReport::new(vec![record("1", "t", 0, Some(0), &[])], BootstrapOptions::default()).unwrap();
        assert!(compare(&[&r], &[]).unwrap_err().to_string().contains("0 labels for 1 reports"));
        assert!(compare(&[], &[]).is_err());
    }
}
