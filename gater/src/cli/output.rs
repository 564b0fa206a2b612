//! What the CLI prints: human tables by default, one JSON object per line with `--json`.

use std::io::{self, Write};

use gater_core::{Error, RecordedEvent, CONTENT_TYPE_JSON};
use serde_json::{json, Map, Value};

/// Where and how results are printed.
pub(crate) struct Output<W: Write> {
    json: bool,
    out: W,
}

impl<W: Write> Output<W> {
    /// Prints to `out`, as JSON lines when `json`.
    pub(crate) fn new(out: W, json: bool) -> Self {
        Output { json, out }
    }

    /// Whether results print as JSON lines.
    pub(crate) fn is_json(&self) -> bool {
        self.json
    }

    /// Prints one record: a JSON line, or `key: value` lines for people.
    pub(crate) fn record(&mut self, value: &Value) -> io::Result<()> {
        if self.json {
            return writeln!(self.out, "{value}");
        }
        if let Value::Object(map) = value {
            let width = map.keys().map(String::len).max().unwrap_or(0);
            for (k, v) in map {
                writeln!(self.out, "{k:<width$}  {}", human(v))?;
            }
            return Ok(());
        }
        writeln!(self.out, "{}", human(value))
    }

    /// Prints one record whose JSON keeps the fields in the order given
    /// (the documented shape of a command's output); for people as `record`.
    pub(crate) fn ordered(&mut self, fields: &[(&str, Value)]) -> io::Result<()> {
        if !self.json {
            let map = fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect();
            return self.record(&Value::Object(map));
        }
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}:{v}", Value::from(*k)))
            .collect();
        writeln!(self.out, "{{{}}}", body.join(","))
    }

    /// Prints `line` as it is, in either mode.
    pub(crate) fn line(&mut self, line: &str) -> io::Result<()> {
        writeln!(self.out, "{line}")
    }

    /// Prints rows: JSON lines, or an aligned table with `columns` as header.
    pub(crate) fn table(&mut self, columns: &[&str], rows: &[Value]) -> io::Result<()> {
        if self.json {
            for row in rows {
                writeln!(self.out, "{row}")?;
            }
            return Ok(());
        }
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|r| columns.iter().map(|c| human(&r[*c])).collect())
            .collect();
        let widths: Vec<usize> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                cells
                    .iter()
                    .map(|r| r[i].chars().count())
                    .fold(c.len(), usize::max)
            })
            .collect();
        let line = |cols: Vec<&str>| -> String {
            let parts: Vec<String> = cols
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            parts.join("  ").trim_end().to_owned()
        };
        let header: Vec<String> = columns.iter().map(|c| c.to_uppercase()).collect();
        writeln!(
            self.out,
            "{}",
            line(header.iter().map(String::as_str).collect())
        )?;
        for row in &cells {
            writeln!(
                self.out,
                "{}",
                line(row.iter().map(String::as_str).collect())
            )?;
        }
        if rows.is_empty() {
            writeln!(self.out, "(none)")?;
        }
        Ok(())
    }

    /// Prints an event: a JSON line, or one line for people.
    pub(crate) fn event(&mut self, event: &RecordedEvent) -> io::Result<()> {
        let value = event_json(event);
        if self.json {
            return writeln!(self.out, "{value}");
        }
        write!(
            self.out,
            "{}@{}  #{}  {}  {}  {}",
            event.stream,
            event.version,
            event.position,
            event.data.event_type,
            value["created"].as_str().unwrap_or(""),
            value["data"]
        )?;
        if !event.data.tags.is_empty() {
            write!(self.out, "  tags={}", event.data.tags.join(","))?;
        }
        writeln!(self.out)
    }

    /// Flushes the output (before waiting on the network, so a pipe sees lines at once).
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// The writer, for free text between tables.
    pub(crate) fn writer(&mut self) -> &mut W {
        &mut self.out
    }

    /// Gives the writer back.
    pub(crate) fn into_inner(self) -> W {
        self.out
    }
}

fn human(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(human).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// An event as the CLI shows it:
/// `{"stream","version","position","id","type","data","metadata","tags","created"}`
/// (`tags` always present, possibly empty).
pub(crate) fn event_json(event: &RecordedEvent) -> Value {
    json!({
        "stream": event.stream.as_str(),
        "version": event.version,
        "position": event.position.0,
        "id": event.data.id.to_string(),
        "type": event.data.event_type,
        "data": bytes_json(&event.data.data, &event.data.content_type),
        "metadata": bytes_json(&event.data.metadata, CONTENT_TYPE_JSON),
        "tags": event.data.tags,
        "created": rfc3339_micros(event.created_us),
    })
}

/// JSON payloads as JSON; anything else as a string (lossy UTF-8); empty as null.
pub(crate) fn bytes_json(bytes: &[u8], content_type: &str) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    if content_type == CONTENT_TYPE_JSON {
        if let Ok(v) = serde_json::from_slice(bytes) {
            return v;
        }
    }
    Value::String(String::from_utf8_lossy(bytes).into_owned())
}

