//! The commands of the general append model: `append --fail-if`,
//! `append-multi` and `query`.
//!
//! A conditional or multi-stream append is always sent as exactly one
//! append, whatever its length: the condition and the expectations hold for
//! all its events together or for none, so the chunking of plain `append`
//! never applies; input over the per-append limit is refused by the server
//! (`limit_exceeded`) and nothing is appended.

use std::io::{BufRead, Write};

use gater_core::{
    Append, AppendCondition, AppendPart, Error, EventData, ExpectedVersion, Gater, Position, Query,
    StoreId, StreamId,
};
use serde_json::json;

use super::args::{AppendMultiArgs, ConditionArgs, QueryArgs};
use super::client::{parse_expected, read_start, CommandError};
use super::input::parse_stream_events;
use super::output::Output;
use super::pages;

/// The condition of `--fail-if QUERY [--after POS]`, if given.
pub(crate) fn condition(args: &ConditionArgs) -> Result<Option<AppendCondition>, Error> {
    let Some(text) = &args.fail_if else {
        return Ok(None);
    };
    Ok(Some(AppendCondition {
        fail_if_events_match: Query::from_json(text)?,
        after: args.after.map(Position),
    }))
}

/// `gater append` with `--fail-if`: one conditional append of every event.
pub(crate) async fn append_conditional<W: Write>(
    gater: &dyn Gater,
    store: &StoreId,
    part: AppendPart,
    condition: AppendCondition,
    out: &mut Output<W>,
) -> Result<(), CommandError> {
    let outcome = gater
        .append(
            store,
            Append::single(part.stream, part.expected, part.events).with_condition(condition),
        )
        .await?;
    let result = outcome.single();
    out.record(&json!({"version": result.version, "position": result.position.0}))?;
    Ok(())
}

/// `gater append-multi`: the events grouped by stream (streams in the order
/// they first appear, events in input order), one part each, one append.
pub(crate) async fn append_multi<W: Write>(
    gater: &dyn Gater,
    args: AppendMultiArgs,
    input: impl BufRead,
    out: &mut Output<W>,
) -> Result<(), CommandError> {
    let store = StoreId::new(args.store).map_err(Error::from)?;
    let condition = condition(&args.condition)?;
    let expectations = args
        .expect
        .iter()
        .map(|text| parse_expectation(text))
        .collect::<Result<Vec<_>, Error>>()?;
    let parts = group_parts(parse_stream_events(input)?, &expectations)?;
    let outcome = gater.append(&store, Append { parts, condition }).await?;
    let streams: Vec<_> = outcome
        .streams
        .iter()
        .map(|s| json!({"stream": s.stream.as_str(), "version": s.version}))
        .collect();
    out.record(&json!({"position": outcome.position.0, "streams": streams}))?;
    Ok(())
}

/// `STREAM=E` of `--expect`.
fn parse_expectation(text: &str) -> Result<(StreamId, ExpectedVersion), Error> {
    // Expectations never hold `=`; stream ids may.
    let Some((stream, expected)) = text.rsplit_once('=') else {
        return Err(Error::invalid(format!(
            "--expect takes STREAM=E, got {text:?}"
        )));
    };
    Ok((StreamId::new(stream)?, parse_expected(expected)?))
}

/// One part per stream, in the order streams first appear.
fn group_parts(
    events: Vec<(StreamId, EventData)>,
    expectations: &[(StreamId, ExpectedVersion)],
) -> Result<Vec<AppendPart>, Error> {
    let mut parts: Vec<AppendPart> = Vec::new();
    for (stream, event) in events {
        match parts.iter_mut().find(|p| p.stream == stream) {
            Some(part) => part.events.push(event),
            None => parts.push(AppendPart {
                stream,
                expected: ExpectedVersion::Any,
                events: vec![event],
            }),
        }
    }
    for (stream, expected) in expectations {
        let Some(part) = parts.iter_mut().find(|p| &p.stream == stream) else {
            return Err(Error::invalid(format!(
                "--expect names stream {stream}, which no event line names"
            )));
        };
        part.expected = *expected;
    }
    Ok(parts)
}

/// The query of `gater query`: `--query`, or one item of `--type`s and `--tag`s.
fn query_of(args: &QueryArgs) -> Result<Query, Error> {
    if let Some(text) = &args.query {
        return Query::from_json(text);
    }
    if args.types.is_empty() && args.tags.is_empty() {
        return Ok(Query::all());
    }
    let query = Query::item(args.types.clone(), args.tags.clone());
    query.validate()?;
    Ok(query)
}

/// `gater query`: prints matching events as `read-all` does.
pub(crate) async fn query<W: Write>(
    gater: &dyn Gater,
    args: QueryArgs,
    out: &mut Output<W>,
) -> Result<(), CommandError> {
    let store = StoreId::new(args.store.clone()).map_err(Error::from)?;
    let query = query_of(&args)?;
    let start = read_start(&args.page);
    let source = pages::Source::Query(&query);
    pages::print(gater, &store, source, start, args.page.count, out).await
}

/// The subscription selector of a query given as JSON: its normal form, so
/// the same query written twice names the same subscription.
pub(crate) fn query_selector(text: &str) -> Result<String, Error> {
    Ok(Query::from_json(text)?.to_json())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gater_core::EventId;

    fn event(n: u8) -> EventData {
        EventData::json(EventId::from_bytes([n; 16]), "T", vec![], vec![])
    }

    fn stream(s: &str) -> StreamId {
        StreamId::new(s).unwrap()
    }

    #[test]
    fn lines_group_into_one_part_per_stream_in_first_appearance_order() {
        let events = vec![
            (stream("b"), event(1)),
            (stream("a"), event(2)),
            (stream("b"), event(3)),
        ];
        let parts = group_parts(events, &[(stream("a"), ExpectedVersion::NoStream)]).unwrap();
        let shape: Vec<(&str, ExpectedVersion, usize)> = parts
            .iter()
            .map(|p| (p.stream.as_str(), p.expected, p.events.len()))
            .collect();
        assert_eq!(
            shape,
            [
                ("b", ExpectedVersion::Any, 2),
                ("a", ExpectedVersion::NoStream, 1)
            ]
        );
        let unknown = group_parts(
            vec![(stream("a"), event(1))],
            &[(stream("z"), ExpectedVersion::Any)],
        );
        assert_eq!(unknown.unwrap_err().kind(), "invalid_argument");
    }

    #[test]
    fn expectations_split_at_the_last_equals_sign() {
        assert_eq!(
            parse_expectation("a=b=3").unwrap(),
            (stream("a=b"), ExpectedVersion::Exact(3))
        );
        assert_eq!(
            parse_expectation("user-1=no-stream").unwrap().1,
            ExpectedVersion::NoStream
        );
        assert!(parse_expectation("user-1").is_err());
        assert!(parse_expectation("user-1=soon").is_err());
    }
}
