//! Arguments of `gater bench`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use gater_core::StoreConfig;

use super::driver::Timing;
use super::workload::Params;

/// Default measured seconds per case: short, so a whole run takes minutes.
pub(crate) const SECONDS_DEFAULT: f64 = 3.0;
/// Default warm-up per case, milliseconds.
pub(crate) const WARMUP_MS_DEFAULT: u64 = 500;
/// Default seed of every random choice.
pub(crate) const SEED_DEFAULT: u64 = 0x6265_6e63_6821;
/// Most concurrent clients of any workload.
pub(crate) const CLIENTS_MAX: u64 = 10_000;
/// Most streams a workload spreads over.
pub(crate) const STREAMS_MAX: i64 = 1_000_000;
/// Most events per append (the shipped append limit).
pub(crate) const EVENTS_PER_APPEND_MAX: i64 = 10_000;
/// Most events W4 writes into each stream.
pub(crate) const READ_STREAM_LEN_MAX: i64 = 1_000_000;
/// Highest W5 live write rate, appends per second.
pub(crate) const LIVE_RATE_MAX: i64 = 100_000;
/// Longest warm-up, milliseconds (an hour).
pub(crate) const WARMUP_MS_MAX: u64 = 3_600_000;
/// Most events W5's catch-up may replay.
pub(crate) const CATCHUP_EVENTS_MAX: u64 = 1_000_000;
/// Most tags W8's store holds (each on ten events).
pub(crate) const TAGS_MAX: i64 = 1_000_000;

/// The in-process suites.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Suite {
    /// Embedded vs mem vs QUIC vs QUIC through a proxy, group commit on vs
    /// off, reads, subscriptions and failover, side by side in this process.
    Compare,
    /// Many stores (W9) alone, with W1 on one embedded store to compare the
    /// spread W1 with, in this process.
    Stores,
    /// The append model's cases alone: W1 (64 clients, one event per
    /// append), W7 and W8 on one embedded store, in this process.
    Dcb,
}

/// A workload of `gater bench` against a server.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Workload {
    /// Write flood: concurrent appends, expected version any.
    W1,
    /// Optimistic concurrency: read the version, append expecting exactly it.
    W2,
    /// Latency: one append in flight per client.
    W3,
    /// Reads: single events, pages forward and backward, a full scan.
    W4,
    /// Subscriptions: catch-up, live latency, a persistent group acking.
    W5,
    /// Conditional appends, each client checking a query on its own tag.
    W7,
    /// Tag reads: every event of one tag among many.
    W8,
}

/// `gater bench`: measure a server (`--server`, `--certs`), or run an in-process suite.
#[derive(Args, Debug, Clone)]
pub(crate) struct BenchArgs {
    /// Run an in-process suite instead of measuring `--server`.
    #[arg(long, value_enum)]
    pub(crate) suite: Option<Suite>,
    /// Measured seconds per case.
    #[arg(long, default_value_t = SECONDS_DEFAULT, value_parser = seconds)]
    pub(crate) seconds: f64,
    /// Warm-up per case, excluded from the figures, milliseconds.
    #[arg(long, default_value_t = WARMUP_MS_DEFAULT, value_parser = clap::value_parser!(u64).range(0..=WARMUP_MS_MAX))]
    pub(crate) warmup_ms: u64,
    /// Write the whole report as one JSON document to this file.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Seed of every random choice (streams, event ids).
    #[arg(long, default_value_t = SEED_DEFAULT)]
    pub(crate) seed: u64,
    /// Workloads to run against a server.
    #[arg(long, value_enum, value_delimiter = ',', num_args = 1.., default_values_t = [Workload::W1, Workload::W2, Workload::W3, Workload::W4, Workload::W5])]
    pub(crate) workloads: Vec<Workload>,
    /// W1 client counts.
    #[arg(long, value_delimiter = ',', num_args = 1.., default_values_t = [1u64, 16, 64], value_parser = clap::value_parser!(u64).range(1..=CLIENTS_MAX))]
    pub(crate) clients: Vec<u64>,
    /// W1 events per append.
    #[arg(long, value_delimiter = ',', num_args = 1.., default_values_t = [1u32, 10, 100], value_parser = clap::value_parser!(u32).range(1..=EVENTS_PER_APPEND_MAX))]
    pub(crate) events_per_append: Vec<u32>,
    /// Streams W1 and W3 spread appends over.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=STREAMS_MAX))]
    pub(crate) streams: u32,
    /// Hot streams W2 contends on.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=STREAMS_MAX))]
    pub(crate) hot_streams: u32,
    /// W2 clients.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=CLIENTS_MAX))]
    pub(crate) contenders: u64,
    /// W3 clients (each with one append in flight).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=CLIENTS_MAX))]
    pub(crate) latency_clients: u64,
    /// W4 concurrent readers.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=CLIENTS_MAX))]
    pub(crate) readers: u64,
    /// W4 streams to read from.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=STREAMS_MAX))]
    pub(crate) read_streams: u32,
    /// W4 events per stream.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=READ_STREAM_LEN_MAX))]
    pub(crate) read_stream_len: u32,
    /// W5 events replayed by the catch-up.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..=CATCHUP_EVENTS_MAX))]
    pub(crate) catchup_events: u64,
    /// W5 appends per second while measuring live delivery.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=LIVE_RATE_MAX))]
    pub(crate) live_rate: u32,
    /// W5 consumers in the persistent group.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=CLIENTS_MAX))]
    pub(crate) group_consumers: u64,
    /// W7 client counts (each on its own tag).
    #[arg(long, value_delimiter = ',', num_args = 1.., default_values_t = [16u64, 64], value_parser = clap::value_parser!(u64).range(1..=CLIENTS_MAX))]
    pub(crate) conditional_clients: Vec<u64>,
    /// W8 tags in the store, each carried by ten events.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..=TAGS_MAX))]
    pub(crate) tags: u32,
    /// Create the benchmark stores without fsync.
    #[arg(long)]
    pub(crate) no_fsync: bool,
    /// Create the benchmark stores without group commit.
    #[arg(long)]
    pub(crate) no_group_commit: bool,
    /// PostgreSQL database for the compare suite's PostgreSQL cases (W1, W4);
    /// without it they are skipped. `cargo xtask bench` starts a throwaway
    /// server and passes its URL.
    #[arg(long, value_name = "URL")]
    pub(crate) postgres_url: Option<String>,
}

