//! The case lists: every workload against one server, and the in-process
//! compare suite with its ratios and goals.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use gater_core::{BoxGater, StoreConfig};
use gater_store::{PostgresOptions, Store, StoreOptions};

use super::args::{BenchArgs, Workload};
use super::cpu::CpuProbe;
use super::report::{metric, Bound, CaseResult, Goal, RatioSpec, Subject};
use super::targets::{self, TargetKind};
use super::workload::{self, Params, ReadMode, StoreNames};
use super::{dcb, disk, failover, stores, subscriptions, Recorder};

/// The targets of the transport comparison, in the order they run. The
/// PostgreSQL backend is compared separately (W1 and W4, see `postgres`).
pub(crate) const COMPARE_TARGETS: [TargetKind; 5] = [
    TargetKind::Embedded,
    TargetKind::Mem,
    TargetKind::Quic,
    TargetKind::QuicProxy,
    TargetKind::QuicProxySeparate,
];
/// Events per append of the W1 cases over QUIC besides 1: large frames
/// through the proxy against QUIC direct.
const LARGE_BATCHES: [u32; 2] = [10, 100];
/// Clients of the W1 transport comparison.
const COMPARE_CLIENTS: usize = 64;
/// Clients of W2 in the suite.
const COMPARE_CONTENDERS: usize = 16;
/// Group of the W1 cases compared (transports, group commit on and off).
const W1_GROUP: &str = "w1-c64-e1";
/// Target name of the embedded store without group commit.
const NO_GROUP_COMMIT: &str = "embedded-no-group-commit";
/// The ratio of W1 spread over many stores to W1 on one.
const W9_SPREAD_RATIO: &str = "W9 events/s: W1 over 1,000 stores / W1 on one";
/// Target name of a store on the PostgreSQL backend.
const POSTGRES: &str = "postgres";
/// Cases the PostgreSQL comparison adds on a machine with PostgreSQL: W1 and the four W4 reads.
pub(crate) const POSTGRES_CASE_COUNT: u64 = 1 + 4;
/// Cases of the target with separate proxy and worker processes (W1 at
/// each batch size, the fdatasync probe, W3), run only when the suite knows
/// the `gater` binary.
pub(crate) const SEPARATE_CASE_COUNT: u64 = 1 + LARGE_BATCHES.len() as u64 + 1 + 1;

/// Runs the workloads `args` selects against `gater` (a server); target name `server`.
pub(crate) async fn server(
    gater: &BoxGater,
    args: &BenchArgs,
    names: &StoreNames,
    recorder: &mut Recorder,
) -> Result<()> {
    let params = args.params();
    let target = "server";
    let cpu = CpuProbe::this_process("client");
    for workload in &args.workloads {
        match workload {
            Workload::W1 => {
                for &clients in &args.clients {
                    for &batch in &args.events_per_append {
                        let case = W1 {
                            group: "w1",
                            clients: clients as usize,
                            batch,
                        };
                        w1(gater, names, &params, target, &cpu, case, recorder).await?;
                    }
                }
            }
            Workload::W2 => {
                w2(
                    gater,
                    names,
                    &params,
                    target,
                    args.contenders as usize,
                    recorder,
                )
                .await?
            }
            Workload::W3 => {
                let latency = W3 {
                    clients: args.latency_clients as usize,
                    fdatasync_p50_us: None,
                };
                w3(gater, names, &params, target, &cpu, latency, recorder).await?
            }
            Workload::W4 => w4(gater, names, &params, target, recorder).await?,
            Workload::W5 => w5(gater, names, &params, target, recorder).await?,
            Workload::W7 => {
                for &clients in &args.conditional_clients {
                    w7(
                        gater,
                        names,
                        &params,
                        target,
                        &cpu,
                        clients as usize,
                        recorder,
                    )
                    .await?;
                }
            }
            Workload::W8 => w8(gater, names, &params, target, recorder).await?,
        }
    }
    Ok(())
}

