//! Tags and queries: the vocabulary of Dynamic Consistency Boundaries.
//!
//! An event carries 0 to [`TAGS_PER_EVENT_MAX`] distinct tags (1 to
//! [`TAG_BYTES_MAX`] bytes of UTF-8 without control characters each). A
//! [`Query`] is a list of [`QueryItem`]s: an event matches the query when it
//! matches at least one item, and an item when the item's `types` is empty
//! or holds the event's type, and every tag of the item's `tags` is among
//! the event's tags. A query without items matches every event; an item
//! with neither types nor tags is invalid.
//!
//! What it does not do: find events. Stores answer queries from their
//! indexes; this module only decides whether one event matches and checks
//! that tags and queries are well formed.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::event::RecordedEvent;

/// Most tags one event carries.
pub const TAGS_PER_EVENT_MAX: usize = 32;
/// Longest tag, in bytes.
pub const TAG_BYTES_MAX: usize = 128;
/// Most items in one query.
pub const QUERY_ITEMS_MAX: usize = 32;
/// Most event types in one query item.
pub const ITEM_TYPES_MAX: usize = 64;
/// Longest event type a query item names, in bytes (as long as an event's type may be).
pub const ITEM_TYPE_BYTES_MAX: usize = 256;

/// One alternative of a [`Query`]: event types (any of them) and tags (all of them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryItem {
    /// The event must have one of these types; empty: any type.
    #[serde(default)]
    pub types: Vec<String>,
    /// The event must carry every one of these tags; empty: no tag needed.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// Which events a read or an append condition selects: those matching any item.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    /// The alternatives; no items: every event.
    pub items: Vec<QueryItem>,
}

impl QueryItem {
    /// Whether an event of `event_type` carrying `tags` matches this item.
    pub fn matches(&self, event_type: &str, tags: &[String]) -> bool {
        (self.types.is_empty() || self.types.iter().any(|t| t == event_type))
            && self.tags.iter().all(|want| tags.contains(want))
    }
}

impl Query {
    /// The query that matches every event.
    pub fn all() -> Self {
        Query::default()
    }

    /// A query of one item.
    pub fn item(types: Vec<String>, tags: Vec<String>) -> Self {
        Query {
            items: vec![QueryItem { types, tags }],
        }
    }

    /// Whether an event of `event_type` carrying `tags` matches.
    pub fn matches(&self, event_type: &str, tags: &[String]) -> bool {
        self.items.is_empty() || self.items.iter().any(|i| i.matches(event_type, tags))
    }

    /// Whether the recorded `event` matches.
    pub fn matches_event(&self, event: &RecordedEvent) -> bool {
        self.matches(&event.data.event_type, &event.data.tags)
    }

    /// Checks the query's shape and limits: every item names a type or a
    /// tag, each of them well formed, within the limits.
    pub fn validate(&self) -> Result<(), Error> {
        if self.items.len() > QUERY_ITEMS_MAX {
            return Err(Error::limit(
                "query_items_max",
                QUERY_ITEMS_MAX as u64,
                self.items.len() as u64,
            ));
        }
        for item in &self.items {
            if item.types.is_empty() && item.tags.is_empty() {
                return Err(Error::invalid(
                    "a query item needs at least one type or one tag",
                ));
            }
            if item.types.len() > ITEM_TYPES_MAX {
                return Err(Error::limit(
                    "item_types_max",
                    ITEM_TYPES_MAX as u64,
                    item.types.len() as u64,
                ));
            }
            for t in &item.types {
                if t.is_empty() || t.len() > ITEM_TYPE_BYTES_MAX {
                    return Err(Error::invalid(format!(
                        "a query's event type must be 1 to {ITEM_TYPE_BYTES_MAX} bytes, got {}",
                        t.len()
                    )));
                }
            }
            validate_tags(&item.tags)?;
        }
        Ok(())
    }

    /// Parses a query from its JSON form, `{"items":[{"types":[..],"tags":[..]}]}`
    /// (a missing `types` or `tags` is an empty list), and validates it.
    pub fn from_json(text: &str) -> Result<Query, Error> {
        let query: Query = serde_json::from_str(text)
            .map_err(|e| Error::invalid(format!("query is not valid JSON of a query: {e}")))?;
        query.validate()?;
        Ok(query)
    }

