//! Ownership of persistent subscriptions on shared storage: leases with fencing.
//!
//! On a shared backend every worker may hold a task for a persistent
//! subscription, but only the worker holding its lease reads the log,
//! dispatches events and writes the subscription's record. A lease names its
//! holder (a worker process: its id plus the instant it started, so a
//! restarted worker with the same id is a new holder), the address other
//! workers reach it at, an epoch and an expiry:
//!
//! - a claim takes a lease that is missing or expired (epoch + 1) or renews
//!   one the claimant holds (same epoch, expiry pushed out by one period);
//! - a lease held by another live worker is left alone and reported, so the
//!   claimant can relay its consumers to the holder;
//! - every record write of the holder is a compare-and-set on (holder, epoch,
//!   not expired, record present): a worker whose lease expired or was taken
//!   over can never write, and a removed record is never written again;
//! - a claim on a removed record fails, so the holder learns of a removal at
//!   its next renewal (within one lease period).
//!
//! [`LeaseTable`] is these rules over an in-memory table (for shared backends
//! in one process, as simulations use); the PostgreSQL backend states the
//! same rules in SQL, with the database's clock.

#[cfg(any(test, feature = "conformance"))]
use std::collections::HashMap;
use std::time::Duration;

#[cfg(any(test, feature = "conformance"))]
use gater_core::SubscriptionKey;
#[cfg(any(test, feature = "conformance"))]
use tokio::time::Instant;

#[cfg(any(test, feature = "conformance"))]
use crate::subscription::SubscriptionRecord;

/// Default lease period: how long a dead owner's subscriptions wait before
/// another worker takes them over.
pub const LEASE_PERIOD_MS_DEFAULT: u64 = 3_000;
/// Renewals per lease period: the holder renews after a third of it, so two
/// renewals may fail before the lease runs out.
pub(crate) const RENEWALS_PER_PERIOD: u32 = 3;

/// A worker process asking for leases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Claimant {
    /// Unique per worker process: the worker id and the instant it started.
    pub(crate) holder: String,
    /// Where other workers reach this one.
    pub(crate) address: String,
    /// How long a claim holds.
    pub(crate) period: Duration,
}

/// A lease as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Lease {
    /// The holder (see [`Claimant::holder`]).
    pub(crate) holder: String,
    /// Where the holder is reached.
    pub(crate) address: String,
    /// Bumped by every change of holder.
    pub(crate) epoch: u64,
}

/// What a claim found.
#[cfg_attr(
    not(any(test, feature = "conformance", feature = "postgres")),
    allow(dead_code) // only shared backends refuse or report other holders
)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// The claimant holds the lease (taken or renewed) at this epoch.
    Held(u64),
    /// Another live worker holds it.
    Other(Lease),
    /// The subscription's record is gone: it was removed.
    Removed,
}

/// What a fenced record write did.
#[cfg_attr(
    not(any(test, feature = "conformance", feature = "postgres")),
    allow(dead_code) // only shared backends refuse or report other holders
)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fence {
    /// Written.
    Written,
    /// Refused: the writer's lease expired or another worker holds it.
    LeaseLost,
    /// Refused: the record was removed.
    Removed,
}

/// A lease row with its expiry.
#[cfg(any(test, feature = "conformance"))]
#[derive(Clone, Debug)]
struct Row {
    lease: Lease,
    expires: Instant,
}

/// The lease rules over in-memory records and leases of one store.
#[cfg(any(test, feature = "conformance"))]
#[derive(Debug, Default)]
pub(crate) struct LeaseTable {
    records: HashMap<SubscriptionKey, SubscriptionRecord>,
    leases: HashMap<SubscriptionKey, Row>,
}

#[cfg(any(test, feature = "conformance"))]
impl LeaseTable {
    /// Takes or renews the lease of `key` for `claimant` at `now`.
    pub(crate) fn claim(
        &mut self,
        key: &SubscriptionKey,
        claimant: &Claimant,
        now: Instant,
    ) -> Claim {
        if !self.records.contains_key(key) {
            return Claim::Removed;
        }
        let expires = now + claimant.period;
        let epoch = match self.leases.get(key) {
            Some(row) if row.lease.holder == claimant.holder && row.expires > now => {
                row.lease.epoch
            }
            Some(row) if row.expires > now => return Claim::Other(row.lease.clone()),
            Some(row) => row.lease.epoch + 1,
            None => 1,
        };
        let lease = Lease {
            holder: claimant.holder.clone(),
            address: claimant.address.clone(),
            epoch,
        };
        self.leases.insert(key.clone(), Row { lease, expires });
        Claim::Held(epoch)
    }

    /// Gives a lease up at once (a graceful stop), if `holder` still holds it at `epoch`.
    pub(crate) fn release(
        &mut self,
        key: &SubscriptionKey,
        holder: &str,
        epoch: u64,
        now: Instant,
    ) {
        if let Some(row) = self.leases.get_mut(key) {
            if row.lease.holder == holder && row.lease.epoch == epoch {
                row.expires = now;
            }
        }
    }

