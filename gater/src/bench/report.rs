//! The results document: cases with their figures, ratios between cases, and
//! goals checked against both. One schema for `--json` lines, `--out` files
//! and `cargo xtask bench`, which reads it back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::latency::LatencySummary;

/// Version of the document's shape; bumped when a field changes meaning.
pub(crate) const REPORT_SCHEMA: u32 = 1;

/// Names of the figures cases report (one term, one meaning, across workloads).
pub(crate) mod metric {
    /// Events written or read per second.
    pub(crate) const EVENTS_PER_S: &str = "events_per_s";
    /// Successful appends per second.
    pub(crate) const APPENDS_PER_S: &str = "appends_per_s";
    /// Successful reads (calls) per second.
    pub(crate) const READS_PER_S: &str = "reads_per_s";
    /// Acknowledgements per second.
    pub(crate) const ACKS_PER_S: &str = "acks_per_s";
    /// `fdatasync` calls per second (the disk probe).
    pub(crate) const SYNCS_PER_S: &str = "syncs_per_s";
    /// A case's median latency less the disk probe's median `fdatasync`
    /// of the same run, microseconds: what an append costs beyond its flush.
    pub(crate) const P50_OVER_FDATASYNC_US: &str = "p50_over_fdatasync_us";
    /// Appends refused for a wrong expected version.
    pub(crate) const CONFLICTS: &str = "conflicts";
    /// Share of append attempts refused for a wrong expected version.
    pub(crate) const CONFLICT_RATE: &str = "conflict_rate";
    /// Errors while the worker not holding the store was down.
    pub(crate) const ERRORS_OTHER_DOWN: &str = "errors_other_down";
    /// Errors while the worker holding the store was down.
    pub(crate) const ERRORS_HOLDER_DOWN: &str = "errors_holder_down";
    /// From the first to the last failed append around the holder's outage.
    pub(crate) const ERROR_WINDOW_MS: &str = "error_window_ms";
    /// Longest append while the holder was down.
    pub(crate) const STALL_MS: &str = "stall_ms";
    /// Acknowledged appends checked by reading back.
    pub(crate) const ACKED_APPENDS: &str = "acked_appends";
    /// Acknowledged events missing on read-back.
    pub(crate) const LOST: &str = "lost";
    /// Events stored more than once.
    pub(crate) const DUPLICATED: &str = "duplicated";
    /// Median latency, microseconds.
    pub(crate) const P50_US: &str = "p50_us";
    /// 99th percentile latency, microseconds.
    pub(crate) const P99_US: &str = "p99_us";
    /// User + system CPU time of every process of the case per acknowledged
    /// append in the measured window, microseconds.
    pub(crate) const CPU_US_PER_APPEND: &str = "cpu_us_per_append";

    /// [`CPU_US_PER_APPEND`] of one process, by its role (`bench`, `client`, `proxy`, `worker`).
    pub(crate) fn cpu_us_per_append(role: &str) -> String {
        format!("{CPU_US_PER_APPEND}_{role}")
    }
}

/// One run of `gater bench`: every case, then ratios and goals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Report {
    /// [`REPORT_SCHEMA`].
    pub(crate) schema: u32,
    /// Start of the run, seconds since the Unix epoch.
    pub(crate) started_unix_s: u64,
    /// What was measured: `compare` (in-process suite) or the server address.
    pub(crate) target: String,
    /// Seed of every random choice of the workloads.
    pub(crate) seed: u64,
    /// Measured seconds per case.
    pub(crate) seconds: f64,
    /// Warm-up seconds per case, excluded from the figures.
    pub(crate) warmup_s: f64,
    /// CPU cores the machine offers.
    pub(crate) cores: usize,
    /// The cases, in the order they ran.
    pub(crate) cases: Vec<CaseResult>,
    /// Ratios between cases.
    pub(crate) ratios: Vec<Ratio>,
    /// Goals checked against cases and ratios.
    pub(crate) goals: Vec<Goal>,
}

