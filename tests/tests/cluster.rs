//! SPEC 8 on a RabbitMQ cluster of three nodes (quorum queues replicated on it): a node
//! killed, stopped or paused while mail flows loses no accepted mail, and duplicates stay in
//! the window between the SMTP server's acceptance and the job's state change being
//! recorded. Each test starts a real cluster on this machine (tests/src/cluster.rs; skipped
//! without `rabbitmq-server` or root), points `AMQP_URL` of the API and the worker at its three
//! nodes, with the node that leads `mail.send` carrying the API's connection and the worker's
//! consumer, and injects the fault while a paced load of set-contact-email requests runs.
//!
//! Each test prints one `FIGURES` line (accepted, delivered, duplicated, longest delay from
//! request to mail); `cargo test -p tests --test cluster -- --nocapture` shows them. One and a
//! half to two minutes each on a 2-core machine (the cluster's boot is 30-45 s of it); the
//! tests of this file run one at a time.
//!
//! The duplicate window is checked on each duplicated job's attempt history (`worker jobs
//! show`): a second copy may only come from a delivery that began after the first copy was
//! accepted. A delivery that begins while another one of the same job is still waiting for
//! the server's answer is outside the window.

mod scale;

use std::time::{Duration, Instant};

use scale::*;
use tests::TestEnv;

/// Time left for the mails after the load ended.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(180);

/// Ends a test: every request accepted and its mail delivered, every job `sent`, duplicates
/// within the window. The figures are printed before the window is checked, so a failing
/// test still reports them.
async fn finish(ce: &ClusterEnv, test: &str, load: Load, extra: &str) {
    let requests = load.finish().await;
    assert_all_accepted(&requests);
    wait_all_delivered(&ce.env, &requests, DELIVERY_TIMEOUT).await;
    let figures = Figures::of(&requests, &ce.env.sink.messages());
    let extra = format!(
        "{extra}; slowest answer {:.2} s; test took {:.0} s",
        slowest_answer(&requests).as_secs_f64(),
        ce.cluster.since().elapsed().as_secs_f64()
    );
    figures.report(test, &extra);
    assert_eq!(figures.delivered, figures.accepted);
    let states = job_states(&ce.env).await;
    assert_eq!(
        states,
        [("sent".to_owned(), requests.len())].into_iter().collect(),
        "every job sent"
    );
    let duplicates = assert_duplicates_within_window(&ce.env, &requests, None).await;
    assert_eq!(figures.duplicates, duplicates);
}

#[tokio::test]
async fn killing_the_node_that_leads_mail_send_while_1000_mails_flow_loses_no_mail() {
    const TEST: &str = "killing_the_node_that_leads_mail_send_while_1000_mails_flow_loses_no_mail";
    const N: usize = 1000;
    let Some(ce) = cluster_env(TEST, TestEnv::builder()).await else {
        return;
    };
    let api = ce.env.api();
    let targets = create_users(&api, "kill", N).await;
    // Slow acceptance keeps mails in flight when the node dies.
    ce.env.sink.data_delay(Duration::from_millis(100));
    let load = Load::spawn(vec![api.clone()], targets, 16, 100);
    load.wait_accepted(N * 2 / 5, Duration::from_secs(120))
        .await;
    let (accepted_at_kill, mailed_at_kill) = (load.accepted(), ce.env.sink.count());
    assert!(
        mailed_at_kill > 0 && mailed_at_kill < N,
        "mails must be flowing when the node dies ({mailed_at_kill} arrived)"
    );
    ce.cluster.kill(ce.leader).await;
    let killed = Instant::now();
    let new_leader = ce
        .cluster
        .wait_leader(&ce.vhost, SEND_QUEUE, &[ce.leader], Duration::from_secs(60))
        .await;
    let failover = killed.elapsed();
    let extra = format!(
        "killed {} (leader) after {accepted_at_kill} accepted and {mailed_at_kill} mailed; \
         {} leads after {:.1} s",
        ce.cluster.node(ce.leader).name,
        ce.cluster.node(new_leader).name,
        failover.as_secs_f64(),
    );
    finish(&ce, TEST, load, &extra).await;
}

/// The same kill with a slow SMTP server (3 s to accept each mail): the worker's deliveries
/// are still running when its consumer's node dies and the broker hands their messages out
/// again. A job must still not be sent by two deliveries side by side (SPEC 8: duplicates
/// only between the server's acceptance and the state change being recorded).
/// The holder renews its lease while it sends, so the redelivered copies wait in a delay
/// tier instead of taking the jobs over.
#[tokio::test]
async fn killing_the_leader_while_slow_deliveries_run_sends_no_job_twice_side_by_side() {
    const TEST: &str =
        "killing_the_leader_while_slow_deliveries_run_sends_no_job_twice_side_by_side";
    const N: usize = 150;
    let Some(ce) = cluster_env(TEST, TestEnv::builder()).await else {
        return;
    };
    let api = ce.env.api();
    let targets = create_users(&api, "slow", N).await;
    ce.env.sink.data_delay(Duration::from_secs(3));
    let load = Load::spawn(vec![api.clone()], targets, 16, 200);
    // The first batch (WORKER_CONCURRENCY = 32 by default) is on its way to the server.
    let env = &ce.env;
    tests::eventually(
        "deliveries in flight",
        Duration::from_secs(60),
        || async move { (sending_recipients(env).await.len() >= 16).then_some(()) },
    )
    .await;
    let in_flight = sending_recipients(&ce.env).await.len();
    ce.cluster.kill(ce.leader).await;
    let new_leader = ce
        .cluster
        .wait_leader(&ce.vhost, SEND_QUEUE, &[ce.leader], Duration::from_secs(60))
        .await;
    let extra = format!(
        "killed {} (leader) with {in_flight} deliveries in flight, SMTP accepting in 3 s; {} \
         leads",
        ce.cluster.node(ce.leader).name,
        ce.cluster.node(new_leader).name,
    );
    finish(&ce, TEST, load, &extra).await;
}

