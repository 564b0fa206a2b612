//! The benchmark report: cases with their figures, ratios between cases, and
//! goals checked against both.
//!
//! One schema for the `gater` binary, which measures and writes it
//! (`gater bench --json`, `--out`), and for `cargo xtask bench`, which reads
//! it back to render Markdown, a chart and comparisons between runs. Both
//! sides use these types, so a field cannot mean one thing to the writer and
//! another to the reader.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Version of the document's shape; bumped when a field changes meaning.
pub const REPORT_SCHEMA: u32 = 1;

/// Names of the figures cases report (one term, one meaning, across workloads).
pub mod metric {
    /// Events written or read per second.
    pub const EVENTS_PER_S: &str = "events_per_s";
    /// Successful appends per second.
    pub const APPENDS_PER_S: &str = "appends_per_s";
    /// Successful reads (calls) per second.
    pub const READS_PER_S: &str = "reads_per_s";
    /// Acknowledgements per second.
    pub const ACKS_PER_S: &str = "acks_per_s";
    /// `fdatasync` calls per second (the disk probe).
    pub const SYNCS_PER_S: &str = "syncs_per_s";
    /// A case's median latency less the disk probe's median `fdatasync`
    /// of the same run, microseconds: what an append costs beyond its flush.
    pub const P50_OVER_FDATASYNC_US: &str = "p50_over_fdatasync_us";
    /// Appends refused for a wrong expected version.
    pub const CONFLICTS: &str = "conflicts";
    /// Share of append attempts refused for a wrong expected version.
    pub const CONFLICT_RATE: &str = "conflict_rate";
    /// Errors while the worker not holding the store was down.
    pub const ERRORS_OTHER_DOWN: &str = "errors_other_down";
    /// Errors while the worker holding the store was down.
    pub const ERRORS_HOLDER_DOWN: &str = "errors_holder_down";
    /// From the first to the last failed append around the holder's outage.
    pub const ERROR_WINDOW_MS: &str = "error_window_ms";
    /// Longest append while the holder was down.
    pub const STALL_MS: &str = "stall_ms";
    /// Acknowledged appends checked by reading back.
    pub const ACKED_APPENDS: &str = "acked_appends";
    /// Acknowledged events missing on read-back.
    pub const LOST: &str = "lost";
    /// Events stored more than once.
    pub const DUPLICATED: &str = "duplicated";
    /// Median latency, microseconds.
    pub const P50_US: &str = "p50_us";
    /// 99th percentile latency, microseconds.
    pub const P99_US: &str = "p99_us";
    /// User + system CPU time of every process of the case per acknowledged
    /// append in the measured window, microseconds.
    pub const CPU_US_PER_APPEND: &str = "cpu_us_per_append";

    /// A case's throughput figure, the first of these it has.
    pub const RATES: [&str; 4] = [EVENTS_PER_S, ACKS_PER_S, APPENDS_PER_S, READS_PER_S];
    /// A case's operations-per-second figure, the first of these it has.
    pub const OPERATIONS: [&str; 4] = [APPENDS_PER_S, READS_PER_S, ACKS_PER_S, SYNCS_PER_S];

    /// [`CPU_US_PER_APPEND`] of one process, by its role (`bench`, `client`, `proxy`, `worker`).
    pub fn cpu_us_per_append(role: &str) -> String {
        format!("{CPU_US_PER_APPEND}_{role}")
    }
}

/// A report could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The text is not a report.
    #[error("not a benchmark report: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The report has another shape than this build reads.
    #[error("report schema {found} is not the {REPORT_SCHEMA} this build reads")]
    Schema {
        /// The report's schema version.
        found: u32,
    },
}

/// One run of `gater bench`: every case, then ratios and goals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// [`REPORT_SCHEMA`].
    pub schema: u32,
    /// Start of the run, seconds since the Unix epoch.
    pub started_unix_s: u64,
    /// What was measured: `compare` (in-process suite) or the server address.
    pub target: String,
    /// Seed of every random choice of the workloads.
    pub seed: u64,
    /// Measured seconds per case.
    pub seconds: f64,
    /// Warm-up seconds per case, excluded from the figures.
    pub warmup_s: f64,
    /// CPU cores the machine offers.
    pub cores: usize,
    /// The cases, in the order they ran.
    pub cases: Vec<CaseResult>,
    /// Ratios between cases.
    pub ratios: Vec<Ratio>,
    /// Goals checked against cases and ratios.
    pub goals: Vec<Goal>,
}

impl Report {
    /// Parses a report, refusing other schema versions.
    pub fn parse(text: &str) -> Result<Report, ReportError> {
        let report: Report = serde_json::from_str(text)?;
        if report.schema != REPORT_SCHEMA {
            return Err(ReportError::Schema {
                found: report.schema,
            });
        }
        Ok(report)
    }
}

