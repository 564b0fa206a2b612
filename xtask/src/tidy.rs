//! Repository rules, checked as tests: `cargo test --workspace` enforces them.
//!
//! - every Rust source file opens with a `//!` doc;
//! - gater-core stays pure: no runtime, network, TLS, file or clock crate among
//!   its normal dependencies (read from `cargo tree -p gater-core`, which
//!   resolves features for gater-core alone);
//! - the proxy library stays lean: no CLI, HTTP, benchmarking, storage or
//!   transport crate among its normal dependencies;
//! - dependency arrows between the workspace crates follow ARCHITECTURE.md
//!   (the codemap and its invariants): libraries point at the core, only the
//!   `gater` application may depend on every crate, and nothing depends on it;
//! - the code is formatted;
//! - README's "From a Rust service" code is the client example's, word for word.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::project_root;

/// Crates gater-core must never depend on, directly or not.
const IMPURE_CRATES: &[&str] = &[
    "tokio",
    "quinn",
    "quinn-proto",
    "rustls",
    "socket2",
    "mio",
    "fjall",
    "tokio-postgres",
    "chrono",
    "time",
    "getrandom",
    "rand",
];

/// Workspace crates each workspace crate may depend on (normal dependencies).
const ALLOWED_ARROWS: &[(&str, &[&str])] = &[
    ("gater-core", &[]),
    ("gater-store", &["gater-core"]),
    ("gater-transport-mem", &["gater-core"]),
    ("gater-transport-quic", &["gater-core"]),
    ("gater-proxy", &["gater-core"]),
    (
        "gater",
        &[
            "gater-core",
            "gater-store",
            "gater-transport-mem",
            "gater-transport-quic",
            "gater-proxy",
            "gater-bench-report",
        ],
    ),
    ("gater-bench-report", &[]),
    ("gater-cqrs-es", &["gater-core"]),
    // Test and benchmark helpers: a dev-dependency only, never shipped.
    ("gater-testkit", &[]),
];

/// Crates the proxy library must never pull into a user's build: they belong
/// to the application (CLI, config, logging setup, benchmarks) or to the
/// worker side (storage, transports).
const PROXY_FORBIDDEN_CRATES: &[&str] = &[
    "clap",
    "indicatif",
    "hdrhistogram",
    "toml",
    "tempfile",
    "tracing-subscriber",
    "tokio-postgres",
    "gater-store",
    "gater-transport-quic",
    "gater-transport-mem",
    "plotters",
    "quinn",
    "fjall",
];

fn metadata() -> Value {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1"])
        .current_dir(project_root())
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata failed");
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

/// Package id → (name, normal dependency ids), from the resolve graph.
fn normal_graph(meta: &Value) -> BTreeMap<String, (String, Vec<String>)> {
    let names: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| {
            (
                p["id"].as_str().unwrap_or(""),
                p["name"].as_str().unwrap_or(""),
            )
        })
        .collect();
    let mut graph = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().expect("resolve nodes") {
        let id = node["id"].as_str().unwrap_or("").to_owned();
        let deps = node["deps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|k| k["kind"].is_null())
            })
            .filter_map(|d| d["pkg"].as_str().map(str::to_owned))
            .collect();
        let name = names.get(id.as_str()).copied().unwrap_or("").to_owned();
        graph.insert(id, (name, deps));
    }
    graph
}

fn id_of<'a>(graph: &'a BTreeMap<String, (String, Vec<String>)>, name: &str) -> &'a str {
    graph
        .iter()
        .find(|(_, (n, _))| n == name)
        .map(|(id, _)| id.as_str())
        .unwrap_or_else(|| panic!("{name} is in the workspace"))
}

/// Names of the crates in `package`'s normal dependency tree, resolved for
/// that package alone (the workspace-wide resolve unifies features of other crates).
fn dependency_names(package: &str) -> BTreeSet<String> {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree", "-p", package, "-e", "normal", "--prefix", "none", "-f", "{p}",
        ])
        .current_dir(project_root())
        .output()
        .expect("cargo tree runs");
    assert!(out.status.success(), "cargo tree failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn gater_core_has_no_runtime_network_file_or_clock_dependency() {
    let names = dependency_names("gater-core");
    assert!(
        names.contains("gater-core"),
        "cargo tree lists gater-core itself"
    );
    let impure: Vec<&String> = names
        .iter()
        .filter(|n| IMPURE_CRATES.contains(&n.as_str()))
        .collect();
    assert!(impure.is_empty(), "gater-core depends on {impure:?}");
}

