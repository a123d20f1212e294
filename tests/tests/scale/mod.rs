//! Helpers of the scale-out fault tests (tests/cluster.rs, tests/replicas.rs,
//! tests/postgres_restart.rs): a test environment on a RabbitMQ cluster of its own, extra
//! `api serve` replicas, a paced mail load spread over the replicas, and the checks every
//! such test ends with: every accepted mail delivered, duplicates only in SPEC 8's window,
//! and the figures (accepted, delivered, duplicated, longest delay from request to mail).

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tests::cluster::RabbitCluster;
use tests::{Api, Body, Method, ReceivedMail, Role, TestEnv, TestEnvBuilder};

/// Quorum queue the workers consume (SPEC: `mail.send`).
pub const SEND_QUEUE: &str = "mail.send";
/// Domain of every address of these tests.
pub const DOMAIN: &str = "scale.example.com";

// ---- an environment on a cluster ------------------------------------------------------------

/// A [`TestEnv`] whose processes use a RabbitMQ cluster of their own. `env` is declared
/// first so it is dropped first: the processes stop before the nodes do.
pub struct ClusterEnv {
    pub env: TestEnv,
    pub cluster: RabbitCluster,
    pub vhost: String,
    /// The node that led `mail.send` when the processes had started (index).
    pub leader: usize,
}

/// Starts a three-node cluster (or returns `None` after printing why the test is skipped), a
/// vhost on it, and the environment with `builder`'s settings plus `AMQP_URL` = the three
/// nodes: `api serve` lists the leader of `mail.send` first, so it is connected to it; one
/// `worker run` lists it second, because a worker's first connection is its publisher's and
/// the next one (`amqp::connect` moves on round the list) is its consumer's: the leader's node
/// then carries the API's publishing and the worker's consuming. Asserts that it does.
pub async fn cluster_env(test: &str, builder: TestEnvBuilder) -> Option<ClusterEnv> {
    let cluster = RabbitCluster::start_or_skip(test).await?;
    let vhost = cluster.add_vhost().await;
    // The API declares the topology when it connects: with the default leader locator
    // (client-local) node 1, which it connects to first, becomes the leader.
    let mut env = builder
        .env("AMQP_URL", cluster.urls(&vhost, &[0, 1, 2]))
        .without_worker()
        .start()
        .await;
    let leader = cluster
        .wait_leader(&vhost, SEND_QUEUE, &[], Duration::from_secs(30))
        .await;
    if leader != 0 {
        env.set_env(
            "AMQP_URL",
            cluster.urls(&vhost, &cluster.order_from(leader)),
        );
        env.restart(Role::Api).await;
    }
    env.set_env("AMQP_URL", cluster.urls(&vhost, &worker_order(leader)));
    env.restart_worker().await;
    // The API's link comes up within its probe interval; the worker's consumer is up when it
    // is ready.
    let cluster_ref = &cluster;
    let vhost_ref = vhost.as_str();
    let connections = tests::eventually(
        "the API and the worker's consumer connected to the leader",
        Duration::from_secs(30),
        || async move {
            let conns = cluster_ref.connections(vhost_ref, leader).await;
            let on_leader = |name: &str| conns.iter().any(|(n, c)| *n == leader && c == name);
            (on_leader("contact-email-api") && on_leader("contact-email-worker")).then_some(conns)
        },
    )
    .await;
    eprintln!(
        "{test}: mail.send led by {}; connections (node index, name): {connections:?}",
        cluster.node(leader).name
    );
    Some(ClusterEnv {
        env,
        cluster,
        vhost,
        leader,
    })
}

/// Node order for a worker whose consumer should be on `node`: `[node+1, node, node+2]`.
pub fn worker_order(node: usize) -> Vec<usize> {
    vec![(node + 1) % 3, node, (node + 2) % 3]
}

// ---- extra API replicas ---------------------------------------------------------------------

