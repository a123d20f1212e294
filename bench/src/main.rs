//! `bench`: the load and throughput benchmark of the contact email service (DESIGN.md,
//! "Measuring"). It drives the real `api` and `worker` binaries (release builds, found through
//! `CE_BIN_DIR`) with the black-box harness of the `tests` crate: a fresh database, RabbitMQ
//! vhost and in-process SMTP sink per phase.
//!
//! Phases, one run, results as ratios to a ceiling measured on the same machine:
//! 1. API load (set contact email with `sendCode`, many users, N connections) next to
//!    `pgbench` running the same SQL transaction on the same database;
//! 2. the worker draining a backlog into the sink, next to lettre sending comparable mails
//!    straight to a sink with the same concurrency;
//! 3. end-to-end latency from request to mail received;
//! 4. peak RSS of the api and worker during 1 and 2;
//! 5. (optional) request latency with the broker unreachable;
//! 6. latency at a fixed request rate (open loop);
//! 7. (opt-in, `--phases growth`) the load of 1 against 1,000 and 1,000,000 users with a
//!    generated history, and the plans of every statement of a request and a delivery;
//! 8. (opt-in, `--phases scaling`) 1, 2 and 4 worker processes draining one backlog.
//!
//! Not a test: `cargo test` never runs it. Use `bench/run.sh`.

mod growth;
mod growth_sql;
mod load;
mod mailflow;
mod openloop;
mod pgbench;
mod procfs;
mod report;
mod scaling;
mod stats;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Parser;
use harness::{Role, TestEnv};

use crate::procfs::CpuSnapshot;
use crate::report::{ApiPhase, Machine, OutagePhase, Results, Settings, WorkerPhase};

