//! Property tests of the access model: the glob matcher agrees with a
//! reference (regular-expression-free, recursive) matcher and never panics;
//! the access-file parser never panics on any text and accepts every file
//! written in its documented shape.

use gater_core::access::{glob_matches, Role};
use proptest::prelude::*;

/// The obvious recursive definition of a `*` glob, as the reference.
fn reference(pattern: &[char], text: &[char]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some(('*', rest)) => (0..=text.len()).any(|i| reference(rest, &text[i..])),
        Some((c, rest)) => text.first() == Some(c) && reference(rest, &text[1..]),
    }
}

fn glob_text() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[ab*-]{0,12}").expect("a valid regex")
}

proptest! {
    #[test]
    fn glob_matching_agrees_with_the_reference(pattern in glob_text(), text in "[ab-]{0,12}") {
        let p: Vec<char> = pattern.chars().collect();
        let t: Vec<char> = text.chars().collect();
        prop_assert_eq!(glob_matches(&pattern, &text), reference(&p, &t));
    }

    #[test]
    fn glob_matching_never_panics(pattern in ".{0,40}", text in ".{0,40}") {
        let _ = glob_matches(&pattern, &text);
    }

    #[test]
    fn a_pattern_without_stars_matches_only_itself(text in "[a-z0-9_-]{0,20}", other in "[a-z0-9_-]{0,20}") {
        prop_assert!(glob_matches(&text, &text));
        prop_assert_eq!(glob_matches(&text, &other), text == other);
    }
}

#[cfg(feature = "access-file")]
mod file {
    use gater_core::access::parse;

    use super::*;

    fn role() -> impl Strategy<Value = Role> {
        prop_oneof![
            Just(Role::Reader),
            Just(Role::Writer),
            Just(Role::Admin),
            Just(Role::Worker)
        ]
    }

    proptest! {
        #[test]
        fn parsing_never_panics(text in "(\\[\\[grant\\]\\]\n|identity = \"[a-z*]{0,4}\"\n|stores = \\[\"[a-z*]{0,3}\"\\]\n|role = \"[a-z]{0,6}\"\n|.{0,8}\n){0,10}") {
            let _ = parse(&text);
        }

        #[test]
        fn files_in_the_documented_shape_parse_to_their_grants(
            grants in proptest::collection::vec(("[a-z][a-z*-]{0,8}", proptest::collection::vec("[a-z0-9*_-]{1,8}", 1..4), role()), 0..6)
        ) {
            let mut text = String::new();
            for (identity, stores, role) in &grants {
                let stores: Vec<String> = stores.iter().map(|s| format!("{s:?}")).collect();
                text.push_str(&format!(
                    "[[grant]]\nidentity = {identity:?}  # a comment\nstores = [{}]\nrole = \"{role}\"\n\n",
                    stores.join(", ")
                ));
            }
            let access = parse(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            prop_assert_eq!(access.grants().len(), grants.len());
            for (parsed, (identity, stores, role)) in access.grants().iter().zip(&grants) {
                prop_assert_eq!(parsed.identity.as_str(), identity.as_str());
                prop_assert_eq!(parsed.role, *role);
                if *role != Role::Worker {
                    let names: Vec<&str> = parsed.stores.iter().map(|s| s.as_str()).collect();
                    prop_assert_eq!(names, stores.iter().map(String::as_str).collect::<Vec<_>>());
                }
            }
        }
    }
}