/// One more `api serve` of a [`TestEnv`] (same database, broker and settings), on its own
/// port, with its log in the test's directory. Killed when dropped.
pub struct ApiReplica {
    pub name: String,
    pub addr: String,
    amqp_url: String,
    log: PathBuf,
    child: Option<tokio::process::Child>,
}

impl ApiReplica {
    /// Starts `api serve` with `AMQP_URL` = `amqp_url` and waits until it is ready.
    pub async fn start(env: &TestEnv, name: &str, amqp_url: &str) -> ApiReplica {
        let mut replica = ApiReplica {
            name: name.to_owned(),
            addr: String::new(),
            amqp_url: amqp_url.to_owned(),
            log: env.dir().join(format!("{name}.log")),
            child: None,
        };
        replica.launch(env).await;
        replica
    }

    /// Spawns the process (a new port when its port was taken meanwhile) and waits for
    /// `/readyz` to answer 200.
    async fn launch(&mut self, env: &TestEnv) {
        for _ in 0..3 {
            if self.addr.is_empty() {
                self.addr = format!("127.0.0.1:{}", tests::env::free_port());
            }
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .unwrap_or_else(|e| panic!("open {}: {e}", self.log.display()));
            let log_err = log.try_clone().expect("clone the log file");
            let child = env
                .command("api")
                .arg("serve")
                .env("API_ADDR", &self.addr)
                .env("AMQP_URL", &self.amqp_url)
                .stdout(Stdio::from(log))
                .stderr(Stdio::from(log_err))
                .spawn()
                .unwrap_or_else(|e| panic!("spawn api serve ({}): {e}", self.name));
            self.child = Some(child);
            if self.wait_ready().await {
                return;
            }
            // It exited: retry on another port if that was the reason.
            if !self.logs().contains("cannot listen on") {
                break;
            }
            self.addr.clear();
        }
        panic!(
            "{} exited before it was ready; its log:\n{}",
            self.name,
            tail(&self.logs(), 30)
        );
    }

