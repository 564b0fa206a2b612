//! The results document's human table. The document itself (cases with
//! their figures, ratios between cases, goals checked against both) is the
//! `gater-bench-report` crate's, shared with `cargo xtask bench`, which reads
//! it back.

pub(crate) use gater_bench_report::{
    evaluate, metric, micros, ratios, Bound, CaseResult, Goal, LatencySummary, RatioSpec, Report,
    Subject, REPORT_SCHEMA,
};

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
    let ops = case.operations_per_s().map_or(String::new(), human_count);
    let latency = |pick: fn(&LatencySummary) -> f64| {
        case.latency
            .as_ref()
            .map_or(String::new(), |l| micros(pick(l)))
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

    fn sample_case() -> CaseResult {
        let mut c = CaseResult::new("w1", "embedded", "g", "c64/e1");
        c.figures = [(metric::EVENTS_PER_S, 150_000.5), (metric::LOST, 0.0)]
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        c.params.insert("clients".into(), 64);
        c.errors.insert("unavailable".into(), 3);
        let mut latencies = super::super::latency::Latencies::new();
        latencies.record(std::time::Duration::from_micros(250));
        c.latency = latencies.summary();
        c
    }

    #[test]
    fn table_aligns_numbers_right_and_names_left() {
        let rows = [table_row(&sample_case())];
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
    fn human_counts_pick_a_readable_scale() {
        assert_eq!(human_count(999.4), "999");
        assert_eq!(human_count(61_234.0), "61.2k");
        assert_eq!(human_count(1_250_000.0), "1.25M");
    }
}
