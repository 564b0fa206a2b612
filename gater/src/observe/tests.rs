//! The admin listener over a cluster in one process (a proxy over two
//! workers on the mem transport): scraped over real HTTP, parsed with a
//! Prometheus text parser.

use std::collections::BTreeMap;
use std::sync::Arc;

use gater_core::routing::HealthConfig;
use gater_core::{
    BoxGater, Error, EventData, EventId, ExpectedVersion, Gater, StoreConfig, StoreId, StreamId,
    SubscriptionKey, SubscriptionSpec, SubscriptionType,
};
use gater_proxy::{Proxy, ProxyConfig};
use gater_store::{Store, StoreOptions};
use gater_transport_mem::{serve, MemServer};
use prometheus_parse::{Sample, Scrape, Value};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::http;
use super::requests::{Instrumented, RequestMetrics};
use super::Observed;

/// Failures that eject a worker in these tests.
const FAILURES_TO_EJECT: u32 = 2;

struct Cluster {
    _dirs: Vec<TempDir>,
    down_worker: MemServer,
    proxy: Proxy,
    front: BoxGater,
    http: std::net::SocketAddr,
}

async fn open_store(dirs: &mut Vec<TempDir>, id: &str) -> Arc<Store> {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions::new(dir.path());
    options.worker_id = id.to_owned();
    dirs.push(dir);
    Arc::new(Store::open(options).await.unwrap())
}

/// A proxy over workers `w1` (whose engine the listener measures, as in
/// `gater dev`) and `w2`, the store `demo` on `w1`, and the admin listener.
async fn cluster() -> Cluster {
    let mut dirs = Vec::new();
    let store = open_store(&mut dirs, "w1").await;
    let other = open_store(&mut dirs, "w2").await;
    store
        .create_store(&demo(), StoreConfig::default())
        .await
        .unwrap();
    let w1 = serve(store.clone());
    let w2 = serve(other);
    let config = ProxyConfig {
        health: HealthConfig {
            failures_to_eject: FAILURES_TO_EJECT,
            ..HealthConfig::default()
        },
        ..ProxyConfig::default()
    };
    let proxy = Proxy::builder()
        .config(config)
        .worker("w1", "mem-1", Arc::new(w1.client()))
        .worker("w2", "mem-2", Arc::new(w2.client()))
        .build()
        .await
        .unwrap();
    let requests = Arc::new(RequestMetrics::default());
    let front: BoxGater = Arc::new(Instrumented::new(
        Arc::new(proxy.clone()),
        requests.clone(),
        "proxy",
    ));
    let observed = Observed {
        gater: Arc::new(proxy.clone()),
        requests,
        store: Some(store.clone()),
        proxy: Some(proxy.clone()),
        budget: None,
    };
    let listener = http::bind("127.0.0.1:0", false).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(http::serve(
        listener,
        Arc::new(observed),
        std::future::pending(),
    ));
    Cluster {
        _dirs: dirs,
        down_worker: w2,
        proxy,
        front,
        http: addr,
    }
}

fn demo() -> StoreId {
    StoreId::new("demo").unwrap()
}

fn events(count: usize) -> Vec<EventData> {
    (0..count)
        .map(|_| {
            EventData::json(
                EventId::from_uuid(uuid::Uuid::new_v4()),
                "Happened",
                b"{}".to_vec(),
                b"{}".to_vec(),
            )
        })
        .collect()
}

/// `GET path` over a plain TCP connection: the status and the body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("a header and a body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (status, body.to_owned())
}

async fn scrape(addr: std::net::SocketAddr) -> (String, Scrape) {
    let (status, text) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    let parsed = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    (text, parsed)
}

/// The value of the sample `metric` whose labels include `labels`, if any.
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matches =
        |s: &&Sample| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v));
    scrape.samples.iter().find(matches).map(|s| match &s.value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        other => panic!("{metric} is not a plain value: {other:?}"),
    })
}

fn counter(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    value(scrape, metric, labels).unwrap_or(0.0)
}

