//! Parsed subscription selectors and the pure rule deciding which events they match.
//!
//! - `ByStream`: the stream id, or `$all` for every event.
//! - `ByEventType`: the exact event type.
//! - `ByEventPattern`: a JSON object over the envelope. The key `stream` matches
//!   the stream id, `event_type` the event type, every other key the same key of
//!   the event's metadata (a JSON object). String values are globs where `*`
//!   matches any run of characters and `\*` / `\\` are a literal star and
//!   backslash; other values must be equal (objects: as a subset).
//! - `ByEventPayload`: a JSON object that must be a subset of the event's JSON
//!   data; objects match key by key, recursively, other values by equality.
//!   Events whose data is not JSON never match.
//! - `ByQuery`: a [`Query`] in its JSON form; events of its types and tags
//!   (see [`query`](crate::query)).

use serde_json::{Map, Value};

use crate::error::Error;
use crate::event::RecordedEvent;
use crate::id::StreamId;
use crate::query::Query;
use crate::subscription::SubscriptionType;

/// A selector checked against its type and ready to match events.
#[derive(Clone, Debug, PartialEq)]
pub enum Selector {
    /// Every event of the store.
    All,
    /// Events of one stream.
    Stream(StreamId),
    /// Events of one type.
    EventType(String),
    /// Envelope pattern: `(field, matcher)` pairs.
    Pattern(Vec<(PatternField, ValueMatcher)>),
    /// Payload subset.
    Payload(Map<String, Value>),
    /// Event types and tags.
    Query(Query),
}

/// The envelope field a pattern entry looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PatternField {
    /// The stream id.
    Stream,
    /// The event type.
    EventType,
    /// A top-level key of the metadata object.
    Metadata(String),
}

/// How a pattern entry matches its field.
#[derive(Clone, Debug, PartialEq)]
pub enum ValueMatcher {
    /// A string glob.
    Glob(Glob),
    /// Equality (objects: subset).
    Value(Value),
}

/// A glob over text: literal pieces separated by `*` wildcards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Glob {
    /// Literal pieces; a `*` stands between each two.
    pieces: Vec<String>,
}

impl Selector {
    /// Parses and checks `text` as a selector of `kind`.
    pub fn parse(kind: SubscriptionType, text: &str) -> Result<Selector, Error> {
        match kind {
            SubscriptionType::ByStream => {
                let stream = StreamId::parse_selector(text)?;
                Ok(if stream.is_all() {
                    Selector::All
                } else {
                    Selector::Stream(stream)
                })
            }
            SubscriptionType::ByEventType => {
                if text.is_empty() || text.len() > 256 {
                    return Err(Error::invalid("event type selector must be 1 to 256 bytes"));
                }
                Ok(Selector::EventType(text.to_owned()))
            }
            SubscriptionType::ByEventPattern => {
                let object = parse_object(text, "pattern")?;
                let mut fields = Vec::with_capacity(object.len());
                for (key, value) in object {
                    let field = match key.as_str() {
                        "stream" => PatternField::Stream,
                        "event_type" => PatternField::EventType,
                        _ => PatternField::Metadata(key),
                    };
                    let matcher = match value {
                        Value::String(s) => ValueMatcher::Glob(Glob::parse(&s)?),
                        other => ValueMatcher::Value(other),
                    };
                    fields.push((field, matcher));
                }
                Ok(Selector::Pattern(fields))
            }
            SubscriptionType::ByEventPayload => {
                Ok(Selector::Payload(parse_object(text, "payload")?))
            }
            SubscriptionType::ByQuery => Ok(Selector::Query(Query::from_json(text)?)),
        }
    }

    /// Whether `event` is one this selector follows.
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        match self {
            Selector::All => true,
            Selector::Stream(stream) => event.stream == *stream,
            Selector::EventType(t) => event.data.event_type == *t,
            Selector::Pattern(fields) => {
                let metadata = parse_json_object(&event.data.metadata);
                fields.iter().all(|(field, matcher)| match field {
                    PatternField::Stream => matcher.matches_str(event.stream.as_str()),
                    PatternField::EventType => matcher.matches_str(&event.data.event_type),
                    PatternField::Metadata(key) => metadata
                        .as_ref()
                        .and_then(|m| m.get(key))
                        .is_some_and(|v| matcher.matches_value(v)),
                })
            }
            Selector::Query(query) => query.matches_event(event),
            Selector::Payload(want) => match serde_json::from_slice::<Value>(&event.data.data) {
                Ok(Value::Object(have)) => object_subset(want, &have),
                _ => false,
            },
        }
    }

    /// Whether only events of this one stream can match (lets stores read a stream, not the log).
    pub fn single_stream(&self) -> Option<&StreamId> {
        match self {
            Selector::Stream(s) => Some(s),
            _ => None,
        }
    }
}

impl ValueMatcher {
    fn matches_str(&self, text: &str) -> bool {
        match self {
            ValueMatcher::Glob(g) => g.matches(text),
            ValueMatcher::Value(_) => false,
        }
    }

    fn matches_value(&self, value: &Value) -> bool {
        match (self, value) {
            (ValueMatcher::Glob(g), Value::String(s)) => g.matches(s),
            (ValueMatcher::Glob(_), _) => false,
            (ValueMatcher::Value(want), have) => value_subset(want, have),
        }
    }
}

