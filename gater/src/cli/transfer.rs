//! `gater export` and `gater import`: a store as JSON lines, and back.
//!
//! The line format (README, "Moving a store"), one JSON object a line, told
//! apart by `kind`:
//! - `event`: every event in global order, with `stream`, `version`,
//!   `position`, `id`, `type`, `content_type`, `data`, `metadata`, `tags`,
//!   `created` (RFC 3339) and `created_us` (an import reads a missing `tags`
//!   as none). A payload is JSON when its bytes are JSON
//!   exactly as written again; otherwise `data_hex` / `metadata_hex` hold the
//!   bytes, so every byte survives the trip.
//! - `snapshot`: `source`, `stream`, `version`, `data` (or `data_hex`),
//!   `created_us`.
//! - `subscription`: `spec`, a persistent subscription's definition (its
//!   checkpoint and parked events are not carried).
//!
//! An import appends each run of consecutive events of one stream as one
//! append (bounded by `IMPORT_BATCH_EVENTS_MAX` and `IMPORT_BATCH_BYTES_MAX`)
//! expecting exactly the version before the run, with the events' own ids:
//! a second import of the same file is a no-op (the ids make each append an
//! idempotent retry), and events that conflict with what the store holds stop
//! the import at once, naming the line, with nothing after it written. Events
//! get new positions and creation times in the target store.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};

use gater_core::{
    Direction, Error, EventData, EventId, ExpectedVersion, Gater, Position, RecordedEvent,
    SnapshotKey, StoreId, StreamId, SubscriptionSpec, CONTENT_TYPE_JSON,
};
use serde_json::{json, Map, Value};

use super::args::{ExportArgs, ImportArgs};
use super::client::{progress_bar, CommandError};
use super::output::{rfc3339_micros, Output};
use super::pages::READ_PAGE_LEN;

/// Most events one import append carries.
pub(crate) const IMPORT_BATCH_EVENTS_MAX: usize = 1_000;
/// Most payload bytes one import append carries (at least one event).
pub(crate) const IMPORT_BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Exports and imports of more events than this show a progress bar on a terminal.
const PROGRESS_EVENTS_MIN: u64 = 1_000;

/// Where an import stopped, and why.
#[derive(Debug)]
pub(crate) struct ImportStop {
    /// The line of the first event that was not written.
    pub(crate) line: usize,
    /// Its stream and version.
    pub(crate) stream: String,
    pub(crate) version: u64,
    /// What the store answered.
    pub(crate) error: Error,
}

/// `gater export STORE [--out FILE]`.
pub(crate) async fn export<W: Write>(
    gater: &dyn Gater,
    args: ExportArgs,
    out: &mut Output<W>,
) -> Result<(), CommandError> {
    let store = StoreId::new(args.store).map_err(Error::from)?;
    let total = gater.get_store_status(&store).await?.event_count;
    let to_file = args.out.is_some();
    let mut sink: Box<dyn Write> = match &args.out {
        Some(path) => Box::new(BufWriter::new(File::create(path)?)),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    };
    let bar = progress_bar(total, total >= PROGRESS_EVENTS_MIN);
    let mut events = 0u64;
    let mut from = Position(0);
    loop {
        let page = gater
            .read_all(&store, from, READ_PAGE_LEN, Direction::Forward)
            .await?;
        let Some(last) = page.last() else { break };
        from = Position(last.position.0 + 1);
        for event in &page {
            writeln!(sink, "{}", event_line(event))?;
        }
        events += page.len() as u64;
        bar.inc(page.len() as u64);
    }
    bar.finish_and_clear();
    let mut snapshots = 0u64;
    for key in gater.list_snapshots(&store, None, None).await? {
        let snapshot = gater
            .read_snapshot(&store, &key.source, &key.stream, Some(key.version))
            .await?;
        let mut line = Map::new();
        line.insert("kind".into(), "snapshot".into());
        line.insert("source".into(), key.source.into());
        line.insert("stream".into(), key.stream.into());
        line.insert("version".into(), key.version.into());
        put_bytes(&mut line, "data", &snapshot.data);
        line.insert("created_us".into(), snapshot.created_us.into());
        writeln!(sink, "{}", Value::Object(line))?;
        snapshots += 1;
    }
    let mut subscriptions = 0u64;
    for info in gater.get_subscriptions(&store).await? {
        if info.spec.key.is_transient() {
            continue;
        }
        let spec = serde_json::to_value(&info.spec).map_err(|e| Error::invalid(e.to_string()))?;
        writeln!(sink, "{}", json!({"kind": "subscription", "spec": spec}))?;
        subscriptions += 1;
    }
    sink.flush()?;
    let summary = json!({
        "store": store.as_str(),
        "events": events,
        "snapshots": snapshots,
        "subscriptions": subscriptions,
    });
    if to_file {
        out.record(&summary)?;
    } else {
        // The data went to stdout: the summary must not mix with it.
        eprintln!("{summary}");
    }
    Ok(())
}

