//! The pure routing policy: which worker serves a request.

use serde::{Deserialize, Serialize};

/// What kind of request is being routed; decides eligibility rules and retry safety.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RequestClass {
    /// Reads of events, streams, versions, snapshots, subscription lists: always safe to retry.
    Read,
    /// Appends: safe to retry because event ids make them idempotent.
    Append,
    /// Writes that are idempotent by construction (create store, save subscription,
    /// record snapshot, acks).
    IdempotentWrite,
    /// Writes whose repetition is observable (remove store, delete snapshot,
    /// remove subscription, nack, replay parked): never retried blindly.
    Write,
    /// Attaching a consumer: routed by affinity, re-attached rather than retried.
    Subscribe,
    /// Cluster-wide questions (list stores, workers): answered by the proxy.
    Cluster,
}
