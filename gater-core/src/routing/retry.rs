//! When a failed request may be sent again: safety by request class and
//! error, an attempt cap, a deadline floor, and a retry budget.
//!
//! The budget is the one finagle and tower use: every request deposits, every
//! retry withdraws, and retries may take at most a fixed share of the requests
//! of a sliding window plus a small per-second allowance. When a worker pool
//! is failing, that keeps retries from multiplying the load that broke it.

use std::time::Duration;

use crate::error::{Error, Side};

use super::RequestClass;

/// Whether retrying `class` after `error` on another worker is safe and may help.
///
/// Safe classes are reads, cluster queries, appends (their event ids make a
/// repeat return the first result) and idempotent writes; `Write` repeats are
/// observable and `Subscribe` is re-attached, not retried. The error must be
/// retryable ([`Error::is_retryable`]) and must not come from the caller's own
/// side or from the proxy itself, which another worker cannot cure.
pub fn retry_is_safe(class: RequestClass, error: &Error) -> bool {
    check_safe(class, error).is_ok()
}

/// Why a retry is not made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoRetry {
    /// Repeating this class of request could apply it twice.
    #[error("the request is not idempotent")]
    NotIdempotent,
    /// The error is an answer, not a failure of the path.
    #[error("the error is not retryable")]
    NotRetryable,
    /// The caller's side or the proxy failed; another worker would not help.
    #[error("the failure is on the {0} side")]
    WrongSide(Side),
    /// The store's storage is full: every worker holding it would refuse
    /// the same way until it heals, so the client hears it at once.
    #[error("the storage is full")]
    StorageFull,
    /// The request already had its attempts.
    #[error("all {0} attempts are used")]
    AttemptsExhausted(u32),
    /// Too little of the deadline remains for another attempt.
    #[error("the deadline is too close")]
    DeadlineTooClose,
    /// Retries already took their share of recent requests.
    #[error("the retry budget is spent")]
    BudgetExhausted,
}

/// Knobs of [`RetryBudget`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryBudgetConfig {
    /// How long a deposit counts.
    pub window: Duration,
    /// Retries allowed per 100 requests in the window.
    pub retry_percent: u32,
    /// Retries allowed per second whatever the traffic, so a quiet client can still retry.
    pub min_retries_per_sec: u32,
}

impl RetryBudgetConfig {
    /// Default window: ten seconds.
    pub const WINDOW_DEFAULT: Duration = Duration::from_secs(10);
    /// Default share: retries may add 20% to the requests.
    pub const RETRY_PERCENT_DEFAULT: u32 = 20;
    /// Default floor: ten retries a second.
    pub const MIN_RETRIES_PER_SEC_DEFAULT: u32 = 10;
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig {
            window: Self::WINDOW_DEFAULT,
            retry_percent: Self::RETRY_PERCENT_DEFAULT,
            min_retries_per_sec: Self::MIN_RETRIES_PER_SEC_DEFAULT,
        }
    }
}

/// Slots the budget window is divided into: its time resolution and its memory bound.
pub const RETRY_BUDGET_SLOTS: usize = 10;

/// Hundredths of a retry: the budget's integer unit, so percentages stay exact.
const UNITS_PER_RETRY: u128 = 100;
const NANOS_PER_SEC: u128 = 1_000_000_000;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Slot {
    /// `now / slot width` of the time this slot counts; stale when outside the window.
    index: u64,
    deposits: u64,
    withdrawals: u64,
}

/// A sliding-window retry budget.
///
/// The window is [`RETRY_BUDGET_SLOTS`] slots of `window / RETRY_BUDGET_SLOTS`
/// each, the current slot included. A withdrawal succeeds only if, counting it,
/// `100 × retries ≤ retry_percent × requests + 100 × min_retries_per_sec × window`
/// holds over the window. Call [`RetryBudget::deposit`] once per original
/// request and [`RetryBudget::try_withdraw`] before each retry. `now` must not
/// go backwards; an earlier `now` is taken as the latest seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryBudget {
    config: RetryBudgetConfig,
    slot_ns: u128,
    slots: [Slot; RETRY_BUDGET_SLOTS],
    latest: Duration,
}

impl RetryBudget {
    /// An empty budget (only the per-second allowance is available).
    pub fn new(config: RetryBudgetConfig) -> Self {
        RetryBudget {
            config,
            slot_ns: (config.window.as_nanos() / RETRY_BUDGET_SLOTS as u128).max(1),
            slots: [Slot::default(); RETRY_BUDGET_SLOTS],
            latest: Duration::ZERO,
        }
    }