/// `gater import STORE [--in FILE]`; stdin when no file is given.
pub(crate) async fn import<W: Write>(
    gater: &dyn Gater,
    args: ImportArgs,
    stdin: impl BufRead,
    out: &mut Output<W>,
) -> Result<(), CommandError> {
    let store = StoreId::new(args.store).map_err(Error::from)?;
    let input: Box<dyn BufRead> = match &args.input {
        Some(path) => Box::new(BufReader::new(File::open(path)?)),
        None => Box::new(stdin),
    };
    // A file's lines are counted first so the bar has a length; stdin has none.
    let lines = match &args.input {
        Some(path) => BufReader::new(File::open(path)?).lines().count() as u64,
        None => 0,
    };
    let bar = progress_bar(lines, lines >= PROGRESS_EVENTS_MIN);
    let mut run = Run::default();
    let mut counts = Counts::default();
    for (index, line) in input.lines().enumerate() {
        let number = index + 1;
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let item = parse_line(&line).map_err(|m| Error::invalid(format!("line {number}: {m}")))?;
        match item {
            Item::Event {
                stream,
                version,
                event,
            } => {
                if !run.continues(&stream, version, &event) {
                    counts.events += run.append(gater, &store).await?;
                    bar.set_position(number as u64);
                }
                run.push(number, stream, version, event);
            }
            Item::Snapshot(key, data) => {
                counts.events += run.append(gater, &store).await?;
                gater.record_snapshot(&store, key, data).await?;
                counts.snapshots += 1;
            }
            Item::Subscription(spec) => {
                counts.events += run.append(gater, &store).await?;
                gater.save_subscription(&store, *spec).await?;
                counts.subscriptions += 1;
            }
        }
    }
    counts.events += run.append(gater, &store).await?;
    bar.finish_and_clear();
    out.record(&json!({
        "store": store.as_str(),
        "events": counts.events,
        "snapshots": counts.snapshots,
        "subscriptions": counts.subscriptions,
    }))?;
    Ok(())
}

/// What an import wrote.
#[derive(Default)]
struct Counts {
    events: u64,
    snapshots: u64,
    subscriptions: u64,
}

/// Consecutive events of one stream with consecutive versions, not yet appended.
#[derive(Default)]
struct Run {
    stream: Option<StreamId>,
    first_line: usize,
    first_version: u64,
    events: Vec<EventData>,
    bytes: usize,
}

impl Run {
    /// Whether `event` (of `stream` at `version`) can join this run.
    fn continues(&self, stream: &StreamId, version: u64, event: &EventData) -> bool {
        let next = self.first_version + self.events.len() as u64;
        self.stream.as_ref() == Some(stream)
            && version == next
            && self.events.len() < IMPORT_BATCH_EVENTS_MAX
            && self.bytes + event_bytes(event) <= IMPORT_BATCH_BYTES_MAX
    }

    fn push(&mut self, line: usize, stream: StreamId, version: u64, event: EventData) {
        if self.events.is_empty() {
            self.first_line = line;
            self.first_version = version;
            self.stream = Some(stream);
        }
        self.bytes += event_bytes(&event);
        self.events.push(event);
    }

