//! The in-process test mode: the real `api::Application` built in the test's own runtime on a
//! port the OS picks, beside the harness's fresh database, vhost, SMTP sink, bootstrap and
//! `worker` process (see [`TestEnv`]). For API behaviour, where starting an `api` process per
//! test only costs time. The CLI, signals, faults and logs stay with the process harness.
//!
//! ```ignore
//! let (w, _app) = spawn_app().await;
//! w.api.post("/v3alpha/users", json!({"username": "mini"})).await.expect_status(201);
//! ```
//!
//! Keep the [`TestApp`] until the test ends: dropping it stops the API.

use std::collections::BTreeMap;

use api::Application;
use api::cli::ServeArgs;
use clap::{Args, FromArgMatches};
use common::shutdown::{Shutdown, Trigger};

use crate::client::Api;
use crate::env::{READY_TIMEOUT, TestEnv, TestEnvBuilder};
use crate::scenario::World;

/// The API running in the test's runtime; dropping it asks the API to stop.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    pub port: u16,
    _stop: Trigger,
}

/// [`World::start`] with the API in process: bootstrap, one `worker` process, SMTP sink.
pub async fn spawn_app() -> (World, TestApp) {
    spawn_app_from(TestEnv::builder()).await
}

/// [`World::start_with`] with the API in process: extra variables for the API and the worker.
pub async fn spawn_app_with(vars: &[(&str, &str)]) -> (World, TestApp) {
    let mut builder = TestEnv::builder();
    for (key, value) in vars {
        builder = builder.env(*key, *value);
    }
    spawn_app_from(builder).await
}

/// The environment of `builder`, without its `api` process, and the API in process instead.
pub async fn spawn_app_from(builder: TestEnvBuilder) -> (World, TestApp) {
    let env = builder.without_api().start().await;
    let mut config = serve_args(env.base_env());
    config.api_addr = "127.0.0.1:0".parse().expect("a socket address");
    let app = Application::build(config)
        .await
        .unwrap_or_else(|e| panic!("build the api: {e}"));
    let port = app.port();
    let address = format!("http://127.0.0.1:{port}");
    let (stop, shutdown) = Shutdown::triggered_by_hand();
    tokio::spawn(async move {
        if let Err(e) = app.run_until(shutdown).await {
            eprintln!("the in-process api failed: {e}");
        }
    });
    let api = Api::new(address.clone(), Some(env.token().to_owned()));
    wait_ready(&api).await;
    let world = World { env, api };
    (
        world,
        TestApp {
            address,
            port,
            _stop: stop,
        },
    )
}

/// Waits until `/readyz` answers 200 with the broker link up, as the process harness waits
/// for a started `api`; in process the first request can come sooner than the link.
async fn wait_ready(api: &Api) {
    let anonymous = api.without_token();
    crate::eventually("the in-process api to be ready", READY_TIMEOUT, || {
        let anonymous = anonymous.clone();
        async move {
            let ready = anonymous.get("/readyz").await;
            (ready.status == 200 && ready.json["broker"] == "ok").then_some(())
        }
    })
    .await;
}

/// `api serve`'s configuration from the variables the harness gives its processes, read
/// the way the binary reads them (each variable is also a flag) but from `vars` alone: the
/// test's own environment is not consulted, as the processes do not see it either.
fn serve_args(vars: &BTreeMap<String, String>) -> ServeArgs {
    let command = ServeArgs::augment_args(clap::Command::new("serve"));
    let mut argv = vec!["serve".to_owned()];
    for arg in command.get_arguments() {
        let (Some(var), Some(long)) = (arg.get_env(), arg.get_long()) else {
            continue;
        };
        if let Some(value) = var.to_str().and_then(|var| vars.get(var)) {
            argv.push(format!("--{long}={value}"));
        }
    }
    let matches = command
        .mut_args(|arg| arg.env(None::<&str>))
        .try_get_matches_from(argv)
        .unwrap_or_else(|e| panic!("the harness's variables as `api serve` flags: {e}"));
    ServeArgs::from_arg_matches(&matches)
        .unwrap_or_else(|e| panic!("the harness's variables as `api serve` flags: {e}"))
}