/// The figures of one workload against one target with one set of parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct CaseResult {
    /// Unique within a report, e.g. `w1/embedded/c64/e1`.
    pub(crate) id: String,
    /// `w1` … `w6`.
    pub(crate) workload: String,
    /// What served the requests, e.g. `embedded`, `quic+proxy`.
    pub(crate) target: String,
    /// The comparison this case belongs to, for tables and charts.
    pub(crate) group: String,
    /// Parameters (clients, events per append, streams, …).
    pub(crate) params: BTreeMap<String, u64>,
    /// Seconds actually measured (warm-up excluded).
    pub(crate) measured_s: f64,
    /// Figures by [`metric`] name.
    pub(crate) figures: BTreeMap<String, f64>,
    /// Latency of the case's operation, if it has one.
    pub(crate) latency: Option<LatencySummary>,
    /// Failed operations by `Error::kind()`.
    pub(crate) errors: BTreeMap<String, u64>,
}

impl CaseResult {
    /// A case with no figures yet.
    pub(crate) fn new(workload: &str, target: &str, group: &str, id_suffix: &str) -> Self {
        let id = if id_suffix.is_empty() {
            format!("{workload}/{target}")
        } else {
            format!("{workload}/{target}/{id_suffix}")
        };
        CaseResult {
            id,
            workload: workload.to_owned(),
            target: target.to_owned(),
            group: group.to_owned(),
            params: BTreeMap::new(),
            measured_s: 0.0,
            figures: BTreeMap::new(),
            latency: None,
            errors: BTreeMap::new(),
        }
    }

    /// A figure, or a latency percentile (`p50_us`, `p99_us`, …) of its summary.
    pub(crate) fn value(&self, name: &str) -> Option<f64> {
        if let Some(v) = self.figures.get(name) {
            return Some(*v);
        }
        let latency = self.latency.as_ref()?;
        match name {
            "p50_us" => Some(latency.p50_us),
            "p95_us" => Some(latency.p95_us),
            "p99_us" => Some(latency.p99_us),
            "p999_us" => Some(latency.p999_us),
            "max_us" => Some(latency.max_us),
            "mean_us" => Some(latency.mean_us),
            _ => None,
        }
    }
}

/// `numerator.metric / denominator.metric`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Ratio {
    /// What the ratio says, e.g. `proxy / direct (W1)`.
    pub(crate) name: String,
    /// Case id above the line.
    pub(crate) numerator: String,
    /// Case id below the line.
    pub(crate) denominator: String,
    /// The figure compared.
    pub(crate) metric: String,
    /// The ratio; `None` when a figure is missing or the denominator is zero.
    pub(crate) value: Option<f64>,
}

/// Which way a goal's threshold points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Bound {
    /// The value must be at least the threshold.
    AtLeast,
    /// The value must be at most the threshold.
    AtMost,
}

/// What a goal is checked against.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Subject {
    /// A figure of a case.
    Figure {
        /// The case id.
        case: String,
        /// The figure.
        metric: String,
    },
    /// A ratio, by name.
    Ratio {
        /// The ratio's name.
        name: String,
    },
}

/// A target figure and whether the run met it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Goal {
    /// What the goal says, e.g. `W1 64 clients in-process events/s`.
    pub(crate) name: String,
    /// What is checked.
    pub(crate) subject: Subject,
    /// Which way the threshold points.
    pub(crate) bound: Bound,
    /// The threshold.
    pub(crate) threshold: f64,
    /// The value measured; `None` when the case or ratio is missing.
    pub(crate) actual: Option<f64>,
    /// Whether `actual` meets the threshold (false when missing).
    pub(crate) met: bool,
}

/// A ratio to compute: `numerator.metric / denominator.metric`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RatioSpec {
    pub(crate) name: &'static str,
    pub(crate) numerator: &'static str,
    pub(crate) denominator: &'static str,
    pub(crate) metric: &'static str,
}

/// Computes every ratio over `cases`.
pub(crate) fn ratios(cases: &[CaseResult], specs: &[RatioSpec]) -> Vec<Ratio> {
    let value = |id: &str, metric: &str| {
        cases
            .iter()
            .find(|c| c.id == id)
            .and_then(|c| c.value(metric))
    };
    specs
        .iter()
        .map(|spec| {
            let top = value(spec.numerator, spec.metric);
            let bottom = value(spec.denominator, spec.metric);
            let value = match (top, bottom) {
                (Some(t), Some(b)) if b != 0.0 => Some(t / b),
                _ => None,
            };
            Ratio {
                name: spec.name.to_owned(),
                numerator: spec.numerator.to_owned(),
                denominator: spec.denominator.to_owned(),
                metric: spec.metric.to_owned(),
                value,
            }
        })
        .collect()
}

