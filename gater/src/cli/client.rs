//! The client commands: each turns its arguments into `Gater` calls and prints the results.
//!
//! Commands run against any `&dyn Gater` (a QUIC client in the binary, an
//! embedded store in tests), so this module holds no transport code.

use std::io::{BufRead, IsTerminal, Write};

use futures::StreamExt;
use gater_core::{
    AppendPart, Direction, Error, ExpectedVersion, Gater, Position, SnapshotKey, StoreConfig,
    StoreId, StreamId, SubscribeOptions, SubscriptionItem, SubscriptionKey, SubscriptionSpec,
    SubscriptionType,
};
use serde_json::{json, Value};

use super::args::{
    AppendArgs, Command, OptionalSelectorArgs, PageArgs, ParkedArgs, ReadAllArgs, ReadArgs,
    SelectorArgs, SnapshotCommand, StoreCommand, StreamCommand, StreamsArgs, SubscribeArgs,
};
use super::dcb;
use super::input::parse_events;
use super::output::{bytes_json, Output};
use super::pages;
use super::transfer;

/// Events sent per append when stdin holds more than one append may carry.
const APPEND_CHUNK_LEN: usize = 1000;
/// Streams fetched per page when listing every stream.
const STREAMS_PAGE_LEN: u32 = 1000;

