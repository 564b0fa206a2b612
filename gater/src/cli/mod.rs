//! The `gater` command line: arguments, client commands, input and output.

pub(crate) mod args;
pub(crate) mod certs;
pub(crate) mod client;
pub(crate) mod config;
mod dcb;
pub(crate) mod input;
pub(crate) mod output;
pub(crate) mod pages;
pub(crate) mod top;
pub(crate) mod transfer;