    /// Appends the run (expecting exactly the version before it) and empties
    /// it; answers how many events it held.
    async fn append(&mut self, gater: &dyn Gater, store: &StoreId) -> Result<u64, CommandError> {
        let (Some(stream), false) = (self.stream.take(), self.events.is_empty()) else {
            return Ok(0);
        };
        let events = std::mem::take(&mut self.events);
        let count = events.len() as u64;
        self.bytes = 0;
        let expected = match self.first_version.checked_sub(1) {
            None => ExpectedVersion::NoStream,
            Some(before) => ExpectedVersion::Exact(before),
        };
        let stop = |error: Error| {
            CommandError::Import(Box::new(ImportStop {
                line: self.first_line,
                stream: stream.to_string(),
                version: self.first_version,
                error,
            }))
        };
        let result = gater
            .append_events(store, &stream, expected, events)
            .await
            .map_err(stop)?;
        let last = self.first_version + count - 1;
        if result.version != last {
            return Err(stop(Error::invalid(format!(
                "the events were stored at versions up to {}, not {last}",
                result.version
            ))));
        }
        Ok(count)
    }
}

fn event_bytes(event: &EventData) -> usize {
    event.size_bytes()
}

/// One parsed line.
enum Item {
    Event {
        stream: StreamId,
        version: u64,
        event: EventData,
    },
    Snapshot(SnapshotKey, Vec<u8>),
    Subscription(Box<SubscriptionSpec>),
}

/// The export line of `event`.
pub(crate) fn event_line(event: &RecordedEvent) -> Value {
    let mut line = Map::new();
    line.insert("kind".into(), "event".into());
    line.insert("stream".into(), event.stream.as_str().into());
    line.insert("version".into(), event.version.into());
    line.insert("position".into(), event.position.0.into());
    line.insert("id".into(), event.data.id.to_string().into());
    line.insert("type".into(), event.data.event_type.clone().into());
    line.insert(
        "content_type".into(),
        event.data.content_type.clone().into(),
    );
    put_bytes(&mut line, "data", &event.data.data);
    put_bytes(&mut line, "metadata", &event.data.metadata);
    line.insert("tags".into(), event.data.tags.clone().into());
    line.insert("created".into(), rfc3339_micros(event.created_us).into());
    line.insert("created_us".into(), event.created_us.into());
    Value::Object(line)
}

/// `name` as JSON when the bytes are JSON exactly as serde_json writes it
/// (so reading it back gives the same bytes), else `name_hex`; empty is null.
fn put_bytes(line: &mut Map<String, Value>, name: &str, bytes: &[u8]) {
    if bytes.is_empty() {
        line.insert(name.into(), Value::Null);
        return;
    }
    if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
        if serde_json::to_vec(&value).is_ok_and(|again| again == bytes) {
            line.insert(name.into(), value);
            return;
        }
    }
    line.insert(format!("{name}_hex"), hex(bytes).into());
}

/// The bytes of field `name` (`name` as JSON or `name_hex`); null or absent is empty.
fn take_bytes(map: &mut Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    if let Some(text) = map.remove(&format!("{name}_hex")) {
        let Value::String(text) = text else {
            return Err(format!("\"{name}_hex\" must be a string"));
        };
        return unhex(&text).ok_or_else(|| format!("\"{name}_hex\" is not hex"));
    }
    match map.remove(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(value) => serde_json::to_vec(&value).map_err(|e| e.to_string()),
    }
}

