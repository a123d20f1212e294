//! Black-box test harness for the contact email service.
//!
//! Tests drive the real `api` and `worker` binaries from outside, as SPEC.md describes them:
//! [`TestEnv`] gives each test its own database, RabbitMQ vhost, ports and [`SmtpSink`], and
//! runs the processes; [`Api`] talks HTTP to the API; [`ReceivedMail`] (see [`mail`]) reads
//! the mails that arrive; [`TcpProxy`] (see [`proxy`]) cuts one environment off from the
//! shared PostgreSQL or RabbitMQ to simulate an outage; [`grpc`] talks gRPC and gRPC-Web to
//! the same port. [`app`] is the in-process mode: the API built as a library in the test's
//! runtime, for API behaviour tests that need no process of their own.

pub mod app;
pub mod client;
pub mod cluster;
pub mod env;
pub mod grpc;
pub mod mail;
pub mod postfix;
pub mod proxy;
pub mod scenario;
pub mod smtp_sink;

use std::future::Future;
use std::time::Duration;

pub use client::{Api, Body, Method, Resp};
pub use env::{Bootstrap, CliOutput, Role, TestEnv, TestEnvBuilder};
pub use mail::ParsedMail;
pub use proxy::TcpProxy;
pub use smtp_sink::{ReceivedMail, SinkMode, SmtpSink};

/// Polls `check` every 100 ms until it returns `Some`, and returns that value. Panics with
/// `what` after `timeout`. For conditions only observable by asking again, such as a job's
/// state in `worker jobs list`. The closure is called again for each attempt, so capture
/// references and use `async move`:
///
/// ```ignore
/// let env = &env;
/// let job = eventually("the job to fail", Duration::from_secs(30), || async move {
///     env.jobs(&[]).await.into_iter().find(|j| j["state"] == "failed")
/// })
/// .await;
/// ```
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
