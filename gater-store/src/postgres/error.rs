//! How PostgreSQL failures become typed [`gater_core::Error`]s, and how the
//! connection URL's password is kept out of every message.
//!
//! Failures of the path (connection refused or lost, server shutting down,
//! too many connections) are retryable `Unavailable { side: Storage }`; a
//! statement timeout is a retryable `DeadlineExceeded { side: Storage }`; a
//! store whose schema another worker dropped is `NotFound`; the database's
//! disk full (`53100`) or a read-only database (`25006`) is `StorageFull`
//! (the store turns `read_only` and heals when writes pass again); anything
//! else is `Storage`. Every message passes through a [`Redactor`] first.

use gater_core::{Error, Resource, Side, StoreId};
use tokio_postgres::error::SqlState;

/// Replaces the password of the connection URL wherever it appears in a message.
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    secret: Option<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor").finish_non_exhaustive()
    }
}

/// What a password is replaced with.
const REDACTED: &str = "***";

impl Redactor {
    /// A redactor for `password` (none: messages pass unchanged).
    pub(crate) fn new(password: Option<&[u8]>) -> Self {
        let secret = password
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .filter(|p| !p.is_empty());
        Redactor { secret }
    }

    /// `text` with every occurrence of the password replaced.
    pub(crate) fn clean(&self, text: impl Into<String>) -> String {
        let text = text.into();
        match &self.secret {
            Some(secret) if text.contains(secret.as_str()) => {
                text.replace(secret.as_str(), REDACTED)
            }
            _ => text,
        }
    }
}

/// `url` with the password of its user-info part replaced, for logs and errors.
///
/// Handles `postgres://user:password@host/db` URLs and key-value connection
/// strings (`password=s`, `password = s`, `password='with spaces'`).
pub fn redact_url(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            let user_info = &rest[..at];
            if let Some(colon) = user_info.find(':') {
                return format!(
                    "{}{}:{REDACTED}{}",
                    &url[..scheme_end + 3],
                    &user_info[..colon],
                    &rest[at..]
                );
            }
        }
        return url.to_owned();
    }
    redact_key_value(url)
}

/// Rewrites a libpq key-value string with the `password` value replaced:
/// `key = value` pairs, spaces around `=` allowed, values bare or
/// single-quoted with backslash escapes. Text it cannot read as pairs is
/// kept up to that point and the rest replaced, so a secret never leaks.
fn redact_key_value(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let key_end = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let key = &rest[..key_end];
        let after_key = rest[key_end..].trim_start();
        let Some(after_eq) = after_key.strip_prefix('=') else {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(REDACTED);
            return out;
        };
        let after_eq = after_eq.trim_start();
        let (value, remaining) = split_value(after_eq);
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(key);
        out.push('=');
        out.push_str(if key == "password" { REDACTED } else { value });
        rest = remaining.trim_start();
    }
    out
}

/// The value at the start of `text` (quoted or bare) and what follows it.
fn split_value(text: &str) -> (&str, &str) {
    if let Some(quoted) = text.strip_prefix('\'') {
        let mut escaped = false;
        for (i, c) in quoted.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '\'' => return (&text[..i + 2], &quoted[i + 1..]),
                _ => {}
            }
        }
        return (text, "");
    }
    let end = text.find(char::is_whitespace).unwrap_or(text.len());
    (&text[..end], &text[end..])
}

/// Maps a driver error; `store` names the store the operation was about, so
/// a schema that another worker dropped reads as `NotFound`.
pub(crate) fn map_error(
    redactor: &Redactor,
    store: Option<&StoreId>,
    e: &tokio_postgres::Error,
) -> Error {
    let message = redactor.clean(describe(e));
    let Some(code) = e.code() else {
        // No SQLSTATE: the client side failed (I/O, connection closed, protocol).
        return Error::unavailable(Side::Storage, format!("postgres: {message}"));
    };
    if *code == SqlState::QUERY_CANCELED {
        return Error::DeadlineExceeded {
            side: Side::Storage,
        };
    }
    if let Some(refused) = refuses_writes(code, &message) {
        return match store {
            Some(store) => crate::faults::attribute(refused, store, None),
            None => refused,
        };
    }
    if let Some(store) = store {
        if *code == SqlState::INVALID_SCHEMA_NAME || *code == SqlState::UNDEFINED_TABLE {
            return Error::not_found(Resource::Store, store);
        }
    }
    if is_path_failure(code) {
        return Error::unavailable(Side::Storage, format!("postgres: {message}"));
    }
    Error::Storage(format!("postgres: {message}"))
}