#[test]
fn gater_proxy_has_no_application_storage_or_transport_dependency() {
    let names = dependency_names("gater-proxy");
    assert!(
        names.contains("gater-proxy"),
        "cargo tree lists gater-proxy"
    );
    let forbidden: Vec<&String> = names
        .iter()
        .filter(|n| PROXY_FORBIDDEN_CRATES.contains(&n.as_str()))
        .collect();
    assert!(forbidden.is_empty(), "gater-proxy depends on {forbidden:?}");
}

#[test]
fn no_workspace_crate_depends_on_the_application() {
    let graph = normal_graph(&metadata());
    let app = id_of(&graph, "gater");
    let dependents: Vec<&str> = graph
        .values()
        .filter(|(_, deps)| deps.iter().any(|d| d == app))
        .map(|(name, _)| name.as_str())
        .collect();
    assert!(dependents.is_empty(), "{dependents:?} depend on gater");
}

#[test]
fn workspace_dependency_arrows_follow_the_design() {
    let graph = normal_graph(&metadata());
    let workspace: BTreeSet<&str> = ALLOWED_ARROWS.iter().map(|(n, _)| *n).collect();
    for (name, allowed) in ALLOWED_ARROWS {
        let (_, deps) = &graph[id_of(&graph, name)];
        for dep in deps {
            let dep_name = graph[dep].0.as_str();
            assert!(
                !workspace.contains(dep_name) || allowed.contains(&dep_name),
                "{name} must not depend on {dep_name} (ARCHITECTURE.md, codemap)"
            );
        }
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if name != "target" && !name.to_string_lossy().starts_with('.') {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_opens_with_a_module_doc() {
    let root = project_root();
    let mut files = Vec::new();
    for dir in [
        "gater-core",
        "gater-store",
        "gater-transport-mem",
        "gater-transport-quic",
        "gater-proxy",
        "gater",
        "gater-cqrs-es",
        "gater-testkit",
        "xtask",
        "fuzz",
    ] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(!files.is_empty());
    let missing: Vec<String> = files
        .iter()
        .filter(|f| {
            let text = fs::read_to_string(f).unwrap_or_default();
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            !first.starts_with("//!")
        })
        .map(|f| f.strip_prefix(&root).unwrap_or(f).display().to_string())
        .collect();
    assert!(missing.is_empty(), "files without a //! doc: {missing:?}");
}

/// The example whose marked part README shows, and the README section showing it.
const README_EXAMPLE: &str = "gater/examples/client.rs";
const README_EXAMPLE_SECTION: &str = "### From a Rust service";

#[test]
fn readme_client_code_is_the_compiled_example() {
    let root = project_root();
    let example = fs::read_to_string(root.join(README_EXAMPLE)).expect("the example exists");
    let marked: Vec<&str> = example
        .lines()
        .skip_while(|l| l.trim() != "// README: begin")
        .skip(1)
        .take_while(|l| l.trim() != "// README: end")
        .collect();
    assert!(!marked.is_empty(), "{README_EXAMPLE} has README markers");
    let indent = marked
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    let expected: Vec<&str> = marked
        .iter()
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect();
    let readme = fs::read_to_string(root.join("README.md")).expect("README.md exists");
    let shown: Vec<&str> = readme
        .lines()
        .skip_while(|l| *l != README_EXAMPLE_SECTION)
        .skip_while(|l| !l.starts_with("```rust"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .collect();
    assert_eq!(
        shown, expected,
        "README's {README_EXAMPLE_SECTION:?} code differs from {README_EXAMPLE}'s marked part"
    );
}

#[test]
fn code_is_formatted() {
    let status = Command::new(env!("CARGO"))
        .args(["fmt", "--all", "--", "--check"])
        .current_dir(project_root())
        .status()
        .expect("cargo fmt runs");
    assert!(status.success(), "run `cargo fmt --all`");
}
