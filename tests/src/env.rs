//! One isolated test environment: a fresh PostgreSQL database, a fresh RabbitMQ vhost, an SMTP
//! sink, free ports, and the real `api` and `worker` binaries running as child processes with
//! their logs in a per-test directory. Everything is torn down on drop.
//!
//! Tests only see the service from outside (HTTP, CLI, mails, logs), as SPEC.md describes it.
//! Names are random so tests can run in parallel against the same PostgreSQL and RabbitMQ.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::client::Api;
use crate::proxy::TcpProxy;
use crate::smtp_sink::SmtpSink;

/// `MAIL_FROM` of every test process.
pub const MAIL_FROM: &str = "Contact Email Test <no-reply@ce-test.localhost>";
/// `CODE_ENCRYPTION_KEY` of every test process: standard base64 of the bytes 0..32.
pub const CODE_ENCRYPTION_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// Server part of `DATABASE_URL`; the database name is appended.
pub const POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/";
/// How long a started process may take to answer 200 on `/readyz`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Variables passed through from the test's own environment; everything else is cleared so a
/// developer's shell (a stray `DATABASE_URL` or `SMTP_URL`) cannot leak into a test.
const PASSTHROUGH_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LC_ALL",
    "TZ",
    "TMPDIR",
    "RUST_BACKTRACE",
    "RUST_LIB_BACKTRACE",
    // Coverage runs (cargo llvm-cov) need this to collect profiles from the binaries.
    "LLVM_PROFILE_FILE",
];

/// What `api bootstrap` prints.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Bootstrap {
    pub instance_id: String,
    pub org_id: String,
    pub org_domain: String,
    pub token: String,
}

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

    fn name(self) -> String {
        match self {
            Role::Api => "api".to_string(),
            Role::Worker(i) => format!("worker-{i}"),
        }
    }
}

