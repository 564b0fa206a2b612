//! `*` globs over identities and store ids: `*` matches any run of
//! characters (also none); every other character matches itself.

use std::fmt;

/// A pattern where `*` matches any run of characters.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Glob(String);

impl Glob {
    /// The pattern `pattern`.
    pub fn new(pattern: impl Into<String>) -> Self {
        Glob(pattern.into())
    }

    /// The pattern's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        glob_matches(&self.0, text)
    }
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters.
///
/// Linear in `pattern.len() × text.len()` at worst: on a mismatch it resumes
/// from the last `*` only, never from earlier ones. Compares bytes, with no
/// allocation (every request a guarded server answers is checked here):
/// both are UTF-8, where no character's bytes start inside another's, so a
/// `*` can only end where a character ends and bytes match as characters do.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // The last `*` seen and the text position it is matched up to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pattern: &str, text: &str, expected: bool) {
        assert_eq!(
            glob_matches(pattern, text),
            expected,
            "{pattern:?} against {text:?}"
        );
    }

    #[test]
    fn stars_match_any_run_and_other_characters_themselves() {
        check("*", "", true);
        check("*", "anything", true);
        check("orders", "orders", true);
        check("orders", "orders2", false);
        check("invoices-*", "invoices-2026", true);
        check("invoices-*", "invoices-", true);
        check("invoices-*", "invoice", false);
        check("team-*-prod", "team-a-prod", true);
        check("team-*-prod", "team-a-stage", false);
        check("*a*b*", "xxaxxbxx", true);
        check("*a*b*", "xxbxxaxx", false);
        check("", "", true);
        check("", "x", false);
        check("**", "x", true);
        check("é*", "été", true);
        check("*é", "été", true);
        check("*t*", "été", true);
        check("é", "e", false);
    }

    /// The character-by-character reading of the rule, for comparison.
    fn matches_by_chars(pattern: &[char], text: &[char]) -> bool {
        match (pattern.split_first(), text.split_first()) {
            (None, _) => text.is_empty(),
            (Some(('*', rest)), _) => {
                (0..=text.len()).any(|skip| matches_by_chars(rest, &text[skip..]))
            }
            (Some((c, rest)), Some((t, more))) => c == t && matches_by_chars(rest, more),
            (Some(_), None) => false,
        }
    }

    proptest::proptest! {
        #[test]
        fn byte_matching_agrees_with_matching_characters(
            pattern in "[a\u{e9}\u{1f600}*]{0,6}",
            text in "[a\u{e9}\u{1f600}b]{0,8}",
        ) {
            let p: Vec<char> = pattern.chars().collect();
            let t: Vec<char> = text.chars().collect();
            proptest::prop_assert_eq!(glob_matches(&pattern, &text), matches_by_chars(&p, &t));
        }
    }
}