/// Fills in `actual` and `met` of every goal.
pub(crate) fn evaluate(goals: &mut [Goal], cases: &[CaseResult], ratios: &[Ratio]) {
    for goal in goals {
        goal.actual = match &goal.subject {
            Subject::Figure { case, metric } => cases
                .iter()
                .find(|c| &c.id == case)
                .and_then(|c| c.value(metric)),
            Subject::Ratio { name } => ratios
                .iter()
                .find(|r| &r.name == name)
                .and_then(|r| r.value),
        };
        goal.met = match (goal.actual, goal.bound) {
            (Some(v), Bound::AtLeast) => v >= goal.threshold,
            (Some(v), Bound::AtMost) => v <= goal.threshold,
            (None, _) => false,
        };
    }
}

/// The columns of the human table, one row per case.
pub(crate) const TABLE_COLUMNS: [&str; 9] = [
    "case", "events/s", "ops/s", "p50", "p95", "p99", "p99.9", "errors", "notes",
];

/// One row of the human table.
pub(crate) fn table_row(case: &CaseResult) -> [String; 9] {
    let rate = |name: &str| {
        case.figures
            .get(name)
            .map_or(String::new(), |v| human_count(*v))
    };
    let ops = [
        metric::APPENDS_PER_S,
        metric::READS_PER_S,
        metric::ACKS_PER_S,
        metric::SYNCS_PER_S,
    ]
    .iter()
    .find_map(|m| case.figures.get(*m))
    .map_or(String::new(), |v| human_count(*v));
    let latency = |pick: fn(&LatencySummary) -> f64| {
        case.latency
            .as_ref()
            .map_or(String::new(), |l| human_us(pick(l)))
    };
    let errors: u64 = case.errors.values().sum();
    let notes: Vec<String> = case
        .figures
        .iter()
        .filter(|(k, _)| !k.ends_with("_per_s"))
        .map(|(k, v)| format!("{k}={}", trim_float(*v)))
        .collect();
    [
        case.id.clone(),
        rate(metric::EVENTS_PER_S),
        ops,
        latency(|l| l.p50_us),
        latency(|l| l.p95_us),
        latency(|l| l.p99_us),
        latency(|l| l.p999_us),
        errors.to_string(),
        notes.join(" "),
    ]
}

/// Renders rows under `columns` as an aligned text table.
pub(crate) fn render_table<const N: usize>(columns: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = columns.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i == 0 || i == N - 1 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect();
        parts.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(columns.to_vec());
    for row in rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}

/// `1234567.8` → `1.23M`.
pub(crate) fn human_count(v: f64) -> String {
    match v.abs() {
        a if a >= 1e9 => format!("{:.2}G", v / 1e9),
        a if a >= 1e6 => format!("{:.2}M", v / 1e6),
        a if a >= 1e4 => format!("{:.1}k", v / 1e3),
        _ => format!("{v:.0}"),
    }
}

/// Microseconds in the unit that reads best.
pub(crate) fn human_us(us: f64) -> String {
    match us {
        u if u >= 1e6 => format!("{:.2}s", u / 1e6),
        u if u >= 1e3 => format!("{:.2}ms", u / 1e3),
        u => format!("{u:.1}µs"),
    }
}

