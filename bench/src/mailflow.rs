//! The mail side of the benchmark: how fast mails reach the SMTP sink (from a timed start to
//! the sink's own receive timestamps), the lettre ceiling (the same kind of mail sent straight
//! to a sink with the worker's concurrency and a pooled transport), and end-to-end latency
//! from a request to its mail's arrival.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use harness::{Api, ReceivedMail, SmtpSink, TestEnv};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::load;
use crate::stats::{Latency, per_second};

/// How long it took for `count` mails to arrive.
#[derive(Debug, Clone, Copy, Default)]
pub struct MailRate {
    pub count: usize,
    /// From the timed start (process spawn, or the first send) to the last mail received.
    pub from_start: Duration,
    /// From the first mail received to the last.
    pub first_to_last: Duration,
}

impl MailRate {
    /// Measures `mails` (their `received_at`) against `start`.
    pub fn of(mails: &[ReceivedMail], start: DateTime<Utc>) -> MailRate {
        let first = mails.iter().map(|m| m.received_at).min();
        let last = mails.iter().map(|m| m.received_at).max();
        let (Some(first), Some(last)) = (first, last) else {
            return MailRate::default();
        };
        let std = |d: chrono::TimeDelta| d.to_std().unwrap_or_default();
        MailRate {
            count: mails.len(),
            from_start: std(last - start),
            first_to_last: std(last - first),
        }
    }

    /// Mails per second from the timed start (includes start-up).
    pub fn rate_from_start(&self) -> f64 {
        per_second(self.count as f64, self.from_start)
    }

    /// Mails per second between the first and the last arrival (steady state): N-1
    /// intervals over that span.
    pub fn rate_steady(&self) -> f64 {
        per_second(self.count.saturating_sub(1) as f64, self.first_to_last)
    }
}

/// A backlog of mail jobs waiting in RabbitMQ for a worker (phase 2, phase 8).
#[derive(Debug, Clone, Default)]
pub struct Backlog {
    /// One user per job, so no job supersedes another.
    pub users: Vec<String>,
    /// Enqueueing through the API (16 connections), and its failed requests.
    pub enqueue_time: Duration,
    pub enqueue_errors: u64,
    /// From the last request to an empty outbox (every job published).
    pub publish_wait: Duration,
}

/// With no worker running: creates `jobs` users (`bench-<tag>-<i>`), sets each one's address
/// with `sendCode` (`<tag>drain-<i>@...`) and waits until the api has published every job.
pub async fn enqueue_backlog(env: &TestEnv, jobs: usize, tag: &str) -> Backlog {
    let api = env.api();
    let users = load::create_users(&api, tag, jobs, 16).await;
    let address_tag = if tag == "w" {
        "drain".to_string()
    } else {
        format!("{tag}drain")
    };
    let (enqueue_time, enqueue_errors) = load::each_once(&api, &users, 16, &address_tag).await;
    let publish_wait = wait_outbox_empty(env, Duration::from_secs(120)).await;
    Backlog {
        users,
        enqueue_time,
        enqueue_errors,
        publish_wait,
    }
}

/// Waits until the outbox is empty (every job published) and returns how long that took;
/// aborts the benchmark after `timeout`.
pub async fn wait_outbox_empty(env: &TestEnv, timeout: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let left: u64 = env
            .psql("SELECT count(*) FROM outbox")
            .await
            .trim()
            .parse()
            .unwrap_or(u64::MAX);
        if left == 0 {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < timeout,
            "the outbox was not published within {timeout:?} ({left} rows left)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The content of a comparable mail: taken from one the worker actually sent.
#[derive(Debug, Clone)]
pub struct MailTemplate {
    pub from: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub raw_size: usize,
}

impl MailTemplate {
    pub fn from_received(mail: &ReceivedMail) -> MailTemplate {
        MailTemplate {
            from: harness::env::MAIL_FROM.to_string(),
            subject: mail.subject().to_string(),
            text: mail.text_body().to_string(),
            html: mail.html_body().to_string(),
            raw_size: mail.raw.len(),
        }
    }
}

/// Sends `count` mails built from `template` (one recipient each, a multipart/alternative
/// text + HTML body, a Message-ID) to a fresh in-process sink through one lettre pooled SMTP
/// transport with `concurrency` sends in flight and a pool of the same size, as the worker
/// does. Returns the rate, measured like the worker's (from the first send / first arrival
/// to the last arrival).
pub async fn lettre_ceiling(template: &MailTemplate, count: usize, concurrency: usize) -> MailRate {
    let sink = SmtpSink::spawn().await;
    let transport: AsyncSmtpTransport<Tokio1Executor> =
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(sink.port())
            .timeout(Some(Duration::from_secs(30)))
            .pool_config(PoolConfig::new().max_size(concurrency.max(1) as u32))
            .build();
    let from: Mailbox = template
        .from
        .parse()
        .expect("MAIL_FROM of the test harness is a valid mailbox");
    let template = Arc::new(template.clone());
    let next = Arc::new(AtomicUsize::new(0));
    let start = Utc::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let transport = transport.clone();
        let template = template.clone();
        let from = from.clone();
        let next = next.clone();
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return;
                }
                let to: Mailbox = format!("ceiling-{i}@bench.example.com")
                    .parse()
                    .expect("a valid recipient");
                let message = Message::builder()
                    .from(from.clone())
                    .to(to)
                    .subject(template.subject.clone())
                    .message_id(Some(format!("<ceiling-{i}@bench.example.com>")))
                    .multipart(MultiPart::alternative_plain_html(
                        template.text.clone(),
                        template.html.clone(),
                    ))
                    .expect("build a mail");
                transport
                    .send(message)
                    .await
                    .expect("lettre could not send to the in-process sink");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a lettre sending task panicked");
    }
    let mails = sink.wait_for(count, Duration::from_secs(60)).await;
    MailRate::of(&mails, start)
}

