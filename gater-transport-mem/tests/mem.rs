//! The in-process transport end to end: wire messages in plain and codec
//! mode, subscriptions with credit, and the fault knobs.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use gater_core::{
    Direction, Error, ExpectedVersion, Gater, Position, Resource, Side, StoreConfig, StreamId,
    SubscribeOptions, SubscriptionEnd, SubscriptionItem, SubscriptionKey,
};
use gater_transport_mem::{serve_with, Faults, MemClientOptions, MemOptions, MemServer};
use support::{event, store, stream, TestGater};

fn server(codec: bool) -> (TestGater, MemServer) {
    let gater = TestGater::new();
    let options = MemOptions {
        codec,
        ..MemOptions::default()
    };
    (gater.clone(), serve_with(gater, options))
}

async fn with_store(server: &MemServer) {
    server
        .client()
        .create_store(&store("s"), StoreConfig::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn appends_and_reads_cross_the_link_in_plain_and_codec_mode() {
    for codec in [false, true] {
        let (_, server) = server(codec);
        with_store(&server).await;
        let client = server.client();
        let appended = client
            .append_events(
                &store("s"),
                &stream("a"),
                ExpectedVersion::NoStream,
                vec![event(1), event(2)],
            )
            .await
            .unwrap();
        assert_eq!((appended.version, appended.position), (1, Position(1)));
        let events = client
            .get_events(&store("s"), &stream("a"), 0, 10, Direction::Forward)
            .await
            .unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].data, event(2));
        let err = client
            .append_events(
                &store("s"),
                &stream("a"),
                ExpectedVersion::Exact(0),
                vec![event(3)],
            )
            .await
            .unwrap_err();
        assert_eq!(
            err,
            Error::WrongExpectedVersion {
                stream: stream("a"),
                expected: ExpectedVersion::Exact(0),
                current: Some(1)
            },
            "codec {codec}"
        );
    }
}

#[tokio::test]
async fn many_clients_share_one_server() {
    let (_, server) = server(true);
    with_store(&server).await;
    let clients: Vec<_> = (0..8).map(|_| server.client()).collect();
    let (s, shared) = (store("s"), stream("shared"));
    let appends = clients
        .iter()
        .enumerate()
        .map(|(i, c)| c.append_events(&s, &shared, ExpectedVersion::Any, vec![event(i as u64)]));
    for result in futures::future::join_all(appends).await {
        result.unwrap();
    }
    let version = clients[0]
        .get_version(&store("s"), &stream("shared"))
        .await
        .unwrap();
    assert_eq!(version, Some(7));
}

#[tokio::test]
async fn an_unknown_store_is_a_typed_not_found() {
    let (_, server) = server(true);
    let err = server
        .client()
        .get_version(&store("nope"), &stream("a"))
        .await
        .unwrap_err();
    assert_eq!(err, Error::not_found(Resource::Store, "nope"));
}

#[tokio::test]
async fn in_codec_mode_an_oversize_request_is_refused_and_changes_nothing() {
    let gater = TestGater::new();
    let options = MemOptions {
        codec: true,
        frame_bytes_max: 1024,
        ..MemOptions::default()
    };
    let server = serve_with(gater.clone(), options);
    with_store(&server).await;
    let events = (0..8).map(event).collect();
    let err = server
        .client()
        .append_events(&store("s"), &stream("big"), ExpectedVersion::Any, events)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::LimitExceeded { .. }), "{err:?}");
    let version = server
        .client()
        .get_version(&store("s"), &stream("big"))
        .await
        .unwrap();
    assert_eq!(version, None);
}

fn faulty(
    server: &MemServer,
    faults: Faults,
    deadline_ms: Option<u32>,
    seed: u64,
) -> gater_transport_mem::MemClient {
    server.client_with(MemClientOptions {
        deadline_ms,
        faults,
        seed,
    })
}

