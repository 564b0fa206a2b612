//! `--compare OLD.json`: the change of every figure against an earlier run.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::markdown::number;
use super::schema::Report;

/// One figure in the old run, the new one, or both.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Change {
    /// A case id, or `ratio` for ratios.
    pub(crate) subject: String,
    /// The figure's name (the ratio's name for ratios).
    pub(crate) figure: String,
    /// Its value in the earlier run.
    pub(crate) old: Option<f64>,
    /// Its value in this run.
    pub(crate) new: Option<f64>,
}

impl Change {
    /// Relative change in percent; `None` unless both sides exist and the old one is not zero.
    pub(crate) fn percent(&self) -> Option<f64> {
        match (self.old, self.new) {
            (Some(old), Some(new)) if old != 0.0 => Some((new - old) / old.abs() * 100.0),
            _ => None,
        }
    }
}

/// Every figure of every case and every ratio, old against new, in the new run's order
/// (figures only the old run has come last).
pub(crate) fn changes(old: &Report, new: &Report) -> Vec<Change> {
    let mut old_values: BTreeMap<(String, String), f64> = BTreeMap::new();
    for case in &old.cases {
        for (figure, v) in case.all_figures() {
            old_values.insert((case.id.clone(), figure), v);
        }
    }
    for r in &old.ratios {
        if let Some(v) = r.value {
            old_values.insert(("ratio".to_owned(), r.name.clone()), v);
        }
    }
    let mut out = Vec::new();
    let new_values = new
        .cases
        .iter()
        .flat_map(|c| {
            c.all_figures()
                .into_iter()
                .map(|(f, v)| (c.id.clone(), f, Some(v)))
        })
        .chain(
            new.ratios
                .iter()
                .map(|r| ("ratio".to_owned(), r.name.clone(), r.value)),
        );
    for (subject, figure, value) in new_values {
        let old = old_values.remove(&(subject.clone(), figure.clone()));
        out.push(Change {
            subject,
            figure,
            old,
            new: value,
        });
    }
    out.extend(old_values.into_iter().map(|((subject, figure), v)| Change {
        subject,
        figure,
        old: Some(v),
        new: None,
    }));
    out
}

/// An aligned text table of the changes.
pub(crate) fn render(changes: &[Change]) -> String {
    let show = |v: Option<f64>| v.map_or("-".to_owned(), number);
    let rows: Vec<[String; 5]> = changes
        .iter()
        .map(|c| {
            let pct = c.percent().map_or(String::new(), |p| format!("{p:+.1}%"));
            [
                c.subject.clone(),
                c.figure.clone(),
                show(c.old),
                show(c.new),
                pct,
            ]
        })
        .collect();
    let header = ["case", "figure", "old", "new", "change"].map(str::to_owned);
    let mut widths = [0usize; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let [a, b, c, d, e] = row;
        let line = format!(
            "{a:<w0$}  {b:<w1$}  {c:>w2$}  {d:>w3$}  {e:>w4$}",
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4]
        );
        let _ = writeln!(text, "{}", line.trim_end());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::super::schema::tests::sample;
    use super::*;

    #[test]
    fn compare_reports_the_relative_change_of_every_figure() {
        let old = sample();
        let mut new = sample();
        new.cases[0]
            .figures
            .insert("events_per_s".into(), 165_000.0);
        new.cases.remove(2);
        new.ratios[0].value = Some(0.25);
        let all = changes(&old, &new);
        let find = |subject: &str, figure: &str| {
            all.iter()
                .find(|c| c.subject == subject && c.figure == figure)
                .unwrap()
                .clone()
        };
        let eps = find("w1/embedded/c64/e1", "events_per_s");
        assert_eq!((eps.old, eps.new), (Some(150_000.0), Some(165_000.0)));
        assert!((eps.percent().unwrap() - 10.0).abs() < 1e-9);
        let p99 = find("w1/quic/c64/e1", "p99_us");
        assert_eq!(p99.percent(), Some(0.0));
        let ratio = find("ratio", "W1 events/s: quic / embedded");
        assert_eq!(ratio.percent(), Some(-50.0));
        let gone = find("w6/proxy-mem", "lost");
        assert_eq!((gone.old, gone.new), (Some(0.0), None));
        assert_eq!(gone.percent(), None);
    }

    #[test]
    fn change_from_zero_has_no_percentage() {
        let c = Change {
            subject: "s".into(),
            figure: "lost".into(),
            old: Some(0.0),
            new: Some(3.0),
        };
        assert_eq!(c.percent(), None);
    }

    #[test]
    fn rendered_changes_align_and_sign_the_percentage() {
        let text = render(&[Change {
            subject: "w1/embedded/c64/e1".into(),
            figure: "events_per_s".into(),
            old: Some(100_000.0),
            new: Some(90_000.0),
        }]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("case"));
        assert!(
            lines[1].ends_with("100,000  90,000  -10.0%"),
            "{}",
            lines[1]
        );
    }
}
