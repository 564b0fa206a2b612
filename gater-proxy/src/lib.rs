//! The proxy: a highly available, load-balancing `Gater` over a pool of workers.
#![warn(missing_docs)]
