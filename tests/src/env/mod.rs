//! One isolated test environment: a fresh PostgreSQL database, a fresh RabbitMQ vhost, an SMTP
//! sink, free ports, and the real `api` and `worker` binaries running as child processes with
//! their logs in a per-test directory. Everything is torn down on drop.
//!
//! Tests only see the service from outside (HTTP, CLI, mails, logs), as SPEC.md describes it.
//! Names are random so tests can run in parallel against the same PostgreSQL and RabbitMQ.
//!
//! This module holds [`TestEnv`], its builder and what a test reads off it; each other concern
//! has its own file: the long-running processes ([`process`]), one-shot CLI runs ([`cli`]),
//! their logs ([`logs`]), the binaries ([`binaries`]), the vhost ([`broker`]), the database
//! ([`database`]) and the outage proxies ([`proxies`]).

mod binaries;
mod broker;
mod cli;
mod database;
mod logs;
mod process;
mod proxies;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::client::Api;
use crate::smtp_sink::SmtpSink;

pub use binaries::{bin_dir, ensure_built, workspace_root};
pub use cli::{Bootstrap, CliOutput};
pub use process::{Role, free_port};

use process::Slot;
use proxies::Proxied;

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
        let mail_dir = dir.join("mail");
        let env = self.variables(&name, &sink, &api_addr, &worker_addr, &mail_dir);

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
        self.launch(&mut test_env, worker_addr).await;
        test_env
    }

    /// The variables of every process and CLI run: the test's database, vhost, addresses and
    /// sink, the harness's defaults, then the builder's overrides. Creates `mail_dir` in file
    /// mode.
    fn variables(
        &self,
        name: &str,
        sink: &SmtpSink,
        api_addr: &str,
        worker_addr: &str,
        mail_dir: &Path,
    ) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        let mut set = |k: &str, v: String| {
            env.insert(k.to_string(), v);
        };
        set("DATABASE_URL", format!("{POSTGRES_URL}{name}"));
        set(
            "AMQP_URL",
            format!("amqp://guest:guest@127.0.0.1:5672/{name}"),
        );
        set("API_ADDR", api_addr.to_string());
        set("WORKER_ADDR", worker_addr.to_string());
        set("SMTP_URL", sink.url());
        set("MAIL_FROM", MAIL_FROM.to_string());
        // Tests mail the same addresses many times; the ones about the limits set them.
        set("RESEND_COOLDOWN", "0s".to_string());
        set("MAIL_RECIPIENT_HOURLY_LIMIT", "0".to_string());
        set("CODE_ENCRYPTION_KEY", CODE_ENCRYPTION_KEY.to_string());
        set("LOG_FORMAT", "json".to_string());
        set("RUST_LOG", "info".to_string());
        if self.file_mail {
            std::fs::create_dir_all(mail_dir)
                .unwrap_or_else(|e| panic!("create {}: {e}", mail_dir.display()));
            env.remove("SMTP_URL");
            env.insert("MAIL_DIR".to_string(), mail_dir.display().to_string());
        }
        for (key, value) in &self.overrides {
            match value {
                Some(value) => env.insert(key.clone(), value.clone()),
                None => env.remove(key),
            };
        }
        env
    }

    /// Runs the bootstrap and starts the processes the builder asked for, then waits until
    /// they are ready.
    async fn launch(&self, test_env: &mut TestEnv, worker_addr: String) {
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
        database::drop_database(&self.name);
        broker::delete_vhost(&self.name);
        if failed || std::env::var_os("CE_KEEP_TMP").is_some() {
            eprintln!("test files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Variables passed through from the test's own environment (see [`PASSTHROUGH_ENV`]), for
/// the processes and the CLI runs.
fn passthrough_env() -> Vec<(String, std::ffi::OsString)> {
    PASSTHROUGH_ENV
        .iter()
        .filter_map(|k| std::env::var_os(k).map(|v| (k.to_string(), v)))
        .collect()
}

/// Adds the `.eml` files under `dir` (recursively) to `out`.
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