/// The result of a CLI command.
#[derive(Debug, Clone)]
pub struct CliOutput {
    pub status: ExitStatus,
    /// Exit code; `None` if killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// Panics (showing stdout and stderr) unless the exit code is `expected`.
    #[track_caller]
    pub fn expect_code(&self, expected: i32) -> &CliOutput {
        assert_eq!(
            self.code,
            Some(expected),
            "unexpected exit status {}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Panics unless the command exited with 0.
    #[track_caller]
    pub fn expect_success(&self) -> &CliOutput {
        self.expect_code(0)
    }

    /// stdout parsed as one JSON value; panics if it is not JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// Builds a [`TestEnv`]; get one with [`TestEnv::builder`].
#[derive(Debug, Clone)]
pub struct TestEnvBuilder {
    overrides: Vec<(String, Option<String>)>,
    api: bool,
    worker: bool,
    bootstrap: Option<Vec<String>>,
    file_mail: bool,
    amqp_proxy: bool,
    database_proxy: bool,
}

impl TestEnvBuilder {
    /// Sets (or overrides) a variable for every process and CLI run of this test.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.overrides.push((key.into(), Some(value.into())));
        self
    }

    /// Removes a variable of the base environment (such as `SMTP_URL`).
    pub fn remove_env(mut self, key: impl Into<String>) -> Self {
        self.overrides.push((key.into(), None));
        self
    }

    /// Does not start `worker run` (start one later with [`TestEnv::spawn_worker`]).
    pub fn without_worker(mut self) -> Self {
        self.worker = false;
        self
    }

    /// Does not start `api serve` (start it later with [`TestEnv::start_process`]).
    pub fn without_api(mut self) -> Self {
        self.api = false;
        self
    }

    /// Does not run `api bootstrap`; [`TestEnv::bootstrap`] then panics.
    pub fn without_bootstrap(mut self) -> Self {
        self.bootstrap = None;
        self
    }

    /// Arguments after `api bootstrap` (default none), such as `["--domain", "example.com"]`.
    pub fn bootstrap_args(mut self, args: &[&str]) -> Self {
        self.bootstrap = Some(args.iter().map(|a| a.to_string()).collect());
        self
    }

    /// File mode: no `SMTP_URL`, mails are written to `MAIL_DIR` = [`TestEnv::mail_dir`].
    pub fn file_mail(mut self) -> Self {
        self.file_mail = true;
        self
    }

    /// Points `AMQP_URL` of the `api` and `worker` processes at a [`TcpProxy`] in front of
    /// RabbitMQ, controlled with [`TestEnv::amqp_proxy`], to simulate a broker outage for this
    /// environment only. CLI runs ([`TestEnv::run_worker`] and friends) still connect directly.
    pub fn amqp_via_proxy(mut self) -> Self {
        self.amqp_proxy = true;
        self
    }

    /// Points `DATABASE_URL` of the `api` and `worker` processes at a [`TcpProxy`] in front of
    /// PostgreSQL, controlled with [`TestEnv::database_proxy`], to simulate a database outage
    /// for this environment only. CLI runs (bootstrap, `worker jobs`, [`TestEnv::psql`]) still
    /// connect directly, so a test can look at the database while the processes cannot.
    pub fn database_via_proxy(mut self) -> Self {
        self.database_proxy = true;
        self
    }

    /// Creates the database name, the vhost, the sink and the processes, and waits until the
    /// processes are ready. Panics (after cleaning up) if anything fails.
    pub async fn start(self) -> TestEnv {
        ensure_built();
        let bin_dir = bin_dir();
        let suffix = format!("{:016x}", rand::random::<u64>());
        let name = format!("ce_test_{suffix}");
        let dir = std::env::temp_dir().join(format!("ce-test-{suffix}"));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("create test directory {}: {e}", dir.display()));
        let sink = SmtpSink::spawn().await;
        let api_addr = format!("127.0.0.1:{}", free_port());
        let worker_addr = format!("127.0.0.1:{}", free_port());

        let mut env = BTreeMap::new();
        let mut set = |k: &str, v: String| {
            env.insert(k.to_string(), v);
        };
        set("DATABASE_URL", format!("{POSTGRES_URL}{name}"));
        set(
            "AMQP_URL",
            format!("amqp://guest:guest@127.0.0.1:5672/{name}"),
        );
        set("API_ADDR", api_addr.clone());
        set("WORKER_ADDR", worker_addr.clone());
        set("SMTP_URL", sink.url());
        set("MAIL_FROM", MAIL_FROM.to_string());
        // Tests mail the same addresses many times; the ones about the limits set them.
        set("RESEND_COOLDOWN", "0s".to_string());
        set("MAIL_RECIPIENT_HOURLY_LIMIT", "0".to_string());
        set("CODE_ENCRYPTION_KEY", CODE_ENCRYPTION_KEY.to_string());
        set("LOG_FORMAT", "json".to_string());
        set("RUST_LOG", "info".to_string());
        let mail_dir = dir.join("mail");
        if self.file_mail {
            std::fs::create_dir_all(&mail_dir)
                .unwrap_or_else(|e| panic!("create {}: {e}", mail_dir.display()));
            env.remove("SMTP_URL");
            env.insert("MAIL_DIR".to_string(), mail_dir.display().to_string());
        }
        for (key, value) in self.overrides {
            match value {
                Some(value) => env.insert(key, value),
                None => env.remove(&key),
            };
        }

        // The builder may have overridden the addresses; the processes listen where `env` says.
        let api_addr = env.get("API_ADDR").cloned().unwrap_or(api_addr);
        let worker_addr = env.get("WORKER_ADDR").cloned().unwrap_or(worker_addr);

        let mut amqp_proxy = None;
        if self.amqp_proxy {
            amqp_proxy = Some(Proxied::spawn("AMQP_URL", &env["AMQP_URL"], 5672).await);
        }
        let mut database_proxy = None;
        if self.database_proxy {
            database_proxy = Some(Proxied::spawn("DATABASE_URL", &env["DATABASE_URL"], 5432).await);
        }

        // From here on, `Drop` cleans up whatever a panic leaves behind.
        let mut test_env = TestEnv {
            sink,
            name,
            dir,
            bin_dir,
            mail_dir,
            env,
            bootstrap: None,
            api: Slot::new(api_addr),
            workers: Vec::new(),
            amqp_proxy,
            database_proxy,
        };
        test_env.create_vhost();
        if let Some(args) = &self.bootstrap {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            test_env.run_bootstrap(&args).await;
        }
        if self.api {
            test_env.spawn_process(Role::Api);
        }
        if self.worker {
            test_env.workers.push(Slot::new(worker_addr));
            test_env.spawn_process(Role::Worker(0));
        }
        // Both start concurrently; waiting afterwards saves one startup time.
        if self.api {
            test_env.wait_ready(Role::Api).await;
        }
        if self.worker {
            test_env.wait_ready(Role::Worker(0)).await;
        }
        test_env
    }
}

/// One long-running process slot: its address and log file survive restarts.
struct Slot {
    addr: String,
    child: Option<Child>,
}

impl Slot {
    fn new(addr: String) -> Slot {
        Slot { addr, child: None }
    }
}

/// A proxy in front of a server and the URL that reaches the server through it.
struct Proxied {
    /// The variable the long-running processes get `url` in.
    var: &'static str,
    proxy: TcpProxy,
    url: String,
}

impl Proxied {
    /// A proxy to the host and port of `direct` (`default_port` when it names none), and
    /// `direct` with its host and port replaced by the proxy's.
    async fn spawn(var: &'static str, direct: &str, default_port: u16) -> Proxied {
        use std::net::ToSocketAddrs;
        let mut url = url::Url::parse(direct)
            .unwrap_or_else(|e| panic!("{var} {direct:?} is not a URL: {e}"));
        let host = url.host_str().unwrap_or("127.0.0.1").to_string();
        let port = url.port().unwrap_or(default_port);
        let target = (host.as_str(), port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .unwrap_or_else(|| panic!("{var}: cannot resolve {host}:{port}"));
        let proxy = TcpProxy::spawn(target).await;
        let pointed =
            url.set_host(Some("127.0.0.1")).is_ok() && url.set_port(Some(proxy.port())).is_ok();
        assert!(pointed, "{var}: cannot point {direct:?} at the proxy");
        Proxied {
            var,
            proxy,
            url: url.to_string(),
        }
    }
}

/// An isolated environment for one test. See the module documentation.
pub struct TestEnv {
    /// The SMTP server the processes deliver to (unless in file mode).
    pub sink: SmtpSink,
    /// Database name and vhost name (the same random string).
    name: String,
    dir: PathBuf,
    bin_dir: PathBuf,
    mail_dir: PathBuf,
    env: BTreeMap<String, String>,
    bootstrap: Option<Bootstrap>,
    api: Slot,
    workers: Vec<Slot>,
    amqp_proxy: Option<Proxied>,
    database_proxy: Option<Proxied>,
}

impl TestEnv {
    /// A builder with the defaults: bootstrap, `api serve` and one `worker run`, SMTP mode.
    pub fn builder() -> TestEnvBuilder {
        TestEnvBuilder {
            overrides: Vec::new(),
            api: true,
            worker: true,
            bootstrap: Some(Vec::new()),
            file_mail: false,
            amqp_proxy: false,
            database_proxy: false,
        }
    }