/// Cases [`server`] runs for `args`, for the progress bar.
pub(crate) fn server_case_count(args: &BenchArgs) -> u64 {
    args.workloads
        .iter()
        .map(|w| match w {
            Workload::W1 => (args.clients.len() * args.events_per_append.len()) as u64,
            Workload::W2 | Workload::W3 => 1,
            Workload::W4 => 4,
            Workload::W5 => 3,
            Workload::W7 => args.conditional_clients.len() as u64,
            Workload::W8 => 1,
        })
        .sum()
}

/// Cases [`compare`] runs when it knows the `gater` binary (else
/// [`SEPARATE_CASE_COUNT`] fewer), for the progress bar.
pub(crate) const COMPARE_CASE_COUNT: u64 = 3 * (COMPARE_TARGETS.len() as u64 - 1)
    + 2 * LARGE_BATCHES.len() as u64
    + SEPARATE_CASE_COUNT
    + 1
    + 1
    + 4
    + 3
    + 1
    + COMPARE_CONDITIONAL_CLIENTS.len() as u64
    + 1
    + stores::CASE_COUNT;

/// Client counts of W7 in the suite (UmaDB publishes 16; 64 is W1's).
const COMPARE_CONDITIONAL_CLIENTS: [usize; 2] = [16, 64];
/// UmaDB's published conditional appends per second at 16 clients (10-core laptop).
const UMADB_W7_C16_EVENTS_PER_S: f64 = 52_679.0;
/// UmaDB's published tag-read events per second at 1 client (10-core laptop).
const UMADB_W8_C1_EVENTS_PER_S: f64 = 69_496.0;

/// The W1 group of `batch` events per append.
fn w1_group(batch: u32) -> String {
    if batch == 1 {
        W1_GROUP.to_owned()
    } else {
        format!("w1-c{COMPARE_CLIENTS}-e{batch}")
    }
}

/// The compare suite: every target side by side, in this process, except
/// the separate proxy and worker processes, run from `binary` (the `gater`
/// binary; without it that target is skipped, with a note), and PostgreSQL
/// at `postgres_url`.
pub(crate) async fn compare(
    params: &Params,
    binary: Option<&Path>,
    postgres_url: Option<&str>,
    recorder: &mut Recorder,
) -> Result<()> {
    let dir = tempfile::Builder::new().prefix("gater-bench").tempdir()?;
    let certs = targets::dev_certs(dir.path())?;
    let names = StoreNames::new("bench");
    for kind in COMPARE_TARGETS {
        if kind == TargetKind::QuicProxySeparate && binary.is_none() {
            recorder.note("quic+proxy-processes: skipped, no gater binary");
            continue;
        }
        recorder.note(&format!("starting {}", kind.name()));
        let target = targets::open(kind, dir.path(), &certs, binary).await?;
        let (g, t, cpu) = (&target.gater, kind.name(), &target.cpu);
        let large: &[u32] = match kind {
            TargetKind::Embedded | TargetKind::Mem => &[],
            _ => &LARGE_BATCHES,
        };
        for &batch in [1].iter().chain(large) {
            let group = w1_group(batch);
            let case = W1 {
                group: &group,
                clients: COMPARE_CLIENTS,
                batch,
            };
            w1(g, &names, params, t, cpu, case, recorder).await?;
        }
        // The disk the store writes to, measured right before W3 (on a
        // shared machine its latency drifts): W3's median is read against it.
        recorder.note(&format!("{t}: measuring fdatasync"));
        let disk = disk::fdatasync(dir.path(), t).await?;
        let latency = W3 {
            clients: 1,
            fdatasync_p50_us: disk.value(metric::P50_US),
        };
        recorder.record(disk);
        w3(g, &names, params, t, cpu, latency, recorder).await?;
        target.close().await;
    }
    let target = targets::open(TargetKind::Embedded, dir.path(), &certs, None).await?;
    let g = &target.gater;
    let off = Params {
        store_config: StoreConfig {
            group_commit: false,
            retention: gater_core::Retention::NONE,
            ..params.store_config
        },
        ..params.clone()
    };
    let case = W1 {
        group: W1_GROUP,
        clients: COMPARE_CLIENTS,
        batch: 1,
    };
    w1(
        g,
        &names,
        &off,
        NO_GROUP_COMMIT,
        &target.cpu,
        case,
        recorder,
    )
    .await?;
    let embedded = TargetKind::Embedded.name();
    w2(g, &names, params, embedded, COMPARE_CONTENDERS, recorder).await?;
    w4(g, &names, params, embedded, recorder).await?;
    w5(g, &names, params, embedded, recorder).await?;
    for clients in COMPARE_CONDITIONAL_CLIENTS {
        w7(g, &names, params, embedded, &target.cpu, clients, recorder).await?;
    }
    w8(g, &names, params, embedded, recorder).await?;
    target.close().await;
    recorder.note("w6 failover");
    let case = failover::run(params, &dir.path().join("failover")).await?;
    recorder.record(case);
    stores::run(dir.path(), params, recorder).await?;
    postgres(dir.path(), postgres_url, params, &names, recorder).await
}

