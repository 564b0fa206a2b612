//! Queries by event type and tag over the PostgreSQL backend.
//!
//! Tags are a `text[]` column of `events` with a GIN index, written in the
//! append's transaction; event types have a btree index with the position.
//! A query becomes one `WHERE` clause: an item is `event_type = ANY(types)`
//! (when it names types) `AND tags @> item_tags` (when it names tags), and
//! the items are OR-ed, so the planner answers each item from its index.
//! The SQL text depends only on the query's shape (which items name types,
//! which tags); the types and tags are parameters.

use gater_core::{Direction, Query};
use tokio_postgres::types::ToSql;

/// Adds the tags column and the indexes queries use, to a store made before
/// them or a new one; safe to run again.
pub(super) fn tags_ddl(schema: &str) -> String {
    let s = format!("\"{schema}\"");
    format!(
        "ALTER TABLE {s}.events ADD COLUMN IF NOT EXISTS tags text[] NOT NULL DEFAULT '{{}}';
         CREATE INDEX IF NOT EXISTS events_tags ON {s}.events USING GIN (tags);
         CREATE INDEX IF NOT EXISTS events_type ON {s}.events (event_type, position);"
    )
}

/// The name `to_regclass` finds once [`tags_ddl`] ran.
pub(super) fn tags_index(schema: &str) -> String {
    format!("\"{schema}\".events_tags")
}

/// A statement and its parameters, built from a query.
pub(super) struct QuerySql {
    pub(super) text: String,
    pub(super) params: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl QuerySql {
    /// The parameters as `tokio_postgres` takes them.
    pub(super) fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

/// Reads `columns` of up to `$2` events matching `query` (at least one item)
/// from position `$1` in `direction`.
pub(super) fn read(
    schema: &str,
    columns: &str,
    query: &Query,
    from: i64,
    count: i64,
    direction: Direction,
) -> QuerySql {
    let (compare, order) = match direction {
        Direction::Forward => (">=", "ASC"),
        Direction::Backward => ("<=", "DESC"),
    };
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(from), Box::new(count)];
    let clause = where_clause(query, &mut params);
    QuerySql {
        text: format!(
            "SELECT {columns} FROM \"{schema}\".events
             WHERE position {compare} $1 AND ({clause}) ORDER BY position {order} LIMIT $2"
        ),
        params,
    }
}

/// Up to `$2` events after position `$1` (`-1`: from the start) that
/// match `query` (an empty query matches any event), in position order:
/// their position, stream, version, creation time and their stream's
/// version, for the lifecycle rule to judge.
pub(super) fn matches(schema: &str, query: &Query, after: i64, limit: i64) -> QuerySql {
    let mut params: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(after), Box::new(limit)];
    let clause = if query.items.is_empty() {
        "true".to_owned()
    } else {
        where_clause(query, &mut params)
    };
    QuerySql {
        text: format!(
            "SELECT e.position, e.stream, e.version, e.created_us, s.version
             FROM \"{schema}\".events e JOIN \"{schema}\".streams s ON s.stream = e.stream
             WHERE e.position > $1 AND ({clause}) ORDER BY e.position LIMIT $2"
        ),
        params,
    }
}

/// The items OR-ed, each a conjunction over its own parameters.
fn where_clause(query: &Query, params: &mut Vec<Box<dyn ToSql + Sync + Send>>) -> String {
    let mut items = Vec::with_capacity(query.items.len());
    for item in &query.items {
        let mut parts = Vec::with_capacity(2);
        if !item.types.is_empty() {
            let types: Vec<Vec<u8>> = item.types.iter().map(|t| t.as_bytes().to_vec()).collect();
            params.push(Box::new(types));
            parts.push(format!("event_type = ANY(${}::bytea[])", params.len()));
        }
        if !item.tags.is_empty() {
            params.push(Box::new(item.tags.clone()));
            parts.push(format!("tags @> ${}::text[]", params.len()));
        }
        if parts.is_empty() {
            // A validated query has no such item; it would match nothing.
            parts.push("false".to_owned());
        }
        items.push(format!("({})", parts.join(" AND ")));
    }
    items.join(" OR ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use gater_core::QueryItem;

    #[test]
    fn each_item_names_only_the_columns_it_constrains() {
        let query = Query {
            items: vec![
                QueryItem {
                    types: vec!["A".into()],
                    tags: vec![],
                },
                QueryItem {
                    types: vec![],
                    tags: vec!["x".into(), "y".into()],
                },
                QueryItem {
                    types: vec!["B".into()],
                    tags: vec!["z".into()],
                },
            ],
        };
        let sql = read("s", "position", &query, 0, 10, Direction::Forward);
        assert!(sql.text.contains(
            "(event_type = ANY($3::bytea[])) OR (tags @> $4::text[]) OR \
             (event_type = ANY($5::bytea[]) AND tags @> $6::text[])"
        ));
        assert_eq!(sql.params.len(), 6);
        let any = matches("s", &Query::all(), -1, 1);
        assert!(any.text.contains("position > $1 AND (true)"));
    }
}