    /// Polls `/readyz` until 200 (true) or the process exits (false); panics after 30 s.
    async fn wait_ready(&mut self) -> bool {
        let api = self.api(None);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = &mut self.child
                && let Ok(Some(_)) = child.try_wait()
            {
                self.child = None;
                return false;
            }
            if let Ok(resp) = api.try_send(Method::GET, "/readyz", None).await
                && resp.status == 200
            {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{} not ready within 30 s; its log:\n{}",
                    self.name,
                    tail(&self.logs(), 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A client for this replica.
    pub fn api(&self, token: Option<String>) -> Api {
        Api::new(format!("http://{}", self.addr), token)
    }

    /// SIGTERM, then waits (30 s at most) for the exit status.
    pub async fn terminate(&mut self) -> ExitStatus {
        let mut child = self
            .child
            .take()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        let pid = child.id().expect("a running child has a pid");
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
            Ok(status) => status.expect("wait for api serve"),
            Err(_) => {
                let _ = child.kill().await;
                panic!("{} did not stop within 30 s of SIGTERM", self.name);
            }
        }
    }

    /// SIGTERM and start again on the same port.
    pub async fn restart(&mut self, env: &TestEnv) {
        self.terminate().await;
        self.launch(env).await;
    }

    /// SIGKILL.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Everything the replica logged so far.
    pub fn logs(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---- users and the mail load ----------------------------------------------------------------

/// A user who will be asked a mail for, and the address it goes to.
#[derive(Debug, Clone)]
pub struct Target {
    pub user: String,
    pub address: String,
}

/// `n` users (`POST /v3alpha/users`, no email yet), made 16 at a time; addresses
/// `{prefix}-{i}@scale.example.com`.
pub async fn create_users(api: &Api, prefix: &str, n: usize) -> Vec<Target> {
    let started = Instant::now();
    let mut out = vec![None; n];
    let mut set = tokio::task::JoinSet::new();
    let mut next = 0;
    while next < n || !set.is_empty() {
        while next < n && set.len() < 16 {
            let api = api.clone();
            let username = format!("{prefix}-{next}");
            let i = next;
            set.spawn(async move {
                let created = api
                    .post("/v3alpha/users", json!({ "username": username }))
                    .await
                    .expect_status(201);
                (i, created.str_at("/id").to_owned())
            });
            next += 1;
        }
        let (i, user) = set
            .join_next()
            .await
            .expect("a request task")
            .expect("creating a user failed");
        out[i] = Some(Target {
            user,
            address: format!("{prefix}-{i}@{DOMAIN}"),
        });
    }
    eprintln!(
        "{n} users created in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    out.into_iter().map(|t| t.expect("every user")).collect()
}

/// What became of one request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// 200: the mail is promised (SPEC 8).
    Accepted,
    /// Any other HTTP answer.
    Refused {
        status: u16,
        code: Option<i64>,
        body: String,
    },
    /// No HTTP answer although a replica was reached (connection cut, timeout).
    Unanswered(String),
}

/// One `PUT /v3alpha/users/{id}/email` (mailed code) of the load.
#[derive(Debug, Clone)]
pub struct Request {
    pub target: Target,
    /// When it was sent (to the replica that answered).
    pub sent_at: DateTime<Utc>,
    /// How long until the answer.
    pub took: Duration,
    pub answer: Answer,
    /// Index of the replica that answered (or was tried last).
    pub replica: usize,
    /// How many times it was sent (more than once after a transport failure).
    pub tries: usize,
    /// The transport failures before the answer: `refused` (nothing reached the replica), or
    /// the error of a request that was sent but got no answer.
    pub failures: Vec<String>,
}

impl Request {
    pub fn accepted(&self) -> bool {
        matches!(self.answer, Answer::Accepted)
    }
}

/// A mail load running in the background: one set contact email (mailed code) per target,
/// `parallel` at a time, at most `per_second` per second, round-robin over the replicas. A
/// request that gets no HTTP answer goes to the next replica (see [`put_email`]).
pub struct Load {
    task: tokio::task::JoinHandle<()>,
    log: Arc<Mutex<Vec<Request>>>,
    accepted: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
}

impl Load {
    pub fn spawn(apis: Vec<Api>, targets: Vec<Target>, parallel: usize, per_second: u32) -> Load {
        let log = Arc::new(Mutex::new(Vec::with_capacity(targets.len())));
        let accepted = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let queue = Arc::new(Mutex::new(
            targets.into_iter().enumerate().collect::<VecDeque<_>>(),
        ));
        let mut interval =
            tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(per_second.max(1))));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let pace = Arc::new(tokio::sync::Mutex::new(interval));
        let apis = Arc::new(apis);
        let (log2, accepted2, answered2) = (log.clone(), accepted.clone(), answered.clone());
        let task = tokio::spawn(async move {
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..parallel {
                let (queue, pace, apis) = (queue.clone(), pace.clone(), apis.clone());
                let (log, accepted, answered) =
                    (log2.clone(), accepted2.clone(), answered2.clone());
                set.spawn(async move {
                    loop {
                        let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                        let Some((i, target)) = next else { break };
                        pace.lock().await.tick().await;
                        let request = put_email(&apis, i % apis.len(), target).await;
                        if request.accepted() {
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        answered.fetch_add(1, Ordering::Relaxed);
                        log.lock().unwrap_or_else(|e| e.into_inner()).push(request);
                    }
                });
            }
            while let Some(done) = set.join_next().await {
                done.expect("a load task panicked");
            }
        });
        Load {
            task,
            log,
            accepted,
            answered,
        }
    }

    /// Requests answered 200 so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Requests finished so far (any outcome).
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::Relaxed)
    }

    /// The requests finished so far.
    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until `n` requests were accepted; panics after `timeout`.
    pub async fn wait_accepted(&self, n: usize, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.accepted() < n {
            assert!(
                tokio::time::Instant::now() < deadline && !self.task.is_finished(),
                "only {} of {n} requests accepted after {timeout:?}",
                self.accepted()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the load to end and returns every request.
    pub async fn finish(self) -> Vec<Request> {
        self.task.await.expect("the load panicked");
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One set contact email (mailed code), starting with replica `first`. A transport failure
/// (connection refused by a stopped replica, a keep-alive connection closed by one that is
/// stopping) sends the request again to the next replica, as a load balancer would: the call
/// is idempotent (SPEC 3.4: the same address again is a success without a new mail).
async fn put_email(apis: &[Api], first: usize, target: Target) -> Request {
    let path = format!("/v3alpha/users/{}/email", target.user);
    let body = json!({ "email": { "address": target.address, "sendCode": {} } });
    let body = Body {
        bytes: serde_json::to_vec(&body).expect("JSON"),
        content_type: Some("application/json".into()),
    };
    let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
    let sent_at = Utc::now();
    let started = Instant::now();
    let mut tries = 0;
    let mut failures = Vec::new();
    loop {
        let replica = (first + tries) % apis.len();
        tries += 1;
        let result = apis[replica]
            .try_send(Method::PUT, &path, Some(body.clone()))
            .await;
        let answer = match result {
            Ok(resp) if resp.status == 200 => Answer::Accepted,
            Ok(resp) => Answer::Refused {
                status: resp.status,
                code: resp.code(),
                body: resp.text,
            },
            Err(e) if tokio::time::Instant::now() < give_up => {
                failures.push(if e.is_connect() {
                    "refused".to_owned()
                } else {
                    e.to_string()
                });
                if tries % apis.len() == 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                continue;
            }
            Err(e) => Answer::Unanswered(e.to_string()),
        };
        return Request {
            target,
            sent_at,
            took: started.elapsed(),
            answer,
            replica,
            tries,
            failures,
        };
    }
}

// ---- what arrived -------------------------------------------------------------------------

/// The numbers each fault test reports.
#[derive(Debug, Clone, Default)]
pub struct Figures {
    pub requests: usize,
    pub accepted: usize,
    /// Accepted requests whose mail arrived.
    pub delivered: usize,
    /// Mails received in all.
    pub mails: usize,
    /// Copies beyond the first of one Message-ID.
    pub duplicates: usize,
    /// Mails to recipients whose request was not accepted (answered 503 while its transaction
    /// was committed: the client cannot know).
    pub unconfirmed: usize,
    /// Longest time from an accepted request to the first copy of its mail.
    pub longest_delay: Duration,
}

impl Figures {
    pub fn of(requests: &[Request], mails: &[ReceivedMail]) -> Figures {
        let mut first: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
        let mut ids = BTreeSet::new();
        for mail in mails {
            ids.insert(mail.message_id().to_owned());
            for to in &mail.recipients {
                let at = first
                    .entry(to.to_ascii_lowercase())
                    .or_insert(mail.received_at);
                *at = (*at).min(mail.received_at);
            }
        }
        let mut figures = Figures {
            requests: requests.len(),
            mails: mails.len(),
            duplicates: mails.len() - ids.len(),
            ..Figures::default()
        };
        let accepted: BTreeSet<String> = requests
            .iter()
            .filter(|r| r.accepted())
            .map(|r| r.target.address.to_ascii_lowercase())
            .collect();
        for request in requests.iter().filter(|r| r.accepted()) {
            figures.accepted += 1;
            if let Some(at) = first.get(&request.target.address.to_ascii_lowercase()) {
                figures.delivered += 1;
                let delay = (*at - request.sent_at).to_std().unwrap_or_default();
                figures.longest_delay = figures.longest_delay.max(delay);
            }
        }
        figures.unconfirmed = first.keys().filter(|a| !accepted.contains(*a)).count();
        figures
    }

    /// Prints the figures (stdout, shown with `--nocapture`) on one line.
    pub fn report(&self, test: &str, extra: &str) {
        println!(
            "FIGURES {test}: requests {}, accepted {}, delivered {}, mails {}, duplicated {}, \
             unconfirmed {}, longest delay {:.1} s{}{extra}",
            self.requests,
            self.accepted,
            self.delivered,
            self.mails,
            self.duplicates,
            self.unconfirmed,
            self.longest_delay.as_secs_f64(),
            if extra.is_empty() { "" } else { "; " },
        );
    }
}

/// The addresses of the accepted requests, lower-cased.
pub fn accepted_addresses(requests: &[Request]) -> BTreeSet<String> {
    requests
        .iter()
        .filter(|r| r.accepted())
        .map(|r| r.target.address.to_ascii_lowercase())
        .collect()
}

/// Waits until every accepted request's mail has arrived and the jobs have settled (none
/// `queued`, `sending` or `retrying`), then that no more mail comes for 2 s. On timeout,
/// panics with what is missing and the jobs' states.
pub async fn wait_all_delivered(env: &TestEnv, requests: &[Request], timeout: Duration) {
    let wanted = accepted_addresses(requests);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let got: BTreeSet<String> = env
            .sink
            .messages()
            .iter()
            .flat_map(|m| m.recipients.iter().map(|r| r.to_ascii_lowercase()))
            .collect();
        let missing: Vec<&String> = wanted.difference(&got).collect();
        if missing.is_empty() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            let states = job_states(env).await;
            let sample: Vec<&&String> = missing.iter().take(10).collect();
            let mut detail = String::new();
            for address in missing.iter().take(3) {
                if let Some(r) = requests
                    .iter()
                    .find(|r| r.target.address.eq_ignore_ascii_case(address))
                {
                    let jobs = env.jobs(&["--user", &r.target.user]).await;
                    detail.push_str(&format!("\n{address}: {jobs:?}"));
                }
            }
            panic!(
                "LOST MAIL: {} of {} accepted mails not delivered after {timeout:?} (first: \
                 {sample:?}); job states: {states:?}{detail}",
                missing.len(),
                wanted.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
    let env_ref = env;
    tests::eventually(
        "every job to settle",
        remaining.max(Duration::from_secs(30)),
        || async move {
            let states = job_states(env_ref).await;
            let moving = ["queued", "sending", "retrying"]
                .iter()
                .any(|s| states.contains_key(*s));
            (!moving).then_some(())
        },
    )
    .await;
    env.sink
        .assert_count_stays(env.sink.count(), Duration::from_secs(2))
        .await;
}

/// How many jobs are in each state (`worker jobs list`).
pub async fn job_states(env: &TestEnv) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for job in env.jobs(&["--limit", "100000"]).await {
        *counts
            .entry(job["state"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    counts
}

/// The recipients of the jobs `sending` right now.
pub async fn sending_recipients(env: &TestEnv) -> BTreeSet<String> {
    env.jobs(&["--status", "sending", "--limit", "100000"])
        .await
        .iter()
        .map(|j| {
            j["recipient"]
                .as_str()
                .unwrap_or_default()
                .to_ascii_lowercase()
        })
        .collect()
}

fn time(value: &Value) -> Option<DateTime<Utc>> {
    value
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// Checks SPEC 8's duplicate window on the mails received and returns the number of
/// duplicates:
/// - one recipient per Message-ID (a redelivered job is the same mail), one Message-ID per
///   job of an accepted request, at most two copies of one;
/// - a second copy only from a delivery that began after the first copy was accepted by the
///   SMTP server: two deliveries of one job running side by side are outside the window
///   (checked on the job's attempt history, `worker jobs show`: at most one recorded
///   successful attempt may have started before the first copy arrived);
/// - with `in_flight` (recipients whose jobs were `sending` when a process was killed), only
///   those mails may come twice.
pub async fn assert_duplicates_within_window(
    env: &TestEnv,
    requests: &[Request],
    in_flight: Option<&BTreeSet<String>>,
) -> usize {
    let mails = env.sink.messages();
    let mut by_id: BTreeMap<String, Vec<&ReceivedMail>> = BTreeMap::new();
    for mail in &mails {
        by_id
            .entry(mail.message_id().to_owned())
            .or_default()
            .push(mail);
    }
    let users: BTreeMap<String, &Request> = requests
        .iter()
        .map(|r| (r.target.address.to_ascii_lowercase(), r))
        .collect();
    let accepted = accepted_addresses(requests);
    let ids_of_accepted = by_id
        .values()
        .filter(|copies| {
            copies[0]
                .recipients
                .iter()
                .any(|r| accepted.contains(&r.to_ascii_lowercase()))
        })
        .count();
    assert_eq!(
        ids_of_accepted,
        accepted.len(),
        "one Message-ID per accepted job (SPEC 6: a redelivered job is the same mail)"
    );
    let mut duplicates = 0;
    let mut outside = Vec::new();
    for (id, copies) in &by_id {
        let to: BTreeSet<String> = copies
            .iter()
            .flat_map(|m| m.recipients.iter().map(|r| r.to_ascii_lowercase()))
            .collect();
        assert_eq!(
            to.len(),
            1,
            "Message-ID {id} went to several recipients: {to:?}"
        );
        if copies.len() == 1 {
            continue;
        }
        duplicates += copies.len() - 1;
        let recipient = to.into_iter().next().unwrap_or_default();
        assert!(
            copies.len() <= 2,
            "mail {id} to {recipient} arrived {} times",
            copies.len()
        );
        if let Some(in_flight) = in_flight {
            assert!(
                in_flight.contains(&recipient),
                "mail to {recipient} ({id}) arrived twice but was not in flight when the \
                 process was killed"
            );
        }
        let first_accepted = copies
            .iter()
            .map(|m| m.received_at)
            .min()
            .unwrap_or_default();
        let Some(request) = users.get(&recipient) else {
            continue;
        };
        let jobs = env.jobs(&["--user", &request.target.user]).await;
        for job in jobs {
            let job_id = job["id"].as_str().unwrap_or_default().to_owned();
            let out = env.run_worker(&["jobs", "show", &job_id, "--json"]).await;
            out.expect_success();
            let shown = out.json();
            let history = shown["history"].as_array().cloned().unwrap_or_default();
            let sent_starts: Vec<DateTime<Utc>> = history
                .iter()
                .filter(|a| a["outcome"] == "sent")
                .filter_map(|a| time(&a["at"]))
                .collect();
            let before_first = sent_starts
                .iter()
                .filter(|at| **at < first_accepted)
                .count();
            eprintln!(
                "duplicate: job {job_id} to {recipient}: copies accepted at {:?}; history {}",
                copies.iter().map(|m| m.received_at).collect::<Vec<_>>(),
                Value::Array(history.clone())
            );
            if before_first > 1 {
                outside.push(format!(
                    "job {job_id} to {recipient}: {before_first} deliveries started before the \
                     first copy was accepted at {first_accepted} (history: {})",
                    Value::Array(history)
                ));
            }
        }
    }
    assert!(
        outside.is_empty(),
        "DUPLICATES OUTSIDE SPEC 8's WINDOW (one job delivered by two deliveries side by \
         side):\n{}",
        outside.join("\n")
    );
    duplicates
}

/// Every request must have been answered 200.
#[track_caller]
pub fn assert_all_accepted(requests: &[Request]) {
    let refused: Vec<&Request> = requests.iter().filter(|r| !r.accepted()).collect();
    assert!(
        refused.is_empty(),
        "{} of {} requests were not accepted, first: {:?}",
        refused.len(),
        requests.len(),
        refused.first()
    );
}

/// The longest answer time of the accepted requests.
pub fn slowest_answer(requests: &[Request]) -> Duration {
    requests
        .iter()
        .filter(|r| r.accepted())
        .map(|r| r.took)
        .max()
        .unwrap_or_default()
}

/// `pg_stat_database.deadlocks` of the test's database.
pub async fn deadlocks(env: &TestEnv) -> u64 {
    env.psql("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        .await
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("deadlocks is not a number: {e}"))
}
