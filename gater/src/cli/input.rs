//! Events from JSON lines, as `gater append` reads them on stdin.
//!
//! Each non-blank line is `{"type": ..., "data": <any JSON>, "metadata": <any
//! JSON, optional>, "id": <UUID, optional>, "tags": [<strings>, optional]}`;
//! for `gater append-multi` it also names its `"stream"`. The whole input is
//! parsed before anything is sent, so a bad line changes nothing.

use std::io::BufRead;

use gater_core::{Error, EventData, EventId, StreamId};
use serde_json::{Map, Value};

/// Parses every line of `input`; the first bad line is an error naming its number.
pub(crate) fn parse_events(input: impl BufRead) -> Result<Vec<EventData>, Error> {
    parse_lines(input, parse_event)
}

/// Parses every line of `input` as an event with its `"stream"`.
pub(crate) fn parse_stream_events(
    input: impl BufRead,
) -> Result<Vec<(StreamId, EventData)>, Error> {
    parse_lines(input, |map| {
        let stream = match map.remove("stream") {
            Some(Value::String(s)) => StreamId::new(s).map_err(|e| e.to_string())?,
            Some(_) => return Err("\"stream\" must be a string".into()),
            None => return Err("missing \"stream\"".into()),
        };
        Ok((stream, parse_event(map)?))
    })
}

fn parse_lines<T>(
    input: impl BufRead,
    parse: impl Fn(&mut Map<String, Value>) -> Result<T, String>,
) -> Result<Vec<T>, Error> {
    let mut events = Vec::new();
    for (index, line) in input.lines().enumerate() {
        let number = index + 1;
        let line = line.map_err(|e| Error::invalid(format!("line {number}: cannot read: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let parsed = object(&line).and_then(|mut map| parse(&mut map));
        events.push(parsed.map_err(|m| Error::invalid(format!("line {number}: {m}")))?);
    }
    if events.is_empty() {
        return Err(Error::invalid("no events on stdin"));
    }
    Ok(events)
}

fn object(line: &str) -> Result<Map<String, Value>, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(map) = value else {
        return Err("expected a JSON object".into());
    };
    Ok(map)
}

fn parse_event(map: &mut Map<String, Value>) -> Result<EventData, String> {
    let event_type = match map.remove("type") {
        Some(Value::String(t)) => t,
        Some(_) => return Err("\"type\" must be a string".into()),
        None => return Err("missing \"type\"".into()),
    };
    let id = match map.remove("id") {
        None | Some(Value::Null) => EventId::from_random_bytes(random_bytes()),
        Some(Value::String(s)) => s.parse().map_err(|e| format!("{e}"))?,
        Some(_) => return Err("\"id\" must be a UUID string".into()),
    };
    let data = map.remove("data").unwrap_or(Value::Null);
    let metadata = match map.remove("metadata") {
        None | Some(Value::Null) => Vec::new(),
        Some(m) => m.to_string().into_bytes(),
    };
    let tags = match map.remove("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(tags) => serde_json::from_value(tags)
            .map_err(|_| "\"tags\" must be a list of strings".to_owned())?,
    };
    if let Some(extra) = map.keys().next() {
        return Err(format!("unknown field {extra:?}"));
    }
    Ok(EventData::json(id, event_type, data.to_string().into_bytes(), metadata).with_tags(tags))
}

/// 16 random bytes from the OS, for event ids the user did not give.
pub(crate) fn random_bytes() -> [u8; 16] {
    *uuid::Uuid::new_v4().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_json_events_with_generated_ids() {
        let input = "{\"type\":\"A\",\"data\":{\"x\":1}}\n\n{\"type\":\"B\",\"data\":2,\"metadata\":{\"m\":true},\"id\":\"67e55044-10b1-426f-9247-bb680e5fe0c8\"}\n";
        let events = parse_events(input.as_bytes()).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].event_type, "A");
        assert_eq!(events[0].data, br#"{"x":1}"#);
        assert!(events[0].metadata.is_empty());
        assert_eq!(
            events[1].id.to_string(),
            "67e55044-10b1-426f-9247-bb680e5fe0c8"
        );
        assert_eq!(events[1].metadata, br#"{"m":true}"#);
        assert_ne!(events[0].id, parse_events(input.as_bytes()).unwrap()[0].id);
    }

    #[test]
    fn tags_and_streams_are_read_from_their_fields() {
        let input = r#"{"stream":"course-7","type":"CourseDefined","data":{},"tags":["course:7"]}"#;
        let events = parse_stream_events(input.as_bytes()).unwrap();
        assert_eq!(events[0].0.as_str(), "course-7");
        assert_eq!(events[0].1.tags, vec!["course:7".to_owned()]);
        assert!(
            parse_events(input.as_bytes()).is_err(),
            "a stream field is unknown to append"
        );
        let missing = parse_stream_events(r#"{"type":"A"}"#.as_bytes()).unwrap_err();
        assert!(
            missing.to_string().contains("missing \"stream\""),
            "{missing}"
        );
        let bad = parse_events(r#"{"type":"A","tags":"x"}"#.as_bytes()).unwrap_err();
        assert!(bad.to_string().contains("tags"), "{bad}");
    }

    #[test]
    fn a_bad_line_is_refused_with_its_number() {
        let input = "{\"type\":\"A\",\"data\":1}\n{\"type\":\n";
        let err = parse_events(input.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = parse_events("{\"data\":1}".as_bytes()).unwrap_err();
        assert!(
            err.to_string().contains("line 1: missing \"type\""),
            "{err}"
        );
        assert!(parse_events("".as_bytes()).is_err());
        assert!(parse_events("{\"type\":\"A\",\"id\":\"nope\"}".as_bytes()).is_err());
    }
}
