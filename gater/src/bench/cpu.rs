//! CPU time of the processes behind a case, over its measured window.
//!
//! A case names the processes it runs on by role (`bench` for this process
//! when it hosts the servers too; `client`, `proxy`, `worker` when they are
//! separate processes). The driver samples each one's user + system CPU time
//! when the measured window opens and when it closes; the difference divided
//! by the acknowledged operations is the CPU cost of one operation in that
//! process, a figure far less noisy on a shared machine than a rate.
//!
//! Read from `/proc/<pid>/stat` (Linux); elsewhere no figure is reported.

use std::time::Duration;

/// One process of a case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Process {
    /// What it runs: `bench`, `client`, `proxy` or `worker`.
    pub(crate) role: &'static str,
    /// Its process id.
    pub(crate) pid: u32,
}

/// The processes whose CPU time a case reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CpuProbe {
    processes: Vec<Process>,
}

/// CPU time of each probed process at one instant; `None` where it could not be read.
#[derive(Clone, Debug)]
pub(crate) struct CpuSample(Vec<Option<Duration>>);

/// CPU time a process used over a window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CpuUse {
    /// The process's role.
    pub(crate) role: &'static str,
    /// User + system CPU time.
    pub(crate) time: Duration,
}

impl CpuProbe {
    /// Probes nothing (cases whose CPU cost is not reported).
    pub(crate) fn none() -> Self {
        CpuProbe::default()
    }

    /// Probes this process under `role`.
    pub(crate) fn this_process(role: &'static str) -> Self {
        CpuProbe::none().with(role, std::process::id())
    }

    /// Also probes process `pid` under `role`.
    pub(crate) fn with(mut self, role: &'static str, pid: u32) -> Self {
        self.processes.push(Process { role, pid });
        self
    }

    /// Whether there is anything to sample.
    pub(crate) fn is_empty(&self) -> bool {
        self.processes.is_empty()
    }

    /// The CPU time of every probed process now.
    pub(crate) fn sample(&self) -> CpuSample {
        CpuSample(self.processes.iter().map(|p| cpu_time(p.pid)).collect())
    }

    /// What each process used between `start` and `end` (processes unreadable at either end are left out).
    pub(crate) fn used(&self, start: &CpuSample, end: &CpuSample) -> Vec<CpuUse> {
        self.processes
            .iter()
            .zip(start.0.iter().zip(&end.0))
            .filter_map(|(p, (a, b))| {
                Some(CpuUse {
                    role: p.role,
                    time: b.as_ref()?.saturating_sub(*a.as_ref()?),
                })
            })
            .collect()
    }
}

/// User + system CPU time of process `pid` so far.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = stat_cpu_ticks(&stat)?;
    let per_second = clock_ticks_per_second()?;
    Some(Duration::from_secs_f64(ticks as f64 / per_second as f64))
}

#[cfg(target_os = "linux")]
fn clock_ticks_per_second() -> Option<u64> {
    Some(rustix::param::clock_ticks_per_second()).filter(|&t| t > 0)
}

#[cfg(not(target_os = "linux"))]
fn clock_ticks_per_second() -> Option<u64> {
    None
}

/// `utime + stime` (clock ticks) from the text of `/proc/<pid>/stat`.
///
/// The command name (field 2) is in parentheses and may hold spaces or
/// parentheses itself, so fields are counted after its last `)`: there
/// field 3 (`state`) comes first, and `utime`, `stime` are fields 14 and 15.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(14 - 3);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_the_command_name_whatever_it_holds() {
        let stat = "4242 (gater (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 75 0 0 20 0 9 0 12345 1000000 500 18446744073709551615";
        assert_eq!(stat_cpu_ticks(stat), Some(325));
        assert_eq!(stat_cpu_ticks("12 (short) S 1 2"), None);
        assert_eq!(stat_cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn use_over_a_window_is_the_difference_per_process() {
        let probe = CpuProbe::this_process("bench").with("worker", u32::MAX);
        let start = CpuSample(vec![Some(Duration::from_millis(100)), None]);
        let end = CpuSample(vec![Some(Duration::from_millis(350)), Some(Duration::ZERO)]);
        assert_eq!(
            probe.used(&start, &end),
            vec![CpuUse {
                role: "bench",
                time: Duration::from_millis(250)
            }]
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_a_readable_cpu_time() {
        let probe = CpuProbe::this_process("bench");
        assert!(probe.sample().0[0].is_some());
    }
}