/// A command's failure: a Gater error, or the output went away.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CommandError {
    /// The call failed.
    #[error(transparent)]
    Gater(#[from] Error),
    /// Writing the output failed (e.g. a closed pipe).
    #[error("cannot write output: {0}")]
    Io(#[from] std::io::Error),
    /// An import stopped at an event the store refused.
    #[error("import stopped at line {}: {}", .0.line, .0.error)]
    Import(Box<transfer::ImportStop>),
    /// `store verify` found corrupt records (its report is printed already).
    #[error("{count} corrupt records in store {store}")]
    Corrupt {
        /// The store verified.
        store: String,
        /// How many records failed.
        count: usize,
    },
}

/// Runs a client command. `input` is stdin (for append and snapshot record).
pub(crate) async fn execute<W: Write>(
    gater: &dyn Gater,
    command: Command,
    input: impl BufRead,
    out: &mut Output<W>,
) -> Result<(), CommandError> {
    match command {
        Command::Store(cmd) => store(gater, cmd, out).await,
        Command::Stream(cmd) => stream(gater, cmd, out).await,
        Command::Append(args) => append(gater, args, input, out).await,
        Command::AppendMulti(args) => dcb::append_multi(gater, args, input, out).await,
        Command::Query(args) => dcb::query(gater, args, out).await,
        Command::Read(args) => read(gater, args, out).await,
        Command::ReadAll(args) => read_all(gater, args, out).await,
        Command::Streams(args) => streams(gater, args, out).await,
        Command::Version(args) => {
            let store = StoreId::new(args.store).map_err(Error::from)?;
            let stream = StreamId::new(args.stream).map_err(Error::from)?;
            let version = gater.get_version(&store, &stream).await?;
            let v = version.map_or(json!(-1), |v| json!(v));
            out.record(&json!({"stream": stream.as_str(), "version": v}))?;
            Ok(())
        }
        Command::Subscribe(args) => subscribe(gater, args, out).await,
        Command::Subscriptions(args) => subscriptions(gater, &args.store, out).await,
        Command::Unsubscribe(args) => {
            let store = StoreId::new(args.store).map_err(Error::from)?;
            let key = selector_key(&args.selector, &args.name)?;
            gater.remove_subscription(&store, &key).await?;
            out.record(&json!({"removed": key.to_string()}))?;
            Ok(())
        }
        Command::Parked(args) => parked(gater, args, false, out).await,
        Command::ReplayParked(args) => parked(gater, args, true, out).await,
        Command::Snapshot(cmd) => snapshot(gater, cmd, input, out).await,
        Command::Export(args) => transfer::export(gater, args, out).await,
        Command::Import(args) => transfer::import(gater, args, input, out).await,
        Command::Top(args) => super::top::run(gater, &args, out).await,
        Command::Workers => {
            let rows: Vec<Value> = gater
                .workers()
                .await?
                .iter()
                .map(|w| {
                    json!({
                        "id": w.id, "address": w.address,
                        "health": format!("{:?}", w.health).to_lowercase(),
                        "in_flight": w.in_flight, "latency_us": w.latency_us,
                        "stores": w.stores.iter().map(StoreId::as_str).collect::<Vec<_>>(),
                        "shared_storage": w.shared_storage,
                        "faults": w.faults.iter().map(|f| {
                            json!({"store": f.store.as_str(), "state": f.state.as_str(), "reason": f.reason})
                        }).collect::<Vec<_>>(),
                    })
                })
                .collect();
            let cols = [
                "id",
                "address",
                "health",
                "in_flight",
                "latency_us",
                "stores",
                "faults",
            ];
            out.table(&cols, &rows)?;
            Ok(())
        }
        Command::Whoami => {
            let me = gater.whoami().await?;
            let grants: Vec<Value> = me
                .grants
                .iter()
                .map(|g| json!({"stores": g.stores, "role": g.role.as_str()}))
                .collect();
            if out.is_json() {
                out.record(&json!({"identity": me.identity, "grants": grants}))?;
            } else {
                out.record(&json!({"identity": me.identity}))?;
                out.table(&["stores", "role"], &grants)?;
            }
            Ok(())
        }
        Command::Dev(_)
        | Command::Worker(_)
        | Command::Proxy(_)
        | Command::Bench(_)
        | Command::Certs(_) => {
            Err(Error::invalid("server commands do not run as client commands").into())
        }
    }
}

async fn store<W: Write>(
    gater: &dyn Gater,
    cmd: StoreCommand,
    out: &mut Output<W>,
) -> Result<(), CommandError> {
    match cmd {
        StoreCommand::Create { id, no_fsync } => {
            let store = StoreId::new(id).map_err(Error::from)?;
            let config = StoreConfig {
                fsync: !no_fsync,
                ..StoreConfig::default()
            };
            gater.create_store(&store, config).await?;
            out.record(&json!({"store": store.as_str(), "created": true}))?;
        }
        StoreCommand::Remove { id } => {
            let store = StoreId::new(id).map_err(Error::from)?;
            gater.remove_store(&store).await?;
            out.record(&json!({"store": store.as_str(), "removed": true}))?;
        }
        StoreCommand::List => {
            let rows: Vec<Value> = gater
                .list_stores()
                .await?
                .iter()
                .map(|s| {
                    let mut row = json!({
                        "store": s.store.as_str(),
                        "state": s.state.as_str(),
                        "fsync": s.config.fsync,
                        "workers": s.workers,
                    });
                    if let Some(reason) = &s.reason {
                        row["reason"] = json!(reason);
                    }
                    row
                })
                .collect();
            let any_reason = rows.iter().any(|r| r.get("reason").is_some());
            let columns: &[&str] = if any_reason {
                &["store", "state", "fsync", "workers", "reason"]
            } else {
                &["store", "state", "fsync", "workers"]
            };
            out.table(columns, &rows)?;
        }
        StoreCommand::Status { id } => {
            let store = StoreId::new(id).map_err(Error::from)?;
            let s = gater.get_store_status(&store).await?;
            let mut record = json!({
                "store": s.store.as_str(),
                "state": s.state.as_str(),
                "streams": s.stream_count,
                "events": s.event_count,
                "head": s.head.map_or(json!(-1), |p| json!(p.0)),
                "disk_bytes": s.disk_bytes,
                "workers": s.workers,
            });
            if let Some(reason) = s.reason {
                record["reason"] = json!(reason);
            }
            out.record(&record)?;
        }
        StoreCommand::Reopen { id } => {
            let store = StoreId::new(id).map_err(Error::from)?;
            gater.reopen_store(&store).await?;
            out.record(&json!({"store": store.as_str(), "reopened": true}))?;
        }
        StoreCommand::Verify { id } => {
            let store = StoreId::new(id).map_err(Error::from)?;
            let report = gater.verify_store(&store).await?;
            // One JSON line in either output mode, its fields in this order.
            let line = format!(
                "{{\"store\":{},\"records\":{},\"corrupt\":{}}}",
                json!(report.store.as_str()),
                report.records,
                json!(report.corrupt)
            );
            out.line(&line)?;
            if !report.corrupt.is_empty() {
                return Err(CommandError::Corrupt {
                    store: store.to_string(),
                    count: report.corrupt.len(),
                });
            }
        }
        StoreCommand::Compact { id } => {
            let store = StoreId::new(id).map_err(Error::from)?;
            let c = gater.compact_store(&store).await?;
            out.ordered(&[
                ("store", json!(c.store.as_str())),
                ("bytes_before", json!(c.bytes_before)),
                ("bytes_after", json!(c.bytes_after)),
            ])?;
        }
        StoreCommand::Config { id } => {
            let store = StoreId::new(id).map_err(Error::from)?;
            let c = gater.get_store_config(&store).await?;
            out.record(&json!({
                "store": store.as_str(), "fsync": c.fsync, "group_commit": c.group_commit,
            }))?;
        }
    }
    Ok(())
}

async fn stream<W: Write>(
    gater: &dyn Gater,
    cmd: StreamCommand,
    out: &mut Output<W>,
) -> Result<(), CommandError> {
    match cmd {
        StreamCommand::Delete {
            store,
            stream,
            expected,
            hard,
        } => {
            let store = StoreId::new(store).map_err(Error::from)?;
            let stream = StreamId::new(stream).map_err(Error::from)?;
            let expected = parse_expected(&expected)?;
            if hard {
                gater.tombstone_stream(&store, &stream, expected).await?;
            } else {
                gater.delete_stream(&store, &stream, expected).await?;
            }
            out.ordered(&[
                ("stream", json!(stream.as_str())),
                ("deleted", json!(true)),
                ("hard", json!(hard)),
            ])?;
        }
        StreamCommand::Truncate {
            store,
            stream,
            before,
        } => {
            let store = StoreId::new(store).map_err(Error::from)?;
            let stream = StreamId::new(stream).map_err(Error::from)?;
            gater.truncate_stream(&store, &stream, before).await?;
            retention(gater, &store, &stream, out).await?;
        }
        StreamCommand::Retention {
            store,
            stream,
            max_count,
            max_age,
        } => {
            let store = StoreId::new(store).map_err(Error::from)?;
            let stream = StreamId::new(stream).map_err(Error::from)?;
            if max_count.is_some() || max_age.is_some() {
                let current = gater.stream_retention(&store, &stream).await?;
                let max_count = max_count.or(current.max_count);
                let max_age = max_age.or(current.max_age_s);
                gater
                    .set_stream_retention(&store, &stream, max_count, max_age)
                    .await?;
            }
            retention(gater, &store, &stream, out).await?;
        }
    }
    Ok(())
}

/// Prints a stream's retention and truncation point.
async fn retention<W: Write>(
    gater: &dyn Gater,
    store: &StoreId,
    stream: &StreamId,
    out: &mut Output<W>,
) -> Result<(), CommandError> {
    let r = gater.stream_retention(store, stream).await?;
    out.ordered(&[
        ("stream", json!(r.stream.as_str())),
        ("max_count", json!(r.max_count)),
        ("max_age", json!(r.max_age_s)),
        ("truncate_before", json!(r.truncate_before)),
    ])?;
    Ok(())
}

pub(crate) fn parse_expected(text: &str) -> Result<ExpectedVersion, Error> {
    match text {
        "any" => Ok(ExpectedVersion::Any),
        "no-stream" => Ok(ExpectedVersion::NoStream),
        "exists" => Ok(ExpectedVersion::StreamExists),
        n => n.parse().map(ExpectedVersion::Exact).map_err(|_| {
            Error::invalid(format!(
                "--expected must be any, no-stream, exists or a version number, got {n:?}"
            ))
        }),
    }
}

async fn append<W: Write>(
    gater: &dyn Gater,
    args: AppendArgs,
    input: impl BufRead,
    out: &mut Output<W>,
) -> Result<(), CommandError> {
    let store = StoreId::new(args.store).map_err(Error::from)?;
    let stream = StreamId::new(args.stream).map_err(Error::from)?;
    let mut expected = parse_expected(&args.expected)?;
    let condition = dcb::condition(&args.condition)?;
    let events = parse_events(input)?;
    if let Some(condition) = condition {
        let part = AppendPart {
            stream,
            expected,
            events,
        };
        return dcb::append_conditional(gater, &store, part, condition, out).await;
    }
    let chunks: Vec<_> = events.chunks(APPEND_CHUNK_LEN).collect();
    let progress = progress_bar(events.len() as u64, chunks.len() > 1);
    let mut last = None;
    for chunk in chunks {
        let result = gater
            .append_events(&store, &stream, expected, chunk.to_vec())
            .await?;
        expected = ExpectedVersion::Exact(result.version);
        progress.inc(chunk.len() as u64);
        last = Some(result);
    }
    progress.finish_and_clear();
    if let Some(r) = last {
        out.record(&json!({"version": r.version, "position": r.position.0}))?;
    }
    Ok(())
}

/// A progress bar on stderr when it is a terminal and the work is long, else a hidden one.
pub(crate) fn progress_bar(len: u64, long: bool) -> indicatif::ProgressBar {
    if !long || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} events {per_sec} eta {eta}")
    {
        bar.set_style(style);
    }
    bar
}