/// A diagnostic next to the ceiling: the same mails over `concurrency` long-lived lettre
/// connections made from our own TCP streams (`AsyncSmtpConnection::connect_with_transport`),
/// with or without `TCP_NODELAY`. lettre writes the message and the final `\r\n.\r\n` in two
/// writes and never sets `TCP_NODELAY`, so with Nagle's algorithm the terminator waits for the
/// receiver's (delayed) ACK of the message; comparing the two runs shows what that costs.
pub async fn lettre_direct(
    template: &MailTemplate,
    count: usize,
    concurrency: usize,
    nodelay: bool,
) -> MailRate {
    use lettre::transport::smtp::client::AsyncSmtpConnection;
    use lettre::transport::smtp::extension::ClientId;

    let sink = SmtpSink::spawn().await;
    let port = sink.port();
    let from: Mailbox = template
        .from
        .parse()
        .expect("MAIL_FROM of the test harness is a valid mailbox");
    let template = Arc::new(template.clone());
    let next = Arc::new(AtomicUsize::new(0));
    let start = Utc::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let template = template.clone();
        let from = from.clone();
        let next = next.clone();
        tasks.spawn(async move {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect to the in-process sink");
            stream
                .set_nodelay(nodelay)
                .expect("set TCP_NODELAY on a socket");
            let mut conn = AsyncSmtpConnection::connect_with_transport(
                Box::new(stream),
                &ClientId::Domain("bench.localhost".to_string()),
            )
            .await
            .expect("SMTP greeting and EHLO with the in-process sink");
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    let _ = conn.quit().await;
                    return;
                }
                let to: Mailbox = format!("direct-{i}@bench.example.com")
                    .parse()
                    .expect("a valid recipient");
                let message = Message::builder()
                    .from(from.clone())
                    .to(to)
                    .subject(template.subject.clone())
                    .message_id(Some(format!("<direct-{i}@bench.example.com>")))
                    .multipart(MultiPart::alternative_plain_html(
                        template.text.clone(),
                        template.html.clone(),
                    ))
                    .expect("build a mail");
                conn.send(message.envelope(), &message.formatted())
                    .await
                    .expect("lettre could not send to the in-process sink");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("a lettre sending task panicked");
    }
    let mails = sink.wait_for(count, Duration::from_secs(60)).await;
    MailRate::of(&mails, start)
}

/// End-to-end results: request latency and request-to-mail latency.
#[derive(Debug, Clone, Default)]
pub struct EndToEnd {
    pub request: Latency,
    pub to_mail: Latency,
    pub errors: usize,
}

/// Sends `count` set-email requests one after another (user `i % users.len()`, a new address
/// each), waiting after each for its mail at `sink`; measures the time from just before the
/// request to the sink's receive timestamp. Clear the sink first: waiting scans its mails.
pub async fn end_to_end(
    api: &Api,
    sink: &SmtpSink,
    users: &[String],
    count: usize,
    tag: &str,
) -> EndToEnd {
    let mut request = Vec::with_capacity(count);
    let mut to_mail = Vec::with_capacity(count);
    let mut errors = 0;
    for i in 0..count {
        let user = &users[i % users.len()];
        let address = format!("{tag}-{i}@bench.example.com");
        let sent_at = Utc::now();
        let (latency, outcome) = load::set_email(api, user, &address).await;
        if outcome.is_err() {
            errors += 1;
            continue;
        }
        request.push(latency);
        let mails = sink.wait_for_to(&address, 1, Duration::from_secs(60)).await;
        let received = mails[0].received_at;
        to_mail.push((received - sent_at).to_std().unwrap_or_default());
    }
    EndToEnd {
        request: Latency::of(&request),
        to_mail: Latency::of(&to_mail),
        errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        let r = MailRate {
            count: 101,
            from_start: Duration::from_secs(2),
            first_to_last: Duration::from_secs(1),
        };
        assert_eq!(r.rate_from_start(), 50.5);
        assert_eq!(r.rate_steady(), 100.0);
        assert_eq!(MailRate::default().rate_steady(), 0.0);
    }
}
