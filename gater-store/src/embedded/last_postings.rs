//! The writer's memory of where each tag and each event type was last
//! written, so an append condition that looks only after that point is
//! known to match nothing without reading the indexes (the shape of a
//! client checking its own tag after its own last append).
//!
//! An entry is a bound, not a fact: it is set only from events the writer
//! committed, each later than every event stored before it, so every
//! stored event with that tag or type is at or before the entry, and a
//! compaction, which only removes events, keeps it so. A name without an
//! entry (written only before the store opened, or before the memory last
//! started over) tells nothing: the condition is checked against the
//! indexes.

use gater_core::{Position, Query, QueryItem};

use crate::hashing::FastMap;

/// Names (tags and types each) remembered at most; the memory of that
/// kind starts over when full.
pub(super) const LAST_POSTINGS_LEN_MAX: usize = 65_536;

/// The last position of each tag and each event type the writer committed.
#[derive(Debug, Default)]
pub(super) struct LastPostings {
    tags: FastMap<String, u64>,
    types: FastMap<String, u64>,
}

impl LastPostings {
    /// Notes committed events (position, type, tags), in position order.
    pub(super) fn remember<'e>(
        &mut self,
        events: impl Iterator<Item = (Position, &'e str, &'e [String])>,
    ) {
        for (position, event_type, tags) in events {
            note(&mut self.types, event_type, position.0);
            for tag in tags {
                note(&mut self.tags, tag, position.0);
            }
        }
    }

    /// Whether no stored event after `after` can match `query`: each item
    /// needs a tag, or one of its types, last written at or before it.
    /// The empty query (every event) is never ruled out here.
    pub(super) fn rules_out(&self, query: &Query, after: Position) -> bool {
        !query.items.is_empty()
            && query
                .items
                .iter()
                .all(|item| self.rules_out_item(item, after))
    }

    fn rules_out_item(&self, item: &QueryItem, after: Position) -> bool {
        let done = |map: &FastMap<String, u64>, name: &String| {
            map.get(name.as_str()).is_some_and(|&last| last <= after.0)
        };
        item.tags.iter().any(|tag| done(&self.tags, tag))
            || (!item.types.is_empty() && item.types.iter().all(|ty| done(&self.types, ty)))
    }
}

/// Sets `name`'s last position, in place when it is known.
fn note(map: &mut FastMap<String, u64>, name: &str, position: u64) {
    if let Some(last) = map.get_mut(name) {
        *last = (*last).max(position);
        return;
    }
    if map.len() >= LAST_POSTINGS_LEN_MAX {
        map.clear();
    }
    map.insert(name.to_owned(), position);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NAMES: [&str; 3] = ["a", "b", "c"];

    /// Events as (type, tags); an event's position is its index.
    fn stored() -> impl Strategy<Value = Vec<(String, Vec<String>)>> {
        let name = proptest::sample::select(NAMES.to_vec()).prop_map(str::to_owned);
        let tags = proptest::sample::subsequence(NAMES.to_vec(), 0..=3)
            .prop_map(|t| t.into_iter().map(str::to_owned).collect());
        proptest::collection::vec((name, tags), 0..12)
    }

    fn query() -> impl Strategy<Value = Query> {
        let names = || {
            proptest::sample::subsequence(NAMES.to_vec(), 0..=2)
                .prop_map(|n| n.into_iter().map(str::to_owned).collect::<Vec<_>>())
        };
        let item = (names(), names())
            .prop_filter("an item names a type or a tag", |(ty, tg)| {
                !ty.is_empty() || !tg.is_empty()
            })
            .prop_map(|(types, tags)| QueryItem { types, tags });
        proptest::collection::vec(item, 0..3).prop_map(|items| Query { items })
    }

    fn remembered(events: &[(String, Vec<String>)], from: usize) -> LastPostings {
        let mut last = LastPostings::default();
        last.remember(
            events
                .iter()
                .enumerate()
                .skip(from)
                .map(|(p, (ty, tags))| (Position(p as u64), ty.as_str(), tags.as_slice())),
        );
        last
    }

    #[test]
    fn a_condition_after_the_last_write_of_its_tag_is_ruled_out_and_one_before_is_not() {
        let events = vec![
            ("A".to_owned(), vec!["x".to_owned()]),
            ("B".to_owned(), vec!["y".to_owned()]),
        ];
        let last = remembered(&events, 0);
        let by_tag = |tag: &str| Query::item(Vec::new(), vec![tag.to_owned()]);
        assert!(last.rules_out(&by_tag("x"), Position(0)));
        assert!(!last.rules_out(&by_tag("y"), Position(0)));
        assert!(
            !last.rules_out(&by_tag("z"), Position(9)),
            "never written here"
        );
        assert!(!last.rules_out(&Query::all(), Position(9)));
        let by_type = Query::item(vec!["A".to_owned(), "B".to_owned()], Vec::new());
        assert!(last.rules_out(&by_type, Position(1)));
        assert!(!last.rules_out(&by_type, Position(0)));
    }

    proptest! {
        /// Whatever was stored before the memory started (`from`), a ruled
        /// out condition has no match after `after`.
        #[test]
        fn a_ruled_out_condition_has_no_match_after_its_position(
            events in stored(),
            from in 0usize..12,
            query in query(),
            after in 0u64..12,
        ) {
            let last = remembered(&events, from);
            if last.rules_out(&query, Position(after)) {
                let matched = events
                    .iter()
                    .enumerate()
                    .skip(after as usize + 1)
                    .any(|(_, (ty, tags))| query.matches(ty, tags));
                prop_assert!(!matched);
            }
        }
    }
}