/// The many-stores suite: W1 on one embedded store, then W9.
pub(crate) async fn stores(params: &Params, recorder: &mut Recorder) -> Result<()> {
    let dir = tempfile::Builder::new().prefix("gater-bench").tempdir()?;
    let names = StoreNames::new("bench");
    let target = targets::open(TargetKind::Embedded, dir.path(), dir.path(), None).await?;
    let case = W1 {
        group: W1_GROUP,
        clients: COMPARE_CLIENTS,
        batch: 1,
    };
    let kind = TargetKind::Embedded.name();
    w1(
        &target.gater,
        &names,
        params,
        kind,
        &target.cpu,
        case,
        recorder,
    )
    .await?;
    target.close().await;
    stores::run(dir.path(), params, recorder).await
}

/// Cases of the append-model suite: W1, W7 at each client count, W8.
pub(crate) const DCB_CASE_COUNT: u64 = 2 + COMPARE_CONDITIONAL_CLIENTS.len() as u64;

/// The append-model suite: W1 (the W7 ratio's denominator), W7 and W8 on
/// the embedded target, as the compare suite runs them.
pub(crate) async fn dcb(params: &Params, recorder: &mut Recorder) -> Result<()> {
    let dir = tempfile::Builder::new().prefix("gater-bench").tempdir()?;
    let names = StoreNames::new("bench");
    let target = targets::open(TargetKind::Embedded, dir.path(), dir.path(), None).await?;
    let (g, cpu) = (&target.gater, &target.cpu);
    let embedded = TargetKind::Embedded.name();
    let case = W1 {
        group: W1_GROUP,
        clients: COMPARE_CLIENTS,
        batch: 1,
    };
    w1(g, &names, params, embedded, cpu, case, recorder).await?;
    for clients in COMPARE_CONDITIONAL_CLIENTS {
        w7(g, &names, params, embedded, cpu, clients, recorder).await?;
    }
    w8(g, &names, params, embedded, recorder).await?;
    target.close().await;
    Ok(())
}

/// The ratios of the append-model suite (those of W7 in the compare suite).
pub(crate) fn dcb_ratios() -> Vec<RatioSpec> {
    compare_ratios()
        .into_iter()
        .filter(|r| r.numerator.starts_with("w7/"))
        .collect()
}

/// The goals of the append-model suite (those of W7 and W8 in the compare suite).
pub(crate) fn dcb_goals() -> Vec<Goal> {
    compare_goals()
        .into_iter()
        .filter(|g| g.name.starts_with("W7") || g.name.starts_with("W8"))
        .collect()
}

/// The ratios of the many-stores suite (those of W9 in the compare suite).
pub(crate) fn stores_ratios() -> Vec<RatioSpec> {
    compare_ratios()
        .into_iter()
        .filter(|r| r.name == W9_SPREAD_RATIO)
        .collect()
}

/// The goals of the many-stores suite (those of W9 in the compare suite).
pub(crate) fn stores_goals() -> Vec<Goal> {
    compare_goals()
        .into_iter()
        .filter(|g| g.name.contains("W9"))
        .collect()
}

