//! What the processes wrote: each process's stdout and stderr go to one file in the test's
//! directory (`api.log`, `worker-0.log`, ...), appended across restarts, so tests can assert
//! on log lines and a failing test shows the end of each log.

use std::path::PathBuf;
use std::time::Duration;

use super::{Role, TestEnv};

impl TestEnv {
    /// The log file (stdout and stderr, all starts appended) of a process.
    pub fn log_path(&self, role: Role) -> PathBuf {
        self.dir.join(format!("{}.log", role.name()))
    }

    /// Everything a process wrote so far (all its starts).
    pub fn logs(&self, role: Role) -> String {
        std::fs::read(self.log_path(role))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The API's log.
    pub fn api_logs(&self) -> String {
        self.logs(Role::Api)
    }

    /// The logs of all workers, concatenated in worker order.
    pub fn worker_logs(&self) -> String {
        (0..self.workers.len())
            .map(|i| self.logs(Role::Worker(i)))
            .collect()
    }

    /// The logs of every process, concatenated.
    pub fn all_logs(&self) -> String {
        self.api_logs() + &self.worker_logs()
    }

    /// Waits until the process's log contains `needle`; panics after `timeout`.
    pub async fn wait_for_log(&self, role: Role, needle: &str, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.logs(role).contains(needle) {
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{} did not log {needle:?} within {timeout:?}; last lines:\n{}",
                    role.name(),
                    self.log_tail(role, 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The last `n` lines of a process's log.
    pub fn log_tail(&self, role: Role, n: usize) -> String {
        let logs = self.logs(role);
        let lines: Vec<&str> = logs.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}
