//! Figures, their bars, and the two renderings: `bench/results/latest.json` and a Markdown table.

use serde::Serialize;
use serde_json::Value;

/// One condition a figure must meet. `ratio` is always `value / baseline`.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
#[serde(tag = "kind", content = "limit", rename_all = "camelCase")]
pub enum Bar {
    ValueAtMost(f64),
    ValueAtLeast(f64),
    RatioAtMost(f64),
    RatioAtLeast(f64),
}

impl Bar {
    pub fn met(self, value: f64, ratio: Option<f64>) -> bool {
        match self {
            Bar::ValueAtMost(x) => value <= x,
            Bar::ValueAtLeast(x) => value >= x,
            // No ratio (a zero or missing baseline) cannot prove a ratio bar.
            Bar::RatioAtMost(x) => ratio.is_some_and(|r| r <= x),
            Bar::RatioAtLeast(x) => ratio.is_some_and(|r| r >= x),
        }
    }

    fn describe(self, unit: &str) -> String {
        match self {
            Bar::ValueAtMost(x) => format!("≤ {} {unit}", num(x)),
            Bar::ValueAtLeast(x) => format!("≥ {} {unit}", num(x)),
            Bar::RatioAtMost(x) => format!("ratio ≤ {}", num(x)),
            Bar::RatioAtLeast(x) => format!("ratio ≥ {}", num(x)),
        }
    }
}

/// One measured figure beside its baseline from the same run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Figure {
    pub name: String,
    pub what: String,
    pub unit: String,
    pub value: f64,
    pub baseline: f64,
    pub baseline_what: String,
    pub ratio: Option<f64>,
    pub bars: Vec<Bar>,
    pub bar: String,
    pub pass: bool,
    /// Everything else measured on the way (p99s, sample counts, timings), for the curious.
    pub details: Value,
    /// Markdown printed under the table (e.g. a latency distribution), if the figure has any.
    #[serde(skip)]
    pub appendix: Option<String>,
}

impl Figure {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        what: &str,
        unit: &str,
        value: f64,
        baseline: f64,
        baseline_what: &str,
        bars: Vec<Bar>,
        details: Value,
    ) -> Figure {
        let ratio = (baseline.is_finite() && baseline != 0.0 && value.is_finite())
            .then(|| value / baseline);
        let pass = !bars.is_empty() && bars.iter().all(|b| b.met(value, ratio));
        let bar = bars
            .iter()
            .map(|b| b.describe(unit))
            .collect::<Vec<_>>()
            .join(" and ");
        Figure {
            name: name.into(),
            what: what.into(),
            unit: unit.into(),
            value,
            baseline,
            baseline_what: baseline_what.into(),
            ratio,
            bars,
            bar,
            pass,
            details,
            appendix: None,
        }
    }

    pub fn with_appendix(mut self, markdown: String) -> Figure {
        self.appendix = Some(markdown);
        self
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub generated_at: String,
    pub mode: String,
    pub backend: String,
    pub command: String,
    pub machine: Value,
    pub scale: Value,
    pub figures: Vec<Figure>,
    /// Figures that could not be measured, with the reason.
    pub errors: Vec<String>,
}

/// A number for people: no trailing zeros, at most 3 decimals, thousands kept whole.
pub fn num(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    if x.abs() >= 1000.0 {
        return format!("{x:.0}");
    }
    let s = format!("{x:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

pub fn markdown(report: &Report) -> String {
    let mut out = format!(
        "Puffle benchmark: {} run on {} ({})\n\n\
         | figure | value | baseline | ratio | bar | result |\n\
         |---|---|---|---|---|---|\n",
        report.mode, report.backend, report.generated_at
    );
    for f in &report.figures {
        out.push_str(&format!(
            "| `{}` | {} {} | {} {} ({}) | {} | {} | {} |\n",
            f.name,
            num(f.value),
            f.unit,
            num(f.baseline),
            f.unit,
            f.baseline_what,
            f.ratio.map(num).unwrap_or_else(|| "n/a".into()),
            f.bar,
            if f.pass { "pass" } else { "**MISS**" },
        ));
    }
    for appendix in report.figures.iter().filter_map(|f| f.appendix.as_ref()) {
        out.push('\n');
        out.push_str(appendix);
    }
    for e in &report.errors {
        out.push_str(&format!("\nnot measured: {e}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fig(value: f64, baseline: f64, bars: Vec<Bar>) -> Figure {
        Figure::new(
            "f",
            "a figure",
            "ms",
            value,
            baseline,
            "base",
            bars,
            json!({}),
        )
    }

    #[test]
    fn bars_on_value_and_ratio() {
        assert!(fig(0.9, 10.0, vec![Bar::ValueAtMost(1.0)]).pass);
        assert!(!fig(1.1, 10.0, vec![Bar::ValueAtMost(1.0)]).pass);
        assert!(fig(30_000.0, 50_000.0, vec![Bar::ValueAtLeast(25_000.0)]).pass);
        // 30k of a 70k raw limit is below half of it: one failing bar fails the figure.
        let f = fig(
            30_000.0,
            70_000.0,
            vec![Bar::ValueAtLeast(25_000.0), Bar::RatioAtLeast(0.5)],
        );
        assert!(!f.pass);
        assert_eq!(f.bar, "≥ 25000 ms and ratio ≥ 0.5");
        assert!(fig(3.0, 2.0, vec![Bar::RatioAtMost(1.5)]).pass);
        assert!(!fig(3.1, 2.0, vec![Bar::RatioAtMost(1.5)]).pass);
    }

    #[test]
    fn a_zero_baseline_has_no_ratio_and_fails_ratio_bars() {
        let f = fig(1.0, 0.0, vec![Bar::RatioAtLeast(50.0)]);
        assert_eq!(f.ratio, None);
        assert!(!f.pass);
        // A figure with no bar at all is not a pass by default.
        assert!(!fig(1.0, 1.0, vec![]).pass);
    }

    #[test]
    fn numbers_for_people() {
        assert_eq!(num(1.5), "1.5");
        assert_eq!(num(2.0), "2");
        assert_eq!(num(0.12345), "0.123");
        assert_eq!(num(31999.7), "32000");
        assert_eq!(num(f64::NAN), "n/a");
    }

    #[test]
    fn markdown_table_has_a_row_per_figure_and_marks_misses() {
        let report = Report {
            generated_at: "2026-01-01T00:00:00.000Z".into(),
            mode: "quick".into(),
            backend: "sqlite".into(),
            command: "cargo run".into(),
            machine: json!({}),
            scale: json!({}),
            figures: vec![
                Figure::new(
                    "status",
                    "GET run",
                    "ms",
                    2.0,
                    1.0,
                    "healthz p99",
                    vec![Bar::ValueAtMost(5.0)],
                    json!({}),
                ),
                Figure::new(
                    "run_create",
                    "POST",
                    "s",
                    1.25,
                    0.5,
                    "raw insert",
                    vec![Bar::ValueAtMost(1.0)],
                    json!({}),
                ),
            ],
            errors: vec!["engine_latency: provider down".into()],
        };
        let md = markdown(&report);
        assert!(md.contains("| `status` | 2 ms | 1 ms (healthz p99) | 2 | ≤ 5 ms | pass |"));
        assert!(
            md.contains("| `run_create` | 1.25 s | 0.5 s (raw insert) | 2.5 | ≤ 1 s | **MISS** |")
        );
        assert!(md.contains("not measured: engine_latency: provider down"));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["figures"][1]["pass"], false);
        assert_eq!(
            json["figures"][0]["bars"][0],
            json!({"kind": "valueAtMost", "limit": 5.0})
        );
    }
}
