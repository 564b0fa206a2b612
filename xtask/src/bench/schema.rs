//! The report `gater bench --out` writes, as far as this crate reads it.
//!
//! The writer is the `gater` binary (its `bench::report` module); this is
//! the reader's side of the same JSON, checked by [`REPORT_SCHEMA`]. Fields
//! not named here are ignored.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The report shape this crate understands.
pub(crate) const REPORT_SCHEMA: u32 = 1;
/// The figure of a case's CPU time per acknowledged append, microseconds;
/// each process's share is this name, `_`, and its role.
pub(crate) const CPU_US_PER_APPEND: &str = "cpu_us_per_append";

/// One run of the benchmarks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Report {
    pub(crate) schema: u32,
    pub(crate) started_unix_s: u64,
    pub(crate) target: String,
    pub(crate) seed: u64,
    pub(crate) seconds: f64,
    pub(crate) warmup_s: f64,
    pub(crate) cores: usize,
    pub(crate) cases: Vec<Case>,
    pub(crate) ratios: Vec<Ratio>,
    pub(crate) goals: Vec<Goal>,
}

/// One workload against one target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Case {
    pub(crate) id: String,
    pub(crate) workload: String,
    pub(crate) target: String,
    pub(crate) group: String,
    pub(crate) params: BTreeMap<String, u64>,
    pub(crate) measured_s: f64,
    pub(crate) figures: BTreeMap<String, f64>,
    pub(crate) latency: Option<Latency>,
    pub(crate) errors: BTreeMap<String, u64>,
}

/// A latency distribution, microseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Latency {
    pub(crate) count: u64,
    pub(crate) mean_us: f64,
    pub(crate) p50_us: f64,
    pub(crate) p95_us: f64,
    pub(crate) p99_us: f64,
    pub(crate) p999_us: f64,
    pub(crate) max_us: f64,
    /// `[percentile, latency_us]` pairs, ascending.
    pub(crate) curve: Vec<[f64; 2]>,
}

/// A ratio between two cases' figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Ratio {
    pub(crate) name: String,
    pub(crate) numerator: String,
    pub(crate) denominator: String,
    pub(crate) metric: String,
    pub(crate) value: Option<f64>,
}

/// A target figure and whether it was met.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Goal {
    pub(crate) name: String,
    /// `at_least` or `at_most`.
    pub(crate) bound: String,
    pub(crate) threshold: f64,
    pub(crate) actual: Option<f64>,
    pub(crate) met: bool,
}

impl Case {
    /// The case's throughput figure: events/s, else acks/s, appends/s or reads/s.
    pub(crate) fn rate(&self) -> Option<(&'static str, f64)> {
        ["events_per_s", "acks_per_s", "appends_per_s", "reads_per_s"]
            .into_iter()
            .find_map(|m| self.figures.get(m).map(|v| (m, *v)))
    }

    /// CPU time per append of each process of the case, by role, in figure order.
    pub(crate) fn cpu_per_append(&self) -> Vec<(&str, f64)> {
        self.figures
            .iter()
            .filter_map(|(name, v)| {
                let role = name.strip_prefix(CPU_US_PER_APPEND)?.strip_prefix('_')?;
                Some((role, *v))
            })
            .collect()
    }

    /// Every figure, latency percentiles included, by name.
    pub(crate) fn all_figures(&self) -> BTreeMap<String, f64> {
        let mut all = self.figures.clone();
        if let Some(l) = &self.latency {
            for (name, v) in [
                ("p50_us", l.p50_us),
                ("p95_us", l.p95_us),
                ("p99_us", l.p99_us),
                ("p999_us", l.p999_us),
                ("max_us", l.max_us),
            ] {
                all.insert(name.to_owned(), v);
            }
        }
        all
    }
}

impl Goal {
    /// `>=` or `<=`.
    pub(crate) fn operator(&self) -> &'static str {
        if self.bound == "at_most" {
            "<="
        } else {
            ">="
        }
    }
}

/// Parses a report, refusing other schema versions.
pub(crate) fn parse(text: &str) -> Result<Report> {
    let report: Report = serde_json::from_str(text).context("not a benchmark report")?;
    if report.schema != REPORT_SCHEMA {
        bail!(
            "report schema {} is not the {REPORT_SCHEMA} this xtask reads",
            report.schema
        );
    }
    Ok(report)
}