/// Longest measured window of one case: a day.
const SECONDS_MAX: f64 = 86_400.0;

/// Parses `--seconds`: a finite number above zero, at most [`SECONDS_MAX`].
fn seconds(text: &str) -> Result<f64, String> {
    let value: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if value.is_finite() && value > 0.0 && value <= SECONDS_MAX {
        Ok(value)
    } else {
        Err(format!("must be above 0 and at most {SECONDS_MAX}"))
    }
}

impl BenchArgs {
    /// The workload parameters these arguments describe.
    pub(crate) fn params(&self) -> Params {
        Params {
            timing: Timing {
                warmup: Duration::from_millis(self.warmup_ms),
                measure: Duration::from_secs_f64(self.seconds),
            },
            seed: self.seed,
            streams: self.streams.max(1),
            hot_streams: self.hot_streams.max(1),
            store_config: StoreConfig {
                fsync: !self.no_fsync,
                group_commit: !self.no_group_commit,
                retention: gater_core::Retention::NONE,
            },
            read_streams: self.read_streams.max(1),
            read_stream_len: self.read_stream_len.max(1),
            readers: self.readers as usize,
            catchup_events: self.catchup_events,
            live_rate: self.live_rate.max(1),
            group_consumers: self.group_consumers as usize,
            tag_count: self.tags.max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_must_be_a_positive_finite_number() {
        assert_eq!(seconds("0.25"), Ok(0.25));
        for bad in ["0", "-1", "nan", "inf", "1e9", "three"] {
            assert!(seconds(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn list_flags_take_the_form_help_shows_and_the_comma_form() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        for argv in [
            &["bench", "--clients", "1", "16", "64", "--seconds", "2"][..],
            &["bench", "--clients", "1,16,64", "--seconds", "2"][..],
            &[
                "bench",
                "--clients",
                "1",
                "--clients",
                "16,64",
                "--seconds",
                "2",
            ][..],
        ] {
            let args = Cli::try_parse_from(argv).expect("parses").bench;
            assert_eq!(args.clients, vec![1, 16, 64], "{argv:?}");
            assert_eq!(args.seconds, 2.0);
        }
        let args = Cli::try_parse_from([
            "bench",
            "--events-per-append",
            "1",
            "10",
            "--workloads",
            "w1",
            "w3",
        ])
        .expect("parses")
        .bench;
        assert_eq!(args.events_per_append, vec![1, 10]);
        assert_eq!(args.workloads, vec![Workload::W1, Workload::W3]);
        assert!(Cli::try_parse_from(["bench", "--clients", "0"]).is_err());
    }
}
