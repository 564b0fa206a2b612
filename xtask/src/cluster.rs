//! `cargo xtask cluster`: a local Gater cluster of N workers and M proxies on
//! free loopback ports, sharing a development CA in `DIR/certs`.
//!
//! It builds the `gater` binary once, starts the processes (each logging to
//! `DIR/logs/NAME.log`), waits until every proxy lists every worker, prints
//! the addresses, the `gater` command line to use and a table of workers,
//! then supervises until Ctrl-C, when it stops exactly the processes it
//! started (by pid) and leaves the logs. `DIR/cluster.json` records the
//! processes so that `--kill-worker K` and `--restart-worker K`, run from
//! another terminal, can crash or restart one worker to try failover by hand.
//!
//! With `--backend postgres` it also runs a throwaway PostgreSQL server in
//! `DIR/pg` and passes its URL to the workers.
//!
//! What it does not do: it never signals a process it did not start, runs
//! nothing but loopback servers, and keeps no data safe (it is for development).

mod postgres;
mod process;

pub(crate) use process::{build_executable, build_gater};
mod state;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use rustix::process::Signal;

pub(crate) use process::StopFlag;
use process::{gater_client, is_alive, is_ours, json_rows, log_tail, POLL_INTERVAL, STOP_GRACE};
pub(crate) use state::ClusterState;
use state::{ProcessRecord, Role};

/// Default cluster directory (certificates, data, logs, state).
const DEFAULT_DIR: &str = ".gater/cluster";
/// Most workers one local cluster runs.
const WORKERS_MAX: u64 = 16;
/// Most proxies one local cluster runs.
const PROXIES_MAX: u64 = 8;
/// How long the cluster may take to answer after its processes started.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The storage engine of the workers.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    /// Each worker keeps its stores in its own data directory.
    Embedded,
    /// Every worker shares one PostgreSQL database (a throwaway server in DIR/pg).
    Postgres,
}

impl Backend {
    fn as_str(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::Postgres => "postgres",
        }
    }
}

/// `cargo xtask cluster` arguments.
#[derive(Args, Debug)]
pub(crate) struct ClusterArgs {
    /// Number of workers.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=WORKERS_MAX))]
    workers: u64,
    /// Number of proxies, each in front of every worker.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=PROXIES_MAX))]
    proxies: u64,
    /// Storage engine of the workers.
    #[arg(long, value_enum, default_value_t = Backend::Embedded)]
    backend: Backend,
    /// Directory for certificates, data, logs and cluster.json.
    #[arg(long, default_value = DEFAULT_DIR)]
    dir: PathBuf,
    /// Build the gater binary in debug mode (faster to build, slower to run).
    #[arg(long)]
    debug: bool,
    /// Use this gater binary instead of building one.
    #[arg(long, value_name = "PATH")]
    gater: Option<PathBuf>,
    /// Kill worker K (number or name) of the cluster running in --dir, as a crash would.
    #[arg(long, value_name = "K", conflicts_with = "restart_worker")]
    kill_worker: Option<String>,
    /// Restart worker K of the cluster running in --dir with its arguments (killing it first if it runs).
    #[arg(long, value_name = "K")]
    restart_worker: Option<String>,
}

/// Where the `gater` binary comes from.
#[derive(Clone, Debug)]
pub(crate) enum GaterBinary {
    /// `cargo build -p gater --bin gater`, release unless `debug`.
    Build {
        /// Build in debug mode.
        debug: bool,
    },
    /// A binary already built.
    Path(PathBuf),
}

/// What cluster to start.
#[derive(Clone, Debug)]
pub(crate) struct ClusterOptions {
    /// Number of workers.
    pub(crate) workers: usize,
    /// Number of proxies.
    pub(crate) proxies: usize,
    /// Storage engine.
    pub(crate) backend: Backend,
    /// Directory for certificates, data, logs and state.
    pub(crate) dir: PathBuf,
    /// The `gater` binary.
    pub(crate) gater: GaterBinary,
}

