//! The pure routing policy: which worker serves a request, when a worker is
//! taken out of rotation, and when a failed request may be sent again.
//!
//! Everything here is a function of its inputs. Time is a [`Duration`] since
//! an epoch the caller chooses (the proxy uses its start instant) and
//! randomness comes from a seeded [`Rng`](crate::Rng), so a test can replay any
//! decision. The pieces, in the order a request meets them:
//!
//! - [`Router::pick`] chooses a worker from a snapshot ([`WorkerView`]s): only
//!   workers serving the store and not ejected are eligible; healthy ones win
//!   over suspect ones; among the winners it balances by power of two choices
//!   over `(in_flight + 1) × latency` ([`Balance::P2c`]), or by round robin or
//!   at random. A request with an [`AffinityKey`] goes to the rendezvous-hash
//!   owner of its key instead.
//! - [`PeakEwma`] estimates a worker's latency; [`Health`] turns request and
//!   probe outcomes into a [`WorkerHealth`](crate::WorkerHealth) with
//!   exponential ejection back-off.
//! - [`RetryPolicy`] decides whether a failure may be retried: only for
//!   classes where repeating is safe, within an attempt cap, a deadline floor
//!   and a [`RetryBudget`].
//!
//! What it does not do: it keeps no worker registry, sends nothing and reads no
//! clock; the proxy owns the state and feeds it in.
//!
//! [`Duration`]: std::time::Duration

mod ewma;
mod hash;
mod health;
mod pick;
mod retry;

use serde::{Deserialize, Serialize};

pub use ewma::{EwmaConfig, PeakEwma};
pub use hash::{placement_order, rendezvous_weight, AffinityKey};
pub use health::{Health, HealthConfig};
pub use pick::{Balance, NoWorker, Pick, RouteRequest, Router, RouterConfig, Serves, WorkerView};
pub use retry::{
    retry_is_safe, NoRetry, RetryBudget, RetryBudgetConfig, RetryConfig, RetryPolicy,
    RETRY_BUDGET_SLOTS,
};

/// What kind of request is being routed; decides eligibility rules and retry safety.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RequestClass {
    /// Reads of events, streams, versions, snapshots, subscription lists: always safe to retry.
    Read,
    /// Appends: safe to retry because event ids make them idempotent.
    Append,
    /// Writes that are idempotent by construction (create store, save subscription,
    /// record snapshot).
    IdempotentWrite,
    /// Writes whose repetition is observable (remove store, delete snapshot,
    /// remove subscription, ack, nack, replay parked): never retried blindly.
    Write,
    /// Attaching a consumer: routed by affinity, re-attached rather than retried.
    Subscribe,
    /// Cluster-wide questions (list stores, workers): answered by the proxy.
    Cluster,
}
