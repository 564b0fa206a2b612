//! `PinnedByStream` keeps each stream strictly in version order through
//! random acks, nacks, ack timeouts and consumers joining and leaving.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::StreamExt;
use gater_core::{
    ConsumerStrategy, Delivery, NackAction, RecordedEvent, Subscription, SubscriptionItem,
};
use proptest::prelude::*;
use tokio::time::timeout;

use super::{all, open, spec, window, FakeLog};

/// The ack timeout of the group: a `Wait` op lets deliveries expire.
const ACK_TIMEOUT_MS: u64 = 100;
/// Streams the events go to.
const STREAMS: usize = 3;
/// Most consumers attached at once.
const CONSUMERS: usize = 3;
/// Receive-and-handle rounds at the end before the run must be done.
const DRAIN_ROUNDS_MAX: usize = 2_000;

#[derive(Clone, Debug)]
enum Op {
    Append(usize, usize),
    Attach(u32),
    Detach(usize),
    Take(usize),
    Ack(usize, usize),
    Nack(usize, usize, NackAction),
    Wait,
}

fn op() -> impl Strategy<Value = Op> {
    let action = prop_oneof![
        Just(NackAction::Retry),
        Just(NackAction::Skip),
        Just(NackAction::Park)
    ];
    prop_oneof![
        (0..STREAMS, 1usize..4).prop_map(|(s, n)| Op::Append(s, n)),
        (1u32..4).prop_map(Op::Attach),
        (0..CONSUMERS).prop_map(Op::Detach),
        (0..CONSUMERS).prop_map(Op::Take),
        (0..CONSUMERS, 0usize..4).prop_map(|(c, i)| Op::Ack(c, i)),
        (0..CONSUMERS, 0usize..4, action).prop_map(|(c, i, a)| Op::Nack(c, i, a)),
        Just(Op::Wait),
    ]
}

/// The run's bookkeeping: what each consumer holds, what is handled, and
/// the check made at every delivery.
struct Run {
    consumers: Vec<(Subscription, Vec<Delivery>)>,
    /// Versions acked, skipped or parked, per stream.
    handled: BTreeMap<String, BTreeSet<u64>>,
    appended: Vec<RecordedEvent>,
}

impl Run {
    fn check(&self, delivery: &Delivery) {
        let event = &delivery.event;
        let done = self.handled.get(event.stream.as_str());
        let waiting: Vec<u64> = (0..event.version)
            .filter(|v| !done.is_some_and(|d| d.contains(v)))
            .collect();
        assert!(
            waiting.is_empty(),
            "{} version {} delivered while versions {waiting:?} are outstanding",
            event.stream,
            event.version
        );
    }

    async fn take(&mut self, c: usize) {
        let Some((sub, _)) = self.consumers.get_mut(c) else {
            return;
        };
        let mut got = Vec::new();
        while let Ok(Some(item)) = timeout(Duration::from_millis(1), sub.next()).await {
            if let SubscriptionItem::Event(delivery) = item {
                got.push(delivery);
            }
        }
        for delivery in &got {
            self.check(delivery);
        }
        self.consumers[c].1.extend(got);
    }

    async fn settle(
        &mut self,
        subs: &super::Subscriptions,
        key: &gater_core::SubscriptionKey,
        c: usize,
        i: usize,
        action: Option<NackAction>,
    ) {
        let Some((sub, held)) = self.consumers.get_mut(c) else {
            return;
        };
        if held.is_empty() {
            return;
        }
        let delivery = held.remove(i % held.len());
        let position = delivery.event.position;
        let result = match action {
            None => subs.ack(key, sub.consumer(), position).await,
            Some(action) => subs.nack(key, sub.consumer(), position, action).await,
        };
        let done = matches!(action, None | Some(NackAction::Skip | NackAction::Park));
        if result.is_ok() && done {
            self.handled
                .entry(delivery.event.stream.to_string())
                .or_default()
                .insert(delivery.event.version);
        }
    }

    fn all_handled(&self) -> bool {
        self.appended.iter().all(|e| {
            self.handled
                .get(e.stream.as_str())
                .is_some_and(|d| d.contains(&e.version))
        })
    }
}

async fn check_pinned_order(ops: Vec<Op>) {
    let log = FakeLog::new();
    let subs = open(&log).await;
    let key = all("pinned");
    let spec = gater_core::SubscriptionSpec {
        strategy: ConsumerStrategy::PinnedByStream,
        ..spec(key.clone(), ACK_TIMEOUT_MS, u32::MAX)
    };
    subs.save(spec).await.unwrap();
    let mut run = Run {
        consumers: Vec::new(),
        handled: BTreeMap::new(),
        appended: Vec::new(),
    };
    for op in ops {
        match op {
            Op::Append(stream, n) => {
                for p in log.append_plain(&format!("s-{stream}"), n) {
                    run.appended
                        .push(log.events.lock().unwrap()[p.0 as usize].clone());
                }
            }
            Op::Attach(w) if run.consumers.len() < CONSUMERS => {
                let sub = subs.subscribe(key.clone(), window(w)).await.unwrap();
                run.consumers.push((sub, Vec::new()));
            }
            Op::Attach(_) => {}
            Op::Detach(c) if c < run.consumers.len() => {
                run.consumers.remove(c);
            }
            Op::Detach(_) => {}
            Op::Take(c) => run.take(c).await,
            Op::Ack(c, i) => run.settle(&subs, &key, c, i, None).await,
            Op::Nack(c, i, action) => run.settle(&subs, &key, c, i, Some(action)).await,
            Op::Wait => tokio::time::sleep(Duration::from_millis(ACK_TIMEOUT_MS + 1)).await,
        }
    }
    if run.consumers.is_empty() {
        let sub = subs.subscribe(key.clone(), window(2)).await.unwrap();
        run.consumers.push((sub, Vec::new()));
    }
    for _ in 0..DRAIN_ROUNDS_MAX {
        if run.all_handled() {
            return;
        }
        for c in 0..run.consumers.len() {
            run.take(c).await;
            while !run.consumers[c].1.is_empty() {
                run.settle(&subs, &key, c, 0, None).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("not every event was handled: {:?}", run.handled);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn pinned_by_stream_delivers_each_stream_in_version_order(
        ops in proptest::collection::vec(op(), 0..60),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(check_pinned_order(ops));
    }
}