#[tokio::test(start_paused = true)]
async fn a_dropped_request_is_not_applied_and_fails_retryably_after_the_deadline() {
    let (_, server) = server(false);
    with_store(&server).await;
    let drop_all = Faults {
        drop_request: 1.0,
        ..Faults::NONE
    };
    let client = faulty(&server, drop_all, Some(500), 1);
    let started = tokio::time::Instant::now();
    let err = client
        .append_events(
            &store("s"),
            &stream("a"),
            ExpectedVersion::Any,
            vec![event(1)],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unavailable {
                side: Side::Worker,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
    assert!(started.elapsed() >= Duration::from_millis(500));
    let version = server
        .client()
        .get_version(&store("s"), &stream("a"))
        .await
        .unwrap();
    assert_eq!(version, None);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_response_is_applied_and_fails_retryably_at_once_without_deadline() {
    let (_, server) = server(true);
    with_store(&server).await;
    let drop_answers = Faults {
        drop_response: 1.0,
        ..Faults::NONE
    };
    let client = faulty(&server, drop_answers, None, 1);
    let err = client
        .append_events(
            &store("s"),
            &stream("a"),
            ExpectedVersion::Any,
            vec![event(1)],
        )
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    let version = server
        .client()
        .get_version(&store("s"), &stream("a"))
        .await
        .unwrap();
    assert_eq!(version, Some(0));
}

#[tokio::test(start_paused = true)]
async fn an_answer_slower_than_the_deadline_is_deadline_exceeded() {
    let (_, server) = server(false);
    with_store(&server).await;
    let slow = Faults {
        delay_min_ms: 200,
        delay_max_ms: 300,
        ..Faults::NONE
    };
    let client = faulty(&server, slow, Some(100), 3);
    let err = client
        .get_version(&store("s"), &stream("a"))
        .await
        .unwrap_err();
    assert_eq!(err, Error::DeadlineExceeded { side: Side::Client });
}

#[tokio::test(start_paused = true)]
async fn a_cut_connection_fails_in_flight_and_later_requests_until_restored() {
    let (_, server) = server(false);
    with_store(&server).await;
    let slow = Faults {
        delay_min_ms: 1_000,
        delay_max_ms: 1_000,
        ..Faults::NONE
    };
    let client = faulty(&server, slow, None, 1);
    let (s, a) = (store("s"), stream("a"));
    let in_flight = client.get_version(&s, &a);
    let cut = async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        client.link().set_connected(false);
    };
    let (result, ()) = tokio::join!(in_flight, cut);
    assert!(
        matches!(
            result,
            Err(Error::Unavailable {
                side: Side::Worker,
                ..
            })
        ),
        "{result:?}"
    );
    let later = client.get_version(&store("s"), &stream("a")).await;
    assert!(matches!(later, Err(Error::Unavailable { .. })));
    client.link().set_connected(true);
    client.link().set_faults(Faults::NONE);
    assert_eq!(
        client.get_version(&store("s"), &stream("a")).await,
        Ok(None)
    );
}

#[tokio::test(start_paused = true)]
async fn a_crashed_server_fails_requests_and_ends_subscriptions_until_restored() {
    let (_, server) = server(true);
    with_store(&server).await;
    let client = server.client();
    let mut sub = client
        .subscribe(
            &store("s"),
            SubscriptionKey::stream(&StreamId::all()),
            SubscribeOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(sub.next().await, Some(SubscriptionItem::CaughtUp));
    server.set_down(true);
    let end = sub.next().await;
    assert!(
        matches!(
            end,
            Some(SubscriptionItem::End(SubscriptionEnd::Failed(
                Error::Unavailable { .. }
            )))
        ),
        "{end:?}"
    );
    assert_eq!(sub.next().await, None);
    let err = client
        .get_version(&store("s"), &stream("a"))
        .await
        .unwrap_err();
    assert!(err.is_retryable());
    server.set_down(false);
    assert_eq!(
        client.get_version(&store("s"), &stream("a")).await,
        Ok(None)
    );
}

/// Runs a fixed workload through a faulty client and records what each
/// request saw and when, in virtual time.
async fn faulty_run(seed: u64) -> Vec<(String, u128)> {
    let (_, server) = server(true);
    with_store(&server).await;
    let faults = Faults {
        drop_request: 0.2,
        drop_response: 0.2,
        delay_min_ms: 1,
        delay_max_ms: 40,
    };
    let client = faulty(&server, faults, Some(100), seed);
    let start = tokio::time::Instant::now();
    let mut seen = Vec::new();
    for i in 0..40 {
        let result = client
            .append_events(
                &store("s"),
                &stream("sim"),
                ExpectedVersion::Any,
                vec![event(i)],
            )
            .await;
        let what = match result {
            Ok(r) => format!("ok {}", r.version),
            Err(e) => e.kind().to_owned(),
        };
        seen.push((what, start.elapsed().as_millis()));
    }
    seen
}

#[tokio::test(start_paused = true)]
async fn a_faulty_run_is_a_function_of_its_seed() {
    let first = faulty_run(7).await;
    assert_eq!(first, faulty_run(7).await, "seed 7");
    assert_ne!(first, faulty_run(8).await, "seeds 7 and 8");
    let kinds: std::collections::HashSet<_> = first
        .iter()
        .map(|(k, _)| k.split(' ').next().unwrap().to_owned())
        .collect();
    assert!(
        kinds.contains("ok") && kinds.contains("unavailable"),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn a_subscription_delivers_history_then_live_events_in_both_modes() {
    for codec in [false, true] {
        let (_, server) = server(codec);
        with_store(&server).await;
        let client = server.client();
        client
            .append_events(
                &store("s"),
                &stream("a"),
                ExpectedVersion::Any,
                vec![event(1), event(2)],
            )
            .await
            .unwrap();
        let mut sub = client
            .subscribe(
                &store("s"),
                SubscriptionKey::stream(&StreamId::all()),
                SubscribeOptions::default(),
            )
            .await
            .unwrap();
        let mut positions = Vec::new();
        for _ in 0..2 {
            match sub.next().await {
                Some(SubscriptionItem::Event(d)) => positions.push(d.event.position.0),
                other => panic!("expected an event, got {other:?}"),
            }
        }
        assert_eq!(sub.next().await, Some(SubscriptionItem::CaughtUp));
        client
            .append_events(
                &store("s"),
                &stream("b"),
                ExpectedVersion::Any,
                vec![event(3)],
            )
            .await
            .unwrap();
        match sub.next().await {
            Some(SubscriptionItem::Event(d)) => positions.push(d.event.position.0),
            other => panic!("expected a live event, got {other:?}"),
        }
        assert_eq!(positions, [0, 1, 2], "codec {codec}");
        client
            .ack_event(
                &store("s"),
                &SubscriptionKey::stream(&StreamId::all()),
                sub.consumer(),
                Position(2),
            )
            .await
            .unwrap();
        client.remove_store(&store("s")).await.unwrap();
        assert_eq!(
            sub.next().await,
            Some(SubscriptionItem::End(SubscriptionEnd::StoreRemoved))
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_consumer_that_does_not_read_stops_the_server_at_its_credit() {
    let gater = TestGater::new();
    let options = MemOptions {
        codec: true,
        subscription_credit: 8,
        ..MemOptions::default()
    };
    let server = serve_with(gater.clone(), options);
    with_store(&server).await;
    let client = server.client();
    let events = (0..100).map(event).collect();
    client
        .append_events(&store("s"), &stream("a"), ExpectedVersion::Any, events)
        .await
        .unwrap();
    let mut sub = client
        .subscribe(
            &store("s"),
            SubscriptionKey::stream(&StreamId::all()),
            SubscribeOptions::default(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(gater.pulled.load(Ordering::Relaxed), 8);
    let mut read = 0;
    while read < 100 {
        match sub.next().await {
            Some(SubscriptionItem::Event(_)) => read += 1,
            other => panic!("expected an event, got {other:?}"),
        }
        assert!(gater.pulled.load(Ordering::Relaxed) <= read + 8);
    }
    assert_eq!(sub.next().await, Some(SubscriptionItem::CaughtUp));
}

#[tokio::test]
async fn subscribing_to_an_unknown_store_is_a_typed_error() {
    let (_, server) = server(true);
    let err = server
        .client()
        .subscribe(
            &store("nope"),
            SubscriptionKey::stream(&StreamId::all()),
            SubscribeOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err, Error::not_found(Resource::Store, "nope"));
}
