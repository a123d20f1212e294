//! What the benchmark reads from `/proc` (Linux only): peak and current resident memory of a
//! process (`VmHWM`, `VmRSS`), CPU time of processes and of the whole machine, so a phase can
//! say where the CPU went (api, worker, PostgreSQL, RabbitMQ, the load generator itself).

use std::fs;

/// `VmHWM` (peak resident set) and `VmRSS` (current), in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    pub peak_kib: u64,
    pub current_kib: u64,
}

/// Memory of process `pid`, or `None` if it is gone.
pub fn memory(pid: u32) -> Option<Memory> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(parse_memory(&status))
}

fn parse_memory(status: &str) -> Memory {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Memory {
        peak_kib: field("VmHWM:"),
        current_kib: field("VmRSS:"),
    }
}

/// The fields of `/proc/<pid>/stat` the benchmark uses.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stat {
    comm: String,
    /// utime + stime of the process itself, in clock ticks.
    own: u64,
    /// cutime + cstime: time of its reaped children, in clock ticks.
    children: u64,
}

fn parse_stat(text: &str) -> Option<Stat> {
    // `comm` is in parentheses and may contain spaces; the fields after the last ')' are
    // fixed: state(3) ppid(4) ... utime(14) stime(15) cutime(16) cstime(17).
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_string();
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let num = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok());
    // `rest[0]` is field 3 (state), so field n is `rest[n - 3]`.
    Some(Stat {
        comm,
        own: num(11)? + num(12)?,
        children: num(13)? + num(14)?,
    })
}

fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Clock ticks per second (`getconf CLK_TCK`); 100 on every Linux this runs on.
fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// CPU seconds used so far by process `pid` (all its threads), or 0 if it is gone.
pub fn process_cpu(pid: Option<u32>) -> f64 {
    let ticks = pid.and_then(stat).map(|s| s.own).unwrap_or(0);
    ticks as f64 / ticks_per_second()
}

/// CPU seconds used so far by every process whose name is `comm`, including their reaped
/// children (so PostgreSQL backends that exited still count through the postmaster).
pub fn cpu_by_name(comm: &str) -> f64 {
    let Ok(entries) = fs::read_dir("/proc") else {
        return 0.0;
    };
    let ticks: u64 = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(stat)
        .filter(|s| s.comm == comm)
        .map(|s| s.own + s.children)
        .sum();
    ticks as f64 / ticks_per_second()
}

/// Machine-wide CPU time from `/proc/stat`: (busy seconds, total seconds) over all cores.
pub fn machine_cpu() -> (f64, f64) {
    let text = fs::read_to_string("/proc/stat").unwrap_or_default();
    let (busy, total) = parse_proc_stat(&text);
    let tps = ticks_per_second();
    (busy as f64 / tps, total as f64 / tps)
}

fn parse_proc_stat(text: &str) -> (u64, u64) {
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal guest guest_nice; guest time is already
    // counted in user, so only the first eight fields add up to the total.
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// A snapshot of CPU counters; subtract two to get what a phase used.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSnapshot {
    pub api: f64,
    pub worker: f64,
    pub bench: f64,
    pub postgres: f64,
    pub rabbitmq: f64,
    pub machine_busy: f64,
    pub machine_total: f64,
}

impl CpuSnapshot {
    /// Reads the counters now. `api` / `worker` are the pids of the processes under test.
    pub fn take(api: Option<u32>, worker: Option<u32>) -> CpuSnapshot {
        let (machine_busy, machine_total) = machine_cpu();
        CpuSnapshot {
            api: process_cpu(api),
            worker: process_cpu(worker),
            bench: process_cpu(Some(std::process::id())),
            postgres: cpu_by_name("postgres"),
            rabbitmq: cpu_by_name("beam.smp"),
            machine_busy,
            machine_total,
        }
    }

    /// What happened between `earlier` and `self`. A process that was not running at one of
    /// the two moments counts as 0.
    pub fn since(&self, earlier: &CpuSnapshot) -> CpuSnapshot {
        let d = |a: f64, b: f64| (a - b).max(0.0);
        CpuSnapshot {
            api: d(self.api, earlier.api),
            worker: d(self.worker, earlier.worker),
            bench: d(self.bench, earlier.bench),
            postgres: d(self.postgres, earlier.postgres),
            rabbitmq: d(self.rabbitmq, earlier.rabbitmq),
            machine_busy: d(self.machine_busy, earlier.machine_busy),
            machine_total: d(self.machine_total, earlier.machine_total),
        }
    }

    /// CPU seconds not accounted for by the processes above (other users of the machine,
    /// the kernel's own work, processes started and gone such as `psql`).
    pub fn other(&self) -> f64 {
        (self.machine_busy - self.api - self.worker - self.bench - self.postgres - self.rabbitmq)
            .max(0.0)
    }
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_string())
}

/// `MemTotal` of `/proc/meminfo` in KiB.
pub fn mem_total_kib() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The CPU model name of `/proc/cpuinfo`.
pub fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_memory_fields() {
        let status = "Name:\tapi\nVmPeak:\t 1000 kB\nVmHWM:\t   51234 kB\nVmRSS:\t   40000 kB\n";
        assert_eq!(
            parse_memory(status),
            Memory {
                peak_kib: 51234,
                current_kib: 40000
            }
        );
    }

    #[test]
    fn reads_stat_with_spaces_in_the_name() {
        let line = "42 (tokio rt) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 4 0 1 2 3";
        let stat = parse_stat(line).expect("parses");
        assert_eq!(stat.comm, "tokio rt");
        assert_eq!(stat.own, 300);
        assert_eq!(stat.children, 10);
    }

    #[test]
    fn machine_busy_excludes_idle_and_iowait() {
        let text = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3\n";
        assert_eq!(parse_proc_stat(text), (150, 1000));
    }
}