/// Load and throughput benchmark of the contact email service (see bench/README.md).
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Args {
    /// Concurrent HTTP connections (and pgbench clients) in phase 1.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Warm-up before the measured window of phase 1 (and of pgbench), in seconds.
    #[arg(long, default_value_t = 5)]
    warmup_secs: u64,
    /// Measured window of phase 1 and of each pgbench run, in seconds.
    #[arg(long, default_value_t = 20)]
    duration_secs: u64,
    /// Distinct users per connection in phase 1.
    #[arg(long, default_value_t = 50)]
    users_per_connection: usize,
    /// Jobs the worker drains in phase 2 (one user each).
    #[arg(long, default_value_t = 2000)]
    jobs: usize,
    /// `WORKER_CONCURRENCY` of the worker, and the lettre ceiling's concurrency and pool size.
    #[arg(long, default_value_t = 32)]
    worker_concurrency: usize,
    /// `DATABASE_POOL_SIZE` of the api and the worker.
    #[arg(long, default_value_t = 16)]
    pool_size: usize,
    /// Sequential end-to-end mails in phase 3.
    #[arg(long, default_value_t = 200)]
    e2e_mails: usize,
    /// Sequential requests with the broker up and then down in phase 5 (0 skips phase 5).
    #[arg(long, default_value_t = 200)]
    outage_requests: usize,
    /// Requests per second of phase 6 (open loop; 0 skips it).
    #[arg(long, default_value_t = 200)]
    open_loop_rate: u32,
    /// Measured seconds of phase 6 (after a 5 s warm-up at the same rate).
    #[arg(long, default_value_t = 30)]
    open_loop_secs: u64,
    /// pgbench threads (`-j`).
    #[arg(long, default_value_t = 2)]
    pgbench_threads: usize,
    /// libpq `sslmode` of every database connection of the run: the api's, the worker's and
    /// pgbench's (through `PGSSLMODE`). PostgreSQL is on 127.0.0.1, where TLS protects
    /// nothing, so `disable`; `prefer` (libpq's default) measures the cost of TLS.
    #[arg(long, default_value = "disable")]
    db_sslmode: String,
    /// Users of the big database of phase 7 (`growth`); the small one has 1,000.
    #[arg(long, default_value_t = 1_000_000)]
    growth_users: usize,
    /// Jobs each round of phase 8 (`scaling`) drains.
    #[arg(long, default_value_t = 20_000)]
    scaling_jobs: usize,
    /// Worker processes of each round of phase 8, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 2, 4])]
    scaling_workers: Vec<usize>,
    /// Phases to run, comma-separated: `api` (phase 1 with pgbench), `worker` (phases 2 and
    /// 3: the drain next to the lettre ceilings, and end-to-end latency), `outage` (phase 5),
    /// `openloop` (phase 6: a fixed request rate, latency from the intended send time).
    /// A skipped phase reads zero in the report, which says so. Not run unless named (~3 and
    /// ~4 minutes on the 2-core VM): `growth` (phase 7: the load against 1,000 and
    /// `--growth-users` users, and the plans of every statement), `scaling` (phase 8: 1, 2
    /// and 4 workers draining `--scaling-jobs` jobs).
    #[arg(long, value_delimiter = ',', default_values = ["api", "worker", "outage", "openloop"])]
    phases: Vec<Phase>,
    /// Where to write the markdown report (default: print it only as a summary).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A part of the run that `--phases` can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Phase {
    Api,
    Worker,
    Outage,
    #[value(name = "openloop")]
    OpenLoop,
    Growth,
    Scaling,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let Some(bin_dir) = std::env::var_os("CE_BIN_DIR").map(PathBuf::from) else {
        eprintln!(
            "bench: set CE_BIN_DIR to the directory of the release `api` and `worker` binaries \
             (and CE_SKIP_BUILD=1); bench/run.sh does both"
        );
        std::process::exit(2);
    };
    if std::env::var("CE_SKIP_BUILD").as_deref() != Ok("1") {
        eprintln!(
            "bench: warning: CE_SKIP_BUILD is not 1, the harness will run a debug `cargo build` first"
        );
    }
    for bin in ["api", "worker"] {
        if !bin_dir.join(bin).is_file() {
            eprintln!(
                "bench: {} not found; build it first (bench/run.sh)",
                bin_dir.join(bin).display()
            );
            std::process::exit(2);
        }
    }
    let started = Instant::now();
    let settings = Settings {
        connections: args.connections,
        warmup: Duration::from_secs(args.warmup_secs),
        duration: Duration::from_secs(args.duration_secs),
        users_per_connection: args.users_per_connection,
        jobs: args.jobs,
        worker_concurrency: args.worker_concurrency,
        pool_size: args.pool_size,
        e2e_mails: args.e2e_mails,
        pgbench_threads: args.pgbench_threads,
        db_sslmode: args.db_sslmode.clone(),
        skipped_phases: [
            (Phase::Api, "1 (API load, pgbench)"),
            (Phase::Worker, "2 and 3 (worker drain, end-to-end latency)"),
            (Phase::Outage, "5 (broker unreachable)"),
            (Phase::OpenLoop, "6 (fixed request rate)"),
        ]
        .into_iter()
        .filter(|(p, _)| !args.phases.contains(p))
        .map(|(_, name)| name.to_string())
        .collect(),
    };
    let mut machine = machine_info(&bin_dir);
    eprintln!("bench: load average before: {}", machine.load_before);

    let api = if args.phases.contains(&Phase::Api) {
        phase_api(&settings).await
    } else {
        ApiPhase::default()
    };
    let (worker, e2e) = if args.phases.contains(&Phase::Worker) {
        phase_worker(&settings).await
    } else {
        Default::default()
    };
    let outage = if args.outage_requests > 0 && args.phases.contains(&Phase::Outage) {
        Some(phase_outage(&settings, args.outage_requests).await)
    } else {
        None
    };

    let open_loop = if args.open_loop_rate > 0 && args.phases.contains(&Phase::OpenLoop) {
        Some(phase_open_loop(&settings, args.open_loop_rate, args.open_loop_secs).await)
    } else {
        None
    };

    let growth = if args.phases.contains(&Phase::Growth) {
        Some(growth::run(&settings, args.growth_users).await)
    } else {
        None
    };
    let scaling = if args.phases.contains(&Phase::Scaling) && !args.scaling_workers.is_empty() {
        Some(scaling::run(&settings, args.scaling_jobs, &args.scaling_workers).await)
    } else {
        None
    };

    machine.load_after = procfs::load_average();
    let results = Results {
        machine,
        settings,
        api,
        worker,
        e2e,
        outage,
        open_loop,
        growth,
        scaling,
        total_time: started.elapsed(),
    };
    println!("{}", results.summary());
    if let Some(out) = &args.out {
        if let Some(dir) = out.parent() {
            std::fs::create_dir_all(dir)
                .unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        }
        std::fs::write(out, results.markdown())
            .unwrap_or_else(|e| panic!("write {}: {e}", out.display()));
        eprintln!("bench: report written to {}", out.display());
    }
}