/// Runs `cargo xtask cluster`.
pub(crate) fn run(args: ClusterArgs) -> Result<()> {
    if let Some(which) = &args.kill_worker {
        return kill_worker(&args.dir, which);
    }
    if let Some(which) = &args.restart_worker {
        return restart_worker(&args.dir, which);
    }
    let options = ClusterOptions {
        workers: usize::try_from(args.workers)?,
        proxies: usize::try_from(args.proxies)?,
        backend: args.backend,
        dir: args.dir,
        gater: match args.gater {
            Some(path) => GaterBinary::Path(path),
            None => GaterBinary::Build { debug: args.debug },
        },
    };
    let runtime = signal_runtime()?;
    let stop = StopFlag::on_signals(&runtime)?;
    let mut cluster = Cluster::start(&options, &stop)?;
    println!("{}", cluster.banner()?);
    cluster.supervise(&stop);
    println!("cluster: stopping every process it started...");
    cluster.shutdown()?;
    println!(
        "cluster: stopped; logs are in {}",
        cluster_logs(&options.dir).display()
    );
    Ok(())
}

/// A runtime with one thread, only to receive signals while the main thread waits.
pub(crate) fn signal_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("cannot start the signal runtime")
}

fn cluster_logs(dir: &Path) -> PathBuf {
    std::path::absolute(dir)
        .unwrap_or_else(|_| dir.to_path_buf())
        .join("logs")
}

/// A running cluster: its state and the children it started. Dropping it
/// stops them, so an error half-way through start-up leaves nothing behind.
#[derive(Debug)]
pub(crate) struct Cluster {
    dir: PathBuf,
    state: ClusterState,
    /// Children started by this process, by index into `state.processes`.
    children: Vec<(usize, Child)>,
    stopped: bool,
}

impl Cluster {
    /// Builds or finds the binary, writes certificates, starts every process
    /// and waits until each proxy lists every worker.
    pub(crate) fn start(options: &ClusterOptions, stop: &StopFlag) -> Result<Cluster> {
        let dir = std::path::absolute(&options.dir)?;
        refuse_running_cluster(&dir)?;
        std::fs::create_dir_all(dir.join("logs"))
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let gater = match &options.gater {
            GaterBinary::Build { debug } => process::build_gater(*debug)?,
            GaterBinary::Path(path) => std::path::absolute(path)?,
        };
        let certs = dir.join("certs");
        gater_transport_quic::certs::write_dev_certs(&certs, &[])
            .with_context(|| format!("cannot write certificates in {}", certs.display()))?;
        let mut cluster = Cluster {
            state: ClusterState {
                supervisor_pid: std::process::id(),
                gater,
                certs,
                backend: options.backend.as_str().to_owned(),
                postgres: None,
                processes: Vec::new(),
            },
            dir,
            children: Vec::new(),
            stopped: false,
        };
        if options.backend == Backend::Postgres {
            cluster.state.postgres = Some(postgres::start(&cluster.dir.join("pg"))?);
        }
        cluster.state.processes = cluster.plan(options)?;
        for index in 0..cluster.state.processes.len() {
            cluster.spawn(index)?;
        }
        cluster.state.save(&cluster.dir)?;
        cluster.wait_ready(stop)?;
        Ok(cluster)
    }

    /// The cluster's recorded state.
    pub(crate) fn state(&self) -> &ClusterState {
        &self.state
    }

    /// Workers first, then proxies that list every worker.
    fn plan(&self, options: &ClusterOptions) -> Result<Vec<ProcessRecord>> {
        let certs = self.state.certs.display().to_string();
        let mut records = Vec::new();
        for k in 1..=options.workers {
            let name = format!("worker-{k}");
            let address = process::free_address()?;
            let data = self.dir.join(&name).display().to_string();
            let mut args = vec![
                "--certs",
                &certs,
                "worker",
                "--id",
                &name,
                "--data-dir",
                &data,
                "--listen",
                &address,
            ]
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>();
            if let Some(pg) = &self.state.postgres {
                args.extend(["--backend".into(), "postgres".into()]);
                args.extend(["--postgres-url".into(), pg.url.clone()]);
            }
            records.push(self.record(name, Role::Worker, address, args));
        }
        let workers: Vec<String> = records.iter().map(|r| r.address.clone()).collect();
        for k in 1..=options.proxies {
            let address = process::free_address()?;
            let mut args: Vec<String> = ["--certs", &certs, "proxy", "--listen", &address]
                .into_iter()
                .map(str::to_owned)
                .collect();
            for worker in &workers {
                args.extend(["--worker".into(), worker.clone()]);
            }
            if self.state.postgres.is_some() {
                // Every worker serves every store of the shared database.
                args.push("--shared".into());
            }
            records.push(self.record(format!("proxy-{k}"), Role::Proxy, address, args));
        }
        Ok(records)
    }

