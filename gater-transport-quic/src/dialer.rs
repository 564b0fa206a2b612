//! Where a client dials next: the order of its addresses, and what it
//! remembers of those that failed.
//!
//! Connection attempts race (see `QuicLink`): the first address is dialled,
//! the next one after a short stagger (or at once when an attempt fails),
//! and the first handshake to complete wins. An address that failed, or was
//! still silent when another won, is remembered with an exponential
//! back-off and dialled after the others until its back-off ends, so only
//! the first call after a failure pays for it. When every address failed,
//! the whole round backs off as well.

use std::time::Duration;

use tokio::time::Instant;

/// Back-off bounds, milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Backoff {
    /// First wait.
    pub(crate) min_ms: u64,
    /// Longest wait.
    pub(crate) max_ms: u64,
}

impl Backoff {
    /// The wait after `failures` consecutive failures: `min_ms` doubled per
    /// failure after the first, at most `max_ms`.
    pub(crate) fn after(self, failures: u32) -> Duration {
        let factor = 1u64 << failures.saturating_sub(1).min(20);
        Duration::from_millis(self.min_ms.saturating_mul(factor).min(self.max_ms))
    }
}

/// What a client remembers of one address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Health {
    /// Consecutive failures.
    failures: u32,
    /// Dialled after the others until then.
    avoid_until: Option<Instant>,
}

/// The dialling state of a client over `len` addresses.
#[derive(Debug)]
pub(crate) struct Dialer {
    backoff: Backoff,
    /// The address that last connected: dialled first.
    preferred: usize,
    health: Vec<Health>,
    failed_rounds: u32,
    /// No round starts before then.
    pub(crate) retry_at: Option<Instant>,
}

impl Dialer {
    pub(crate) fn new(len: usize, backoff: Backoff) -> Self {
        Dialer {
            backoff,
            preferred: 0,
            health: vec![Health::default(); len],
            failed_rounds: 0,
            retry_at: None,
        }
    }

    /// The addresses to dial, by index: those not backing off, from the
    /// preferred one on, then those backing off, soonest back first.
    pub(crate) fn order(&self, now: Instant) -> Vec<usize> {
        let len = self.health.len();
        let rotated = (0..len).map(|i| (self.preferred + i) % len);
        let (mut order, mut avoided): (Vec<usize>, Vec<usize>) =
            rotated.partition(|&i| self.health[i].avoid_until.is_none_or(|t| t <= now));
        avoided.sort_by_key(|&i| self.health[i].avoid_until);
        order.extend(avoided);
        order
    }

    /// Address `index` connected: it is preferred and forgiven, and the rounds start over.
    pub(crate) fn connected(&mut self, index: usize) {
        self.preferred = index;
        self.health[index] = Health::default();
        self.failed_rounds = 0;
        self.retry_at = None;
    }

    /// Address `index` failed (or stayed silent while another connected).
    pub(crate) fn failed(&mut self, index: usize, now: Instant) {
        let health = &mut self.health[index];
        health.failures = health.failures.saturating_add(1);
        health.avoid_until = Some(now + self.backoff.after(health.failures));
    }

    /// Every address failed: the next round waits; returns how long.
    pub(crate) fn round_failed(&mut self, now: Instant) -> Duration {
        self.failed_rounds = self.failed_rounds.saturating_add(1);
        let wait = self.backoff.after(self.failed_rounds);
        self.retry_at = Some(now + wait);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: Backoff = Backoff {
        min_ms: 50,
        max_ms: 2_000,
    };

    #[test]
    fn backoff_doubles_up_to_its_ceiling() {
        let ms = Duration::from_millis;
        assert_eq!(BACKOFF.after(1), ms(50));
        assert_eq!(BACKOFF.after(2), ms(100));
        assert_eq!(BACKOFF.after(4), ms(400));
        assert_eq!(BACKOFF.after(40), ms(2_000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_address_is_dialled_last_until_its_backoff_ends() {
        let mut dialer = Dialer::new(3, BACKOFF);
        let now = Instant::now();
        assert_eq!(dialer.order(now), vec![0, 1, 2]);
        dialer.failed(0, now);
        dialer.connected(1);
        assert_eq!(dialer.order(now), vec![1, 2, 0]);
        dialer.failed(1, now);
        dialer.failed(1, now);
        // 0 is back sooner (50 ms) than 1 (100 ms).
        assert_eq!(dialer.order(now), vec![2, 0, 1]);
        let later = now + Duration::from_millis(60);
        assert_eq!(dialer.order(later), vec![2, 0, 1]);
        let much_later = now + Duration::from_millis(150);
        assert_eq!(dialer.order(much_later), vec![1, 2, 0]);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_rounds_back_off_until_an_address_connects() {
        let mut dialer = Dialer::new(2, BACKOFF);
        let now = Instant::now();
        assert_eq!(dialer.round_failed(now), Duration::from_millis(50));
        assert_eq!(dialer.round_failed(now), Duration::from_millis(100));
        dialer.connected(0);
        assert_eq!(dialer.retry_at, None);
        assert_eq!(dialer.round_failed(now), Duration::from_millis(50));
    }
}
