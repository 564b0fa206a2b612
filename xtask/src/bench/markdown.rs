//! The Markdown rendering of a report: cases grouped by comparison, ratios, goals.

use std::fmt::Write;

use gater_bench_report::micros;

use super::schema::{Case, Report, CPU_US_PER_APPEND};

/// The whole report as a Markdown document titled with `stamp`.
pub(crate) fn render(report: &Report, stamp: &str) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Gater benchmarks {stamp}\n");
    let _ = writeln!(
        md,
        "Target `{}`, seed {}, {} s measured per case after {} s of warm-up, {} cores.\n",
        report.target, report.seed, report.seconds, report.warmup_s, report.cores
    );
    let mut groups: Vec<&str> = Vec::new();
    for case in &report.cases {
        if !groups.contains(&case.group.as_str()) {
            groups.push(&case.group);
        }
    }
    for group in groups {
        let _ = writeln!(md, "## {group}\n");
        md += "| case | events/s | ops/s | p50 | p95 | p99 | p99.9 | errors | CPU µs/append | other |\n";
        md += "|---|---:|---:|---:|---:|---:|---:|---:|---|---|\n";
        for case in report.cases.iter().filter(|c| c.group == group) {
            md += &row(case);
        }
        md += "\n";
    }
    if !report.ratios.is_empty() {
        md += "## Ratios\n\n| ratio | value |\n|---|---:|\n";
        for r in &report.ratios {
            let value = r.value.map_or("n/a".to_owned(), |v| format!("{v:.3}"));
            let _ = writeln!(md, "| {} | {value} |", cell(&r.name));
        }
        md += "\n";
    }
    if !report.goals.is_empty() {
        md += "## Goals\n\n| goal | measured | target | met |\n|---|---:|---:|---|\n";
        for g in &report.goals {
            let actual = g.actual.map_or("n/a".to_owned(), number);
            let met = if g.met { "yes" } else { "**no**" };
            let _ = writeln!(
                md,
                "| {} | {actual} | {} {} | {met} |",
                cell(&g.name),
                g.bound.operator().replace('<', "&lt;").replace('>', "&gt;"),
                number(g.threshold)
            );
        }
    }
    md
}

fn row(case: &Case) -> String {
    let figure = |name: &str| case.figures.get(name).map_or(String::new(), |v| number(*v));
    let ops = case.operations_per_s().map_or(String::new(), number);
    let latency = |pick: fn(&super::schema::Latency) -> f64| {
        case.latency
            .as_ref()
            .map_or(String::new(), |l| micros(pick(l)))
    };
    let errors: Vec<String> = case
        .errors
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let other: Vec<String> = case
        .figures
        .iter()
        .filter(|(k, _)| !k.ends_with("_per_s") && !k.starts_with(CPU_US_PER_APPEND))
        .map(|(k, v)| format!("{k} {}", number(*v)))
        .collect();
    format!(
        "| {} | {} | {ops} | {} | {} | {} | {} | {} | {} | {} |\n",
        cell(&case.id),
        figure("events_per_s"),
        latency(|l| l.p50_us),
        latency(|l| l.p95_us),
        latency(|l| l.p99_us),
        latency(|l| l.p999_us),
        if errors.is_empty() {
            "0".to_owned()
        } else {
            errors.join(", ")
        },
        cpu_cell(case),
        other.join(", ")
    )
}

/// The total CPU time per append, then each process's share, to a tenth of a
/// microsecond: `60.5 (client 20.0 · proxy 18.5 · worker 22.0)`.
fn cpu_cell(case: &Case) -> String {
    let Some(total) = case.figures.get(CPU_US_PER_APPEND) else {
        return String::new();
    };
    let parts: Vec<String> = case
        .cpu_per_append()
        .into_iter()
        .map(|(role, v)| format!("{role} {v:.1}"))
        .collect();
    if parts.len() <= 1 {
        return format!("{total:.1}");
    }
    format!("{total:.1} ({})", parts.join(" · "))
}

/// A number with thousands grouped and at most three decimals.
pub(crate) fn number(v: f64) -> String {
    if v.fract() != 0.0 && v.abs() < 1000.0 {
        return format!("{v:.3}").trim_end_matches('0').to_owned();
    }
    let digits = format!("{:.0}", v.abs());
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if v < 0.0 {
        grouped.insert(0, '-');
    }
    grouped
}

/// Escapes the one character that breaks a table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::super::schema::tests::sample;
    use super::*;

    #[test]
    fn markdown_groups_cases_and_lists_ratios_and_goals() {
        let md = render(&sample(), "20251127T080000Z");
        assert!(md.starts_with("# Gater benchmarks 20251127T080000Z\n"));
        assert!(md.contains("## transport-w1\n"));
        assert!(md.contains("## failover\n"));
        assert!(md.contains(
            "| w1/embedded/c64/e1 | 150,000 | 150,000 | 350.0 µs | 900.0 µs | 1.50 ms | 2.00 ms | 0 | 12.5 |  |"
        ));
        assert!(md.contains("| w1/quic/c64/e1 | 75,000 |"));
        assert!(md.contains("| unavailable 2 | 60.5 (client 20.0 · proxy 18.5 · worker 22.0) |"));
        assert!(md.contains("unavailable 2"));
        assert!(md.contains("duplicated 0, lost 0"));
        assert!(md.contains("| W1 events/s: quic / embedded | 0.500 |"));
        assert!(md.contains("| W1 in-process events/s | 150,000 | &gt;= 150,000 | yes |"));
        assert!(md.contains("| W5 live p99 µs | n/a | &lt;= 5,000 | **no** |"));
    }

    #[test]
    fn numbers_group_thousands_and_trim_decimals() {
        assert_eq!(number(1_234_567.4), "1,234,567");
        assert_eq!(number(999.0), "999");
        assert_eq!(number(0.8125), "0.812");
        assert_eq!(number(0.5), "0.5");
        assert_eq!(number(-12_000.0), "-12,000");
    }
}