/// The figures of one workload against one target with one set of parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaseResult {
    /// Unique within a report, e.g. `w1/embedded/c64/e1`.
    pub id: String,
    /// `w1` … `w9`.
    pub workload: String,
    /// What served the requests, e.g. `embedded`, `quic+proxy`.
    pub target: String,
    /// The comparison this case belongs to, for tables and charts.
    pub group: String,
    /// Parameters (clients, events per append, streams, …).
    pub params: BTreeMap<String, u64>,
    /// Seconds actually measured (warm-up excluded).
    pub measured_s: f64,
    /// Figures by [`metric`] name.
    pub figures: BTreeMap<String, f64>,
    /// Latency of the case's operation, if it has one.
    pub latency: Option<LatencySummary>,
    /// Failed operations by `Error::kind()`.
    pub errors: BTreeMap<String, u64>,
}

/// A latency distribution, microseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Operations measured.
    pub count: u64,
    /// Mean latency.
    pub mean_us: f64,
    /// Median.
    pub p50_us: f64,
    /// 95th percentile.
    pub p95_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Slowest operation.
    pub max_us: f64,
    /// `[percentile, latency_us]` pairs, ascending.
    pub curve: Vec<[f64; 2]>,
}

impl LatencySummary {
    /// The named percentiles (`p50_us` … `max_us`, `mean_us`) with their values.
    pub fn named(&self) -> [(&'static str, f64); 6] {
        [
            ("p50_us", self.p50_us),
            ("p95_us", self.p95_us),
            ("p99_us", self.p99_us),
            ("p999_us", self.p999_us),
            ("max_us", self.max_us),
            ("mean_us", self.mean_us),
        ]
    }
}

impl CaseResult {
    /// A case with no figures yet.
    pub fn new(workload: &str, target: &str, group: &str, id_suffix: &str) -> Self {
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
    pub fn value(&self, name: &str) -> Option<f64> {
        if let Some(v) = self.figures.get(name) {
            return Some(*v);
        }
        let latency = self.latency.as_ref()?;
        latency
            .named()
            .into_iter()
            .find_map(|(n, v)| (n == name).then_some(v))
    }

    /// Every figure, latency percentiles included, by name.
    pub fn all_figures(&self) -> BTreeMap<String, f64> {
        let mut all = self.figures.clone();
        if let Some(latency) = &self.latency {
            for (name, v) in latency.named() {
                if name != "mean_us" {
                    all.insert(name.to_owned(), v);
                }
            }
        }
        all
    }

    /// The case's throughput figure: the first of [`metric::RATES`] it has.
    pub fn rate(&self) -> Option<(&'static str, f64)> {
        first_of(&self.figures, &metric::RATES)
    }

    /// The case's operations per second: the first of [`metric::OPERATIONS`] it has.
    pub fn operations_per_s(&self) -> Option<f64> {
        first_of(&self.figures, &metric::OPERATIONS).map(|(_, v)| v)
    }

    /// CPU time per append of each process of the case, by role, in figure order.
    pub fn cpu_per_append(&self) -> Vec<(&str, f64)> {
        self.figures
            .iter()
            .filter_map(|(name, v)| {
                let role = name
                    .strip_prefix(metric::CPU_US_PER_APPEND)?
                    .strip_prefix('_')?;
                Some((role, *v))
            })
            .collect()
    }
}

fn first_of(
    figures: &BTreeMap<String, f64>,
    names: &[&'static str],
) -> Option<(&'static str, f64)> {
    names
        .iter()
        .find_map(|name| figures.get(*name).map(|v| (*name, *v)))
}

/// `numerator.metric / denominator.metric`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ratio {
    /// What the ratio says, e.g. `proxy / direct (W1)`.
    pub name: String,
    /// Case id above the line.
    pub numerator: String,
    /// Case id below the line.
    pub denominator: String,
    /// The figure compared.
    pub metric: String,
    /// The ratio; `None` when a figure is missing or the denominator is zero.
    pub value: Option<f64>,
}

/// Which way a goal's threshold points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    /// The value must be at least the threshold.
    AtLeast,
    /// The value must be at most the threshold.
    AtMost,
}

impl Bound {
    /// `>=` or `<=`.
    pub fn operator(self) -> &'static str {
        match self {
            Bound::AtLeast => ">=",
            Bound::AtMost => "<=",
        }
    }
}

/// What a goal is checked against.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
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
pub struct Goal {
    /// What the goal says, e.g. `W1 64 clients in-process events/s`.
    pub name: String,
    /// What is checked.
    pub subject: Subject,
    /// Which way the threshold points.
    pub bound: Bound,
    /// The threshold.
    pub threshold: f64,
    /// The value measured; `None` when the case or ratio is missing.
    pub actual: Option<f64>,
    /// Whether `actual` meets the threshold (false when missing).
    pub met: bool,
}

/// A ratio to compute: `numerator.metric / denominator.metric`.
#[derive(Clone, Copy, Debug)]
pub struct RatioSpec {
    /// [`Ratio::name`].
    pub name: &'static str,
    /// [`Ratio::numerator`].
    pub numerator: &'static str,
    /// [`Ratio::denominator`].
    pub denominator: &'static str,
    /// [`Ratio::metric`].
    pub metric: &'static str,
}