    fn record(
        &self,
        name: String,
        role: Role,
        address: String,
        args: Vec<String>,
    ) -> ProcessRecord {
        let log = self.dir.join("logs").join(format!("{name}.log"));
        ProcessRecord {
            name,
            role,
            address,
            args,
            pid: None,
            log,
        }
    }

    fn spawn(&mut self, index: usize) -> Result<()> {
        let child = process::spawn(&self.state.gater, &self.state.processes[index])?;
        self.state.processes[index].pid = Some(child.id());
        self.children.push((index, child));
        Ok(())
    }

    /// Polls until every worker answers and every proxy lists every worker.
    fn wait_ready(&mut self, stop: &StopFlag) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let worker_count = self.state.workers().count();
        let mut ready = vec![false; self.state.processes.len()];
        loop {
            self.check_started()?;
            for (index, record) in self.state.processes.iter().enumerate() {
                if !ready[index] {
                    ready[index] = answers(&self.state, record, worker_count);
                }
            }
            if ready.iter().all(|r| *r) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let waiting: Vec<&str> = self
                    .state
                    .processes
                    .iter()
                    .zip(&ready)
                    .filter(|(_, r)| !**r)
                    .map(|(p, _)| p.name.as_str())
                    .collect();
                bail!(
                    "the cluster did not answer within {START_TIMEOUT:?}: {} still waiting; logs in {}",
                    waiting.join(", "),
                    self.dir.join("logs").display()
                );
            }
            if stop.sleep(POLL_INTERVAL) {
                bail!("interrupted while the cluster was starting");
            }
        }
    }

    /// Fails if a child exited during start-up, saying why.
    fn check_started(&mut self) -> Result<()> {
        for (index, child) in &mut self.children {
            let Some(status) = child.try_wait()? else {
                continue;
            };
            let record = &self.state.processes[*index];
            let tail = log_tail(&record.log);
            let mut message = format!(
                "{} exited during start-up ({status}); the end of {}:\n{tail}",
                record.name,
                record.log.display()
            );
            if record.role == Role::Worker && self.state.postgres.is_some() {
                message = format!(
                    "the gater worker refused `--backend postgres` (this gater binary may not \
                     support that backend yet)\n{message}"
                );
            }
            bail!(message);
        }
        Ok(())
    }

    /// Reports children that exit, until a stop is asked for.
    pub(crate) fn supervise(&mut self, stop: &StopFlag) {
        while !stop.sleep(POLL_INTERVAL) {
            let processes = &self.state.processes;
            self.children.retain_mut(|(index, child)| {
                let Ok(Some(status)) = child.try_wait() else {
                    return true;
                };
                let record = &processes[*index];
                println!(
                    "cluster: {} (pid {}) exited: {status}; log: {}",
                    record.name,
                    child.id(),
                    record.log.display()
                );
                false
            });
        }
    }

    /// Stops every process the cluster started (and workers restarted by hand), proxies first.
    pub(crate) fn shutdown(mut self) -> Result<()> {
        self.stop_all()
    }

    fn stop_all(&mut self) -> Result<()> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        // A worker restarted from another terminal is recorded only in the file.
        let recorded = ClusterState::load(&self.dir)
            .map(|s| s.processes)
            .unwrap_or_default();
        for role in [Role::Proxy, Role::Worker] {
            let ours: Vec<usize> = (0..self.children.len())
                .filter(|i| self.state.processes[self.children[*i].0].role == role)
                .collect();
            let own_pids: Vec<u32> = self.children.iter().map(|(_, c)| c.id()).collect();
            let adopted: Vec<u32> = recorded
                .iter()
                .filter(|r| r.role == role)
                .filter_map(|r| {
                    r.pid
                        .filter(|pid| !own_pids.contains(pid) && is_ours(*pid, r))
                })
                .collect();
            for i in &ours {
                process::signal(self.children[*i].1.id(), Signal::TERM);
            }
            for pid in &adopted {
                process::signal(*pid, Signal::TERM);
            }
            for i in &ours {
                process::stop_child(&mut self.children[*i].1);
            }
            for pid in adopted {
                process::stop_pid(pid);
            }
        }
        self.children.clear();
        if let Some(pg) = &self.state.postgres {
            postgres::stop(pg)?;
        }
        Ok(())
    }

    /// What the user needs: addresses, the command line, the workers and how to stop.
    pub(crate) fn banner(&self) -> Result<String> {
        let state = &self.state;
        let mut out = String::new();
        writeln!(
            out,
            "cluster ready: {} workers, {} proxies, {} backend, in {}",
            state.workers().count(),
            state.proxies().count(),
            state.backend,
            self.dir.display()
        )?;
        let rows: Vec<Vec<String>> = state
            .processes
            .iter()
            .map(|p| {
                vec![
                    p.name.clone(),
                    p.address.clone(),
                    p.pid.map(|pid| pid.to_string()).unwrap_or_default(),
                    p.log.display().to_string(),
                ]
            })
            .collect();
        out.push_str(&render_table(&["process", "address", "pid", "log"], &rows));
        if let Some(pg) = &state.postgres {
            writeln!(
                out,
                "postgres: {} (data in {})",
                pg.url,
                pg.data_dir.display()
            )?;
        }
        writeln!(out, "\nuse it:\n  {}", client_line(state, "workers"))?;
        writeln!(out, "\nworkers, as proxy-1 sees them:")?;
        out.push_str(&workers_table(state)?);
        writeln!(
            out,
            "\ntry failover from another terminal:\n  cargo xtask cluster --dir {0} --kill-worker 1\n  \
             cargo xtask cluster --dir {0} --restart-worker 1",
            self.dir.display()
        )?;
        write!(
            out,
            "\nPress Ctrl-C to stop the cluster (logs stay in {}).",
            self.dir.join("logs").display()
        )?;
        Ok(out)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(e) = self.stop_all() {
            eprintln!("cluster: while stopping: {e:#}");
        }
    }
}