    /// Writes `record` if `holder` holds its lease at `epoch` and it is not removed.
    pub(crate) fn put_fenced(
        &mut self,
        record: &SubscriptionRecord,
        holder: &str,
        epoch: u64,
        now: Instant,
    ) -> Fence {
        let key = &record.spec.key;
        if !self.records.contains_key(key) {
            return Fence::Removed;
        }
        let holds = self.leases.get(key).is_some_and(|row| {
            row.lease.holder == holder && row.lease.epoch == epoch && row.expires > now
        });
        if !holds {
            return Fence::LeaseLost;
        }
        self.records.insert(key.clone(), record.clone());
        Fence::Written
    }

    /// Creates a record that does not exist yet; an existing one is kept.
    pub(crate) fn create(&mut self, record: &SubscriptionRecord) {
        self.records
            .entry(record.spec.key.clone())
            .or_insert_with(|| record.clone());
    }

    /// Removes a record and its lease.
    pub(crate) fn remove(&mut self, key: &SubscriptionKey) {
        self.records.remove(key);
        self.leases.remove(key);
    }

    /// The stored record of `key`.
    pub(crate) fn record(&self, key: &SubscriptionKey) -> Option<SubscriptionRecord> {
        self.records.get(key).cloned()
    }

    /// Every stored record, in key order.
    pub(crate) fn records(&self) -> Vec<SubscriptionRecord> {
        let mut records: Vec<SubscriptionRecord> = self.records.values().cloned().collect();
        records.sort_by(|a, b| a.spec.key.cmp(&b.spec.key));
        records
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gater_core::{Position, SubscriptionSpec, SubscriptionType};

    const PERIOD: Duration = Duration::from_secs(3);

    fn claimant(holder: &str) -> Claimant {
        Claimant {
            holder: holder.to_owned(),
            address: format!("mem:{holder}"),
            period: PERIOD,
        }
    }

    fn record(checkpoint: u64) -> SubscriptionRecord {
        let key = SubscriptionKey::new(SubscriptionType::ByStream, "$all", "g").unwrap();
        SubscriptionRecord {
            spec: SubscriptionSpec::new(key),
            checkpoint: Position(checkpoint),
            parked: Vec::new(),
        }
    }

    #[test]
    fn an_expired_owners_checkpoint_write_is_refused() {
        let start = Instant::now();
        let mut table = LeaseTable::default();
        table.create(&record(0));
        let key = record(0).spec.key;
        let (a, b) = (claimant("a"), claimant("b"));
        assert_eq!(table.claim(&key, &a, start), Claim::Held(1));
        assert_eq!(table.put_fenced(&record(5), "a", 1, start), Fence::Written);
        let expired = start + PERIOD;
        assert_eq!(
            table.put_fenced(&record(6), "a", 1, expired),
            Fence::LeaseLost,
            "an expired lease fences its holder even before anyone takes over"
        );
        assert_eq!(table.claim(&key, &b, expired), Claim::Held(2));
        assert_eq!(
            table.put_fenced(&record(7), "a", 1, expired),
            Fence::LeaseLost
        );
        assert_eq!(table.record(&key).unwrap().checkpoint, Position(5));
        assert_eq!(
            table.put_fenced(&record(8), "b", 2, expired),
            Fence::Written
        );
        assert_eq!(table.record(&key).unwrap().checkpoint, Position(8));
    }

    #[test]
    fn a_live_lease_is_renewed_by_its_holder_and_reported_to_others() {
        let start = Instant::now();
        let mut table = LeaseTable::default();
        table.create(&record(0));
        let key = record(0).spec.key;
        let (a, b) = (claimant("a"), claimant("b"));
        assert_eq!(table.claim(&key, &a, start), Claim::Held(1));
        let later = start + PERIOD / 2;
        assert_eq!(
            table.claim(&key, &a, later),
            Claim::Held(1),
            "renewed, same epoch"
        );
        let Claim::Other(lease) = table.claim(&key, &b, later + PERIOD / 2) else {
            panic!("the renewed lease is still a's");
        };
        assert_eq!(
            (lease.holder.as_str(), lease.address.as_str(), lease.epoch),
            ("a", "mem:a", 1)
        );
        table.release(&key, "a", 1, later);
        assert_eq!(
            table.claim(&key, &b, later),
            Claim::Held(2),
            "a released lease is free"
        );
    }

    #[test]
    fn a_removed_record_is_never_written_again_nor_claimed() {
        let start = Instant::now();
        let mut table = LeaseTable::default();
        table.create(&record(0));
        let key = record(0).spec.key;
        assert_eq!(table.claim(&key, &claimant("a"), start), Claim::Held(1));
        table.remove(&key);
        assert_eq!(table.put_fenced(&record(3), "a", 1, start), Fence::Removed);
        assert_eq!(table.claim(&key, &claimant("a"), start), Claim::Removed);
        assert!(table.record(&key).is_none());
    }
}