fn step(what: &str) {
    eprintln!("bench: [{}] {what}", Utc::now().format("%H:%M:%S"));
}

/// A builder with the settings every phase shares.
fn builder(settings: &Settings) -> harness::TestEnvBuilder {
    TestEnv::builder()
        .env(
            "WORKER_CONCURRENCY",
            settings.worker_concurrency.to_string(),
        )
        .env("DATABASE_POOL_SIZE", settings.pool_size.to_string())
        .env("PGSSLMODE", &settings.db_sslmode)
        .env("RESEND_COOLDOWN", "0s")
        .env("MAIL_RECIPIENT_HOURLY_LIMIT", "0")
}

/// Phase 1 (API load with the worker running, then without it), then pgbench on the same
/// database. Each step fills its part of the phase's results.
async fn phase_api(settings: &Settings) -> ApiPhase {
    step("phase 1: starting api + worker");
    let mut env = builder(settings).start().await;
    let users = create_phase_users(&env, settings).await;
    let mut phase = ApiPhase {
        users: users.len(),
        ..ApiPhase::default()
    };
    load_with_worker(&env, &users, settings, &mut phase).await;
    // The same load with the worker stopped: what the API costs on its own.
    env.kill(Role::Worker(0));
    load_without_worker(&env, &users, settings, &mut phase).await;
    measure_api_log(&env, &mut phase);
    // The ceiling gets the machine to itself: no api, no worker.
    env.kill(Role::Api);
    pgbench_ceiling(&env, settings, &mut phase).await;
    inspect_database(&env, &mut phase).await;
    phase
}

/// The users the load cycles through, `users_per_connection` for each connection; the sink
/// is emptied afterwards.
async fn create_phase_users(env: &TestEnv, settings: &Settings) -> Vec<String> {
    let user_count = settings.connections * settings.users_per_connection;
    step(&format!("phase 1: creating {user_count} users"));
    let users = load::create_users(&env.api(), "a", user_count, 16).await;
    env.sink.clear();
    users
}

/// The measured load with the worker delivering meanwhile, the memory of both processes,
/// and the jobs, outbox and table statistics right after it.
async fn load_with_worker(
    env: &TestEnv,
    users: &[String],
    settings: &Settings,
    phase: &mut ApiPhase,
) {
    step(&format!(
        "phase 1: {} connections, {} s warm-up + {} s measured",
        settings.connections,
        settings.warmup.as_secs(),
        settings.duration.as_secs()
    ));
    let api_pid = env.pid(Role::Api);
    let worker_pid = env.pid(Role::Worker(0));
    let main = measured_load(env, users, settings, worker_pid).await;
    let load = &main.load;
    step(&format!(
        "phase 1: {:.0} req/s, p50 {}, p99 {}, {} errors",
        load.throughput(),
        stats::ms(load.latency.p50),
        stats::ms(load.latency.p99),
        load.error_count()
    ));
    phase.api_memory = api_pid.and_then(procfs::memory).unwrap_or_default();
    phase.worker_memory = worker_pid.and_then(procfs::memory).unwrap_or_default();
    phase.job_states = one_line(
        &env.psql("SELECT state || ': ' || count(*) FROM mail_jobs GROUP BY state ORDER BY state")
            .await,
    );
    phase.outbox_after = env
        .psql("SELECT count(*) FROM outbox")
        .await
        .trim()
        .to_string();
    phase.table_stats = table_stats(env).await;
    phase.load = main.load;
    phase.cpu = main.cpu;
    phase.db_api = main.db;
    phase.mails_during_window = main.mails;
}