/// The database refuses writes for now: its disk is full (`53100`) or it is
/// read-only (`25006`, a standby or `default_transaction_read_only`).
fn refuses_writes(code: &SqlState, message: &str) -> Option<Error> {
    if *code == SqlState::DISK_FULL {
        return Some(crate::faults::full(format!(
            "the database's disk is full (postgres: {message})"
        )));
    }
    if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
        return Some(crate::faults::full(format!(
            "the database accepts no writes, it is read-only (postgres: {message})"
        )));
    }
    None
}

/// Whether the transaction lost a race with another worker and may simply run again.
pub(crate) fn is_conflict(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|code| {
        *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::UNIQUE_VIOLATION
    })
}

/// SQLSTATE classes that mean the server or the way to it failed, not the request.
fn is_path_failure(code: &SqlState) -> bool {
    let code = code.code();
    // 08: connection exception; 53: insufficient resources; 57P: operator
    // intervention (shutdown, crash recovery, cannot connect now); 40003:
    // statement completion unknown.
    code.starts_with("08") || code.starts_with("53") || code.starts_with("57P") || code == "40003"
}

/// The error with its database detail, when there is one.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                let cause_text = cause.to_string();
                if !text.contains(&cause_text) {
                    text.push_str(": ");
                    text.push_str(&cause_text);
                }
                source = cause.source();
            }
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_or_read_only_database_refuses_writes_as_storage_full() {
        let store = StoreId::new("orders").unwrap();
        for code in [SqlState::DISK_FULL, SqlState::READ_ONLY_SQL_TRANSACTION] {
            let refused = refuses_writes(&code, "could not extend file").unwrap();
            let refused = crate::faults::attribute(refused, &store, None);
            assert_eq!(refused.kind(), "storage_full");
            assert!(refused.is_retryable());
            assert!(matches!(&refused, Error::StorageFull { store, .. } if store == "orders"));
        }
        assert!(refuses_writes(&SqlState::UNIQUE_VIOLATION, "dup").is_none());
    }

    #[test]
    fn url_passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://gater:s3cret@db.example:5432/events?sslmode=disable"),
            "postgres://gater:***@db.example:5432/events?sslmode=disable"
        );
        assert_eq!(
            redact_url("postgresql://gater@localhost/events"),
            "postgresql://gater@localhost/events"
        );
        assert_eq!(
            redact_url("host=localhost password=s3cret user=gater"),
            "host=localhost password=*** user=gater"
        );
    }

    #[test]
    fn key_value_passwords_are_redacted_with_spaces_and_quotes() {
        assert_eq!(
            redact_url("host=db password = s3cret user=gater"),
            "host=db password=*** user=gater"
        );
        assert_eq!(
            redact_url("host='db one' password='my s3cret \\' pass' user=gater"),
            "host='db one' password=*** user=gater"
        );
        assert_eq!(redact_url("password='unterminated s3cret"), "password=***");
        let odd = redact_url("host=db garbage s3cret");
        assert!(!odd.contains("s3cret"), "{odd}");
    }

    #[test]
    fn the_redactor_removes_the_password_from_any_message() {
        let redactor = Redactor::new(Some(b"s3cret"));
        assert_eq!(
            redactor.clean("auth failed for s3cret twice: s3cret"),
            "auth failed for *** twice: ***"
        );
        assert_eq!(Redactor::new(None).clean("plain"), "plain");
    }
}
