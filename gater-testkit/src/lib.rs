//! Helpers for Gater's own tests, benchmarks and development workflows.
//!
//! `pg_harness` starts throwaway PostgreSQL servers from the machine's own
//! binaries. This crate is never a normal dependency of a shipped crate
//! (xtask's `tidy` tests check it): it is a dev-dependency of the libraries'
//! tests and benchmarks and a dependency of xtask, so no library build carries
//! its fixed credentials.
//!
//! What it does not do: run anything in production.
#![warn(missing_docs)]

pub mod pg_harness;
