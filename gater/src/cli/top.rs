//! `gater top`: a live terminal view of workers, stores and persistent
//! subscriptions, read over the QUIC API like every other command (the same
//! status document `GET /api/status` serves). `q` quits; `--once` prints
//! one frame and exits, `--json` as one JSON object.

use std::io::{self, IsTerminal, Read, Write};
use std::time::Duration;

use gater_core::Gater;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::args::TopArgs;
use super::client::CommandError;
use super::output::Output;
use crate::observe::status::{self, Status};

/// Clears the terminal and moves the cursor home.
const CLEAR: &str = "\x1b[2J\x1b[H";
/// Keys that end the live view (`q`, `Q`, and Ctrl-C while the terminal is raw).
const QUIT_KEYS: &[u8] = b"qQ\x03";

/// Runs `gater top`.
pub(crate) async fn run<W: Write>(
    gater: &dyn Gater,
    args: &TopArgs,
    out: &mut Output<W>,
) -> Result<(), CommandError> {
    if args.once {
        let status = status::collect(gater).await?;
        if out.is_json() {
            out.record(&serde_json::to_value(&status).unwrap_or(Value::Null))?;
        } else {
            frame(&status, None, out)?;
        }
        return Ok(());
    }
    live(gater, Duration::from_millis(args.interval_ms.max(1)), out).await
}

async fn live<W: Write>(
    gater: &dyn Gater,
    interval: Duration,
    out: &mut Output<W>,
) -> Result<(), CommandError> {
    let _terminal = RawTerminal::enter();
    let mut keys = spawn_key_reader();
    let mut previous: Option<Status> = None;
    loop {
        let status = status::collect(gater).await?;
        let mut text = Output::new(Vec::new(), false);
        frame(&status, previous.as_ref().map(|p| (p, interval)), &mut text)?;
        print!("{CLEAR}");
        out.flush()?;
        io::stdout().write_all(&text.into_inner())?;
        println!("\n(q to quit; every {} ms)", interval.as_millis());
        io::stdout().flush()?;
        previous = Some(status);
        tokio::select! {
            key = keys.recv() => match key {
                Some(key) if QUIT_KEYS.contains(&key) => return Ok(()),
                // Input closed: keep refreshing until interrupted.
                None => tokio::time::sleep(interval).await,
                Some(_) => {}
            },
            () = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// Prints one frame: the stores, subscriptions and workers tables. With the
/// previous frame and the time since, stores show their append rate and
/// subscriptions whether their lag grows.
fn frame<W: Write>(
    status: &Status,
    previous: Option<(&Status, Duration)>,
    out: &mut Output<W>,
) -> io::Result<()> {
    let stores: Vec<Value> = status
        .stores
        .iter()
        .map(|s| {
            let rate = previous.and_then(|(p, dt)| {
                let before = p.stores.iter().find(|b| b.store == s.store)?;
                let delta = s.events.saturating_sub(before.events) as f64;
                Some(format!("{:.0}", delta / dt.as_secs_f64().max(f64::EPSILON)))
            });
            json!({
                "store": s.store, "state": s.state, "events": grouped(s.events),
                "streams": grouped(s.streams),
                "head": if s.head < 0 { "-".to_owned() } else { grouped(s.head as u64) },
                "disk_bytes": grouped(s.disk_bytes), "appends/s": rate.unwrap_or_else(|| "-".into()),
            })
        })
        .collect();
    writeln!(out.writer(), "STORES")?;
    out.table(
        &[
            "store",
            "state",
            "events",
            "streams",
            "head",
            "disk_bytes",
            "appends/s",
        ],
        &stores,
    )?;
    let subscriptions: Vec<Value> = status
        .subscriptions
        .iter()
        .map(|s| {
            let trend = previous
                .and_then(|(p, _)| {
                    p.subscriptions
                        .iter()
                        .find(|b| b.store == s.store && b.name == s.name)
                })
                .map_or("", |b| match s.lag.cmp(&b.lag) {
                    std::cmp::Ordering::Greater => " ▲",
                    std::cmp::Ordering::Less => " ▼",
                    std::cmp::Ordering::Equal => "",
                });
            json!({
                "store": s.store, "name": s.name, "checkpoint": grouped(s.checkpoint),
                "lag": format!("{}{trend}", grouped(s.lag)), "consumers": s.consumers,
                "in_flight": grouped(s.in_flight.into()), "parked": grouped(s.parked),
            })
        })
        .collect();
    writeln!(out.writer(), "\nSUBSCRIPTIONS")?;
    out.table(
        &[
            "store",
            "name",
            "checkpoint",
            "lag",
            "consumers",
            "in_flight",
            "parked",
        ],
        &subscriptions,
    )?;
    let workers: Vec<Value> = status
        .workers
        .iter()
        .map(|w| {
            json!({
                "worker": w.id, "address": w.address, "health": w.health,
                "in_flight": w.in_flight,
                "latency_ms": format!("{:.2}", w.latency_us as f64 / 1000.0),
            })
        })
        .collect();
    writeln!(out.writer(), "\nWORKERS")?;
    out.table(
        &["worker", "address", "health", "in_flight", "latency_ms"],
        &workers,
    )
}

/// `n` with thousands separators: `1234567` → `1,234,567`.
pub(crate) fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Reads stdin byte by byte on a thread of its own (stdin has no async read
/// that leaves the terminal alone) and hands the keys over.
fn spawn_key_reader() -> mpsc::Receiver<u8> {
    // One key at a time is plenty: the view reads them faster than anyone types.
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = io::stdin();
        let mut byte = [0u8; 1];
        while let Ok(1) = stdin.read(&mut byte) {
            if tx.blocking_send(byte[0]).is_err() {
                return;
            }
        }
    });
    rx
}

/// The terminal with line buffering and echo off, so `q` acts at once;
/// restored when dropped. Nothing changes when stdin is not a terminal.
struct RawTerminal {
    saved: Option<rustix::termios::Termios>,
}

impl RawTerminal {
    fn enter() -> RawTerminal {
        let stdin = io::stdin();
        if !stdin.is_terminal() {
            return RawTerminal { saved: None };
        }
        let Ok(saved) = rustix::termios::tcgetattr(&stdin) else {
            return RawTerminal { saved: None };
        };
        let mut raw = saved.clone();
        raw.local_modes -= rustix::termios::LocalModes::ICANON | rustix::termios::LocalModes::ECHO;
        if rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &raw).is_err()
        {
            return RawTerminal { saved: None };
        }
        RawTerminal { saved: Some(saved) }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = rustix::termios::tcsetattr(
                io::stdin(),
                rustix::termios::OptionalActions::Now,
                saved,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_get_thousands_separators() {
        for (n, text) in [
            (0, "0"),
            (999, "999"),
            (1_000, "1,000"),
            (100_000, "100,000"),
            (1_234_567, "1,234,567"),
        ] {
            assert_eq!(grouped(n), text);
        }
    }
}