/// The same measured load with the worker stopped, and the api's memory after it.
async fn load_without_worker(
    env: &TestEnv,
    users: &[String],
    settings: &Settings,
    phase: &mut ApiPhase,
) {
    step("phase 1: the same load without the worker");
    let no_worker = measured_load(env, users, settings, None).await;
    step(&format!(
        "phase 1: {:.0} req/s without the worker, p50 {}, p99 {}",
        no_worker.load.throughput(),
        stats::ms(no_worker.load.latency.p50),
        stats::ms(no_worker.load.latency.p99)
    ));
    phase.api_memory_no_worker = env
        .pid(Role::Api)
        .and_then(procfs::memory)
        .unwrap_or_default();
    phase.load_no_worker = no_worker.load;
    phase.cpu_no_worker = no_worker.cpu;
    phase.db_no_worker = no_worker.db;
}

/// The size of the api's log after both loads, in bytes and lines.
fn measure_api_log(env: &TestEnv, phase: &mut ApiPhase) {
    let log = std::fs::read(env.log_path(Role::Api)).unwrap_or_default();
    phase.api_log_bytes = log.len() as u64;
    phase.api_log_lines = log.iter().filter(|b| **b == b'\n').count() as u64;
}

/// The three pgbench scripts of phase 1, written into the test directory.
struct PgbenchScripts {
    /// The request's transaction, for as many clients as the load has connections.
    main: PathBuf,
    /// The same for as many clients as the API's pool has connections.
    pool_sized: PathBuf,
    /// With the resend-cooldown query the API adds when `RESEND_COOLDOWN` > 0.
    cooldown: PathBuf,
    /// The text of `main`, for the report.
    text: String,
}

/// Writes the scripts for the environment's users, token and instance (the helper table
/// pgbench reads the users from is made first).
async fn write_pgbench_scripts(env: &TestEnv, settings: &Settings) -> PgbenchScripts {
    env.psql(pgbench::helper_table_sql()).await;
    let bench_users: usize = env
        .psql("SELECT count(*) FROM bench_users")
        .await
        .trim()
        .parse()
        .expect("count of bench_users");
    let token_hash_hex = env
        .psql("SELECT encode(token_hash, 'hex') FROM api_tokens ORDER BY created_at LIMIT 1")
        .await
        .trim()
        .to_string();
    let instance_id = env.bootstrap().instance_id.clone();
    let work_dir = env.dir().join("pgbench");
    std::fs::create_dir_all(&work_dir).expect("create the pgbench work directory");
    let write_script = |name: &str, clients: usize, cooldown: bool| -> (PathBuf, String) {
        let text = pgbench::script(&pgbench::ScriptParams {
            token_hash_hex: token_hash_hex.clone(),
            instance_id: instance_id.clone(),
            users_per_client: (bench_users / clients).max(1),
            with_cooldown_query: cooldown,
            url_template: load::URL_TEMPLATE.to_string(),
        });
        let path = work_dir.join(name);
        std::fs::write(&path, &text).expect("write a pgbench script");
        (path, text)
    };
    let (main, text) = write_script("set_email.sql", settings.connections, false);
    let (pool_sized, _) = write_script("set_email_pool.sql", settings.pool_size, false);
    let (cooldown, _) = write_script("set_email_cooldown.sql", settings.connections, true);
    PgbenchScripts {
        main,
        pool_sized,
        cooldown,
        text,
    }
}