impl Glob {
    /// Parses a glob: `*` is a wildcard, `\*` and `\\` are literals, any other `\` is an error.
    pub fn parse(text: &str) -> Result<Glob, Error> {
        let mut pieces = vec![String::new()];
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            match c {
                '*' => pieces.push(String::new()),
                '\\' => match chars.next() {
                    Some(e @ ('*' | '\\')) => push_last(&mut pieces, e),
                    _ => {
                        return Err(Error::invalid(format!(
                            "glob {text:?}: '\\' must be followed by '*' or '\\'"
                        )))
                    }
                },
                other => push_last(&mut pieces, other),
            }
        }
        Ok(Glob { pieces })
    }

    /// Whether `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        if self.pieces.len() == 1 {
            return text == self.pieces[0];
        }
        let first = &self.pieces[0];
        let last = &self.pieces[self.pieces.len() - 1];
        if !text.starts_with(first.as_str()) {
            return false;
        }
        let mut rest = &text[first.len()..];
        if rest.len() < last.len() || !rest.ends_with(last.as_str()) {
            return false;
        }
        rest = &rest[..rest.len() - last.len()];
        // Greedy-left matching of the middle pieces is optimal for `*`-only globs.
        for piece in &self.pieces[1..self.pieces.len() - 1] {
            match rest.find(piece.as_str()) {
                Some(at) => rest = &rest[at + piece.len()..],
                None => return false,
            }
        }
        true
    }
}

fn push_last(pieces: &mut [String], c: char) {
    if let Some(last) = pieces.last_mut() {
        last.push(c);
    }
}

fn parse_object(text: &str, what: &str) -> Result<Map<String, Value>, Error> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::invalid(format!(
            "{what} selector must be a JSON object"
        ))),
        Err(e) => Err(Error::invalid(format!("{what} selector is not JSON: {e}"))),
    }
}

fn parse_json_object(bytes: &[u8]) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

fn object_subset(want: &Map<String, Value>, have: &Map<String, Value>) -> bool {
    want.iter()
        .all(|(k, w)| have.get(k).is_some_and(|h| value_subset(w, h)))
}

fn value_subset(want: &Value, have: &Value) -> bool {
    match (want, have) {
        (Value::Object(w), Value::Object(h)) => object_subset(w, h),
        (w, h) => w == h,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventData, Position};
    use crate::id::EventId;

    fn event(stream: &str, event_type: &str, data: &str, metadata: &str) -> RecordedEvent {
        RecordedEvent {
            stream: StreamId::new(stream).unwrap(),
            version: 0,
            position: Position(0),
            created_us: 0,
            data: EventData::json(
                EventId::from_bytes([1; 16]),
                event_type,
                data.as_bytes().to_vec(),
                metadata.as_bytes().to_vec(),
            ),
        }
    }

    fn check(kind: SubscriptionType, selector: &str, e: &RecordedEvent, expected: bool) {
        let s = Selector::parse(kind, selector).unwrap();
        assert_eq!(s.matches(e), expected, "{kind:?} {selector} on {e:?}");
    }

    #[test]
    fn globs_match_stars_and_escapes() {
        let g = |p: &str, t: &str| Glob::parse(p).unwrap().matches(t);
        assert!(g("order-*", "order-1"));
        assert!(g("order-*", "order-"));
        assert!(!g("order-*", "orde"));
        assert!(g("*-1", "order-1"));
        assert!(g("a*b*c", "aXXbYYc"));
        assert!(!g("a*b*c", "aXXcYYb"));
        assert!(g("*", ""));
        assert!(g("exact", "exact"));
        assert!(!g("exact", "exactly"));
        assert!(g(r"a\*b", "a*b"));
        assert!(!g(r"a\*b", "axb"));
        assert!(g("ab*ab", "abab"));
        assert!(!g("ab*ab", "aba"));
        assert!(Glob::parse(r"bad\x").is_err());
        assert!(Glob::parse("trailing\\").is_err());
    }

    #[test]
    fn selectors_match_what_their_type_promises() {
        use SubscriptionType::*;
        let e = event(
            "order-7",
            "OrderPlaced",
            r#"{"total":10,"customer":{"id":"c1","tier":"gold"}}"#,
            r#"{"tenant":"acme","region":"eu-west"}"#,
        );
        check(ByStream, "order-7", &e, true);
        check(ByStream, "order-8", &e, false);
        check(ByStream, "$all", &e, true);
        check(ByEventType, "OrderPlaced", &e, true);
        check(ByEventType, "OrderPlace", &e, false);
        check(ByEventPattern, r#"{"stream":"order-*"}"#, &e, true);
        check(
            ByEventPattern,
            r#"{"event_type":"Order*","tenant":"acme"}"#,
            &e,
            true,
        );
        check(ByEventPattern, r#"{"region":"eu-*"}"#, &e, true);
        check(ByEventPattern, r#"{"region":"us-*"}"#, &e, false);
        check(ByEventPattern, r#"{"missing":"*"}"#, &e, false);
        check(ByEventPayload, r#"{"total":10}"#, &e, true);
        check(ByEventPayload, r#"{"customer":{"tier":"gold"}}"#, &e, true);
        check(
            ByEventPayload,
            r#"{"customer":{"tier":"silver"}}"#,
            &e,
            false,
        );
        check(ByEventPayload, r#"{}"#, &e, true);
        let opaque = event("s", "T", "not json", "");
        check(ByEventPayload, r#"{}"#, &opaque, false);
    }
}