async fn read<W: Write>(
    gater: &dyn Gater,
    args: ReadArgs,
    out: &mut Output<W>,
) -> Result<(), CommandError> {
    let store = StoreId::new(args.store).map_err(Error::from)?;
    let stream = StreamId::new(args.stream).map_err(Error::from)?;
    let start = read_start(&args.page);
    let source = pages::Source::Stream(&stream);
    pages::print(gater, &store, source, start, args.page.count, out).await
}

/// Where a read starts: `--from`, else the beginning, or the end when reading backward
/// (`u64::MAX` is "from the end" for stream versions and log positions alike).
pub(crate) fn read_start(page: &PageArgs) -> (Direction, u64) {
    if page.backward {
        (Direction::Backward, page.from.unwrap_or(Position::END.0))
    } else {
        (Direction::Forward, page.from.unwrap_or(0))
    }
}

async fn read_all<W: Write>(
    gater: &dyn Gater,
    args: ReadAllArgs,
    out: &mut Output<W>,
) -> Result<(), CommandError> {
    let store = StoreId::new(args.store).map_err(Error::from)?;
    let start = read_start(&args.page);
    pages::print(
        gater,
        &store,
        pages::Source::Log,
        start,
        args.page.count,
        out,
    )
    .await
}

async fn streams<W: Write>(
    gater: &dyn Gater,
    args: StreamsArgs,
    out: &mut Output<W>,
) -> Result<(), CommandError> {
    let store = StoreId::new(args.store).map_err(Error::from)?;
    let mut after = args
        .after
        .map(StreamId::new)
        .transpose()
        .map_err(Error::from)?;
    let mut rows = Vec::new();
    let mut left = args.limit.map(u64::from);
    loop {
        let page_len = left.map_or(STREAMS_PAGE_LEN, |l| l.min(STREAMS_PAGE_LEN.into()) as u32);
        if page_len == 0 {
            break;
        }
        let page = gater.get_streams(&store, after.take(), page_len).await?;
        for s in &page.streams {
            rows.push(json!({"stream": s.stream.as_str(), "version": s.version}));
        }
        left = left.map(|l| l.saturating_sub(page.streams.len() as u64));
        match page.next_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    out.table(&["stream", "version"], &rows)?;
    Ok(())
}

/// The subscription key named by exactly one selector flag and a name.
fn selector_key(s: &SelectorArgs, name: &str) -> Result<SubscriptionKey, Error> {
    let (kind, selector) = if let Some(stream) = &s.stream {
        (SubscriptionType::ByStream, stream.clone())
    } else if s.all {
        (
            SubscriptionType::ByStream,
            gater_core::ALL_STREAM.to_owned(),
        )
    } else if let Some(t) = &s.event_type {
        (SubscriptionType::ByEventType, t.clone())
    } else if let Some(p) = &s.pattern {
        (SubscriptionType::ByEventPattern, p.clone())
    } else if let Some(p) = &s.payload {
        (SubscriptionType::ByEventPayload, p.clone())
    } else if let Some(q) = &s.query {
        (SubscriptionType::ByQuery, dcb::query_selector(q)?)
    } else {
        return Err(Error::invalid(
            "one of --stream, --all, --event-type, --pattern, --payload, --query is required",
        ));
    };
    SubscriptionKey::new(kind, selector, name)
}

async fn subscribe<W: Write>(
    gater: &dyn Gater,
    args: SubscribeArgs,
    out: &mut Output<W>,
) -> Result<(), CommandError> {
    let store = StoreId::new(args.store).map_err(Error::from)?;
    let key = selector_key(&args.selector, &args.name)?;
    let start = args.from.map(Position);
    if !key.is_transient() {
        // A persistent group is created on first use; saving again keeps its checkpoint.
        let existing = gater.get_subscriptions(&store).await?;
        if !existing.iter().any(|s| s.spec.key == key) {
            let mut spec = SubscriptionSpec::new(key.clone());
            spec.start_from = start.unwrap_or(Position::START);
            gater.save_subscription(&store, spec).await?;
        }
    }
    let options = SubscribeOptions {
        start_from: start,
        ..SubscribeOptions::default()
    };
    let mut subscription = gater.subscribe(&store, key.clone(), options).await?;
    let consumer = subscription.consumer();
    let mut seen = 0u64;
    while args.limit.is_none_or(|limit| seen < limit) {
        let Some(item) = subscription.next().await else {
            break;
        };
        match item {
            SubscriptionItem::Event(delivery) => {
                out.event(&delivery.event)?;
                out.flush()?;
                if !args.no_ack {
                    let position = delivery.event.position;
                    match gater.ack_event(&store, &key, consumer, position).await {
                        // At-least-once: after a redelivery or a failover the
                        // delivery may no longer be outstanding, and the event
                        // comes again if it was not handled; nothing is lost.
                        Err(error @ Error::NotFound { resource, .. })
                            if resource == gater_core::Resource::Delivery
                                || resource == gater_core::Resource::Consumer =>
                        {
                            eprintln!(
                                "warning: the ack of position {position} was not taken \
                                 ({error}); continuing"
                            );
                        }
                        other => other?,
                    }
                }
                seen += 1;
            }
            SubscriptionItem::CaughtUp => {}
            SubscriptionItem::End(end) => {
                return match end {
                    gater_core::SubscriptionEnd::Failed(e) => Err(e.into()),
                    other => Err(Error::Unavailable {
                        side: gater_core::Side::Worker,
                        message: format!("subscription ended: {other:?}"),
                    }
                    .into()),
                };
            }
        }
    }
    Ok(())
}

async fn subscriptions<W: Write>(
    gater: &dyn Gater,
    store: &str,
    out: &mut Output<W>,
) -> Result<(), CommandError> {
    let store = StoreId::new(store).map_err(Error::from)?;
    let rows: Vec<Value> = gater
        .get_subscriptions(&store)
        .await?
        .iter()
        .map(|s| {
            json!({
                "type": s.spec.key.kind().as_str(),
                "selector": s.spec.key.selector(),
                "name": s.spec.key.name(),
                "checkpoint": s.checkpoint.0,
                "consumers": s.consumers,
                "in_flight": s.in_flight,
                "parked": s.parked,
                "lag": s.lag,
            })
        })
        .collect();
    let cols = [
        "type",
        "selector",
        "name",
        "checkpoint",
        "consumers",
        "in_flight",
        "parked",
        "lag",
    ];
    out.table(&cols, &rows)?;
    Ok(())
}

/// Finds the subscription called `name`, narrowed by the selector flags given.
async fn find_subscription(
    gater: &dyn Gater,
    store: &StoreId,
    name: &str,
    s: &OptionalSelectorArgs,
) -> Result<SubscriptionKey, Error> {
    let query = s.query.as_deref().map(dcb::query_selector).transpose()?;
    let wanted: Option<(SubscriptionType, &String)> = [
        (SubscriptionType::ByStream, &s.stream),
        (SubscriptionType::ByEventType, &s.event_type),
        (SubscriptionType::ByEventPattern, &s.pattern),
        (SubscriptionType::ByEventPayload, &s.payload),
        (SubscriptionType::ByQuery, &query),
    ]
    .into_iter()
    .find_map(|(kind, sel)| sel.as_ref().map(|sel| (kind, sel)));
    let matching: Vec<SubscriptionKey> = gater
        .get_subscriptions(store)
        .await?
        .into_iter()
        .map(|s| s.spec.key)
        .filter(|k| k.name() == name)
        .filter(|k| wanted.is_none_or(|(kind, sel)| k.kind() == kind && k.selector() == sel))
        .collect();
    match matching.as_slice() {
        [key] => Ok(key.clone()),
        [] => Err(Error::not_found(gater_core::Resource::Subscription, name)),
        _ => Err(Error::invalid(format!(
            "{} subscriptions are named {name:?}: add a selector flag (--stream, --event-type, --pattern, --payload, --query)",
            matching.len()
        ))),
    }
}

async fn parked<W: Write>(
    gater: &dyn Gater,
    args: ParkedArgs,
    replay: bool,
    out: &mut Output<W>,
) -> Result<(), CommandError> {
    let store = StoreId::new(args.store).map_err(Error::from)?;
    let key = find_subscription(gater, &store, &args.name, &args.selector).await?;
    if replay {
        let count = gater.replay_parked(&store, &key).await?;
        out.record(&json!({"subscription": key.to_string(), "replayed": count}))?;
        return Ok(());
    }
    for event in gater.list_parked(&store, &key).await? {
        out.event(&event)?;
    }
    Ok(())
}

async fn snapshot<W: Write>(
    gater: &dyn Gater,
    cmd: SnapshotCommand,
    mut input: impl BufRead,
    out: &mut Output<W>,
) -> Result<(), CommandError> {
    match cmd {
        SnapshotCommand::Record {
            store,
            source,
            stream,
            version,
        } => {
            let store = StoreId::new(store).map_err(Error::from)?;
            let mut text = String::new();
            input
                .read_to_string(&mut text)
                .map_err(|e| Error::invalid(format!("cannot read stdin: {e}")))?;
            let value: Value = serde_json::from_str(&text)
                .map_err(|e| Error::invalid(format!("snapshot on stdin is not JSON: {e}")))?;
            let key = SnapshotKey {
                source,
                stream,
                version,
            };
            gater
                .record_snapshot(&store, key.clone(), value.to_string().into_bytes())
                .await?;
            out.record(&json!({"source": key.source, "stream": key.stream, "version": key.version, "recorded": true}))?;
        }
        SnapshotCommand::Read {
            store,
            source,
            stream,
            version,
        } => {
            let store = StoreId::new(store).map_err(Error::from)?;
            let s = gater
                .read_snapshot(&store, &source, &stream, version)
                .await?;
            out.record(&json!({
                "source": s.key.source, "stream": s.key.stream, "version": s.key.version,
                "data": bytes_json(&s.data, gater_core::CONTENT_TYPE_JSON),
                "created": super::output::rfc3339_micros(s.created_us),
            }))?;
        }
        SnapshotCommand::List {
            store,
            source,
            stream,
        } => {
            let store = StoreId::new(store).map_err(Error::from)?;
            let rows: Vec<Value> = gater
                .list_snapshots(&store, source.as_deref(), stream.as_deref())
                .await?
                .into_iter()
                .map(|k| json!({"source": k.source, "stream": k.stream, "version": k.version}))
                .collect();
            out.table(&["source", "stream", "version"], &rows)?;
        }
        SnapshotCommand::Delete {
            store,
            source,
            stream,
            version,
        } => {
            let store = StoreId::new(store).map_err(Error::from)?;
            let key = SnapshotKey {
                source,
                stream,
                version,
            };
            gater.delete_snapshot(&store, &key).await?;
            out.record(&json!({"source": key.source, "stream": key.stream, "version": key.version, "deleted": true}))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use async_trait::async_trait;
    use gater_core::wire::{Request, Response};
    use gater_core::{
        ConsumerId, Delivery, EventData, EventId, RecordedEvent, Resource, Subscription,
    };

    use super::*;

    /// A server whose deliveries were all redelivered elsewhere: every ack
    /// answers `NotFound`, as after a failover.
    struct AcksGone;

    #[async_trait]
    impl Gater for AcksGone {
        async fn call(&self, request: Request, _: Option<Duration>) -> Result<Response, Error> {
            match request {
                Request::AckEvent { position, .. } => {
                    Err(Error::not_found(Resource::Delivery, position))
                }
                other => Err(Error::Unsupported(format!("{other:?}"))),
            }
        }

        async fn subscribe(
            &self,
            _: &StoreId,
            _: SubscriptionKey,
            _: SubscribeOptions,
        ) -> Result<gater_core::Subscription, Error> {
            let items: Vec<SubscriptionItem> = (0..3u8)
                .map(|n| {
                    let data = EventData::json(
                        EventId::from_random_bytes([n + 1; 16]),
                        "T",
                        b"{}".to_vec(),
                        b"{}".to_vec(),
                    );
                    SubscriptionItem::Event(Delivery {
                        event: RecordedEvent {
                            stream: StreamId::new("s").unwrap(),
                            version: u64::from(n),
                            position: Position(u64::from(n)),
                            created_us: 0,
                            data,
                        },
                        attempt: 2,
                    })
                })
                .collect();
            Ok(Subscription::new(
                ConsumerId(7),
                futures::stream::iter(items),
            ))
        }
    }

    #[tokio::test]
    async fn subscribe_goes_on_when_an_ack_answers_not_found() {
        let args = SubscribeArgs {
            store: "shop".to_owned(),
            selector: SelectorArgs {
                stream: None,
                all: true,
                event_type: None,
                pattern: None,
                payload: None,
                query: None,
            },
            name: gater_core::TRANSIENT.to_owned(),
            from: None,
            limit: Some(3),
            no_ack: false,
        };
        let mut buffer = Vec::new();
        let mut out = Output::new(&mut buffer, true);
        subscribe(&AcksGone, args, &mut out)
            .await
            .expect("NotFound acks do not end the subscription");
        let printed = String::from_utf8(buffer).unwrap();
        assert_eq!(printed.lines().count(), 3, "{printed}");
    }
}