/// pgbench on the phase's database: a warm-up, the measured run (with CPU and database
/// counters), then the pool-sized and the cooldown variants.
async fn pgbench_ceiling(env: &TestEnv, settings: &Settings, phase: &mut ApiPhase) {
    step("phase 1: pgbench on the same database");
    let scripts = write_pgbench_scripts(env, settings).await;
    let target = pgbench::Target {
        host: "127.0.0.1".into(),
        port: 5432,
        user: "postgres".into(),
        database: env.db_name().to_string(),
        sslmode: settings.db_sslmode.clone(),
    };
    let clients = settings.connections;
    let threads = settings.pgbench_threads;
    let (warmup, duration) = (settings.warmup, settings.duration);
    pgbench::run(&target, &scripts.main, clients, threads, warmup, None).await;
    let log_dir = env.dir().join("pgbench").join("log");
    std::fs::create_dir_all(&log_dir).expect("create the pgbench log directory");
    let cpu0 = CpuSnapshot::take(None, None);
    let db0 = db_counters(env).await;
    let main = pgbench::run(
        &target,
        &scripts.main,
        clients,
        threads,
        duration,
        Some(&log_dir),
    )
    .await;
    phase.pgbench_cpu = CpuSnapshot::take(None, None).since(&cpu0);
    phase.db_pgbench = db_counters(env).await.since(&db0);
    step(&format!(
        "phase 1: pgbench {clients} clients: {:.0} tps",
        main.tps
    ));
    let pool_size = settings.pool_size;
    let pool_sized = pgbench::run(
        &target,
        &scripts.pool_sized,
        pool_size,
        threads,
        duration,
        None,
    )
    .await;
    step(&format!(
        "phase 1: pgbench {pool_size} clients: {:.0} tps",
        pool_sized.tps
    ));
    let cooldown = pgbench::run(&target, &scripts.cooldown, clients, threads, duration, None).await;
    step(&format!(
        "phase 1: pgbench {clients} clients with the cooldown query: {:.0} tps",
        cooldown.tps
    ));
    phase.pgbench = main;
    phase.pgbench_pool_sized = pool_sized;
    phase.pgbench_cooldown = cooldown;
    phase.script = scripts.text;
}

/// The database after all of phase 1: table statistics, row counts, and the plans of the
/// resend-cooldown query and the publisher's outbox delete.
async fn inspect_database(env: &TestEnv, phase: &mut ApiPhase) {
    phase.table_stats_after_pgbench = table_stats(env).await;
    phase.mail_jobs_rows = format!(
        "mail_jobs {}, outbox {}, user_events {}",
        env.psql("SELECT count(*) FROM mail_jobs").await.trim(),
        env.psql("SELECT count(*) FROM outbox").await.trim(),
        env.psql("SELECT count(*) FROM user_events").await.trim()
    );
    let instance_id = env.bootstrap().instance_id.clone();
    // The request's own statement (the constant `common` runs), prepared as the api's is.
    phase.explain_cooldown = env
        .psql(&format!(
            "PREPARE recent(bigint, text, text, timestamptz, timestamptz, bigint) AS {sql}; \
             EXPLAIN (ANALYZE, BUFFERS) EXECUTE recent({instance_id}, 'x@bench.example.com', \
             'contact_email', now() - interval '30 seconds', now() - interval '1 hour', 9)",
            sql = common::mail_job::RECENT_MAILS_TO_SQL
        ))
        .await;
    phase.explain_outbox_delete = env
        .psql(
            "EXPLAIN (ANALYZE, BUFFERS) DELETE FROM outbox WHERE job_id = ANY('{1,2,3}'::bigint[])",
        )
        .await;
}