/// Whether `record` answers: a worker lists itself, a proxy lists every
/// worker as healthy (it probes them, so this is soon after they listen).
fn answers(state: &ClusterState, record: &ProcessRecord, worker_count: usize) -> bool {
    let Ok(out) = gater_client(&state.gater, &record.address, &state.certs, &["workers"]) else {
        return false;
    };
    let rows = json_rows(&out.stdout);
    out.status.success()
        && match record.role {
            Role::Worker => !rows.is_empty(),
            Role::Proxy => {
                rows.len() == worker_count && rows.iter().all(|w| w["health"] == "healthy")
            }
        }
}

/// Refuses to start over a cluster whose supervisor still runs.
fn refuse_running_cluster(dir: &Path) -> Result<()> {
    let Ok(previous) = ClusterState::load(dir) else {
        return Ok(());
    };
    if previous.supervisor_pid != std::process::id() && is_alive(previous.supervisor_pid) {
        bail!(
            "a cluster already runs in {} (supervised by pid {}); stop it with Ctrl-C or pick another --dir",
            dir.display(),
            previous.supervisor_pid
        );
    }
    Ok(())
}

/// The `gater` command line to reach the cluster's proxies.
pub(crate) fn client_line(state: &ClusterState, command: &str) -> String {
    format!(
        "{} --server {} --certs {} {command}",
        state.gater.display(),
        state.servers(),
        state.certs.display()
    )
}

