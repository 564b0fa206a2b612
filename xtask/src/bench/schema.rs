//! The report `gater bench --out` writes: the `gater-bench-report` crate's
//! types, which the writer uses too, and reading one from a file.

use std::path::Path;

use anyhow::{Context, Result};
pub(crate) use gater_bench_report::{
    metric::CPU_US_PER_APPEND, CaseResult as Case, LatencySummary as Latency, Report,
};

/// Reads and parses a report file, refusing other schema versions.
pub(crate) fn load(path: &Path) -> Result<Report> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Report::parse(&text).with_context(|| format!("in {}", path.display()))
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
        Report::parse(SAMPLE).unwrap()
    }

    #[test]
    fn a_report_file_is_read_and_a_missing_one_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        std::fs::write(&path, SAMPLE).unwrap();
        assert_eq!(load(&path).unwrap(), sample());
        let error = format!("{:#}", load(&dir.path().join("gone.json")).unwrap_err());
        assert!(error.contains("gone.json"), "{error}");
    }
}