    /// `TestEnv::builder().start()`.
    pub async fn start() -> TestEnv {
        TestEnv::builder().start().await
    }

    // ---- what the test can look at ------------------------------------------------------

    /// The result of the initial `api bootstrap`. Panics if bootstrap was disabled.
    pub fn bootstrap(&self) -> &Bootstrap {
        self.bootstrap
            .as_ref()
            .expect("this TestEnv was built without bootstrap")
    }

    /// The admin token from bootstrap.
    pub fn token(&self) -> &str {
        &self.bootstrap().token
    }

    /// An HTTP client for the API, with the bootstrap token when there is one.
    pub fn api(&self) -> Api {
        Api::new(
            self.api_url(),
            self.bootstrap.as_ref().map(|b| b.token.clone()),
        )
    }

    /// `http://API_ADDR`.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api.addr)
    }

    /// `http://WORKER_ADDR` of the first worker.
    pub fn worker_url(&self) -> String {
        self.url(Role::Worker(0))
    }

    /// `http://ADDR` of any process.
    pub fn url(&self, role: Role) -> String {
        format!("http://{}", self.slot(role).addr)
    }

    /// The variables every process and CLI run gets (on top of a few passed-through ones such
    /// as `PATH`), after the builder's overrides and any [`TestEnv::set_env`].
    pub fn base_env(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    /// Changes a variable for the processes started and CLI runs made from now on.
    pub fn set_env(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.env.insert(key.into(), value.into());
    }

    /// Removes a variable for the processes started and CLI runs made from now on.
    pub fn remove_env(&mut self, key: &str) {
        self.env.remove(key);
    }

    /// The PostgreSQL database name (also the RabbitMQ vhost name).
    pub fn db_name(&self) -> &str {
        &self.name
    }

    /// The RabbitMQ vhost name.
    pub fn vhost(&self) -> &str {
        &self.name
    }

    /// `DATABASE_URL` of this test.
    pub fn database_url(&self) -> &str {
        &self.env["DATABASE_URL"]
    }

    /// `AMQP_URL` of this test.
    pub fn amqp_url(&self) -> &str {
        &self.env["AMQP_URL"]
    }

    /// The proxy between the processes and RabbitMQ. Panics unless the environment was built
    /// with [`TestEnvBuilder::amqp_via_proxy`].
    pub fn amqp_proxy(&self) -> &TcpProxy {
        &self
            .amqp_proxy
            .as_ref()
            .expect("this TestEnv was built without amqp_via_proxy()")
            .proxy
    }

    /// The proxy between the processes and PostgreSQL. Panics unless the environment was
    /// built with [`TestEnvBuilder::database_via_proxy`].
    pub fn database_proxy(&self) -> &TcpProxy {
        &self
            .database_proxy
            .as_ref()
            .expect("this TestEnv was built without database_via_proxy()")
            .proxy
    }

    /// The value of `var` (such as `DATABASE_URL`) the long-running processes get: the proxy's
    /// URL when the variable goes through a proxy, else the base environment's value.
    pub fn process_env(&self, var: &str) -> Option<&str> {
        self.proxied()
            .find(|p| p.var == var)
            .map(|p| p.url.as_str())
            .or_else(|| self.env.get(var).map(String::as_str))
    }

    fn proxied(&self) -> impl Iterator<Item = &Proxied> {
        self.amqp_proxy.iter().chain(self.database_proxy.iter())
    }

    /// The per-test temporary directory (logs, mails in file mode). Kept when a test fails.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `MAIL_DIR` used in file mode (`<dir>/mail`).
    pub fn mail_dir(&self) -> &Path {
        &self.mail_dir
    }

    /// The `.eml` files under [`TestEnv::mail_dir`] (recursively), sorted by path.
    pub fn mail_files(&self) -> Vec<PathBuf> {
        let mut files = Vec::new();
        collect_eml(&self.mail_dir, &mut files);
        files.sort();
        files
    }

    /// Runs a SQL statement on this test's database with `psql` and returns its unaligned,
    /// tuples-only output (`psql -At`). For white-box checks and fault injection only; a test
    /// that can observe the same thing from outside should.
    pub async fn psql(&self, sql: &str) -> String {
        let out = tokio::process::Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", &self.name])
            .args(["-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
            .env("PGCONNECT_TIMEOUT", "5")
            .output()
            .await
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql failed on {sql:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    // ---- CLI ----------------------------------------------------------------------------

    /// A `Command` for `bin` (`"api"` or `"worker"`) with this test's environment, for cases
    /// the helpers below do not cover (stdin, extra variables).
    pub fn command(&self, bin: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(self.bin_dir.join(bin));
        cmd.env_clear()
            .envs(passthrough_env())
            .envs(&self.env)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Runs `api ARGS...` to completion (60 s at most) and returns its output.
    pub async fn run_api(&self, args: &[&str]) -> CliOutput {
        run(self.command("api").args(args), &format!("api {args:?}")).await
    }

    /// Runs `worker ARGS...` to completion (60 s at most) and returns its output.
    pub async fn run_worker(&self, args: &[&str]) -> CliOutput {
        run(
            self.command("worker").args(args),
            &format!("worker {args:?}"),
        )
        .await
    }

    /// Runs `api bootstrap ARGS...` and parses its output; panics unless it succeeds.
    pub async fn run_bootstrap(&mut self, args: &[&str]) -> Bootstrap {
        let mut full = vec!["bootstrap"];
        full.extend_from_slice(args);
        let out = self.run_api(&full).await;
        out.expect_success();
        let bootstrap: Bootstrap = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "api bootstrap printed no valid JSON ({e}):\n{}\nstderr:\n{}",
                out.stdout, out.stderr
            )
        });
        // The first bootstrap is the environment's default identity.
        if self.bootstrap.is_none() {
            self.bootstrap = Some(bootstrap.clone());
        }
        bootstrap
    }

    /// `api token create ARGS...`: returns the printed token; panics unless it succeeds.
    pub async fn create_token(&self, args: &[&str]) -> String {
        let mut full = vec!["token", "create"];
        full.extend_from_slice(args);
        let out = self.run_api(&full).await;
        out.expect_success();
        out.stdout.trim().to_string()
    }

    /// `worker jobs list --json ARGS...`, parsed; panics unless it succeeds.
    pub async fn jobs(&self, args: &[&str]) -> Vec<Value> {
        let mut full = vec!["jobs", "list", "--json"];
        full.extend_from_slice(args);
        let out = self.run_worker(&full).await;
        out.expect_success();
        match out.json() {
            Value::Array(jobs) => jobs,
            other => panic!("worker jobs list --json printed no array: {other}"),
        }
    }

    // ---- long-running processes ---------------------------------------------------------

    fn slot(&self, role: Role) -> &Slot {
        match role {
            Role::Api => &self.api,
            Role::Worker(i) => self
                .workers
                .get(i)
                .unwrap_or_else(|| panic!("no worker {i} in this TestEnv")),
        }
    }

    fn slot_mut(&mut self, role: Role) -> &mut Slot {
        match role {
            Role::Api => &mut self.api,
            Role::Worker(i) => self
                .workers
                .get_mut(i)
                .unwrap_or_else(|| panic!("no worker {i} in this TestEnv")),
        }
    }

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

    /// The last `n` lines of a process's log.
    pub fn log_tail(&self, role: Role, n: usize) -> String {
        let logs = self.logs(role);
        let lines: Vec<&str> = logs.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    // ---- setup and teardown -------------------------------------------------------------

    fn create_vhost(&self) {
        rabbitmqctl(&["add_vhost", &self.name]).expect("create the RabbitMQ vhost");
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            &self.name,
            "guest",
            ".*",
            ".*",
            ".*",
        ])
        .expect("grant guest access to the RabbitMQ vhost");
    }

    fn roles(&self) -> Vec<Role> {
        std::iter::once(Role::Api)
            .chain((0..self.workers.len()).map(Role::Worker))
            .collect()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // Never panic here: a panic while unwinding aborts the whole test binary.
        for role in self.roles() {
            self.kill(role);
        }
        let failed = std::thread::panicking();
        if failed {
            for role in self.roles() {
                let tail = self.log_tail(role, 30);
                if !tail.is_empty() {
                    eprintln!("---- last lines of {} ----\n{tail}", role.name());
                }
            }
        }
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-q"])
            .arg("-c")
            .arg(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .env("PGCONNECT_TIMEOUT", "5")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = rabbitmqctl(&["delete_vhost", &self.name]);
        if failed || std::env::var_os("CE_KEEP_TMP").is_some() {
            eprintln!("test files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Runs `rabbitmqctl ARGS...`; `Err` carries its output when it fails.
fn rabbitmqctl(args: &[&str]) -> Result<(), String> {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run rabbitmqctl: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "rabbitmqctl {args:?} failed with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Runs a CLI command with a time limit so a hanging command fails the test instead of
/// blocking it forever.
async fn run(cmd: &mut tokio::process::Command, what: &str) -> CliOutput {
    let output = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 60 s"))
        .unwrap_or_else(|e| panic!("run {what}: {e}"));
    CliOutput {
        status: output.status,
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn passthrough_env() -> Vec<(String, std::ffi::OsString)> {
    PASSTHROUGH_ENV
        .iter()
        .filter_map(|k| std::env::var_os(k).map(|v| (k.to_string(), v)))
        .collect()
}

fn collect_eml(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_eml(&path, out);
        } else if path.extension().is_some_and(|e| e == "eml") {
            out.push(path);
        }
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

/// The workspace root: the parent of this crate's directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the workspace")
        .to_path_buf()
}

/// Where the `api` and `worker` binaries are: `CE_BIN_DIR`, else `$CARGO_TARGET_DIR/debug`,
/// else `<workspace>/target/debug`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CE_BIN_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        // A relative target dir is relative to where cargo ran: the workspace, here.
        let dir = if dir.is_absolute() {
            dir
        } else {
            workspace_root().join(dir)
        };
        return dir.join("debug");
    }
    workspace_root().join("target").join("debug")
}

/// Builds the binaries once per test process (`cargo build --bins -p api -p worker`) so tests
/// never run stale ones, unless `CE_SKIP_BUILD=1`. Panics with cargo's output if it fails.
pub fn ensure_built() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let result = BUILT.get_or_init(|| {
        if std::env::var("CE_SKIP_BUILD").is_ok_and(|v| v == "1") {
            return Ok(());
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "--bins", "-p", "api", "-p", "worker"])
            .current_dir(workspace_root())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run cargo: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "cargo build --bins -p api -p worker failed with {}:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
