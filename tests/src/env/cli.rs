//! One-shot CLI runs (`api bootstrap`, `api token create`, `worker jobs list`, ...) with the
//! test's environment, each under a time limit so a hanging command fails its test instead of
//! blocking the whole run, and their output ([`CliOutput`]) with the assertions tests make.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::{TestEnv, passthrough_env};

/// What `api bootstrap` prints.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Bootstrap {
    pub instance_id: String,
    pub org_id: String,
    pub org_domain: String,
    pub token: String,
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

impl TestEnv {
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