fn parse_line(line: &str) -> Result<Item, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(mut map) = value else {
        return Err("expected a JSON object".into());
    };
    let text = |map: &mut Map<String, Value>, field: &str| match map.remove(field) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(format!("missing string \"{field}\"")),
    };
    let number = |map: &mut Map<String, Value>, field: &str| {
        map.remove(field)
            .and_then(|v| v.as_u64())
            .ok_or_else(|| format!("missing number \"{field}\""))
    };
    match text(&mut map, "kind")?.as_str() {
        "event" => {
            let stream = StreamId::new(text(&mut map, "stream")?).map_err(|e| e.to_string())?;
            let version = number(&mut map, "version")?;
            let id: EventId = text(&mut map, "id")?.parse().map_err(|e| format!("{e}"))?;
            let event_type = text(&mut map, "type")?;
            let content_type = match map.remove("content_type") {
                Some(Value::String(c)) => c,
                _ => CONTENT_TYPE_JSON.to_owned(),
            };
            let data = take_bytes(&mut map, "data")?;
            let metadata = take_bytes(&mut map, "metadata")?;
            let tags = match map.remove("tags") {
                None | Some(Value::Null) => Vec::new(),
                Some(tags) => serde_json::from_value(tags)
                    .map_err(|_| "\"tags\" must be a list of strings".to_owned())?,
            };
            Ok(Item::Event {
                stream,
                version,
                event: EventData {
                    id,
                    event_type,
                    data,
                    metadata,
                    content_type,
                    tags,
                },
            })
        }
        "snapshot" => {
            let key = SnapshotKey {
                source: text(&mut map, "source")?,
                stream: text(&mut map, "stream")?,
                version: number(&mut map, "version")?,
            };
            Ok(Item::Snapshot(key, take_bytes(&mut map, "data")?))
        }
        "subscription" => {
            let spec = map.remove("spec").ok_or("missing \"spec\"")?;
            let spec: SubscriptionSpec = serde_json::from_value(spec).map_err(|e| e.to_string())?;
            Ok(Item::Subscription(Box::new(spec)))
        }
        other => Err(format!("unknown kind {other:?}")),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn recorded(data: &[u8], metadata: &[u8], content_type: &str) -> RecordedEvent {
        RecordedEvent {
            stream: StreamId::new("order-1").unwrap(),
            version: 3,
            position: Position(17),
            created_us: 1_700_000_000_000_000,
            data: EventData {
                id: EventId::from_bytes([9; 16]),
                event_type: "Placed".to_owned(),
                data: data.to_vec(),
                metadata: metadata.to_vec(),
                content_type: content_type.to_owned(),
                tags: vec!["order:1".to_owned()],
            },
        }
    }

    #[test]
    fn an_event_line_reads_back_as_the_same_event_byte_for_byte() {
        for (data, metadata, content_type) in [
            (&b"{\"total\":5}"[..], &b""[..], CONTENT_TYPE_JSON),
            (b"{ \"spaced\" : 1 }", b"{\"by\":\"me\"}", CONTENT_TYPE_JSON),
            (b"\x00\xffbinary", b"not json", "application/octet-stream"),
            (b"[1,2,3]", b"{\"b\":1,\"a\":2}", CONTENT_TYPE_JSON),
        ] {
            let event = recorded(data, metadata, content_type);
            let line = event_line(&event).to_string();
            let Ok(Item::Event {
                stream,
                version,
                event: back,
            }) = parse_line(&line)
            else {
                panic!("{line} does not read back");
            };
            assert_eq!((stream, version), (event.stream.clone(), 3));
            assert_eq!(back, event.data, "{line}");
        }
    }

    #[test]
    fn json_that_would_not_survive_rewriting_travels_as_hex() {
        let line = event_line(&recorded(b"{ \"spaced\" : 1 }", b"", CONTENT_TYPE_JSON));
        assert!(line.get("data_hex").is_some(), "{line}");
        let line = event_line(&recorded(b"{\"compact\":1}", b"", CONTENT_TYPE_JSON));
        assert_eq!(line["data"]["compact"], 1, "{line}");
    }

    #[test]
    fn bad_lines_are_refused_with_a_reason() {
        for (line, reason) in [
            ("nope", "not JSON"),
            ("{\"kind\":\"event\"}", "stream"),
            ("{\"kind\":\"rocket\"}", "unknown kind"),
            (
                "{\"kind\":\"event\",\"stream\":\"s\",\"version\":0,\"id\":\"x\",\"type\":\"T\"}",
                "",
            ),
            ("{\"kind\":\"snapshot\",\"source\":\"a\",\"stream\":\"b\",\"version\":1,\"data_hex\":\"zz\"}", "hex"),
        ] {
            let Err(message) = parse_line(line) else {
                panic!("{line} was accepted");
            };
            assert!(message.contains(reason), "{line}: {message}");
        }
    }

    #[test]
    fn a_subscription_line_reads_back_as_the_same_definition() {
        use gater_core::{SubscriptionKey, SubscriptionType};
        let key = SubscriptionKey::new(SubscriptionType::ByEventType, "Paid", "billing").unwrap();
        let mut spec = SubscriptionSpec::new(key);
        spec.max_retries = 7;
        let line = json!({"kind": "subscription", "spec": serde_json::to_value(&spec).unwrap()});
        let Ok(Item::Subscription(back)) = parse_line(&line.to_string()) else {
            panic!("{line} does not read back");
        };
        assert_eq!(*back, spec);
    }

    #[test]
    fn hex_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex(&hex(&bytes)), Some(bytes));
        assert_eq!(unhex("abc"), None);
    }

    /// Export of `gater` into a file, as the CLI runs it; the lines without
    /// creation times.
    async fn export_lines(gater: &dyn Gater, store: &StoreId, file: &Path) -> Vec<Value> {
        let args = ExportArgs {
            store: store.to_string(),
            out: Some(file.to_owned()),
        };
        let mut sink = Output::new(Vec::new(), true);
        export(gater, args, &mut sink).await.unwrap();
        std::fs::read_to_string(file)
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: Value = serde_json::from_str(l).unwrap();
                let line = v.as_object_mut().unwrap();
                line.remove("created");
                line.remove("created_us");
                v
            })
            .collect()
    }

    async fn import_file(gater: &dyn Gater, store: &StoreId, file: &Path) {
        let args = ImportArgs {
            store: store.to_string(),
            input: Some(file.to_owned()),
        };
        let mut sink = Output::new(Vec::new(), true);
        import(gater, args, std::io::empty(), &mut sink)
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded_to_postgres_to_embedded_gives_the_same_export() {
        use gater_core::StoreConfig;
        use gater_store::{PostgresOptions, Store, StoreOptions};
        use gater_testkit::pg_harness::PgServer;

        if std::env::var_os("RUN_SLOW_TESTS").is_none() {
            eprintln!("skipped: set RUN_SLOW_TESTS=1 to round-trip through PostgreSQL");
            return;
        }
        let Some(server) = tokio::task::spawn_blocking(PgServer::start)
            .await
            .unwrap()
            .unwrap()
        else {
            eprintln!("skipped: no PostgreSQL binaries on this machine");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let embedded = Store::open(StoreOptions::new(dir.path().join("a")))
            .await
            .unwrap();
        let mut options = StoreOptions::new(dir.path().join("pg"));
        options.worker_id = "transfer-test".to_owned();
        let postgres = Store::open_postgres(options, PostgresOptions::new(server.url()))
            .await
            .unwrap();
        let (from, to) = (StoreId::new("from").unwrap(), StoreId::new("to").unwrap());
        for (gater, store) in [(&embedded, &from), (&postgres, &to), (&embedded, &to)] {
            gater
                .create_store(store, StoreConfig::default())
                .await
                .unwrap();
        }
        for n in 0..300u64 {
            let stream = StreamId::new(format!("s-{}", n % 7)).unwrap();
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&n.to_le_bytes());
            let (data, content_type) = if n % 5 == 0 {
                (vec![0, 255, n as u8], "application/octet-stream")
            } else {
                (format!("{{\"n\":{n}}}").into_bytes(), CONTENT_TYPE_JSON)
            };
            let event = EventData {
                id: EventId::from_bytes(id),
                event_type: format!("T{}", n % 3),
                data,
                metadata: b"{\"k\": 1}".to_vec(),
                content_type: content_type.to_owned(),
                tags: vec![format!("n:{}", n % 4)],
            };
            embedded
                .append_events(&from, &stream, ExpectedVersion::Any, vec![event])
                .await
                .unwrap();
        }
        embedded
            .record_snapshot(
                &from,
                SnapshotKey {
                    source: "cart".into(),
                    stream: "s-1".into(),
                    version: 4,
                },
                b"{\"items\":4}".to_vec(),
            )
            .await
            .unwrap();
        let files = tempfile::tempdir().unwrap();
        let first = export_lines(&embedded, &from, &files.path().join("1")).await;
        import_file(&postgres, &to, &files.path().join("1")).await;
        let second = export_lines(&postgres, &to, &files.path().join("2")).await;
        import_file(&embedded, &to, &files.path().join("2")).await;
        let third = export_lines(&embedded, &to, &files.path().join("3")).await;
        assert_eq!(first.len(), 301);
        assert_eq!(first, second, "embedded → PostgreSQL");
        assert_eq!(first, third, "PostgreSQL → embedded");
        embedded.shutdown().await;
        postgres.shutdown().await;
        tokio::task::spawn_blocking(move || drop(server))
            .await
            .unwrap();
    }
}