/// Phase 2 (worker drain and the lettre ceiling) and phase 3 (end-to-end latency).
async fn phase_worker(settings: &Settings) -> (WorkerPhase, mailflow::EndToEnd) {
    step("phase 2: starting api (no worker)");
    let mut env = builder(settings).without_worker().start().await;
    let api = env.api();
    let jobs = settings.jobs;
    step(&format!(
        "phase 2: creating {jobs} users and enqueueing one job each"
    ));
    let mailflow::Backlog {
        users,
        enqueue_time,
        enqueue_errors,
        publish_wait,
    } = mailflow::enqueue_backlog(&env, jobs, "w").await;
    env.sink.clear();

    step("phase 2: starting the worker");
    let role = env.add_worker();
    let api_pid = env.pid(Role::Api);
    let cpu_before = CpuSnapshot::take(api_pid, None);
    let start = Utc::now();
    env.spawn_process(role);
    let worker_pid = env.pid(role);
    let mails = env.sink.wait_for(jobs, Duration::from_secs(600)).await;
    let cpu = CpuSnapshot::take(api_pid, worker_pid).since(&cpu_before);
    let worker_memory = worker_pid.and_then(procfs::memory).unwrap_or_default();
    let api_memory = api_pid.and_then(procfs::memory).unwrap_or_default();
    let worker = mailflow::MailRate::of(&mails[..jobs.min(mails.len())], start);
    step(&format!(
        "phase 2: worker {:.0} mails/s steady, {:.0} from spawn",
        worker.rate_steady(),
        worker.rate_from_start()
    ));
    let template = mailflow::MailTemplate::from_received(&mails[0]);
    drop(mails);
    // Let late duplicates (if any) show up before counting.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mails_total = env.sink.count();
    let job_states = one_line(
        &env.psql("SELECT state || ': ' || count(*) FROM mail_jobs GROUP BY state ORDER BY state")
            .await,
    );
    // What the worker itself recorded for each SMTP attempt (mail_attempts.duration_ms).
    let smtp_attempt_ms = psql_numbers(
        &env,
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms), \
         percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms), avg(duration_ms) \
         FROM mail_attempts",
    )
    .await;

    step(&format!(
        "phase 3: {} sequential end-to-end mails",
        settings.e2e_mails
    ));
    env.wait_ready(role).await;
    env.sink.clear();
    let tag = format!("e2e{}", Utc::now().timestamp());
    let e2e = mailflow::end_to_end(&api, &env.sink, &users, settings.e2e_mails, &tag).await;
    // Where the time of one end-to-end mail goes, from the job row (created in the request's
    // transaction) and its attempt (`at` = start of the SMTP send, `duration_ms` = the send).
    let e2e_breakdown = psql_numbers(
        &env,
        &format!(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms), \
             percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), \
             percentile_cont(0.5) WITHIN GROUP (ORDER BY a.duration_ms), \
             percentile_cont(0.99) WITHIN GROUP (ORDER BY a.duration_ms) \
             FROM mail_jobs j JOIN mail_attempts a ON a.job_id = j.id, \
             LATERAL (SELECT extract(epoch FROM a.at - j.created_at) * 1000 AS ms) d \
             WHERE j.recipient LIKE '{tag}-%'"
        ),
    )
    .await;
    step(&format!(
        "phase 3: request->mail p50 {}, p99 {}",
        stats::ms(e2e.to_mail.p50),
        stats::ms(e2e.to_mail.p99)
    ));
    drop(env);

    step("phase 2: lettre ceiling");
    let ceiling = mailflow::lettre_ceiling(&template, jobs, settings.worker_concurrency).await;
    step(&format!(
        "phase 2: lettre {:.0} mails/s steady",
        ceiling.rate_steady()
    ));
    let direct_nagle =
        mailflow::lettre_direct(&template, jobs, settings.worker_concurrency, false).await;
    let direct_nodelay =
        mailflow::lettre_direct(&template, jobs, settings.worker_concurrency, true).await;
    step(&format!(
        "phase 2: lettre direct connections: {:.0} mails/s without TCP_NODELAY, {:.0} with",
        direct_nagle.rate_steady(),
        direct_nodelay.rate_steady()
    ));

    let phase = WorkerPhase {
        jobs,
        enqueue_time,
        enqueue_errors,
        publish_wait,
        worker,
        mails_total,
        job_states,
        cpu,
        worker_memory,
        api_memory,
        ceiling,
        direct_nagle,
        direct_nodelay,
        smtp_attempt_ms,
        e2e_breakdown,
        mail_size: template.raw_size,
    };
    (phase, e2e)
}

