//! The demo's report: a paper-style table (a row per model, a column per metric, each
//! accuracy with its 95% interval) printed and written as OUT/report.md with the loss-curve
//! and heatmap charts, and OUT/report.json (`{"stages": [{"stage", "model", "metrics",
//! "intervals"}], "claims": [...]}`). The claims' verdicts come from claims.rs: whatever the
//! intervals say is what the report says.

use super::claims::{accuracy_interval, Claim, Interval};
use crate::error::{Result, TrainError};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// Metric names in column order, with how they read.
pub const COLUMNS: [(&str, &str); 6] = [
    ("heldout_loss", "held-out LM loss (lower is better)"),
    ("add_em", "add: exact match of greedy answers"),
    ("reverse_em", "reverse: exact match of greedy answers"),
    ("add_choice_acc", "add: multiple-choice accuracy (log-likelihood)"),
    ("reverse_choice_acc", "reverse: multiple-choice accuracy (log-likelihood)"),
    ("pair_pref_acc", "held-out pairs: log p(chosen) > log p(rejected)"),
];

/// One evaluated model.
#[derive(Clone, Debug)]
pub struct Row {
    pub stage: String,
    pub model: String,
    pub metrics: BTreeMap<String, f64>,
    /// Held-out examples behind each accuracy metric.
    pub counts: BTreeMap<String, usize>,
    /// Held-out LM loss of each held-out document, in file order (for paired comparisons).
    pub doc_losses: Vec<f64>,
}

impl Row {
    pub fn get(&self, k: &str) -> f64 {
        self.metrics.get(k).copied().unwrap_or(f64::NAN)
    }
    /// The 95% interval of accuracy metric `k` (None: not an accuracy).
    pub fn interval_of(&self, k: &str) -> Option<Interval> {
        self.counts.get(k).map(|&n| accuracy_interval(self.get(k), n))
    }
    /// The 95% interval of accuracy metric `k`; an unknown one spans [0, 1].
    pub fn interval(&self, k: &str) -> Interval {
        self.interval_of(k).unwrap_or(Interval { value: self.get(k), lo: 0.0, hi: 1.0, n: 0 })
    }
    /// Mean exact match over both tasks.
    pub fn mean_em(&self) -> f64 {
        (self.get("add_em") + self.get("reverse_em")) / 2.0
    }
}

/// The table as aligned text (also valid Markdown).
pub fn table(rows: &[Row]) -> String {
    let mut head = vec!["model".to_string()];
    head.extend(COLUMNS.iter().map(|(k, _)| k.to_string()));
    head.push("mean_em".into());
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut cells = vec![r.stage.clone()];
            cells.extend(COLUMNS.iter().map(|(k, _)| match r.interval_of(k) {
                Some(i) => format!("{:.3} [{:.2}, {:.2}]", i.value, i.lo, i.hi),
                None => format!("{:.4}", r.get(k)),
            }));
            cells.push(format!("{:.4}", r.mean_em()));
            cells
        })
        .collect();
    let widths: Vec<usize> = (0..head.len())
        .map(|i| body.iter().map(|c| c[i].len()).chain([head[i].len()]).max().unwrap_or(0))
        .collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        format!("| {} |", padded.join(" | "))
    };
    let mut out = vec![
        line(&head),
        format!("|{}|", widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("|")),
    ];
    out.extend(body.iter().map(|c| line(c)));
    out.join("\n") + "\n"
}

/// report.json.
pub fn write_json(path: &Path, rows: &[Row], claims: &[Claim], extra: Value) -> Result<()> {
    let stages: Vec<Value> = rows
        .iter()
        .map(|r| {
            let intervals: BTreeMap<&String, Interval> =
                r.counts.keys().map(|k| (k, r.interval(k))).collect();
            json!({"stage": r.stage, "model": r.model, "metrics": r.metrics, "intervals": intervals})
        })
        .collect();
    let claims: Vec<Value> = claims
        .iter()
        .map(|c| json!({"claim": c.claim, "verdict": c.verdict.as_str(), "numbers": c.numbers}))
        .collect();
    let v = json!({"stages": stages, "claims": claims, "run": extra});
    let text = serde_json::to_string_pretty(&v).map_err(|e| TrainError::Msg(e.to_string()))?;
    Ok(solar_model::output::write_file(path, (text + "\n").as_bytes(), true)?)
}

/// report.md: what ran, the table, the claims, the images.
pub fn write_markdown(path: &Path, rows: &[Row], claims: &[Claim], sections: &[String]) -> Result<()> {
    let mut md = String::from("# Solar demo: the SOLAR recipe in miniature\n\n");
    md += "Every number below was measured by this run on held-out data the models never trained on.\n\n";
    md += &table(rows);
    md += "\nColumns:\n\n";
    for (k, what) in COLUMNS {
        md += &format!("- `{k}`: {what}\n");
    }
    md += "- `mean_em`: the mean of the two exact-match columns\n\n";
    md += "Accuracies read `value [low, high]`: the 95% Wilson interval over the held-out examples \
           (n in report.json); two models differ only where their intervals do not overlap.\n\n";
    md += "## The paper's claims, in miniature\n\n";
    md += "Each claim holds or does not hold only where the intervals separate; where they overlap \
           this run is too small to tell.\n\n";
    for c in claims {
        md += &format!("- {} **{}** ({})\n", c.claim, c.verdict.as_str(), c.numbers);
    }
    for s in sections {
        md += "\n";
        md += s;
    }
    Ok(solar_model::output::write_file(path, md.as_bytes(), true)?)
}
