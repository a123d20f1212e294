//! A PostgreSQL outage during load (SPEC 8, and 3.6's code 14): requests that arrive while
//! the database is gone fail fast with 503 and code 14, the API and the worker recover by
//! themselves when it is back (no restart), and nothing that was accepted is lost.
//!
//! The machine's PostgreSQL is NOT restarted: every other test shares it. The harness's
//! database proxy (`TestEnvBuilder::database_via_proxy`) stands between this test's processes
//! and the server, and stopping it is what a server restart looks like to them: every open
//! connection is cut and new ones are refused until it listens again. The test itself (jobs
//! list, psql) still reaches the database directly, so it can look while the processes
//! cannot.
//!
//! Prints one `FIGURES` line; `cargo test -p tests --test postgres_restart -- --nocapture`.
//! About a minute.

mod scale;

use std::time::{Duration, Instant};

use scale::*;
use tests::{Role, TestEnv};

/// How long the database stays away.
const OUTAGE: Duration = Duration::from_secs(10);
/// How long a request may take to be refused without the database ("fast": well within any
/// client's timeout; the pool's wait for a connection is part of it).
const FAIL_FAST: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_postgresql_outage_during_load_is_answered_503_fast_and_the_service_recovers_alone() {
    const TEST: &str =
        "a_postgresql_outage_during_load_is_answered_503_fast_and_the_service_recovers_alone";
    const N: usize = 500;
    let started = Instant::now();
    let env = TestEnv::builder()
        .env("WORKER_CONCURRENCY", "8")
        .database_via_proxy()
        .start()
        .await;
    let api = env.api();
    let targets = create_users(&api, "pg-restart", N).await;
    env.sink.data_delay(Duration::from_millis(100));
    // ~25 s of load: before, through and after the outage.
    let load = Load::spawn(vec![api.clone()], targets, 8, 20);
    load.wait_accepted(100, Duration::from_secs(60)).await;

    let proxy = env.database_proxy().clone();
    let cut_at = chrono::Utc::now();
    proxy.stop().await;
    let cut = Instant::now();
    // What the worker held when its database went away (the test still reaches it): only
    // these mails may arrive twice (sent, but their state could not be recorded).
    let in_flight = sending_recipients(&env).await;
    tokio::time::sleep_until(tokio::time::Instant::from_std(cut + OUTAGE)).await;
    let refused_during = load.answered() - load.accepted();
    proxy.start().await;
    let back = Instant::now();
    let back_at = chrono::Utc::now();

    // Recovery by itself: ready again and accepting, without any restart.
    let api_ref = &api;
    tests::eventually(
        "the API to be ready again",
        Duration::from_secs(30),
        || async move {
            let resp = api_ref
                .without_token()
                .try_send(tests::Method::GET, "/readyz", None)
                .await
                .ok()?;
            (resp.status == 200).then_some(())
        },
    )
    .await;
    let api_ready_after = back.elapsed();
    let url = env.url(Role::Worker(0));
    let worker = tests::Api::new(url, None);
    let worker_ref = &worker;
    tests::eventually(
        "the worker to be ready again",
        Duration::from_secs(60),
        || async move {
            let resp = worker_ref
                .try_send(tests::Method::GET, "/readyz", None)
                .await
                .ok()?;
            (resp.status == 200).then_some(())
        },
    )
    .await;
    let worker_ready_after = back.elapsed();

    let requests = load.finish().await;
    let refused: Vec<&Request> = requests.iter().filter(|r| !r.accepted()).collect();
    assert!(
        !refused.is_empty(),
        "the outage must have refused requests (the load ran through it)"
    );
    for request in &refused {
        match &request.answer {
            Answer::Refused { status, code, body } => assert!(
                *status == 503 && *code == Some(14),
                "without the database: 503 with code 14, got {status} {body}"
            ),
            other => panic!("a request without the database got no answer: {other:?}"),
        }
        assert!(
            request.took < FAIL_FAST,
            "a request was refused only after {:?}",
            request.took
        );
        // Refused while the database was away (or on its way back: the pool reconnects).
        assert!(
            request.sent_at >= cut_at - chrono::Duration::seconds(1)
                && request.sent_at <= back_at + chrono::Duration::seconds(10),
            "a request at {} was refused outside the outage ({cut_at} .. {back_at})",
            request.sent_at
        );
    }
    let slowest_refusal = refused.iter().map(|r| r.took).max().unwrap_or_default();
    let accepted_after: usize = requests
        .iter()
        .filter(|r| r.accepted() && r.sent_at > back_at)
        .count();
    assert!(
        accepted_after > 0,
        "requests after the outage must be accepted again"
    );
    let first_accepted_after = requests
        .iter()
        .filter(|r| r.accepted() && r.sent_at > back_at)
        .map(|r| r.sent_at)
        .min()
        .map(|t| (t - back_at).to_std().unwrap_or_default())
        .unwrap_or_default();

    wait_all_delivered(&env, &requests, Duration::from_secs(120)).await;
    let duplicates = assert_duplicates_within_window(&env, &requests, Some(&in_flight)).await;
    let figures = Figures::of(&requests, &env.sink.messages());
    assert_eq!(figures.delivered, figures.accepted);
    assert_eq!(figures.duplicates, duplicates);
    // Every job left is sent: the accepted ones, and any whose commit went through while its
    // answer was lost with the connection (counted as unconfirmed).
    let states = job_states(&env).await;
    assert_eq!(
        states,
        [("sent".to_owned(), figures.accepted + figures.unconfirmed)]
            .into_iter()
            .collect(),
        "every job sent"
    );
    figures.report(
        TEST,
        &format!(
            "database away {:.0} s after 100 accepted, {} jobs sending at the cut; {} refused \
             with 503/14 ({refused_during} by the end of the outage), slowest refusal {:.2} s; \
             API ready {:.1} s and worker ready {:.1} s after, first acceptance {:.1} s \
             after; {accepted_after} accepted after; test took {:.0} s",
            OUTAGE.as_secs_f64(),
            in_flight.len(),
            refused.len(),
            slowest_refusal.as_secs_f64(),
            api_ready_after.as_secs_f64(),
            worker_ready_after.as_secs_f64(),
            first_accepted_after.as_secs_f64(),
            started.elapsed().as_secs_f64()
        ),
    );
}