fn trim_float(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(id: &str, figures: &[(&str, f64)]) -> CaseResult {
        let mut c = CaseResult::new("w1", "t", "g", "");
        c.id = id.to_owned();
        c.figures = figures.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        c
    }

    fn sample_report() -> Report {
        let mut c = case(
            "w1/embedded/c64/e1",
            &[(metric::EVENTS_PER_S, 150_000.5), (metric::LOST, 0.0)],
        );
        c.params.insert("clients".into(), 64);
        c.errors.insert("unavailable".into(), 3);
        let mut latencies = super::super::latency::Latencies::new();
        latencies.record(std::time::Duration::from_micros(250));
        c.latency = latencies.summary();
        Report {
            schema: REPORT_SCHEMA,
            started_unix_s: 1_700_000_000,
            target: "compare".into(),
            seed: 7,
            seconds: 3.0,
            warmup_s: 0.5,
            cores: 2,
            cases: vec![c],
            ratios: vec![Ratio {
                name: "a / b".into(),
                numerator: "a".into(),
                denominator: "b".into(),
                metric: metric::EVENTS_PER_S.into(),
                value: None,
            }],
            goals: vec![Goal {
                name: "fast".into(),
                subject: Subject::Ratio {
                    name: "a / b".into(),
                },
                bound: Bound::AtLeast,
                threshold: 0.8,
                actual: Some(0.9),
                met: true,
            }],
        }
    }

    #[test]
    fn report_round_trips_through_json() {
        let report = sample_report();
        let text = serde_json::to_string(&report).unwrap();
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(back, report);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["schema"], REPORT_SCHEMA);
        assert_eq!(value["goals"][0]["bound"], "at_least");
        assert_eq!(value["goals"][0]["subject"]["ratio"]["name"], "a / b");
        assert!(value["cases"][0]["latency"]["p50_us"].as_f64().is_some());
    }

    #[test]
    fn ratio_divides_the_named_figures() {
        let cases = [
            case("proxy", &[(metric::EVENTS_PER_S, 80.0)]),
            case("direct", &[(metric::EVENTS_PER_S, 100.0)]),
            case("zero", &[(metric::EVENTS_PER_S, 0.0)]),
        ];
        let spec = |numerator, denominator| RatioSpec {
            name: "r",
            numerator,
            denominator,
            metric: metric::EVENTS_PER_S,
        };
        let got = ratios(
            &cases,
            &[
                spec("proxy", "direct"),
                spec("proxy", "zero"),
                spec("proxy", "missing"),
            ],
        );
        assert_eq!(got[0].value, Some(0.8));
        assert_eq!(got[1].value, None, "a zero denominator gives no ratio");
        assert_eq!(got[2].value, None, "a missing case gives no ratio");
    }

    #[test]
    fn goals_are_met_only_on_the_right_side_of_the_threshold() {
        let cases = [case("c", &[(metric::EVENTS_PER_S, 100.0)])];
        let ratios = [Ratio {
            name: "r".into(),
            numerator: "c".into(),
            denominator: "c".into(),
            metric: metric::EVENTS_PER_S.into(),
            value: Some(1.0),
        }];
        let goal = |subject, bound, threshold| Goal {
            name: "g".into(),
            subject,
            bound,
            threshold,
            actual: None,
            met: false,
        };
        let figure = |case: &str| Subject::Figure {
            case: case.into(),
            metric: metric::EVENTS_PER_S.into(),
        };
        let mut goals = vec![
            goal(figure("c"), Bound::AtLeast, 100.0),
            goal(figure("c"), Bound::AtLeast, 100.5),
            goal(figure("c"), Bound::AtMost, 99.0),
            goal(figure("gone"), Bound::AtMost, 1e9),
            goal(Subject::Ratio { name: "r".into() }, Bound::AtMost, 1.0),
        ];
        evaluate(&mut goals, &cases, &ratios);
        let met: Vec<bool> = goals.iter().map(|g| g.met).collect();
        assert_eq!(met, [true, false, false, false, true]);
        assert_eq!(goals[0].actual, Some(100.0));
        assert_eq!(goals[3].actual, None);
    }

    #[test]
    fn table_aligns_numbers_right_and_names_left() {
        let rows = [table_row(&sample_report().cases[0])];
        let text = render_table(TABLE_COLUMNS, &rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("case"));
        assert!(lines[1].starts_with("w1/embedded/c64/e1"));
        assert!(lines[1].contains("150.0k"));
        assert!(lines[1].contains("250"));
        assert!(lines[1].contains("lost=0"));
    }

    #[test]
    fn human_units_pick_a_readable_scale() {
        assert_eq!(human_count(999.4), "999");
        assert_eq!(human_count(61_234.0), "61.2k");
        assert_eq!(human_count(1_250_000.0), "1.25M");
        assert_eq!(human_us(12.34), "12.3µs");
        assert_eq!(human_us(4_560.0), "4.56ms");
        assert_eq!(human_us(2_500_000.0), "2.50s");
    }
}
