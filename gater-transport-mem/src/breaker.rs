//! A switch that cuts whatever is in flight through it: a link's connection
//! or a whole server.

use tokio::sync::watch;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct State {
    down: bool,
    /// Bumped at each cut, so work started before a cut fails even if the
    /// switch is back up before that work looks again.
    epoch: u64,
}

/// The switch. Work notes the epoch it started in and races [`Breaker::tripped`].
#[derive(Debug)]
pub(crate) struct Breaker {
    state: watch::Sender<State>,
}

impl Breaker {
    pub(crate) fn new() -> Self {
        Breaker {
            state: watch::Sender::new(State::default()),
        }
    }

    /// Cuts (`down`) or restores the switch.
    pub(crate) fn set_down(&self, down: bool) {
        self.state.send_modify(|state| {
            if down && !state.down {
                state.epoch += 1;
            }
            state.down = down;
        });
    }

    pub(crate) fn is_down(&self) -> bool {
        self.state.borrow().down
    }

    /// The current epoch, or `None` while the switch is down.
    pub(crate) fn epoch(&self) -> Option<u64> {
        let state = *self.state.borrow();
        (!state.down).then_some(state.epoch)
    }

    /// Resolves once the switch has been cut since `epoch`.
    pub(crate) async fn tripped(&self, epoch: u64) {
        let mut rx = self.state.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|s| s.down || s.epoch != epoch).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_cut_and_restore_still_trips_work_from_before_the_cut() {
        let breaker = Breaker::new();
        let epoch = breaker.epoch().unwrap();
        breaker.set_down(true);
        assert_eq!(breaker.epoch(), None);
        breaker.set_down(false);
        breaker.tripped(epoch).await;
        assert!(!breaker.is_down());
        assert_ne!(breaker.epoch(), Some(epoch));
    }
}