/// Reads and parses a report file.
pub(crate) fn load(path: &Path) -> Result<Report> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&text).with_context(|| format!("in {}", path.display()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small report in the shape `gater bench --suite compare` writes.
    pub(crate) const SAMPLE: &str = r#"{
      "schema": 1, "started_unix_s": 1764230400, "target": "compare", "seed": 7,
      "seconds": 3.0, "warmup_s": 0.5, "cores": 2,
      "cases": [
        {"id": "w1/embedded/c64/e1", "workload": "w1", "target": "embedded", "group": "transport-w1",
         "params": {"clients": 64}, "measured_s": 3.0,
         "figures": {"events_per_s": 150000.0, "appends_per_s": 150000.0,
                     "cpu_us_per_append": 12.5, "cpu_us_per_append_bench": 12.5},
         "latency": {"count": 10, "mean_us": 400.0, "p50_us": 350.0, "p95_us": 900.0, "p99_us": 1500.0,
                     "p999_us": 2000.0, "max_us": 2100.0,
                     "curve": [[0.0, 100.0], [50.0, 350.0], [99.0, 1500.0], [100.0, 2100.0]]},
         "errors": {}},
        {"id": "w1/quic/c64/e1", "workload": "w1", "target": "quic", "group": "transport-w1",
         "params": {"clients": 64}, "measured_s": 3.0,
         "figures": {"events_per_s": 75000.0, "appends_per_s": 75000.0,
                     "cpu_us_per_append": 60.5, "cpu_us_per_append_client": 20.0,
                     "cpu_us_per_append_proxy": 18.5, "cpu_us_per_append_worker": 22.0},
         "latency": {"count": 10, "mean_us": 800.0, "p50_us": 700.0, "p95_us": 1800.0, "p99_us": 3000.0,
                     "p999_us": 4000.0, "max_us": 4100.0,
                     "curve": [[0.0, 200.0], [50.0, 700.0], [99.0, 3000.0], [100.0, 4100.0]]},
         "errors": {"unavailable": 2}},
        {"id": "w6/proxy-mem", "workload": "w6", "target": "proxy-mem", "group": "failover",
         "params": {}, "measured_s": 2.0, "figures": {"lost": 0.0, "duplicated": 0.0},
         "latency": null, "errors": {}}
      ],
      "ratios": [{"name": "W1 events/s: quic / embedded", "numerator": "w1/quic/c64/e1",
                  "denominator": "w1/embedded/c64/e1", "metric": "events_per_s", "value": 0.5}],
      "goals": [{"name": "W1 in-process events/s",
                 "subject": {"figure": {"case": "w1/embedded/c64/e1", "metric": "events_per_s"}},
                 "bound": "at_least", "threshold": 150000.0, "actual": 150000.0, "met": true},
                {"name": "W5 live p99 µs", "subject": {"ratio": {"name": "x"}},
                 "bound": "at_most", "threshold": 5000.0, "actual": null, "met": false}]
    }"#;

    pub(crate) fn sample() -> Report {
        parse(SAMPLE).unwrap()
    }

    #[test]
    fn report_of_the_writer_parses_and_round_trips() {
        let report = sample();
        assert_eq!(report.cases.len(), 3);
        assert_eq!(report.cases[0].rate(), Some(("events_per_s", 150_000.0)));
        assert_eq!(report.cases[2].rate(), None);
        assert_eq!(report.goals[1].operator(), "<=");
        let again = parse(&serde_json::to_string(&report).unwrap()).unwrap();
        assert_eq!(again, report);
    }

    #[test]
    fn another_schema_version_is_refused() {
        let text = SAMPLE.replace("\"schema\": 1", "\"schema\": 2");
        let error = parse(&text).unwrap_err().to_string();
        assert!(error.contains("schema 2"), "{error}");
    }

    #[test]
    fn all_figures_include_latency_percentiles() {
        let figures = sample().cases[0].all_figures();
        assert_eq!(figures["p99_us"], 1500.0);
        assert_eq!(figures["events_per_s"], 150_000.0);
    }
}
