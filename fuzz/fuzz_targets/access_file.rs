//! Fuzz target: the access-file parser and the `*` glob matcher.
//!
//! Neither may panic on any input. Whatever parses must name only valid
//! roles, non-empty identities and store patterns, and matching every
//! parsed pattern against pieces of the input must terminate.

#![no_main]

use gater_core::access::{self, glob_matches};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(rules) = access::parse(text) {
        for grant in rules.grants() {
            assert!(!grant.identity.as_str().is_empty());
            let _ = rules.role_on(grant.identity.as_str(), "store");
            for store in &grant.stores {
                let _ = store.matches(text);
            }
        }
    }
    // Every split of the input into a pattern and a text.
    let mut cut = text.char_indices().map(|(i, _)| i).take(16).peekable();
    while let Some(i) = cut.next() {
        let (pattern, subject) = text.split_at(i);
        let _ = glob_matches(pattern, subject);
        let _ = glob_matches(subject, pattern);
        if cut.peek().is_none() {
            break;
        }
    }
});
