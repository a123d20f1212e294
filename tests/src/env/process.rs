//! The long-running `api serve` and `worker run` processes of a [`TestEnv`]: starting them
//! (retrying on a port another test took meanwhile), waiting for `/readyz`, stopping them with
//! SIGKILL or SIGTERM, restarting them with the current environment, and adding workers. Each
//! process keeps its address and log file across restarts, so a test can crash and revive it.

use std::fs::OpenOptions;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::{READY_TIMEOUT, TestEnv, passthrough_env};
use crate::client::Api;

/// A long-running process of the environment. Workers are numbered from 0 in start order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Api,
    Worker(usize),
}

impl Role {
    fn binary(self) -> &'static str {
        match self {
            Role::Api => "api",
            Role::Worker(_) => "worker",
        }
    }

    fn subcommand(self) -> &'static str {
        match self {
            Role::Api => "serve",
            Role::Worker(_) => "run",
        }
    }

    pub(super) fn name(self) -> String {
        match self {
            Role::Api => "api".to_string(),
            Role::Worker(i) => format!("worker-{i}"),
        }
    }
}

/// One long-running process slot: its address and log file survive restarts.
pub(super) struct Slot {
    pub(super) addr: String,
    pub(super) child: Option<Child>,
}

impl Slot {
    pub(super) fn new(addr: String) -> Slot {
        Slot { addr, child: None }
    }
}

impl TestEnv {
    pub(super) fn slot(&self, role: Role) -> &Slot {
        match role {
            Role::Api => &self.api,
            Role::Worker(i) => self
                .workers
                .get(i)
                .unwrap_or_else(|| panic!("no worker {i} in this TestEnv")),
        }
    }

    pub(super) fn slot_mut(&mut self, role: Role) -> &mut Slot {
        match role {
            Role::Api => &mut self.api,
            Role::Worker(i) => self
                .workers
                .get_mut(i)
                .unwrap_or_else(|| panic!("no worker {i} in this TestEnv")),
        }
    }

    /// The process id, if the process is running (or exited but was not reaped yet).
    pub fn pid(&self, role: Role) -> Option<u32> {
        self.slot(role).child.as_ref().map(Child::id)
    }

    /// Whether the process was started and has not exited.
    pub fn is_running(&mut self, role: Role) -> bool {
        match &mut self.slot_mut(role).child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Starts the process and waits until `/readyz` answers 200. Panics if it is running.
    /// When its port was taken meanwhile (another test's process), it gets another one.
    pub async fn start_process(&mut self, role: Role) {
        for _ in 0..3 {
            self.spawn_process(role);
            if !self.exited_on_port_clash(role).await {
                break;
            }
            let addr = format!("127.0.0.1:{}", free_port());
            let var = match role {
                Role::Api => "API_ADDR",
                Role::Worker(_) => "WORKER_ADDR",
            };
            if matches!(role, Role::Api | Role::Worker(0)) {
                self.env.insert(var.to_owned(), addr.clone());
            }
            self.slot_mut(role).addr = addr;
        }
        self.wait_ready(role).await;
    }

    /// Waits (up to 3 s) to see whether the process exits because its address is taken.
    async fn exited_on_port_clash(&mut self, role: Role) -> bool {
        for _ in 0..30 {
            match &mut self.slot_mut(role).child {
                Some(child) => match child.try_wait() {
                    Ok(Some(_)) => {
                        return self.log_tail(role, 5).contains("cannot listen on");
                    }
                    Ok(None) => {}
                    Err(_) => return false,
                },
                None => return false,
            }
            if self.url_answers(role).await {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    async fn url_answers(&self, role: Role) -> bool {
        Api::new(self.url(role), None)
            .try_send(reqwest::Method::GET, "/healthz", None)
            .await
            .is_ok()
    }

    /// Starts the process without waiting for readiness (for example with a broker down).
    /// Panics if it is already running.
    pub fn spawn_process(&mut self, role: Role) {
        if self.is_running(role) {
            panic!("{} is already running", role.name());
        }
        let log_path = self.log_path(role);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap_or_else(|e| panic!("open {}: {e}", log_path.display()));
        let log_err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("clone {}: {e}", log_path.display()));
        let addr = self.slot(role).addr.clone();
        let mut cmd = Command::new(self.bin_dir.join(role.binary()));
        cmd.arg(role.subcommand())
            .env_clear()
            .envs(passthrough_env())
            .envs(&self.env)
            .envs(self.proxied().map(|p| (p.var, &p.url)))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        match role {
            Role::Api => cmd.env("API_ADDR", &addr),
            Role::Worker(_) => cmd.env("WORKER_ADDR", &addr),
        };
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "spawn {} {} from {}: {e}",
                role.binary(),
                role.subcommand(),
                self.bin_dir.display()
            )
        });
        self.slot_mut(role).child = Some(child);
    }