    /// Records one request.
    pub fn deposit(&mut self, now: Duration) {
        let slot = self.slot_mut(now);
        slot.deposits = slot.deposits.saturating_add(1);
    }

    /// Takes one retry from the budget if it has one.
    pub fn try_withdraw(&mut self, now: Duration) -> bool {
        if self.balance_units(now) < UNITS_PER_RETRY as i128 {
            return false;
        }
        let slot = self.slot_mut(now);
        slot.withdrawals = slot.withdrawals.saturating_add(1);
        true
    }

    /// Retries the budget would allow at `now`.
    pub fn available(&self, now: Duration) -> u64 {
        let units = self.balance_units(now).max(0) as u128 / UNITS_PER_RETRY;
        u64::try_from(units).unwrap_or(u64::MAX)
    }

    /// The configuration.
    pub fn config(&self) -> &RetryBudgetConfig {
        &self.config
    }

    fn balance_units(&self, now: Duration) -> i128 {
        let current = self.slot_index(now.max(self.latest));
        let (mut deposits, mut withdrawals) = (0u128, 0u128);
        for slot in &self.slots {
            if slot.index <= current && current - slot.index < RETRY_BUDGET_SLOTS as u64 {
                deposits += u128::from(slot.deposits);
                withdrawals += u128::from(slot.withdrawals);
            }
        }
        let allowance = u128::from(self.config.min_retries_per_sec)
            * self.config.window.as_nanos()
            * UNITS_PER_RETRY
            / NANOS_PER_SEC;
        let credit = allowance + u128::from(self.config.retry_percent) * deposits;
        // Both sides are sums of u64 counts times small factors: far inside i128.
        credit as i128 - (withdrawals * UNITS_PER_RETRY) as i128
    }

    fn slot_index(&self, now: Duration) -> u64 {
        u64::try_from(now.as_nanos() / self.slot_ns).unwrap_or(u64::MAX)
    }

    fn slot_mut(&mut self, now: Duration) -> &mut Slot {
        self.latest = self.latest.max(now);
        let index = self.slot_index(self.latest);
        // The index modulo the slot count is below the slot count.
        let slot = &mut self.slots[(index % RETRY_BUDGET_SLOTS as u64) as usize];
        if slot.index != index {
            *slot = Slot {
                index,
                deposits: 0,
                withdrawals: 0,
            };
        }
        slot
    }
}

/// Knobs of [`RetryPolicy`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryConfig {
    /// Most attempts of one request, the first included (values below 1 count as 1).
    pub attempts_max: u32,
    /// No retry when less than this remains of the request's deadline.
    pub deadline_floor: Duration,
    /// The budget shared by all requests.
    pub budget: RetryBudgetConfig,
}

impl RetryConfig {
    /// Default attempts: the first and two retries.
    pub const ATTEMPTS_MAX_DEFAULT: u32 = 3;
    /// Default deadline floor: 10 ms, below which an answer is unlikely to arrive in time.
    pub const DEADLINE_FLOOR_DEFAULT: Duration = Duration::from_millis(10);
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts_max: Self::ATTEMPTS_MAX_DEFAULT,
            deadline_floor: Self::DEADLINE_FLOOR_DEFAULT,
            budget: RetryBudgetConfig::default(),
        }
    }
}

/// The whole retry decision for one proxy.
///
/// Call order: [`RetryPolicy::handle_request`] when a request first arrives;
/// after a failed attempt, [`RetryPolicy::check_retry`], and retry only on `Ok`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    config: RetryConfig,
    budget: RetryBudget,
}

impl RetryPolicy {
    /// A policy with a fresh budget.
    pub fn new(config: RetryConfig) -> Self {
        RetryPolicy {
            config,
            budget: RetryBudget::new(config.budget),
        }
    }

    /// Records an original request (not a retry) in the budget.
    pub fn handle_request(&mut self, now: Duration) {
        self.budget.deposit(now);
    }