/// W1 and W4 on the PostgreSQL backend, in the database at `url`; skipped,
/// with a note, without one.
async fn postgres(
    dir: &std::path::Path,
    url: Option<&str>,
    params: &Params,
    names: &StoreNames,
    recorder: &mut Recorder,
) -> Result<()> {
    let Some(url) = url else {
        recorder.note("postgres: skipped, no --postgres-url");
        return Ok(());
    };
    recorder.note("opening postgres");
    let mut options = StoreOptions::new(dir.join(POSTGRES));
    options.worker_id = format!("bench-{POSTGRES}");
    let store = Store::open_postgres(options, PostgresOptions::new(url.to_owned())).await?;
    let gater: BoxGater = Arc::new(store.clone());
    let (g, t) = (&gater, POSTGRES);
    let case = W1 {
        group: W1_GROUP,
        clients: COMPARE_CLIENTS,
        batch: 1,
    };
    let cpu = CpuProbe::this_process("bench");
    w1(g, names, params, t, &cpu, case, recorder).await?;
    w4(g, names, params, t, recorder).await?;
    drop(gater);
    store.shutdown().await;
    Ok(())
}

/// The shape of one W1 case.
#[derive(Clone, Copy, Debug)]
struct W1<'a> {
    /// The comparison it belongs to.
    group: &'a str,
    /// Concurrent appenders.
    clients: usize,
    /// Events per append.
    batch: u32,
}

async fn w1(
    gater: &BoxGater,
    names: &StoreNames,
    params: &Params,
    target: &str,
    cpu: &CpuProbe,
    W1 {
        group,
        clients,
        batch,
    }: W1<'_>,
    recorder: &mut Recorder,
) -> Result<()> {
    let mut case = CaseResult::new("w1", target, group, &format!("c{clients}/e{batch}"));
    recorder.starting(&case.id);
    case.params.insert("clients".into(), clients as u64);
    case.params
        .insert("events_per_append".into(), u64::from(batch));
    case.params
        .insert("streams".into(), u64::from(params.streams));
    case.params
        .insert("fsync".into(), u64::from(params.store_config.fsync));
    case.params.insert(
        "group_commit".into(),
        u64::from(params.store_config.group_commit),
    );
    let tally = workload::write_flood(gater, names, params, clients, batch, cpu).await?;
    workload::write_figures(&mut case, &tally);
    recorder.record(case);
    Ok(())
}

async fn w2(
    gater: &BoxGater,
    names: &StoreNames,
    params: &Params,
    target: &str,
    clients: usize,
    recorder: &mut Recorder,
) -> Result<()> {
    let mut case = CaseResult::new("w2", target, "concurrency", &format!("c{clients}"));
    recorder.starting(&case.id);
    case.params.insert("clients".into(), clients as u64);
    case.params
        .insert("hot_streams".into(), u64::from(params.hot_streams));
    workload::contention(gater, names, params, clients, &mut case).await?;
    recorder.record(case);
    Ok(())
}

/// The shape of one W3 case.
#[derive(Clone, Copy, Debug)]
struct W3 {
    /// Concurrent appenders, each with one append in flight.
    clients: usize,
    /// The disk probe's median `fdatasync` of this run, when measured.
    fdatasync_p50_us: Option<f64>,
}

async fn w3(
    gater: &BoxGater,
    names: &StoreNames,
    params: &Params,
    target: &str,
    cpu: &CpuProbe,
    W3 {
        clients,
        fdatasync_p50_us,
    }: W3,
    recorder: &mut Recorder,
) -> Result<()> {
    let mut case = CaseResult::new("w3", target, "w3", &format!("c{clients}"));
    recorder.starting(&case.id);
    case.params.insert("clients".into(), clients as u64);
    let tally = workload::write_flood(gater, names, params, clients, 1, cpu).await?;
    workload::write_figures(&mut case, &tally);
    if let (Some(p50), Some(sync)) = (case.value(metric::P50_US), fdatasync_p50_us) {
        case.figures
            .insert(metric::P50_OVER_FDATASYNC_US.into(), p50 - sync);
    }
    recorder.record(case);
    Ok(())
}