/// Phase 5: sequential request latency with the broker reachable, then unreachable.
/// Phase 6: the whole service (api and worker) at a fixed request rate.
async fn phase_open_loop(settings: &Settings, rate: u32, secs: u64) -> openloop::OpenLoopPhase {
    step(&format!("phase 6: starting api + worker for {rate} req/s"));
    let env = builder(settings).start().await;
    let users = load::create_users(&env.api(), "l", 400, 16).await;
    env.sink.clear();
    step("phase 6: 5 s warm-up at the same rate");
    openloop::run(&env, &users, rate, Duration::from_secs(5), "w").await;
    step(&format!("phase 6: {secs} s measured"));
    let phase = openloop::run(&env, &users, rate, Duration::from_secs(secs), "m").await;
    step(&format!(
        "phase 6: {:.0} req/s started, p50 {}, p99 {} from the intended start; mail p50 {}, p99 {}",
        phase.achieved_rate(),
        stats::ms(phase.latency.p50),
        stats::ms(phase.latency.p99),
        stats::ms(phase.to_mail.p50),
        stats::ms(phase.to_mail.p99)
    ));
    phase
}

async fn phase_outage(settings: &Settings, requests: usize) -> OutagePhase {
    step("phase 5: starting api + worker with RabbitMQ behind a proxy");
    let env = builder(settings).amqp_via_proxy().start().await;
    let api = env.api();
    let users = load::create_users(&api, "o", requests, 8).await;
    let sequential = |tag: &'static str| {
        let api = api.clone();
        let users = users.clone();
        async move {
            let mut samples = Vec::new();
            let mut errors = 0;
            for (i, user) in users.iter().enumerate() {
                let (latency, outcome) =
                    load::set_email(&api, user, &format!("{tag}-{i}@bench.example.com")).await;
                match outcome {
                    Ok(()) => samples.push(latency),
                    Err(_) => errors += 1,
                }
            }
            (stats::Latency::of(&samples), errors)
        }
    };
    let (broker_up, errors_up) = sequential("up").await;
    env.amqp_proxy().stop().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let readyz_down = api.without_token().get("/readyz").await.text;
    let (broker_down, errors_down) = sequential("down").await;
    step(&format!(
        "phase 5: p50 {} up, {} down",
        stats::ms(broker_up.p50),
        stats::ms(broker_down.p50)
    ));
    let back = Utc::now();
    env.amqp_proxy().start().await;
    let expected = requests - errors_down;
    let deadline = Instant::now() + Duration::from_secs(120);
    let recovered_after = loop {
        let down: Vec<_> = env
            .sink
            .messages()
            .into_iter()
            .filter(|m| m.recipients.iter().any(|r| r.starts_with("down-")))
            .collect();
        if down.len() >= expected {
            let last = down.iter().map(|m| m.received_at).max().unwrap_or(back);
            break Some((last - back).to_std().unwrap_or_default());
        }
        if Instant::now() >= deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    OutagePhase {
        requests,
        broker_up,
        broker_down,
        errors_up,
        errors_down,
        readyz_down: readyz_down.trim().to_string(),
        recovered_after,
    }
}

/// One closed-loop load of phase 1 and what the machine did during its measured window.
struct Measured {
    load: load::LoadResult,
    cpu: CpuSnapshot,
    db: pgbench::DbCounters,
    /// Mails the sink received during the window.
    mails: usize,
}