    /// The query's JSON form, which [`Query::from_json`] reads back.
    pub fn to_json(&self) -> String {
        // Serialising strings and lists into JSON cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Checks an event's tags: at most [`TAGS_PER_EVENT_MAX`], distinct, each
/// 1 to [`TAG_BYTES_MAX`] bytes without control characters.
pub fn validate_tags(tags: &[String]) -> Result<(), Error> {
    if tags.len() > TAGS_PER_EVENT_MAX {
        return Err(Error::limit(
            "tags_per_event_max",
            TAGS_PER_EVENT_MAX as u64,
            tags.len() as u64,
        ));
    }
    for (i, tag) in tags.iter().enumerate() {
        if tag.len() > TAG_BYTES_MAX {
            return Err(Error::limit(
                "tag_bytes_max",
                TAG_BYTES_MAX as u64,
                tag.len() as u64,
            ));
        }
        if tag.is_empty() {
            return Err(Error::invalid("a tag must not be empty"));
        }
        if tag.chars().any(char::is_control) {
            return Err(Error::invalid(format!(
                "tag {tag:?} holds a control character"
            )));
        }
        if tags[..i].contains(tag) {
            return Err(Error::invalid(format!("tag {tag:?} is given twice")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    fn item(types: &[&str], tags: &[&str]) -> QueryItem {
        QueryItem {
            types: strings(types),
            tags: strings(tags),
        }
    }

    fn check(query: &[QueryItem], event_type: &str, tags: &[&str], expected: bool) {
        let query = Query {
            items: query.to_vec(),
        };
        assert_eq!(
            query.matches(event_type, &strings(tags)),
            expected,
            "{query:?} against {event_type} {tags:?}"
        );
    }

    #[test]
    fn matching_follows_types_or_tags_and_items_or() {
        check(&[], "A", &[], true);
        check(&[item(&["A"], &[])], "A", &["x"], true);
        check(&[item(&["A", "B"], &[])], "B", &[], true);
        check(&[item(&["A"], &[])], "C", &[], false);
        check(&[item(&[], &["x"])], "C", &["y", "x"], true);
        check(&[item(&[], &["x", "y"])], "C", &["x"], false);
        check(&[item(&[], &["x", "y"])], "C", &["y", "z", "x"], true);
        check(&[item(&["A"], &["x"])], "A", &["y"], false);
        check(&[item(&["A"], &["x"])], "B", &["x"], false);
        check(&[item(&["A"], &["x"]), item(&["B"], &[])], "B", &[], true);
        check(
            &[item(&["A"], &["x"]), item(&[], &["z"])],
            "Q",
            &["z"],
            true,
        );
    }

    #[test]
    fn a_missing_types_or_tags_key_is_an_empty_list() {
        let q = Query::from_json(r#"{"items":[{"tags":["x"]},{"types":["A"]}]}"#).unwrap();
        assert_eq!(q.items, vec![item(&[], &["x"]), item(&["A"], &[])]);
        assert_eq!(Query::from_json(&q.to_json()).unwrap(), q);
    }

    #[test]
    fn malformed_queries_are_refused() {
        for text in [
            r#"{"items":[{}]}"#,
            r#"{"items":[{"types":[],"tags":[]}]}"#,
            r#"{"items":[{"tags":[""]}]}"#,
            r#"{"items":[{"tags":["a","a"]}]}"#,
            r#"{"items":[{"tags":["a\u0001"]}]}"#,
            r#"{"items":[{"types":[""]}]}"#,
            r#"{"items":[{"tag":["a"]}]}"#,
            r#"[1]"#,
        ] {
            let e = Query::from_json(text).unwrap_err();
            assert_eq!(e.kind(), "invalid_argument", "{text}: {e}");
        }
        let many = Query {
            items: vec![item(&["A"], &[]); QUERY_ITEMS_MAX + 1],
        };
        assert_eq!(many.validate().unwrap_err().kind(), "limit_exceeded");
    }

    #[test]
    fn tags_over_their_limits_are_refused_with_a_typed_error() {
        let long = vec!["x".repeat(TAG_BYTES_MAX + 1)];
        assert_eq!(validate_tags(&long).unwrap_err().kind(), "limit_exceeded");
        let fits = vec!["x".repeat(TAG_BYTES_MAX)];
        assert!(validate_tags(&fits).is_ok());
        let many: Vec<String> = (0..=TAGS_PER_EVENT_MAX).map(|i| i.to_string()).collect();
        assert_eq!(validate_tags(&many).unwrap_err().kind(), "limit_exceeded");
        assert!(validate_tags(&many[..TAGS_PER_EVENT_MAX]).is_ok());
    }

    fn small_item() -> impl Strategy<Value = QueryItem> {
        (
            proptest::collection::vec("[ABC]", 0..3),
            proptest::collection::btree_set("[xyz]", 0..3),
        )
            .prop_map(|(types, tags)| QueryItem {
                types,
                tags: tags.into_iter().collect(),
            })
    }

    proptest! {
        #[test]
        fn a_query_matches_exactly_when_one_of_its_items_does(
            items in proptest::collection::vec(small_item(), 0..4),
            event_type in "[ABC]",
            tags in proptest::collection::btree_set("[xyz]", 0..4),
        ) {
            let tags: Vec<String> = tags.into_iter().collect();
            let query = Query { items: items.clone() };
            let by_items = items.is_empty()
                || items.iter().any(|i| Query { items: vec![i.clone()] }.matches(&event_type, &tags));
            prop_assert_eq!(query.matches(&event_type, &tags), by_items);
        }

        #[test]
        fn an_item_matches_exactly_when_its_type_fits_and_its_tags_are_a_subset(
            item in small_item(),
            event_type in "[ABC]",
            tags in proptest::collection::btree_set("[xyz]", 0..4),
        ) {
            let type_fits = item.types.is_empty() || item.types.contains(&event_type);
            let subset = item.tags.iter().all(|t| tags.contains(t));
            let tags: Vec<String> = tags.into_iter().collect();
            prop_assert_eq!(item.matches(&event_type, &tags), type_fits && subset);
        }

        #[test]
        fn adding_a_tag_to_an_item_never_widens_it(
            item in small_item(),
            extra in "[xyz]",
            event_type in "[ABC]",
            tags in proptest::collection::btree_set("[xyz]", 0..4),
        ) {
            let tags: Vec<String> = tags.into_iter().collect();
            let mut narrower = item.clone();
            narrower.tags.push(extra);
            prop_assert!(!narrower.matches(&event_type, &tags) || item.matches(&event_type, &tags));
        }
    }
}