async fn w4(
    gater: &BoxGater,
    names: &StoreNames,
    params: &Params,
    target: &str,
    recorder: &mut Recorder,
) -> Result<()> {
    recorder.note(&format!("w4/{target}: filling"));
    let (store, streams) = workload::read_store(gater, names, params).await?;
    let modes = [
        ReadMode::Single,
        ReadMode::PageForward,
        ReadMode::PageBackward,
    ];
    for mode in modes {
        let mut case = CaseResult::new("w4", target, "reads", mode.name());
        recorder.starting(&case.id);
        case.params.insert("readers".into(), params.readers as u64);
        let tally = workload::reads(gater, &store, &streams, params, mode).await;
        workload::read_figures(&mut case, &tally);
        recorder.record(case);
    }
    let mut case = CaseResult::new("w4", target, "reads", "scan");
    recorder.starting(&case.id);
    let tally = workload::scan(gater, &store, params).await;
    workload::read_figures(&mut case, &tally);
    recorder.record(case);
    workload::drop_store(gater, &store).await;
    Ok(())
}

async fn w5(
    gater: &BoxGater,
    names: &StoreNames,
    params: &Params,
    target: &str,
    recorder: &mut Recorder,
) -> Result<()> {
    recorder.note(&format!("w5/{target}: filling"));
    let store = workload::fresh_store(gater, names, params.store_config).await?;
    let outcome = subscriptions::run(gater, &store, params, target).await;
    workload::drop_store(gater, &store).await;
    for case in outcome? {
        recorder.record(case);
    }
    Ok(())
}

async fn w7(
    gater: &BoxGater,
    names: &StoreNames,
    params: &Params,
    target: &str,
    cpu: &CpuProbe,
    clients: usize,
    recorder: &mut Recorder,
) -> Result<()> {
    let mut case = CaseResult::new("w7", target, "conditional", &format!("c{clients}"));
    recorder.starting(&case.id);
    case.params.insert("clients".into(), clients as u64);
    let tally = dcb::conditional_appends(gater, names, params, clients, cpu).await?;
    workload::write_figures(&mut case, &tally);
    recorder.record(case);
    Ok(())
}

async fn w8(
    gater: &BoxGater,
    names: &StoreNames,
    params: &Params,
    target: &str,
    recorder: &mut Recorder,
) -> Result<()> {
    recorder.note(&format!("w8/{target}: filling"));
    let store = dcb::tag_store(gater, names, params).await?;
    let mut case = CaseResult::new("w8", target, "tag-reads", "c1");
    recorder.starting(&case.id);
    case.params
        .insert("tags".into(), u64::from(params.tag_count));
    case.params
        .insert("events_per_tag".into(), u64::from(dcb::EVENTS_PER_TAG));
    let tally = dcb::tag_reads(gater, &store, params, 1).await;
    workload::read_figures(&mut case, &tally);
    recorder.record(case);
    workload::drop_store(gater, &store).await;
    Ok(())
}