/// The text format's rules this exporter must keep: one TYPE line per
/// family, and every histogram with `_bucket` (ending at `+Inf`), `_sum`
/// and `_count` samples.
fn check_format(text: &str) {
    let mut types: BTreeMap<&str, &str> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(
                types.insert(name, kind).is_none(),
                "two TYPE lines for {name}"
            );
        }
    }
    let samples: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or(""))
        .collect();
    for (name, kind) in &types {
        if *kind != "histogram" {
            continue;
        }
        for suffix in ["_bucket", "_sum", "_count"] {
            let wanted = format!("{name}{suffix}");
            assert!(
                samples.iter().any(|s| *s == wanted),
                "histogram {name} has no {wanted} samples"
            );
        }
        let inf = format!("{name}_bucket{{le=\"+Inf\"");
        assert!(text.contains(&inf), "histogram {name} has no +Inf bucket");
    }
    for sample in &samples {
        let family = types.keys().any(|name| {
            *sample == *name
                || ["_total", "_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| *sample == format!("{name}{suffix}"))
        });
        assert!(family, "sample {sample} belongs to no TYPE'd family");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_by_the_appends_subscription_and_ejection_made() {
    let cluster = cluster().await;
    cluster.proxy.probe_now().await;
    let (_, before) = scrape(cluster.http).await;
    let stream = StreamId::new("order-1").unwrap();
    for count in [2, 3, 5] {
        cluster
            .front
            .append_events(&demo(), &stream, ExpectedVersion::Any, events(count))
            .await
            .unwrap();
    }
    let refused = cluster
        .front
        .append_events(&demo(), &stream, ExpectedVersion::NoStream, events(1))
        .await;
    assert!(matches!(refused, Err(Error::WrongExpectedVersion { .. })));
    let key = SubscriptionKey::new(SubscriptionType::ByStream, "$all", "billing").unwrap();
    cluster
        .front
        .save_subscription(&demo(), SubscriptionSpec::new(key))
        .await
        .unwrap();
    cluster.down_worker.set_down(true);
    for _ in 0..FAILURES_TO_EJECT {
        cluster.proxy.probe_now().await;
    }
    let (text, after) = scrape(cluster.http).await;
    check_format(&text);

    let moved = |metric: &str, labels: &[(&str, &str)]| {
        counter(&after, metric, labels) - counter(&before, metric, labels)
    };
    let appends = [("method", "append_events"), ("outcome", "ok")];
    assert_eq!(moved("gater_requests_total", &appends), 3.0, "{text}");
    let refusals = [
        ("method", "append_events"),
        ("outcome", "wrong_expected_version"),
    ];
    assert_eq!(moved("gater_requests_total", &refusals), 1.0, "{text}");
    let demo_label = [("store", "demo")];
    assert_eq!(moved("gater_appended_events_total", &demo_label), 10.0);
    assert_eq!(value(&after, "gater_store_events", &demo_label), Some(10.0));
    assert_eq!(value(&after, "gater_store_streams", &demo_label), Some(1.0));
    let running = [("store", "demo"), ("state", "running")];
    assert_eq!(value(&after, "gater_store_state", &running), Some(1.0));
    let billing = [("store", "demo"), ("subscription", "billing")];
    assert_eq!(
        value(&after, "gater_subscription_lag_events", &billing),
        Some(10.0)
    );
    assert_eq!(
        value(&after, "gater_subscription_consumers", &billing),
        Some(0.0)
    );
    assert_eq!(moved("gater_ejections_total", &[("worker", "w2")]), 1.0);
    assert_eq!(moved("gater_ejections_total", &[("worker", "w1")]), 0.0);
    assert_eq!(
        value(&after, "gater_worker_up", &[("worker", "w2")]),
        Some(0.0)
    );
    assert_eq!(
        value(&after, "gater_worker_up", &[("worker", "w1")]),
        Some(1.0)
    );
    let durations = after
        .samples
        .iter()
        .find(|s| {
            s.metric == "gater_request_duration_seconds"
                && s.labels.get("method") == Some("append_events")
        })
        .expect("append durations");
    let Value::Histogram(buckets) = &durations.value else {
        panic!("not a histogram: {durations:?}");
    };
    let total = buckets.last().map_or(0.0, |b| b.count);
    assert_eq!(total, 4.0, "every append answered is timed once");
    let commits = value(&after, "gater_commit_batch_events_count", &[]).unwrap_or(0.0)
        - value(&before, "gater_commit_batch_events_count", &[]).unwrap_or(0.0);
    assert!(
        (1.0..=3.0).contains(&commits),
        "three appends, at most three batches: {commits}"
    );
    assert_eq!(
        value(&after, "gater_commit_batch_events_sum", &[]).unwrap_or(0.0)
            - value(&before, "gater_commit_batch_events_sum", &[]).unwrap_or(0.0),
        10.0
    );
    assert_eq!(
        value(
            &after,
            "gater_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_document_and_page_show_stores_and_subscriptions() {
    let cluster = cluster().await;
    cluster
        .front
        .append_events(
            &demo(),
            &StreamId::new("a").unwrap(),
            ExpectedVersion::Any,
            events(4),
        )
        .await
        .unwrap();
    let key = SubscriptionKey::new(SubscriptionType::ByStream, "$all", "billing").unwrap();
    cluster
        .front
        .save_subscription(&demo(), SubscriptionSpec::new(key))
        .await
        .unwrap();
    let (status, body) = get(cluster.http, "/api/status").await;
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["stores"][0]["store"], "demo");
    assert_eq!(doc["stores"][0]["events"], 4);
    assert_eq!(doc["subscriptions"][0]["name"], "billing");
    assert_eq!(doc["subscriptions"][0]["lag"], 4);
    let workers: Vec<&str> = doc["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(workers, ["w1", "w2"]);
    let (status, page) = get(cluster.http, "/").await;
    assert_eq!(status, 200);
    assert!(
        page.contains("\"name\":\"billing\""),
        "the page starts with the status"
    );
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no external assets"
    );
}

#[tokio::test]
async fn a_non_loopback_address_needs_http_public() {
    let refused = http::bind("0.0.0.0:0", false).await;
    assert!(
        matches!(refused, Err(http::HttpError::NotLoopback(_))),
        "{refused:?}"
    );
    let allowed = http::bind("0.0.0.0:0", true).await;
    assert!(allowed.is_ok(), "{allowed:?}");
}

#[tokio::test]
async fn a_taken_port_is_reported_as_in_use() {
    let first = http::bind("127.0.0.1:0", false).await.unwrap();
    let addr = first.local_addr().unwrap().to_string();
    let second = http::bind(&addr, false).await.unwrap_err();
    assert!(second.is_addr_in_use(), "{second}");
}

/// A worker that notes the request id each request arrives with.
struct Recorder {
    inner: BoxGater,
    seen: std::sync::Mutex<Vec<(&'static str, Option<u64>)>>,
}

#[async_trait::async_trait]
impl Gater for Recorder {
    async fn call(
        &self,
        request: gater_core::wire::Request,
        within: Option<std::time::Duration>,
    ) -> Result<gater_core::wire::Response, Error> {
        let seen = (request.method(), gater_core::trace::current());
        self.seen.lock().unwrap().push(seen);
        self.inner.call(request, within).await
    }

    async fn subscribe(
        &self,
        store: &StoreId,
        key: SubscriptionKey,
        options: gater_core::SubscribeOptions,
    ) -> Result<gater_core::Subscription, Error> {
        self.inner.subscribe(store, key, options).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_keeps_its_id_across_the_proxy_hop() {
    let mut dirs = Vec::new();
    let store = open_store(&mut dirs, "w1").await;
    store
        .create_store(&demo(), StoreConfig::default())
        .await
        .unwrap();
    let recorder = Arc::new(Recorder {
        inner: store.clone(),
        seen: std::sync::Mutex::new(Vec::new()),
    });
    let worker = serve(recorder.clone());
    let proxy = Proxy::builder()
        .worker("w1", "mem-1", Arc::new(worker.client()))
        .build()
        .await
        .unwrap();
    let front = Instrumented::new(
        Arc::new(proxy.clone()),
        Arc::new(RequestMetrics::default()),
        "proxy",
    );
    let (id, stream) = (demo(), StreamId::new("a").unwrap());
    // Arrived with an id: the worker sees that id.
    let traced = front.get_version(&id, &stream);
    gater_core::trace::scope(0x42, traced).await.unwrap();
    // Arrived without one: the front picks one, and the worker sees it too.
    front.get_version(&id, &stream).await.unwrap();
    let versions: Vec<Option<u64>> = recorder
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(method, _)| *method == "get_version")
        .map(|(_, id)| *id)
        .collect();
    assert_eq!(versions.len(), 2, "{versions:?}");
    assert_eq!(versions[0], Some(0x42));
    assert!(versions[1].is_some_and(|id| id != 0x42), "{versions:?}");
}

/// A proxy stand-in that answers encoded requests itself and refuses to be
/// handed decoded ones.
struct OnlyEncoded;

#[async_trait::async_trait]
impl Gater for OnlyEncoded {
    async fn call(
        &self,
        request: gater_core::wire::Request,
        _within: Option<std::time::Duration>,
    ) -> Result<gater_core::wire::Response, Error> {
        Err(Error::Protocol(format!(
            "{} arrived decoded",
            request.method()
        )))
    }

    async fn call_encoded(
        &self,
        _request: gater_core::wire::EncodedRequest,
        _within: Option<std::time::Duration>,
    ) -> Result<gater_core::wire::Response, Error> {
        Ok(gater_core::wire::Response::Done)
    }

    async fn subscribe(
        &self,
        _store: &StoreId,
        _key: SubscriptionKey,
        _options: gater_core::SubscribeOptions,
    ) -> Result<gater_core::Subscription, Error> {
        Err(Error::Protocol("no subscriptions here".into()))
    }
}

#[tokio::test]
async fn an_encoded_request_passes_the_instruments_still_encoded_and_is_counted() {
    let metrics = Arc::new(RequestMetrics::default());
    let front = Instrumented::new(Arc::new(OnlyEncoded), metrics.clone(), "proxy");
    let request = gater_core::wire::Request::AppendEvents {
        store: demo(),
        stream: StreamId::new("s").unwrap(),
        expected: ExpectedVersion::Any,
        events: events(3),
    };
    let encoded = gater_core::wire::EncodedRequest::encode(&request).unwrap();
    let answer = front.call_encoded(encoded, None).await;
    assert_eq!(answer, Ok(gater_core::wire::Response::Done));
    let counts = metrics.snapshot().counts;
    assert_eq!(counts, vec![(("append_events", "ok"), 1)]);
}
