//! Faults from outside (SPEC 8, DESIGN "Fault tests"): a worker killed or stopped while mails
//! are in flight, RabbitMQ unreachable for the API and the worker, PostgreSQL unreachable for
//! both. Outages are simulated with the harness's [`TcpProxy`] in front of the shared servers,
//! so parallel tests are not affected. Every accepted request's mail must arrive, and no mail
//! twice beyond the documented window (SMTP acceptance to the state change being recorded).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;
use tests::{Api, ReceivedMail, Role, TcpProxy, TestEnv, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The recipients of the jobs that are `sending` right now.
async fn sending_recipients(env: &TestEnv) -> BTreeSet<String> {
    env.jobs(&["--status", "sending", "--limit", "1000"])
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

/// Waits until at least `n` jobs are `sending` (mails in flight).
async fn wait_sending(env: &TestEnv, n: usize) {
    eventually(
        &format!("{n} mail(s) in flight (jobs in state sending)"),
        WAIT,
        || async move { (sending_recipients(env).await.len() >= n).then_some(()) },
    )
    .await;
}

/// Waits until at least one job is `sending` (a mail is in flight).
async fn wait_in_flight(env: &TestEnv) {
    wait_sending(env, 1).await;
}

/// Checks SPEC 8's duplicate window on the mails received: one Message-ID per job, every
/// copy of one Message-ID to the same recipient, and extra copies only of mails that were in
/// flight (`in_flight`: their recipients) when the process was cut off. Returns the number
/// of duplicates.
#[track_caller]
fn assert_duplicates_within_window(
    mails: &[ReceivedMail],
    jobs: usize,
    in_flight: &BTreeSet<String>,
) -> usize {
    let groups = by_message_id(mails);
    assert_eq!(
        groups.len(),
        jobs,
        "one Message-ID per job (a redelivered job is the same mail, SPEC 6)"
    );
    let mut duplicates = 0;
    for (id, copies) in &groups {
        let to: BTreeSet<String> = copies
            .iter()
            .flat_map(|m| m.recipients.iter().map(|r| r.to_ascii_lowercase()))
            .collect();
        assert_eq!(
            to.len(),
            1,
            "Message-ID {id} went to several recipients: {to:?}"
        );
        if copies.len() > 1 {
            duplicates += copies.len() - 1;
            let recipient = to.into_iter().next().unwrap_or_default();
            assert!(
                in_flight.contains(&recipient),
                "mail to {recipient} ({id}) arrived {} times but was not in flight at the \
                 cut; in flight were: {in_flight:?}",
                copies.len()
            );
            assert_eq!(
                copies.len(),
                2,
                "mail {id} to {recipient} arrived more than twice after one cut"
            );
        }
    }
    assert!(
        duplicates <= in_flight.len(),
        "{duplicates} duplicates but only {} mails were in flight",
        in_flight.len()
    );
    duplicates
}

// Slow-ish (~15-25 s): 50 mails through a sink that takes 300 ms to accept each.
#[tokio::test]
async fn a_worker_killed_mid_batch_loses_no_mail_and_duplicates_stay_in_the_window() {
    const N: usize = 50;
    const CONCURRENCY: usize = 8;
    let mut env = TestEnv::builder()
        .env("WORKER_CONCURRENCY", CONCURRENCY.to_string())
        .without_worker()
        .start()
        .await;
    let api = env.api();
    let users = users_with_mail(&api, "burst", N).await;
    let addresses: Vec<String> = users.iter().map(|(_, a)| a.clone()).collect();

    env.sink.data_delay(Duration::from_millis(300));
    env.restart_worker().await;
    env.sink.wait_for(10, WAIT).await;
    env.kill_worker();

    let in_flight = sending_recipients(&env).await;
    let sent_at_kill = env
        .jobs(&["--status", "sent", "--limit", "1000"])
        .await
        .len();
    assert!(
        !in_flight.is_empty() && sent_at_kill < N,
        "the kill must hit mails in flight (sending: {}, sent: {sent_at_kill})",
        in_flight.len()
    );
    assert!(
        in_flight.len() <= CONCURRENCY,
        "WORKER_CONCURRENCY={CONCURRENCY} but {} mails were in flight",
        in_flight.len()
    );

    env.sink.data_delay(Duration::ZERO);
    env.restart_worker().await;
    wait_all_recipients(&env, &addresses, Duration::from_secs(90)).await;
    wait_jobs_in_state(&env, "sent", N, WAIT).await;
    env.sink
        .assert_count_stays(env.sink.count(), Duration::from_secs(1))
        .await;

    let mails = env.sink.messages();
    let duplicates = assert_duplicates_within_window(&mails, N, &in_flight);
    eprintln!(
        "killed with {} in flight and {sent_at_kill} sent: {} mails, {duplicates} duplicates",
        in_flight.len(),
        mails.len()
    );

    // Replaying them all is refused job by job; stdout carries only those lines (a progress
    // bar, if any, goes to stderr).
    let jobs = env.jobs(&["--limit", "1000"]).await;
    let mut args = Vec::new();
    for job in &jobs {
        args.push("--id".to_owned());
        args.push(id_of(job));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = replay(&env, &args).await;
    let lines = replay_lines(&out, 0, N);
    let expected: BTreeSet<String> = jobs
        .iter()
        .map(|j| format!("skipped {}: sent", id_of(j)))
        .collect();
    assert_eq!(lines.len(), N + 1, "stdout:\n{}", out.stdout);
    assert_eq!(skip_lines(&lines), expected, "stdout:\n{}", out.stdout);
}

#[tokio::test]
async fn sigterm_finishes_or_hands_back_the_mails_in_flight_and_exits_0() {
    const N: usize = 10;
    let mut env = TestEnv::builder()
        .env("WORKER_CONCURRENCY", "4")
        .without_worker()
        .start()
        .await;
    let api = env.api();
    let users = users_with_mail(&api, "drain", N).await;
    let addresses: Vec<String> = users.iter().map(|(_, a)| a.clone()).collect();

    env.sink.data_delay(Duration::from_millis(1500));
    env.restart_worker().await;
    wait_in_flight(&env).await;
    let status = env.terminate_worker().await;
    assert_eq!(
        status.code(),
        Some(0),
        "worker run must exit 0 on SIGTERM; log:\n{}",
        env.log_tail(Role::Worker(0), 30)
    );
    let before_restart = env.sink.count();
    assert!(before_restart < N, "the stop must come while mails wait");

    env.sink.data_delay(Duration::ZERO);
    env.restart_worker().await;
    wait_all_recipients(&env, &addresses, WAIT).await;
    wait_jobs_in_state(&env, "sent", N, WAIT).await;
    // A graceful stop leaves no mail half-sent: not even the duplicate window applies.
    env.sink.assert_count_stays(N, Duration::from_secs(1)).await;
    assert_eq!(by_message_id(&env.sink.messages()).len(), N);
}

/// A stop whose mails in flight outlast `WORKER_SHUTDOWN_GRACE`: the worker does not wait for
/// them, exits 0, and hands their jobs back (none is left `sending` for a lease to run out);
/// the next worker sends them. A mail whose final dot was already on the wire may arrive
/// twice (the server accepted it after the worker gave up): the documented window.
#[tokio::test]
async fn sigterm_hands_back_what_outlasts_the_grace_period_and_exits_0() {
    const N: usize = 8;
    const SLOW: Duration = Duration::from_secs(12);
    let mut env = TestEnv::builder()
        .env("WORKER_CONCURRENCY", "4")
        .env("WORKER_SHUTDOWN_GRACE", "1s")
        .without_worker()
        .start()
        .await;
    let api = env.api();
    let users = users_with_mail(&api, "grace", N).await;
    let addresses: Vec<String> = users.iter().map(|(_, a)| a.clone()).collect();

    env.sink.data_delay(SLOW);
    env.restart_worker().await;
    let env_ref = &env;
    let in_flight = eventually("4 mails in flight", WAIT, || async move {
        let sending = sending_recipients(env_ref).await;
        (sending.len() == 4).then_some(sending)
    })
    .await;
    let stopping = Instant::now();
    let status = env.terminate_worker().await;
    let took = stopping.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "worker run must exit 0 on SIGTERM; log:\n{}",
        env.log_tail(Role::Worker(0), 30)
    );
    assert!(
        took < SLOW - Duration::from_secs(2),
        "with a 1 s grace period the worker must not wait for mails that take {SLOW:?} \
         (it exited after {took:?})"
    );
    let still_sending = sending_recipients(&env).await;
    assert!(
        still_sending.is_empty(),
        "the stop must hand its jobs back, but these are still sending: {still_sending:?}"
    );
    let handed_back = env.jobs(&["--status", "retrying", "--limit", "100"]).await;
    assert!(
        !handed_back.is_empty(),
        "the jobs in flight ({in_flight:?}) must be retrying after the stop"
    );

    env.sink.data_delay(Duration::ZERO);
    env.restart_worker().await;
    wait_all_recipients(&env, &addresses, WAIT).await;
    wait_jobs_in_state(&env, "sent", N, WAIT).await;
    // The aborted deliveries' copies arrive once the sink's delay has passed.
    tokio::time::sleep(SLOW.saturating_sub(stopping.elapsed())).await;
    env.sink
        .assert_count_stays(env.sink.count(), Duration::from_secs(1))
        .await;
    assert_duplicates_within_window(&env.sink.messages(), N, &in_flight);
}

/// `GET /readyz` of the API: status and body.
async fn readyz(api: &Api) -> (u16, Value) {
    let resp = api.without_token().get("/readyz").await;
    (resp.status, resp.json)
}

/// Polls the API's `/readyz` until `broker` is `want`, asserting it stays 200 with the
/// database `ok` throughout.
async fn wait_broker_state(api: &Api, want: &str) {
    let what = format!("/readyz to report broker {want:?}");
    eventually(&what, Duration::from_secs(20), || async move {
        let (status, body) = readyz(api).await;
        assert_eq!(
            status, 200,
            "/readyz must stay 200 without the broker: {body}"
        );
        assert_eq!(body["database"], "ok", "{body}");
        (body["broker"] == want).then_some(())
    })
    .await;
}

/// Sets a contact email (mailed code) and asserts it is answered 200 well under a second.
async fn timed_user_with_mail(api: &Api, name: &str) -> String {
    let user = create_user(api, name).await;
    let address = address(name);
    let started = Instant::now();
    set_email(api, &user, &address).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(750),
        "set contact email took {took:?} with the broker unreachable"
    );
    address
}

#[tokio::test]
async fn the_api_answers_fast_while_rabbitmq_is_unreachable_and_the_mails_follow() {
    let mut env = TestEnv::builder().amqp_via_proxy().start().await;
    let api = env.api();
    wait_broker_state(&api, "ok").await;

    // The broker goes away while a mail is in flight: the mail is sent and recorded; its
    // message comes back later and must not send it again (outside SPEC 8's window).
    env.sink.data_delay(Duration::from_millis(1000));
    let (in_flight_user, in_flight) = user_with_mail(&api, "in-flight").await;
    wait_in_flight(&env).await;
    let proxy = env.amqp_proxy().clone();
    proxy.stop().await;
    env.sink.data_delay(Duration::ZERO);
    env.sink.wait_for_to(&in_flight, 1, WAIT).await;
    wait_state(&env, &in_flight_user, "sent", WAIT).await;

    let mut addresses = vec![in_flight];
    for i in 0..5 {
        addresses.push(timed_user_with_mail(&api, &format!("outage-{i}")).await);
    }
    wait_broker_state(&api, "degraded").await;

    // Both processes stop cleanly and start again while the broker is down.
    let status = env.terminate_api().await;
    assert_eq!(
        status.code(),
        Some(0),
        "api serve on SIGTERM without a broker"
    );
    let status = env.terminate_worker().await;
    assert_eq!(
        status.code(),
        Some(0),
        "worker run on SIGTERM without a broker"
    );
    env.start_process(Role::Api).await;
    env.spawn_process(Role::Worker(0));
    wait_broker_state(&api, "degraded").await;
    for i in 0..3 {
        addresses.push(timed_user_with_mail(&api, &format!("cold-{i}")).await);
    }
    assert_eq!(
        env.sink.count(),
        1,
        "no mail can arrive while the processes cannot reach the broker"
    );

    proxy.start().await;
    env.wait_ready(Role::Worker(0)).await;
    wait_all_recipients(&env, &addresses, Duration::from_secs(60)).await;
    wait_broker_state(&api, "ok").await;
    wait_jobs_in_state(&env, "sent", addresses.len(), WAIT).await;
    env.sink
        .assert_count_stays(addresses.len(), Duration::from_secs(2))
        .await;
    assert_eq!(by_message_id(&env.sink.messages()).len(), addresses.len());
}

#[tokio::test]
async fn the_worker_and_the_api_recover_from_a_postgresql_outage() {
    const N: usize = 4;
    let mut env = TestEnv::builder()
        .env("WORKER_CONCURRENCY", "4")
        .database_via_proxy()
        .start()
        .await;
    let api = env.api();
    env.sink.data_delay(Duration::from_secs(3));
    let users = users_with_mail(&api, "pg", N).await;
    let mut addresses: Vec<String> = users.iter().map(|(_, a)| a.clone()).collect();
    // Every mail claimed before the cut: a claim whose commit lands just as the link drops
    // leaves a job `sending` that no delivery holds (its lease runs out later), so the cut
    // waits until each claim has long been answered.
    wait_sending(&env, N).await;

    let proxy = env.database_proxy().clone();
    proxy.stop().await;
    let cut = tokio::time::Instant::now();
    // CLI runs reach PostgreSQL directly: this is what was in flight at the cut.
    let in_flight = sending_recipients(&env).await;
    env.sink.data_delay(Duration::ZERO);

    let api_ref = &api;
    eventually(
        "the API to report unready",
        Duration::from_secs(15),
        || async move {
            let (status, _) = readyz(api_ref).await;
            (status != 200).then_some(())
        },
    )
    .await;
    let started = Instant::now();
    let during = api
        .try_send(
            tests::Method::POST,
            "/v3alpha/users",
            Some(tests::Body {
                bytes: br#"{"username":"during"}"#.to_vec(),
                content_type: Some("application/json".into()),
            }),
        )
        .await;
    let took = started.elapsed();
    match during {
        Ok(resp) => assert!(
            resp.status >= 500,
            "a request without the database cannot succeed: {resp:?}"
        ),
        Err(e) => panic!("no answer without the database after {took:?}: {e}"),
    }
    assert!(
        took < Duration::from_secs(10),
        "answered only after {took:?}"
    );
    // The ops commands report an unreachable database as an operational error (SPEC 7).
    let proxied_db = env
        .process_env("DATABASE_URL")
        .expect("DATABASE_URL")
        .to_owned();
    for args in [
        &["jobs", "list", "--json"][..],
        &["jobs", "show", "1", "--json"],
        &["replay", "--failed"],
    ] {
        let out = tokio::time::timeout(
            Duration::from_secs(30),
            env.command("worker")
                .args(args)
                .env("DATABASE_URL", &proxied_db)
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("worker {args:?} hangs without the database"))
        .expect("run worker");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(1),
            "worker {args:?} without the database: stdout {stdout:?}, stderr {:?}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !out.stderr.is_empty(),
            "worker {args:?}: a message on stderr"
        );
        assert!(
            stdout.trim().is_empty(),
            "worker {args:?}: nothing on stdout: {stdout:?}"
        );
    }
    // Mails in flight at the cut are accepted by the server meanwhile; the outage then lasts
    // longer than any sensible wait for a database connection, so the worker has to give up
    // on those deliveries and recover them later.
    env.sink
        .wait_for(in_flight.len(), Duration::from_secs(10))
        .await;
    tokio::time::sleep_until(cut + Duration::from_millis(8500)).await;

    proxy.start().await;
    env.wait_ready(Role::Api).await;
    env.wait_ready(Role::Worker(0)).await;
    wait_all_recipients(&env, &addresses, Duration::from_secs(60)).await;
    wait_jobs_in_state(&env, "sent", N, Duration::from_secs(60)).await;

    // New requests work and are delivered.
    for i in 0..2 {
        let (_, address) = user_with_mail(&api, &format!("pg-after-{i}")).await;
        addresses.push(address);
    }
    wait_all_recipients(&env, &addresses, WAIT).await;
    wait_jobs_in_state(&env, "sent", N + 2, WAIT).await;
    env.sink
        .assert_count_stays(env.sink.count(), Duration::from_secs(1))
        .await;
    let duplicates = assert_duplicates_within_window(&env.sink.messages(), N + 2, &in_flight);
    eprintln!(
        "{} in flight at the cut, {duplicates} duplicates",
        in_flight.len()
    );
    let states: BTreeMap<String, usize> = state_summary(&env).await;
    assert_eq!(states, BTreeMap::from([("sent".to_owned(), N + 2)]));
}

#[tokio::test]
async fn the_proxy_forwards_and_an_outage_cuts_every_connection() {
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = echo.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 || socket.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    async fn ping(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
        stream.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf).await?;
        Ok(buf.to_vec())
    }

    let proxy = TcpProxy::spawn(target).await;
    assert_eq!(proxy.target(), target);
    let mut open = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(ping(&mut open).await.unwrap(), b"ping");

    proxy.stop().await;
    assert!(!proxy.is_running().await);
    assert!(
        TcpStream::connect(proxy.addr()).await.is_err(),
        "a stopped proxy refuses connections"
    );
    let mut buf = [0u8; 4];
    let read = open.read(&mut buf).await;
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "an open connection is cut: {read:?}"
    );

    proxy.start().await;
    let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
    assert_eq!(ping(&mut again).await.unwrap(), b"ping");
    assert_eq!(proxy.accepted(), 2);
}