/// Computes every ratio over `cases`.
pub fn ratios(cases: &[CaseResult], specs: &[RatioSpec]) -> Vec<Ratio> {
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
pub fn evaluate(goals: &mut [Goal], cases: &[CaseResult], ratios: &[Ratio]) {
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

/// Microseconds in the unit that reads best: `12.3 µs`, `4.56 ms`, `2.50 s`.
pub fn micros(us: f64) -> String {
    if us >= 1e6 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{us:.1} µs")
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

    /// A small report: an embedded W1 case with latency and CPU shares, a
    /// failover case without either, a ratio and two goals.
    fn sample() -> Report {
        let mut embedded = case(
            "w1/embedded/c64/e1",
            &[
                (metric::EVENTS_PER_S, 150_000.0),
                (metric::APPENDS_PER_S, 150_000.0),
                (metric::CPU_US_PER_APPEND, 12.5),
                ("cpu_us_per_append_bench", 12.5),
            ],
        );
        embedded.latency = Some(LatencySummary {
            count: 10,
            mean_us: 400.0,
            p50_us: 350.0,
            p95_us: 900.0,
            p99_us: 1500.0,
            p999_us: 2000.0,
            max_us: 2100.0,
            curve: vec![[0.0, 100.0], [50.0, 350.0], [100.0, 2100.0]],
        });
        let failover = case("w6/proxy-mem", &[(metric::LOST, 0.0)]);
        let goal = |name: &str, subject, bound, threshold| Goal {
            name: name.into(),
            subject,
            bound,
            threshold,
            actual: None,
            met: false,
        };
        Report {
            schema: REPORT_SCHEMA,
            started_unix_s: 1_764_230_400,
            target: "compare".into(),
            seed: 7,
            seconds: 3.0,
            warmup_s: 0.5,
            cores: 2,
            cases: vec![embedded, failover],
            ratios: vec![Ratio {
                name: "a / b".into(),
                numerator: "a".into(),
                denominator: "b".into(),
                metric: metric::EVENTS_PER_S.into(),
                value: None,
            }],
            goals: vec![
                goal(
                    "fast",
                    Subject::Ratio {
                        name: "a / b".into(),
                    },
                    Bound::AtLeast,
                    0.8,
                ),
                goal(
                    "W5 live p99 µs",
                    Subject::Figure {
                        case: "w5/embedded/live".into(),
                        metric: metric::P99_US.into(),
                    },
                    Bound::AtMost,
                    5000.0,
                ),
            ],
        }
    }

    #[test]
    fn report_round_trips_through_json_in_the_documented_shape() {
        let report = sample();
        let text = serde_json::to_string(&report).unwrap();
        assert_eq!(Report::parse(&text).unwrap(), report);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["schema"], REPORT_SCHEMA);
        assert_eq!(value["goals"][0]["bound"], "at_least");
        assert_eq!(value["goals"][0]["subject"]["ratio"]["name"], "a / b");
        assert_eq!(value["goals"][1]["subject"]["figure"]["metric"], "p99_us");
        assert_eq!(value["cases"][0]["latency"]["p50_us"], 350.0);
        assert!(value["cases"][1]["latency"].is_null());
    }

    #[test]
    fn another_schema_version_is_refused() {
        let mut report = sample();
        report.schema = REPORT_SCHEMA + 1;
        let text = serde_json::to_string(&report).unwrap();
        let error = Report::parse(&text).unwrap_err();
        assert!(
            matches!(error, ReportError::Schema { found } if found == REPORT_SCHEMA + 1),
            "{error}"
        );
        assert!(matches!(
            Report::parse("{}").unwrap_err(),
            ReportError::Malformed(_)
        ));
    }

    #[test]
    fn a_case_answers_its_rate_operations_cpu_shares_and_percentiles() {
        let report = sample();
        let embedded = &report.cases[0];
        assert_eq!(embedded.rate(), Some((metric::EVENTS_PER_S, 150_000.0)));
        assert_eq!(embedded.operations_per_s(), Some(150_000.0));
        assert_eq!(embedded.cpu_per_append(), [("bench", 12.5)]);
        assert_eq!(embedded.value(metric::P99_US), Some(1500.0));
        assert_eq!(embedded.value("mean_us"), Some(400.0));
        let all = embedded.all_figures();
        assert_eq!(all["p99_us"], 1500.0);
        assert_eq!(all["events_per_s"], 150_000.0);
        assert!(!all.contains_key("mean_us"));
        let failover = &report.cases[1];
        assert_eq!(failover.rate(), None);
        assert_eq!(failover.value(metric::P50_US), None);
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
        assert_eq!(goals[2].bound.operator(), "<=");
    }

    #[test]
    fn micros_pick_a_readable_scale() {
        assert_eq!(micros(12.34), "12.3 µs");
        assert_eq!(micros(4_560.0), "4.56 ms");
        assert_eq!(micros(2_500_000.0), "2.50 s");
    }
}