    /// Whether attempt number `attempts_made + 1` may be sent after `error`,
    /// with `remaining` of the deadline left (`None`: no deadline). A budget
    /// withdrawal is taken only when every other check passed.
    pub fn check_retry(
        &mut self,
        class: RequestClass,
        error: &Error,
        attempts_made: u32,
        remaining: Option<Duration>,
        now: Duration,
    ) -> Result<(), NoRetry> {
        check_safe(class, error)?;
        let attempts_max = self.config.attempts_max.max(1);
        if attempts_made >= attempts_max {
            return Err(NoRetry::AttemptsExhausted(attempts_max));
        }
        if remaining.is_some_and(|left| left < self.config.deadline_floor) {
            return Err(NoRetry::DeadlineTooClose);
        }
        if !self.budget.try_withdraw(now) {
            return Err(NoRetry::BudgetExhausted);
        }
        Ok(())
    }

    /// The budget, for metrics.
    pub fn budget(&self) -> &RetryBudget {
        &self.budget
    }
}

fn check_safe(class: RequestClass, error: &Error) -> Result<(), NoRetry> {
    match class {
        RequestClass::Write | RequestClass::Subscribe => return Err(NoRetry::NotIdempotent),
        RequestClass::Read
        | RequestClass::Append
        | RequestClass::IdempotentWrite
        | RequestClass::Cluster => {}
    }
    if !error.is_retryable() {
        return Err(NoRetry::NotRetryable);
    }
    if matches!(error, Error::StorageFull { .. }) {
        return Err(NoRetry::StorageFull);
    }
    match error.side() {
        Some(side @ (Side::Client | Side::Proxy)) => Err(NoRetry::WrongSide(side)),
        Some(Side::Worker | Side::Storage) | None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn quiet_budget() -> RetryBudget {
        RetryBudget::new(RetryBudgetConfig {
            window: 10 * S,
            retry_percent: 20,
            min_retries_per_sec: 0,
        })
    }

    #[test]
    fn budget_grants_its_share_of_requests() {
        let mut b = quiet_budget();
        for _ in 0..10 {
            b.deposit(S);
        }
        assert_eq!(b.available(S), 2);
        assert!(b.try_withdraw(S));
        assert!(b.try_withdraw(S));
        assert!(!b.try_withdraw(S));
    }

    #[test]
    fn deposits_expire_after_the_window() {
        let mut b = quiet_budget();
        for _ in 0..10 {
            b.deposit(Duration::ZERO);
        }
        assert_eq!(b.available(9 * S), 2);
        assert_eq!(b.available(10 * S), 0);
        assert!(!b.try_withdraw(10 * S));
    }

    #[test]
    fn the_minimum_allowance_lets_a_quiet_client_retry() {
        let mut b = RetryBudget::new(RetryBudgetConfig::default());
        // 10 per second over a 10 s window.
        assert_eq!(b.available(Duration::ZERO), 100);
        for _ in 0..100 {
            assert!(b.try_withdraw(Duration::ZERO));
        }
        assert!(!b.try_withdraw(Duration::ZERO));
    }

    #[test]
    fn policy_stops_at_the_attempt_cap_and_the_deadline_floor() {
        let mut p = RetryPolicy::new(RetryConfig::default());
        let e = Error::unavailable(Side::Worker, "reset");
        assert_eq!(p.check_retry(RequestClass::Read, &e, 1, None, S), Ok(()));
        assert_eq!(
            p.check_retry(RequestClass::Read, &e, 3, None, S),
            Err(NoRetry::AttemptsExhausted(3))
        );
        assert_eq!(
            p.check_retry(RequestClass::Read, &e, 1, Some(Duration::from_millis(9)), S),
            Err(NoRetry::DeadlineTooClose)
        );
    }

    #[test]
    fn refused_retries_do_not_spend_the_budget() {
        let mut p = RetryPolicy::new(RetryConfig::default());
        let before = p.budget().available(S);
        let e = Error::unavailable(Side::Worker, "reset");
        assert!(p.check_retry(RequestClass::Write, &e, 1, None, S).is_err());
        assert!(p
            .check_retry(RequestClass::Read, &e, 1, Some(Duration::ZERO), S)
            .is_err());
        assert_eq!(p.budget().available(S), before);
    }

    #[test]
    fn a_full_storage_is_passed_through_not_retried() {
        let full = Error::StorageFull {
            store: "s".into(),
            message: "no space left".into(),
        };
        assert!(full.is_retryable(), "a client may retry later");
        assert_eq!(
            check_safe(RequestClass::Append, &full),
            Err(NoRetry::StorageFull)
        );
        assert!(!retry_is_safe(RequestClass::Read, &full));
    }
}
