//! The access file: TOML text with one `[[grant]]` table per rule.
//!
//! ```toml
//! [[grant]]
//! identity = "billing"                # certificate CN; `*` globs allowed
//! stores = ["orders", "invoices-*"]   # store ids, `*` globs; ignored for "worker"
//! role = "writer"                     # reader | writer | admin | worker
//! ```
//!
//! Parsing is pure (text in, rules out); reading the file is the caller's.
//! Every error names the line it is about.

use serde::Deserialize;
use toml::Spanned;

use crate::access::{Access, Glob, Grant, Role};

/// Why an access file was refused; each names the 1-based line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccessFileError {
    /// The text is not TOML of the expected shape.
    #[error("line {line}: {message}")]
    Syntax {
        /// The line.
        line: usize,
        /// What the TOML parser said.
        message: String,
    },
    /// The role is none of reader, writer, admin, worker.
    #[error("line {line}: unknown role {role:?} (expected reader, writer, admin or worker)")]
    UnknownRole {
        /// The line.
        line: usize,
        /// The role given.
        role: String,
    },
    /// The identity is empty.
    #[error("line {line}: the identity is empty")]
    EmptyIdentity {
        /// The line.
        line: usize,
    },
    /// A grant of a store role names no stores.
    #[error("line {line}: a {role} grant needs `stores` (store ids or `*` globs)")]
    MissingStores {
        /// The line of the grant's identity.
        line: usize,
        /// Its role.
        role: Role,
    },
    /// A store pattern holds characters no store id can hold.
    #[error("line {line}: store pattern {pattern:?} may only hold [a-z0-9_-] and `*`")]
    StorePattern {
        /// The line.
        line: usize,
        /// The pattern given.
        pattern: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    grant: Vec<RawGrant>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrant {
    identity: Spanned<String>,
    #[serde(default)]
    stores: Option<Vec<Spanned<String>>>,
    role: Spanned<String>,
}

/// Parses an access file's text into the rules it grants.
pub fn parse(text: &str) -> Result<Access, AccessFileError> {
    let line_of = |offset: usize| line_at(text, offset);
    let raw: RawFile = toml::from_str(text).map_err(|e| AccessFileError::Syntax {
        line: e.span().map_or(1, |span| line_of(span.start)),
        message: e.message().trim().to_owned(),
    })?;
    let mut grants = Vec::with_capacity(raw.grant.len());
    for g in raw.grant {
        let identity_line = line_of(g.identity.span().start);
        if g.identity.get_ref().is_empty() {
            return Err(AccessFileError::EmptyIdentity {
                line: identity_line,
            });
        }
        let role =
            Role::from_name(g.role.get_ref()).ok_or_else(|| AccessFileError::UnknownRole {
                line: line_of(g.role.span().start),
                role: g.role.get_ref().clone(),
            })?;
        let stores = match (g.stores, role) {
            (_, Role::Worker) => Vec::new(),
            (None, role) => {
                return Err(AccessFileError::MissingStores {
                    line: identity_line,
                    role,
                })
            }
            (Some(stores), _) => stores
                .into_iter()
                .map(|s| store_pattern(s, &line_of))
                .collect::<Result<_, _>>()?,
        };
        grants.push(Grant {
            identity: Glob::new(g.identity.into_inner()),
            stores,
            role,
        });
    }
    Ok(Access::new(grants))
}

fn store_pattern(
    pattern: Spanned<String>,
    line_of: &impl Fn(usize) -> usize,
) -> Result<Glob, AccessFileError> {
    let valid = |c: char| matches!(c, 'a'..='z' | '0'..='9' | '_' | '-' | '*');
    let text = pattern.get_ref();
    if text.is_empty() || !text.chars().all(valid) {
        return Err(AccessFileError::StorePattern {
            line: line_of(pattern.span().start),
            pattern: text.clone(),
        });
    }
    Ok(Glob::new(pattern.into_inner()))
}

/// The 1-based line holding byte `offset` of `text`.
fn line_at(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[[grant]]
identity = "ops"          # certificate CN; `*` globs allowed ("team-*", "*")
stores = ["*"]            # store ids; `*` globs allowed; optional (and ignored) for role "worker"
role = "admin"            # reader | writer | admin | worker

[[grant]]
identity = "billing"
stores = ["orders", "invoices-*"]
role = "writer"

[[grant]]
identity = "worker-*"
role = "worker"
"#;

    #[test]
    fn the_documented_example_parses() {
        let access = parse(EXAMPLE).unwrap();
        assert!(!access.is_open());
        assert_eq!(access.grants().len(), 3);
        assert_eq!(access.role_on("ops", "anything"), Some(Role::Admin));
        assert_eq!(access.role_on("billing", "invoices-1"), Some(Role::Writer));
        assert_eq!(access.role_on("billing", "payroll"), None);
        assert_eq!(access.grants()[2].role, Role::Worker);
    }

    #[test]
    fn an_empty_file_grants_nothing() {
        assert!(parse("").unwrap().grants().is_empty());
    }

    #[test]
    fn an_unknown_role_is_refused_naming_its_line() {
        let text = "[[grant]]\nidentity = \"a\"\nstores = [\"*\"]\nrole = \"root\"\n";
        assert_eq!(
            parse(text),
            Err(AccessFileError::UnknownRole {
                line: 4,
                role: "root".into()
            })
        );
    }

    #[test]
    fn an_empty_identity_is_refused_naming_its_line() {
        let text = "\n[[grant]]\nidentity = \"\"\nstores = [\"*\"]\nrole = \"reader\"\n";
        assert_eq!(parse(text), Err(AccessFileError::EmptyIdentity { line: 3 }));
    }

    #[test]
    fn text_that_does_not_parse_is_refused_naming_its_line() {
        let err = parse("[[grant]]\nidentity = \"a\"\nrole = reader\n").unwrap_err();
        assert!(
            matches!(err, AccessFileError::Syntax { line: 3, .. }),
            "{err}"
        );
        assert!(err.to_string().starts_with("line 3: "), "{err}");
    }

    #[test]
    fn unknown_keys_and_missing_stores_are_refused() {
        let err =
            parse("[[grant]]\nidentity = \"a\"\nstore = [\"x\"]\nrole = \"reader\"\n").unwrap_err();
        assert!(matches!(err, AccessFileError::Syntax { .. }), "{err}");
        let err = parse("[[grant]]\nidentity = \"a\"\nrole = \"reader\"\n").unwrap_err();
        assert!(
            matches!(err, AccessFileError::MissingStores { line: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn store_patterns_must_be_possible_store_ids() {
        let text = "[[grant]]\nidentity = \"a\"\nstores = [\"Orders\"]\nrole = \"reader\"\n";
        assert!(matches!(
            parse(text),
            Err(AccessFileError::StorePattern { line: 3, .. })
        ));
    }
}