/// Runs the phase-1 load against `env`'s API and samples CPU, database counters and the sink
/// at the start and the end of the measured window. `worker_pid`: the running worker, if any.
async fn measured_load(
    env: &TestEnv,
    users: &[String],
    settings: &Settings,
    worker_pid: Option<u32>,
) -> Measured {
    let api_pid = env.pid(Role::Api);
    let load_task = {
        let api = env.api();
        let users = users.to_vec();
        let (connections, warmup, window) =
            (settings.connections, settings.warmup, settings.duration);
        tokio::spawn(async move { load::run(&api, &users, connections, warmup, window).await })
    };
    tokio::time::sleep(settings.warmup).await;
    let cpu_before = CpuSnapshot::take(api_pid, worker_pid);
    let mails_before = env.sink.count();
    let db_before = db_counters(env).await;
    tokio::time::sleep(settings.duration).await;
    let cpu = CpuSnapshot::take(api_pid, worker_pid).since(&cpu_before);
    let mails = env.sink.count().saturating_sub(mails_before);
    let db = db_counters(env).await.since(&db_before);
    let load = load_task.await.expect("the load task panicked");
    Measured {
        load,
        cpu,
        db,
        mails,
    }
}

/// `pg_stat_user_tables` of the environment's database, as a `|`-separated table.
async fn table_stats(env: &TestEnv) -> String {
    format!(
        "relname|seq_scan|seq_tup_read|idx_scan|idx_tup_fetch|n_tup_ins|n_tup_upd|n_tup_hot_upd|n_tup_del|n_live_tup|n_dead_tup\n{}",
        env.psql(
            "SELECT relname, seq_scan, seq_tup_read, coalesce(idx_scan, 0), \
             coalesce(idx_tup_fetch, 0), n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del, \
             n_live_tup, n_dead_tup FROM pg_stat_user_tables ORDER BY relname"
        )
        .await
    )
}

/// The numbers of the one-row answer of `sql` (`psql -At`, `|`-separated); unparsable
/// fields (NULL) read as NaN.
async fn psql_numbers(env: &TestEnv, sql: &str) -> Vec<f64> {
    env.psql(sql)
        .await
        .trim()
        .split('|')
        .map(|v| v.trim().parse().unwrap_or(f64::NAN))
        .collect()
}

/// The `pg_stat_database` counters of the environment's database now.
async fn db_counters(env: &TestEnv) -> pgbench::DbCounters {
    pgbench::DbCounters::parse(&env.psql(&pgbench::DbCounters::query()).await)
}

fn one_line(psql_output: &str) -> String {
    psql_output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(", ")
}

/// stdout of a command, trimmed; `unknown (...)` when it cannot run.
fn command_output(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        Ok(out) => format!("unknown ({program} exited with {})", out.status),
        Err(e) => format!("unknown ({program}: {e})"),
    }
}

fn machine_info(bin_dir: &Path) -> Machine {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".to_string())
    };
    let root = harness::env::workspace_root();
    let root_str = root.display().to_string();
    let commit = command_output("git", &["-C", &root_str, "rev-parse", "--short", "HEAD"]);
    let dirty = command_output("git", &["-C", &root_str, "status", "--porcelain"])
        .lines()
        .count();
    let profile = match bin_dir.file_name().and_then(|n| n.to_str()) {
        Some("release") => "release profile (`[profile.release]` of the workspace: opt-level 3, debug = line-tables-only)".to_string(),
        Some(other) => format!("`{other}` (not release: figures are not representative)"),
        None => "unknown".to_string(),
    };
    Machine {
        date: Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        hostname: read("/proc/sys/kernel/hostname"),
        cpu_model: procfs::cpu_model(),
        nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
        mem_total_kib: procfs::mem_total_kib(),
        kernel: read("/proc/sys/kernel/osrelease"),
        rustc: command_output("rustc", &["--version"]),
        profile,
        bin_dir: bin_dir.display().to_string(),
        git: format!("commit {commit}, {dirty} uncommitted paths in the work tree"),
        postgres: command_output(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-Atc",
                "SELECT version()",
            ],
        ),
        rabbitmq: command_output("rabbitmqctl", &["version"]),
        pgbench: command_output("pgbench", &["--version"]),
        load_before: procfs::load_average(),
        load_after: String::new(),
    }
}