/// The ratios the compare suite reports.
pub(crate) fn compare_ratios() -> Vec<RatioSpec> {
    const W1: [&str; 5] = [
        "w1/embedded/c64/e1",
        "w1/mem/c64/e1",
        "w1/quic/c64/e1",
        "w1/quic+proxy/c64/e1",
        "w1/quic+proxy-processes/c64/e1",
    ];
    const W3: [&str; 5] = [
        "w3/embedded/c1",
        "w3/mem/c1",
        "w3/quic/c1",
        "w3/quic+proxy/c1",
        "w3/quic+proxy-processes/c1",
    ];
    let ratio = |name, numerator, denominator, metric| RatioSpec {
        name,
        numerator,
        denominator,
        metric,
    };
    let eps = metric::EVENTS_PER_S;
    let p50 = metric::P50_US;
    vec![
        ratio("W1 events/s: mem / embedded", W1[1], W1[0], eps),
        ratio("W1 events/s: quic / embedded", W1[2], W1[0], eps),
        ratio("W1 events/s: quic+proxy / embedded", W1[3], W1[0], eps),
        ratio("W1 events/s: quic+proxy / quic", W1[3], W1[2], eps),
        ratio(
            "W1 events/s: quic+proxy-processes / quic",
            W1[4],
            W1[2],
            eps,
        ),
        ratio(
            "W1 e10 events/s: quic+proxy / quic",
            "w1/quic+proxy/c64/e10",
            "w1/quic/c64/e10",
            eps,
        ),
        ratio(
            "W1 e100 events/s: quic+proxy / quic",
            "w1/quic+proxy/c64/e100",
            "w1/quic/c64/e100",
            eps,
        ),
        ratio(
            "W1 e10 events/s: quic+proxy-processes / quic",
            "w1/quic+proxy-processes/c64/e10",
            "w1/quic/c64/e10",
            eps,
        ),
        ratio(
            "W1 e100 events/s: quic+proxy-processes / quic",
            "w1/quic+proxy-processes/c64/e100",
            "w1/quic/c64/e100",
            eps,
        ),
        ratio("W3 p50: mem / embedded", W3[1], W3[0], p50),
        ratio("W3 p50: quic / embedded", W3[2], W3[0], p50),
        ratio("W3 p50: quic+proxy / embedded", W3[3], W3[0], p50),
        ratio("W3 p50: quic+proxy / quic", W3[3], W3[2], p50),
        ratio("W3 p50: quic+proxy-processes / quic", W3[4], W3[2], p50),
        ratio(
            "W7 c64 conditional events/s / W1 events/s (embedded)",
            "w7/embedded/c64",
            W1[0],
            eps,
        ),
        ratio(
            "W1 events/s: group commit on / off",
            W1[0],
            "w1/embedded-no-group-commit/c64/e1",
            eps,
        ),
        ratio(W9_SPREAD_RATIO, stores::SPREAD_CASE, W1[0], eps),
        // Present only where the machine has PostgreSQL (otherwise no value).
        ratio(
            "W1 events/s: postgres / embedded",
            "w1/postgres/c64/e1",
            W1[0],
            eps,
        ),
        ratio(
            "W4 100-event pages forward events/s: postgres / embedded",
            "w4/postgres/page-forward",
            "w4/embedded/page-forward",
            eps,
        ),
    ]
}