/// The error line: `error: <message>`, or with `--json`
/// `{"error": "<kind>", "message": ..., ...details}`.
pub(crate) fn error_line(error: &Error, json: bool) -> String {
    if !json {
        return format!("error: {error}");
    }
    let mut map = Map::new();
    map.insert("error".into(), error.kind().into());
    map.insert("message".into(), error.to_string().into());
    match error {
        Error::WrongExpectedVersion {
            stream,
            expected,
            current,
        } => {
            map.insert("stream".into(), stream.as_str().into());
            map.insert("expected".into(), expected.to_string().into());
            map.insert("current".into(), current.map_or(json!(-1), |v| json!(v)));
        }
        Error::AppendConditionFailed { position } => {
            map.insert("position".into(), position.0.into());
        }
        Error::NotFound { resource, id } => {
            map.insert("resource".into(), resource.to_string().into());
            map.insert("id".into(), id.clone().into());
        }
        Error::LimitExceeded { limit, max, actual } => {
            map.insert("limit".into(), limit.clone().into());
            map.insert("max".into(), (*max).into());
            map.insert("actual".into(), (*actual).into());
        }
        Error::PermissionDenied {
            identity,
            action,
            store,
            ..
        } => {
            map.insert("identity".into(), identity.clone().into());
            map.insert("action".into(), action.clone().into());
            map.insert("store".into(), store.clone().into());
        }
        Error::StorageFull { store, .. } | Error::StorageFailed { store, .. } => {
            map.insert("store".into(), store.clone().into());
        }
        _ => {}
    }
    if let Some(side) = error.side() {
        map.insert("side".into(), side.to_string().into());
    }
    map.insert("retryable".into(), error.is_retryable().into());
    Value::Object(map).to_string()
}

/// Formats microseconds since the Unix epoch as RFC 3339 UTC with microseconds.
pub(crate) fn rfc3339_micros(us: u64) -> String {
    let secs = us / 1_000_000;
    let micros = us % 1_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gater_core::{ExpectedVersion, Resource};

    #[test]
    fn timestamps_format_as_rfc3339_utc() {
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_micros(951_782_400_000_001),
            "2000-02-29T00:00:00.000001Z"
        );
        assert_eq!(
            rfc3339_micros(1_795_000_000_123_456),
            "2026-11-18T11:06:40.123456Z"
        );
    }

    #[test]
    fn errors_print_kind_and_details() {
        let e = Error::WrongExpectedVersion {
            stream: gater_core::StreamId::new("orders-1").unwrap(),
            expected: ExpectedVersion::Exact(3),
            current: Some(5),
        };
        assert_eq!(
            error_line(&e, false),
            "error: wrong expected version: expected 3, current 5"
        );
        let v: Value = serde_json::from_str(&error_line(&e, true)).unwrap();
        assert_eq!(v["error"], "wrong_expected_version");
        assert_eq!(v["current"], 5);
        assert_eq!(v["stream"], "orders-1");
        let failed = Error::AppendConditionFailed {
            position: gater_core::Position(7),
        };
        let v: Value = serde_json::from_str(&error_line(&failed, true)).unwrap();
        assert_eq!(v["error"], "append_condition_failed");
        assert_eq!(v["position"], 7);
        let v: Value =
            serde_json::from_str(&error_line(&Error::not_found(Resource::Store, "x"), true))
                .unwrap();
        assert_eq!(v["error"], "not_found");
        assert_eq!(v["resource"], "store");
    }

    #[test]
    fn tables_align_columns_and_json_prints_lines() {
        let rows = vec![json!({"id": "a", "n": 1}), json!({"id": "bbb", "n": 22})];
        let mut human = Output::new(Vec::new(), false);
        human.table(&["id", "n"], &rows).unwrap();
        assert_eq!(
            String::from_utf8(human.out).unwrap(),
            "ID   N\na    1\nbbb  22\n"
        );
        let mut lines = Output::new(Vec::new(), true);
        lines.table(&["id", "n"], &rows).unwrap();
        assert_eq!(
            String::from_utf8(lines.out).unwrap(),
            "{\"id\":\"a\",\"n\":1}\n{\"id\":\"bbb\",\"n\":22}\n"
        );
    }
}