#[tokio::test]
async fn stopping_a_node_gracefully_and_bringing_it_back_loses_no_mail() {
    const TEST: &str = "stopping_a_node_gracefully_and_bringing_it_back_loses_no_mail";
    const N: usize = 600;
    let Some(ce) = cluster_env(TEST, TestEnv::builder()).await else {
        return;
    };
    let api = ce.env.api();
    let targets = create_users(&api, "stop", N).await;
    ce.env.sink.data_delay(Duration::from_millis(100));
    // ~50 s of load: it runs through the stop and the node's return.
    let load = Load::spawn(vec![api.clone()], targets, 8, 12);
    load.wait_accepted(100, Duration::from_secs(60)).await;
    let stopped = Instant::now();
    ce.cluster.stop(ce.leader).await;
    let stop_took = stopped.elapsed();
    let new_leader = ce
        .cluster
        .wait_leader(&ce.vhost, SEND_QUEUE, &[ce.leader], Duration::from_secs(60))
        .await;
    let accepted_while_down = load.accepted();
    tokio::time::sleep(Duration::from_secs(3)).await;
    ce.cluster.start_node(ce.leader).await;
    let back_after = stopped.elapsed();
    let cluster = &ce.cluster;
    tests::eventually(
        "the node to be running in the cluster again",
        Duration::from_secs(60),
        || async move { (cluster.running_nodes(new_leader).await.len() == 3).then_some(()) },
    )
    .await;
    let accepted_when_back = load.accepted();
    let extra = format!(
        "stopped {} (leader) after 100 accepted (stop took {:.1} s), {} leads, back after \
         {:.1} s ({accepted_while_down}..{accepted_when_back} accepted meanwhile)",
        ce.cluster.node(ce.leader).name,
        stop_took.as_secs_f64(),
        ce.cluster.node(new_leader).name,
        back_after.as_secs_f64(),
    );
    finish(&ce, TEST, load, &extra).await;
}

#[tokio::test]
async fn a_node_paused_for_30_seconds_loses_no_mail() {
    const TEST: &str = "a_node_paused_for_30_seconds_loses_no_mail";
    const N: usize = 600;
    const PAUSE: Duration = Duration::from_secs(30);
    let Some(ce) = cluster_env(TEST, TestEnv::builder()).await else {
        return;
    };
    let api = ce.env.api();
    let targets = create_users(&api, "pause", N).await;
    ce.env.sink.data_delay(Duration::from_millis(100));
    // ~60 s of load: it runs before, through and after the pause.
    let load = Load::spawn(vec![api.clone()], targets, 8, 10);
    load.wait_accepted(100, Duration::from_secs(60)).await;
    let (mailed_at_pause, accepted_at_pause) = (ce.env.sink.count(), load.accepted());
    ce.cluster.pause(ce.leader);
    let paused = Instant::now();
    // Late in the pause: the mails accepted meanwhile that the API could not hand to the
    // cluster wait in the outbox (the test reads the database directly).
    tokio::time::sleep(PAUSE - Duration::from_secs(5)).await;
    let outbox = ce.env.psql("SELECT count(*) FROM outbox").await;
    let accepted_late = load.accepted();
    tokio::time::sleep_until(tokio::time::Instant::from_std(paused + PAUSE)).await;
    let mailed_during_pause = ce.env.sink.count() - mailed_at_pause;
    let accepted_during_pause = load.accepted() - accepted_at_pause;
    ce.cluster.resume(ce.leader);
    let resumed = Instant::now();
    let cluster = &ce.cluster;
    let leader = ce.leader;
    tests::eventually(
        "all three nodes running after the pause",
        Duration::from_secs(60),
        || async move {
            let via = (leader + 1) % 3;
            (cluster.running_nodes(via).await.len() == 3).then_some(())
        },
    )
    .await;
    let sink = &ce.env.sink;
    let mailed_at_resume = mailed_at_pause + mailed_during_pause;
    tests::eventually(
        "a mail after the pause",
        Duration::from_secs(120),
        || async move { (sink.count() > mailed_at_resume).then_some(()) },
    )
    .await;
    let first_mail_after = resumed.elapsed();
    let leader_now = ce
        .cluster
        .leader_via(&ce.vhost, SEND_QUEUE, &[0, 1, 2])
        .await
        .map(|l| ce.cluster.node(l).name.clone())
        .unwrap_or_else(|| "unknown".into());
    let extra = format!(
        "paused {} (leader) for {} s after {accepted_at_pause} accepted: {accepted_during_pause} \
         accepted and {mailed_during_pause} mailed during the pause, {} rows in the outbox \
         {} s into it ({} accepted by then); first mail {:.1} s after the resume; {leader_now} \
         leads afterwards",
        ce.cluster.node(ce.leader).name,
        PAUSE.as_secs(),
        outbox.trim(),
        (PAUSE - Duration::from_secs(5)).as_secs(),
        accepted_late - accepted_at_pause,
        first_mail_after.as_secs_f64(),
    );
    finish(&ce, TEST, load, &extra).await;
}