/// The targets the compare suite is held to on a 2-core machine.
pub(crate) fn compare_goals() -> Vec<Goal> {
    let figure = |name: &str, case: &str, metric: &str, bound, threshold| Goal {
        name: name.to_owned(),
        subject: Subject::Figure {
            case: case.to_owned(),
            metric: metric.to_owned(),
        },
        bound,
        threshold,
        actual: None,
        met: false,
    };
    let ratio = |name: &str, ratio: &str, threshold| Goal {
        name: name.to_owned(),
        subject: Subject::Ratio {
            name: ratio.to_owned(),
        },
        bound: Bound::AtLeast,
        threshold,
        actual: None,
        met: false,
    };
    use Bound::{AtLeast, AtMost};
    let eps = metric::EVENTS_PER_S;
    vec![
        ratio(
            "W7 64 clients conditional / plain W1 events/s",
            "W7 c64 conditional events/s / W1 events/s (embedded)",
            0.7,
        ),
        figure(
            "W8 tag reads events/s",
            "w8/embedded/c1",
            eps,
            AtLeast,
            200_000.0,
        ),
        figure(
            "W7 16 clients events/s, beside UmaDB's 52,679 (10-core laptop)",
            "w7/embedded/c16",
            eps,
            AtLeast,
            UMADB_W7_C16_EVENTS_PER_S,
        ),
        figure(
            "W8 1 client tag-read events/s, beside UmaDB's 69,496 (10-core laptop)",
            "w8/embedded/c1",
            eps,
            AtLeast,
            UMADB_W8_C1_EVENTS_PER_S,
        ),
        ratio(
            "W1 over 1,000 stores ≥ 80% of W1 on one (W9)",
            W9_SPREAD_RATIO,
            0.8,
        ),
        figure(
            "W9 seconds to create 10,000 stores",
            "w9/embedded/stores10000",
            stores::figure::CREATE_S,
            AtMost,
            60.0,
        ),
        figure(
            "W9 resident bytes per idle store (10,000 stores)",
            "w9/embedded/stores10000",
            stores::figure::RSS_BYTES_PER_STORE,
            AtMost,
            20_000.0,
        ),
        figure(
            "W9 threads at 2,000 stores",
            "w9/embedded/stores2000",
            stores::figure::THREADS,
            AtMost,
            64.0,
        ),
        figure(
            "W9 open files at 2,000 stores",
            "w9/embedded/stores2000",
            stores::figure::FDS,
            AtMost,
            256.0,
        ),
        figure(
            "W1 in-process events/s",
            "w1/embedded/c64/e1",
            eps,
            AtLeast,
            150_000.0,
        ),
        figure(
            "W3 in-process p50 beyond one fdatasync µs",
            "w3/embedded/c1",
            metric::P50_OVER_FDATASYNC_US,
            AtMost,
            60.0,
        ),
        figure(
            "W1 QUIC through proxy events/s",
            "w1/quic+proxy/c64/e1",
            eps,
            AtLeast,
            60_000.0,
        ),
        figure(
            "W4 100-event pages forward events/s",
            "w4/embedded/page-forward",
            eps,
            AtLeast,
            1_000_000.0,
        ),
        figure(
            "W4 100-event pages backward events/s",
            "w4/embedded/page-backward",
            eps,
            AtLeast,
            1_000_000.0,
        ),
        figure(
            "W5 catch-up events/s",
            "w5/embedded/catch-up",
            eps,
            AtLeast,
            500_000.0,
        ),
        figure(
            "W5 live p99 µs",
            "w5/embedded/live",
            metric::P99_US,
            AtMost,
            5_000.0,
        ),
        figure(
            "W1 QUIC through proxy processes events/s",
            "w1/quic+proxy-processes/c64/e1",
            eps,
            AtLeast,
            40_000.0,
        ),
        ratio(
            "QUIC direct ≥ 75% of embedded (W1)",
            "W1 events/s: quic / embedded",
            0.75,
        ),
        ratio(
            "proxy ≥ 80% of direct (W1)",
            "W1 events/s: quic+proxy / quic",
            0.8,
        ),
        ratio(
            "proxy processes ≥ 80% of direct (W1)",
            "W1 events/s: quic+proxy-processes / quic",
            0.8,
        ),
        ratio(
            "proxy ≥ 85% of direct (W1, 10 events per append)",
            "W1 e10 events/s: quic+proxy / quic",
            0.85,
        ),
        ratio(
            "proxy ≥ 85% of direct (W1, 100 events per append)",
            "W1 e100 events/s: quic+proxy / quic",
            0.85,
        ),
        ratio(
            "group commit ≥ 20× none (W1)",
            "W1 events/s: group commit on / off",
            20.0,
        ),
        figure(
            "W6 errors while the other worker is down",
            "w6/proxy-mem",
            metric::ERRORS_OTHER_DOWN,
            AtMost,
            0.0,
        ),
        figure(
            "W6 acknowledged events lost",
            "w6/proxy-mem",
            metric::LOST,
            AtMost,
            0.0,
        ),
        figure(
            "W6 events duplicated",
            "w6/proxy-mem",
            metric::DUPLICATED,
            AtMost,
            0.0,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use gater_testkit::pg_harness::PgServer;

    use super::super::driver::Timing;
    use super::super::report::ratios;
    use super::*;

    fn tiny() -> Params {
        Params {
            timing: Timing {
                warmup: Duration::from_millis(10),
                measure: Duration::from_millis(50),
            },
            seed: 1,
            streams: 50,
            hot_streams: 4,
            store_config: StoreConfig::default(),
            read_streams: 10,
            read_stream_len: 200,
            readers: 4,
            catchup_events: 1_000,
            live_rate: 200,
            group_consumers: 4,
            tag_count: 500,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compare_suite_produces_figures_for_every_case() {
        // The PostgreSQL cases run where the machine has PostgreSQL's binaries.
        let server = tokio::task::spawn_blocking(PgServer::start)
            .await
            .unwrap()
            .unwrap();
        if server.is_none() {
            eprintln!("postgres cases skipped: no PostgreSQL binaries on this machine");
        }
        let url = server.as_ref().map(PgServer::url);
        let mut recorder = Recorder::hidden();
        // A unit test runs in the test binary, not `gater`: no separate processes.
        compare(&tiny(), None, url.as_deref(), &mut recorder)
            .await
            .unwrap();
        let cases = recorder.finish();
        let on_postgres = cases.iter().any(|c| c.target == POSTGRES);
        let postgres_cases = if on_postgres { POSTGRES_CASE_COUNT } else { 0 };
        assert_eq!(
            cases.len() as u64,
            COMPARE_CASE_COUNT - SEPARATE_CASE_COUNT + postgres_cases
        );
        for case in &cases {
            assert!(!case.figures.is_empty(), "{} has no figures", case.id);
            assert!(
                case.figures.values().all(|v| v.is_finite()),
                "{}: {:?}",
                case.id,
                case.figures
            );
        }
        let ids: Vec<&str> = cases.iter().map(|c| c.id.as_str()).collect();
        for spec in compare_ratios() {
            if !on_postgres && spec.numerator.contains(POSTGRES) {
                continue;
            }
            if spec
                .numerator
                .contains(TargetKind::QuicProxySeparate.name())
            {
                continue;
            }
            assert!(ids.contains(&spec.numerator), "{} missing", spec.numerator);
            assert!(
                ids.contains(&spec.denominator),
                "{} missing",
                spec.denominator
            );
        }
        for goal in compare_goals() {
            if let Subject::Figure { case, metric } = &goal.subject {
                if case.contains(TargetKind::QuicProxySeparate.name()) {
                    continue;
                }
                // The time to a store count is reported only when W9 reached
                // the count within its creation budget.
                if metric == stores::figure::CREATE_S {
                    continue;
                }
                let case = cases.iter().find(|c| &c.id == case).unwrap();
                assert!(case.value(metric).is_some(), "{}: no {metric}", case.id);
            }
        }
        let cpu_cases = cases
            .iter()
            .filter(|c| c.workload == "w1" || c.workload == "w3")
            // Tiny windows may end before a slow debug build acknowledges an append.
            .filter(|c| c.value(metric::APPENDS_PER_S) > Some(0.0))
            .filter(|_| cfg!(target_os = "linux"));
        for case in cpu_cases {
            assert!(
                case.value(metric::CPU_US_PER_APPEND).is_some(),
                "{}: no CPU time per append",
                case.id
            );
        }
        let w6 = cases.iter().find(|c| c.workload == "w6").unwrap();
        assert_eq!(
            w6.figures[metric::LOST],
            0.0,
            "an acknowledged append was lost"
        );
        assert_eq!(
            w6.figures[metric::DUPLICATED],
            0.0,
            "an event was stored twice"
        );
        let computed = ratios(&cases, &compare_ratios());
        assert_eq!(computed.len(), compare_ratios().len());
        // Stopping the server waits for pg_ctl.
        tokio::task::spawn_blocking(move || drop(server))
            .await
            .unwrap();
    }

    #[test]
    fn server_case_count_follows_the_selected_workloads() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let all = Cli::parse_from(["bench"]).bench;
        assert_eq!(server_case_count(&all), 9 + 1 + 1 + 4 + 3);
        let some = Cli::parse_from(["bench", "--workloads", "w1,w4", "--clients", "1,2"]).bench;
        assert_eq!(server_case_count(&some), 2 * 3 + 4);
    }
}