/// The workers as the first proxy lists them, with the process behind each.
fn workers_table(state: &ClusterState) -> Result<String> {
    let proxy = state.proxies().next().context("the cluster has no proxy")?;
    let out = gater_client(&state.gater, &proxy.address, &state.certs, &["workers"])?;
    if !out.status.success() {
        bail!(
            "{} did not list its workers: {}",
            proxy.name,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let rows: Vec<Vec<String>> = json_rows(&out.stdout)
        .iter()
        .map(|w| {
            let address = w["address"].as_str().unwrap_or_default();
            let process = state.workers().find(|p| p.address == address);
            let stores = w["stores"].as_array().map_or(0, Vec::len);
            vec![
                process.map(|p| p.name.clone()).unwrap_or_default(),
                w["id"].as_str().unwrap_or_default().to_owned(),
                address.to_owned(),
                w["health"].as_str().unwrap_or_default().to_owned(),
                stores.to_string(),
                process
                    .and_then(|p| p.pid)
                    .map(|pid| pid.to_string())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    Ok(render_table(
        &["process", "id", "address", "health", "stores", "pid"],
        &rows,
    ))
}

/// Crashes worker `which` of the cluster running in `dir` (SIGKILL).
fn kill_worker(dir: &Path, which: &str) -> Result<()> {
    let (mut state, index) = running_worker(dir, which)?;
    let record = state.processes[index].clone();
    match record.pid.filter(|pid| is_ours(*pid, &record)) {
        Some(pid) => {
            process::signal(pid, Signal::KILL);
            wait_gone(pid)?;
            println!("killed {} (pid {pid}, {})", record.name, record.address);
        }
        None => println!("{} is not running", record.name),
    }
    state.processes[index].pid = None;
    state.save(dir)?;
    println!(
        "watch the proxies notice:\n  {}",
        client_line(&state, "workers")
    );
    println!(
        "bring it back:\n  cargo xtask cluster --dir {} --restart-worker {}",
        dir.display(),
        which
    );
    Ok(())
}

/// Restarts worker `which` of the cluster running in `dir` with its recorded arguments.
fn restart_worker(dir: &Path, which: &str) -> Result<()> {
    let (mut state, index) = running_worker(dir, which)?;
    let record = state.processes[index].clone();
    if let Some(pid) = record.pid.filter(|pid| is_ours(*pid, &record)) {
        process::stop_pid(pid);
        wait_gone(pid)?;
        println!("stopped {} (pid {pid})", record.name);
    }
    // The child outlives this command: the cluster's supervisor stops it on Ctrl-C.
    let child = process::spawn(&state.gater, &record)?;
    state.processes[index].pid = Some(child.id());
    state.save(dir)?;
    let deadline = Instant::now() + START_TIMEOUT;
    while !answers(&state, &record, 1) {
        if !is_alive(child.id()) || Instant::now() > deadline {
            bail!(
                "{} did not come back; the end of {}:\n{}",
                record.name,
                record.log.display(),
                log_tail(&record.log)
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    println!(
        "restarted {} (pid {}) on {}; log: {}",
        record.name,
        child.id(),
        record.address,
        record.log.display()
    );
    println!("the cluster stops it on Ctrl-C like the others");
    Ok(())
}

/// The state of the cluster running in `dir` and the index of worker `which`.
fn running_worker(dir: &Path, which: &str) -> Result<(ClusterState, usize)> {
    let dir = std::path::absolute(dir)?;
    let state = ClusterState::load(&dir)?;
    if !is_alive(state.supervisor_pid) {
        bail!(
            "no cluster runs in {} (its supervisor, pid {}, is gone); start one with `cargo xtask cluster --dir {}`",
            dir.display(),
            state.supervisor_pid,
            dir.display()
        );
    }
    let Some(index) = state.worker_index(which) else {
        let names: Vec<&str> = state.workers().map(|w| w.name.as_str()).collect();
        bail!(
            "no worker {which:?} in this cluster; its workers: {}",
            names.join(", ")
        );
    };
    Ok((state, index))
}

/// Waits until `pid` is gone (it may be a zombie until its parent reaps it).
fn wait_gone(pid: u32) -> Result<()> {
    let deadline = Instant::now() + STOP_GRACE;
    while is_alive(pid) {
        if Instant::now() > deadline {
            bail!("pid {pid} is still running after {STOP_GRACE:?}");
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    Ok(())
}

/// A plain text table: a header, a rule, then the rows, columns padded to fit.
pub(crate) fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let padded: Vec<String> = cells
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        format!("  {}\n", padded.join("  ").trim_end())
    };
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    let mut out = line(&mut headers.iter().copied());
    out.push_str(&line(&mut rule.iter().map(String::as_str)));
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_columns_to_the_widest_cell() {
        let table = render_table(
            &["name", "pid"],
            &[
                vec!["worker-1".into(), "7".into()],
                vec!["w".into(), "12345".into()],
            ],
        );
        let expected = "  name      pid\n  --------  -----\n  worker-1  7\n  w         12345\n";
        assert_eq!(table, expected);
    }
}