    /// Polls `GET /readyz` every 100 ms until it answers 200. Panics, showing the end of the
    /// process's log, if the process exits or [`READY_TIMEOUT`] passes.
    pub async fn wait_ready(&mut self, role: Role) {
        let url = format!("{}/readyz", self.url(role));
        let client = Api::new(self.url(role), None);
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = &mut self.slot_mut(role).child
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "{} exited with {status} before it was ready; last lines of its log:\n{}",
                    role.name(),
                    self.log_tail(role, 40)
                );
            }
            let last = client.try_send(reqwest::Method::GET, &url, None).await;
            if matches!(&last, Ok(resp) if resp.status == 200) {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                let last = match last {
                    Ok(resp) => format!("{resp:?}"),
                    Err(e) => e.to_string(),
                };
                panic!(
                    "{} not ready within {READY_TIMEOUT:?} (last answer of {url}: {last}); \
                     last lines of its log:\n{}",
                    role.name(),
                    self.log_tail(role, 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends SIGKILL and reaps the process. Does nothing if it is not running.
    pub fn kill(&mut self, role: Role) {
        if let Some(mut child) = self.slot_mut(role).child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits (30 s at most) for the process to exit; returns its status.
    /// Panics if it is not running or does not exit in time (it is then killed).
    pub async fn terminate(&mut self, role: Role) -> ExitStatus {
        let pid = self
            .pid(role)
            .unwrap_or_else(|| panic!("{} is not running", role.name()));
        // `kill -TERM` avoids a libc dependency for one signal.
        let sent = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(sent.success(), "kill -TERM {pid} failed: {sent}");
        self.wait_exit(role, Duration::from_secs(30)).await
    }

    /// Waits for the process to exit on its own and reaps it; panics (after killing it) if it
    /// has not exited after `timeout`.
    pub async fn wait_exit(&mut self, role: Role, timeout: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let slot = self.slot_mut(role);
            let child = slot
                .child
                .as_mut()
                .unwrap_or_else(|| panic!("{} is not running", role.name()));
            if let Some(status) = child.try_wait().expect("wait for a child process") {
                slot.child = None;
                return status;
            }
            if tokio::time::Instant::now() >= deadline {
                self.kill(role);
                panic!(
                    "{} did not exit within {timeout:?}; last lines of its log:\n{}",
                    role.name(),
                    self.log_tail(role, 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the process gracefully if it runs (SIGTERM), then starts it again with the
    /// current environment and waits until it is ready.
    pub async fn restart(&mut self, role: Role) {
        if self.is_running(role) {
            self.terminate(role).await;
        } else {
            // Reap a process that exited on its own.
            self.slot_mut(role).child = None;
        }
        self.start_process(role).await;
    }

    /// Starts one more `worker run` on its own `WORKER_ADDR`, waits until it is ready and
    /// returns its role (the first worker is `Role::Worker(0)`).
    pub async fn spawn_worker(&mut self) -> Role {
        let role = self.add_worker();
        self.start_process(role).await;
        role
    }

    /// Adds a worker slot without starting it (start with [`TestEnv::spawn_process`] or
    /// [`TestEnv::start_process`]). The first slot uses the base `WORKER_ADDR`.
    pub fn add_worker(&mut self) -> Role {
        let addr = if self.workers.is_empty() {
            self.env
                .get("WORKER_ADDR")
                .cloned()
                .unwrap_or_else(|| format!("127.0.0.1:{}", free_port()))
        } else {
            format!("127.0.0.1:{}", free_port())
        };
        self.workers.push(Slot::new(addr));
        Role::Worker(self.workers.len() - 1)
    }

    /// SIGKILL to the API.
    pub fn kill_api(&mut self) {
        self.kill(Role::Api);
    }

    /// SIGTERM to the API, waiting for it to exit.
    pub async fn terminate_api(&mut self) -> ExitStatus {
        self.terminate(Role::Api).await
    }

    /// Restarts the API (see [`TestEnv::restart`]).
    pub async fn restart_api(&mut self) {
        self.restart(Role::Api).await;
    }

    /// SIGKILL to the first worker.
    pub fn kill_worker(&mut self) {
        self.kill(Role::Worker(0));
    }

    /// SIGTERM to the first worker, waiting for it to exit.
    pub async fn terminate_worker(&mut self) -> ExitStatus {
        self.terminate(Role::Worker(0)).await
    }

    /// Restarts the first worker, or starts it if the environment was built without one.
    pub async fn restart_worker(&mut self) {
        if self.workers.is_empty() {
            self.add_worker();
        }
        self.restart(Role::Worker(0)).await;
    }

    /// Every process slot: the API and each worker.
    pub(super) fn roles(&self) -> Vec<Role> {
        std::iter::once(Role::Api)
            .chain((0..self.workers.len()).map(Role::Worker))
            .collect()
    }
}

/// A TCP port that was free a moment ago, for a process to listen on. Chosen below the
/// kernel's ephemeral range (32768 and up here), so outgoing connections of the tests and
/// processes do not take it meanwhile; a clash with another test is retried by
/// [`TestEnv::start_process`].
pub fn free_port() -> u16 {
    use rand::Rng;
    let mut rng = rand::rng();
    for _ in 0..200 {
        let port = rng.random_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("find a free TCP port")
        .port()
}
