//! Phase 7 (`--phases growth`): does the request get slower as the data grows? The load of
//! phase 1 (set contact email with `sendCode`, the same closed loops, worker running) against
//! a database holding 1,000 users, then against one holding `--growth-users` (default
//! 1,000,000) users with a history of the shape the service writes: per user the events of a
//! create, a set email and a verification, a verified contact email, one sent mail job and its
//! attempt. The history is generated with one `INSERT ... SELECT generate_series(...)` per
//! table, then `VACUUM ANALYZE` and `CHECKPOINT`. Afterwards every statement of the request,
//! the delivery and the timers (`growth_sql.rs`) is explained against the big database, with
//! the plan PostgreSQL picks for the values (custom plan) and the one it would cache for any
//! value (generic plan).

use std::time::{Duration, Instant};

use chrono::Utc;
use harness::{Role, TestEnv};

use crate::growth_sql::{self, Path, Sample};
use crate::load::{self, LoadResult};
use crate::procfs::CpuSnapshot;
use crate::report::Settings;
use crate::stats;

/// Users of the small database.
pub const SMALL_USERS: usize = 1000;

/// Tables that grow with the number of users (a sequential scan on one of these gets slower
/// with every user).
pub const GROWING_TABLES: [&str; 5] = [
    "users",
    "user_emails",
    "user_events",
    "mail_jobs",
    "mail_attempts",
];

/// One step of the generation: a table's rows, or the index rebuild.
#[derive(Debug, Clone, Default)]
pub struct GenerationStep {
    /// Such as `INSERT INTO users`.
    pub what: String,
    /// Rows inserted (0 for the index rebuild).
    pub rows: u64,
    pub time: Duration,
}

/// One database size: how it was made and what the load did against it.
#[derive(Debug, Clone, Default)]
pub struct GrowthRun {
    /// Users in the database during the load (`count(*)`).
    pub users: u64,
    /// Users the load cycles through (created through the API).
    pub load_users: usize,
    /// Users with a generated history.
    pub generated_users: usize,
    pub generation: Vec<GenerationStep>,
    /// `VACUUM ANALYZE` and `CHECKPOINT` after the inserts.
    pub vacuum: Duration,
    pub load: LoadResult,
    pub cpu: CpuSnapshot,
    /// Rows and sizes (heap, indexes) of the growing tables, `|`-separated.
    pub table_sizes: String,
    /// Sequential scans of the growing tables during the load, and the rows they read
    /// (`pg_stat_user_tables` before and after).
    pub load_seq_scans: (u64, u64),
}

impl GrowthRun {
    /// Inserts, index rebuild and vacuum.
    pub fn generation_time(&self) -> Duration {
        self.generation.iter().map(|s| s.time).sum::<Duration>() + self.vacuum
    }

    pub fn generated_rows(&self) -> u64 {
        self.generation.iter().map(|s| s.rows).sum()
    }
}

/// A statement of `growth_sql.rs` and its plans.
#[derive(Debug, Clone)]
pub struct PlannedStatement {
    pub path: Path,
    pub source: String,
    pub when: String,
    pub sql: String,
    /// `EXPLAIN (ANALYZE, BUFFERS)` of the custom plan (the sample values known to the
    /// planner), run in a transaction that is rolled back (`EXPLAIN` only for a statement
    /// the sample values cannot run).
    pub custom: String,
    /// `EXPLAIN` of the generic plan (`plan_cache_mode = force_generic_plan`): what a
    /// prepared statement would run with if PostgreSQL cached a plan for any value.
    pub generic: String,
    /// Set when the statement could not be explained (it no longer matches the schema).
    pub error: Option<String>,
}

impl PlannedStatement {
    /// The plan's top node without its costs, such as `Update on mail_jobs`.
    pub fn top_node(&self) -> String {
        self.custom
            .lines()
            .map(node_name)
            .find(|l| !l.is_empty())
            .unwrap_or_default()
    }

    /// The scan nodes of the custom plan, such as `Index Scan using users_pkey on users`.
    pub fn scans(&self) -> Vec<String> {
        scans_of(&self.custom)
    }

    /// Growing tables the custom plan reads sequentially.
    pub fn seq_scans(&self) -> Vec<String> {
        growing_seq_scans(&self.custom)
    }

    /// Growing tables the generic plan reads sequentially.
    pub fn generic_seq_scans(&self) -> Vec<String> {
        growing_seq_scans(&self.generic)
    }

    /// Index scans of the custom plan without an `Index Cond`: they read the whole index
    /// (of a partial index, every row it covers).
    pub fn unconditioned_index_scans(&self) -> Vec<String> {
        unconditioned_index_scans(&self.custom)
    }

    /// Rows the custom plan's nodes read and threw away (`Rows Removed by Filter`).
    pub fn rows_removed(&self) -> u64 {
        self.custom
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Rows Removed by Filter:"))
            .filter_map(|n| n.trim().parse::<u64>().ok())
            .sum()
    }

    /// `Execution Time` of the custom plan, in ms.
    pub fn execution_ms(&self) -> Option<f64> {
        self.custom.lines().find_map(|l| {
            l.trim()
                .strip_prefix("Execution Time:")
                .and_then(|r| r.trim().trim_end_matches("ms").trim().parse().ok())
        })
    }
}

/// A plan line without its leading arrow and its `(cost=...)` / `(actual ...)` parts.
fn node_name(line: &str) -> String {
    let l = line.trim().trim_start_matches("->").trim();
    let l = l.split("  (").next().unwrap_or(l);
    l.trim().to_string()
}

fn scans_of(plan: &str) -> Vec<String> {
    let mut scans: Vec<String> = Vec::new();
    for line in plan.lines() {
        let node = node_name(line);
        if node.contains(" Scan") && !node.starts_with("Index Cond") && !scans.contains(&node) {
            scans.push(node);
        }
    }
    scans
}

/// The index scan nodes of `plan` that have no `Index Cond` line.
fn unconditioned_index_scans(plan: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut current: Option<(String, bool)> = None;
    let finish = |node: Option<(String, bool)>, found: &mut Vec<String>| {
        if let Some((name, has_cond)) = node
            && name.contains("Index Scan")
            && !has_cond
            && !found.contains(&name)
        {
            found.push(name);
        }
    };
    for (i, line) in plan.lines().enumerate() {
        let trimmed = line.trim();
        let is_node = i == 0 || trimmed.starts_with("->");
        if is_node {
            finish(current.take(), &mut found);
            current = Some((node_name(line), false));
        } else if trimmed.starts_with("Index Cond:")
            && let Some((_, has_cond)) = &mut current
        {
            *has_cond = true;
        }
    }
    finish(current, &mut found);
    found
}

/// `Seq Scan on <table>` nodes of `plan` whose table grows with the users.
fn growing_seq_scans(plan: &str) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for line in plan.lines() {
        let node = node_name(line);
        let Some(rest) = node.strip_prefix("Seq Scan on ") else {
            continue;
        };
        let table = rest.split_whitespace().next().unwrap_or("");
        if GROWING_TABLES.contains(&table) && !found.iter().any(|t| t == table) {
            found.push(table.to_string());
        }
    }
    found
}

/// What phase 7 found.
#[derive(Debug, Clone, Default)]
pub struct GrowthPhase {
    pub small: GrowthRun,
    pub large: GrowthRun,
    /// The plans against the large database (what the phase is about).
    pub plans: Vec<PlannedStatement>,
    /// The same statements against the small database after its load, to tell a plan that
    /// only small tables get from one the large tables get.
    pub small_plans: Vec<PlannedStatement>,
    /// A user made through the API next to a generated one, row by row (JSON).
    pub shape: String,
    /// PostgreSQL settings that matter for the plans (`name=value, ...`).
    pub server_settings: String,
    pub total_time: Duration,
}

impl GrowthPhase {
    /// Throughput with the big database over throughput with the small one.
    pub fn ratio(&self) -> f64 {
        let small = self.small.load.throughput();
        if small > 0.0 {
            self.large.load.throughput() / small
        } else {
            0.0
        }
    }

    /// Statements whose custom plan scans a growing table sequentially.
    pub fn seq_scan_statements(&self) -> Vec<&PlannedStatement> {
        self.plans
            .iter()
            .filter(|p| !p.seq_scans().is_empty())
            .collect()
    }

    /// Statements whose generic plan (only) scans a growing table sequentially.
    pub fn generic_only_seq_scan_statements(&self) -> Vec<&PlannedStatement> {
        self.plans
            .iter()
            .filter(|p| p.seq_scans().is_empty() && !p.generic_seq_scans().is_empty())
            .collect()
    }

    pub fn failed_statements(&self) -> Vec<&PlannedStatement> {
        self.plans.iter().filter(|p| p.error.is_some()).collect()
    }
}

/// Runs phase 7: the small database, then the big one of `large_users` users.
pub async fn run(settings: &Settings, large_users: usize) -> GrowthPhase {
    let started = Instant::now();
    let (small, (small_plans, _, _)) = run_one(settings, SMALL_USERS).await;
    let (large, (plans, shape, server_settings)) = run_one(settings, large_users).await;
    let phase = GrowthPhase {
        small,
        large,
        plans,
        small_plans,
        shape,
        server_settings,
        total_time: started.elapsed(),
    };
    crate::step(&format!(
        "phase 7: {:.0} req/s with {} users, {:.0} with {} ({}); {} statements with a seq scan \
         on a growing table; phase took {:.0} s",
        phase.small.load.throughput(),
        phase.small.users,
        phase.large.load.throughput(),
        phase.large.users,
        stats::ratio(phase.large.load.throughput(), phase.small.load.throughput()),
        phase.seq_scan_statements().len(),
        phase.total_time.as_secs_f64()
    ));
    phase
}

/// The users each load connection cycles through: phase 1's number, or fewer so that the
/// small database holds no more than [`SMALL_USERS`] users.
fn users_per_connection(settings: &Settings) -> usize {
    settings
        .users_per_connection
        .min(SMALL_USERS / settings.connections.max(1))
        .max(1)
}

/// The plans, the shape check and the server's settings of one database.
type Explained = (Vec<PlannedStatement>, String, String);

/// One database size: a fresh environment, the load users, the generated history, the
/// load; then, api and worker stopped, the plans and the shape check.
async fn run_one(settings: &Settings, users: usize) -> (GrowthRun, Explained) {
    crate::step(&format!("phase 7: starting api + worker for {users} users"));
    let mut env = crate::builder(settings).start().await;
    let load_count = settings.connections * users_per_connection(settings);
    let load_users = load::create_users(&env.api(), "g", load_count, 16).await;
    env.sink.clear();
    let generated = users.saturating_sub(load_users.len());
    crate::step(&format!(
        "phase 7: generating the history of {generated} users"
    ));
    let (generation, vacuum) = generate(&env, generated).await;
    let total: Duration = generation.iter().map(|s| s.time).sum::<Duration>() + vacuum;
    let user_count: u64 = psql(&env, &["SELECT count(*) FROM users"])
        .await
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    crate::step(&format!(
        "phase 7: {user_count} users; generated in {:.1} s (VACUUM ANALYZE + CHECKPOINT {:.1} s)",
        total.as_secs_f64(),
        vacuum.as_secs_f64()
    ));
    crate::step(&format!(
        "phase 7: {} connections over {} users, {} s warm-up + {} s measured",
        settings.connections,
        load_users.len(),
        settings.warmup.as_secs(),
        settings.duration.as_secs()
    ));
    let worker_pid = env.pid(Role::Worker(0));
    let scans_before = seq_scan_counters(&env).await;
    let measured = crate::measured_load(&env, &load_users, settings, worker_pid).await;
    // Backends report their counters at the end of a transaction, at most once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let scans_after = seq_scan_counters(&env).await;
    let load_seq_scans = (
        scans_after.0.saturating_sub(scans_before.0),
        scans_after.1.saturating_sub(scans_before.1),
    );
    crate::step(&format!(
        "phase 7: {:.0} req/s with {user_count} users, p50 {}, p99 {}, {} errors",
        measured.load.throughput(),
        stats::ms(measured.load.latency.p50),
        stats::ms(measured.load.latency.p99),
        measured.load.error_count()
    ));
    let table_sizes = table_sizes(&env).await;
    // Nothing else touches the database while the plans are taken.
    env.kill(Role::Api);
    env.kill(Role::Worker(0));
    let sample = sample(&env, generated).await;
    crate::step("phase 7: explaining every statement of the request and the delivery");
    let plans = explain_all(&env, &sample).await;
    let shape = shape(&env, &load_users[0], sample.user_id).await;
    let server_settings = psql(
        &env,
        &[
            "SELECT string_agg(name || '=' || setting || coalesce(unit, ''), ', ' ORDER BY name) \
           FROM pg_settings WHERE name IN ('autovacuum', 'shared_buffers', 'work_mem', \
           'effective_cache_size', 'random_page_cost', 'max_wal_size', 'plan_cache_mode')",
        ],
    )
    .await
    .unwrap_or_else(|e| format!("error: {e}"));
    let explained = (plans, shape, server_settings.trim().to_string());
    let run = GrowthRun {
        users: user_count,
        load_users: load_users.len(),
        generated_users: generated,
        generation,
        vacuum,
        load: measured.load,
        cpu: measured.cpu,
        table_sizes,
        load_seq_scans,
    };
    (run, explained)
}

/// Runs `commands` in one `psql` session (`-X -q -At`, stop at the first error) on the
/// environment's database; the output of all of them, or psql's error.
async fn psql(env: &TestEnv, commands: &[&str]) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new("psql");
    cmd.args(["-h", "127.0.0.1", "-U", "postgres", "-d", env.db_name()])
        .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"])
        .env("PGCONNECT_TIMEOUT", "5");
    for c in commands {
        cmd.arg("-c").arg(c);
    }
    let out = cmd.output().await.map_err(|e| format!("run psql: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// The instance and organization of the environment's bootstrap.
async fn instance_and_org(env: &TestEnv) -> (i64, i64) {
    let row = psql(
        env,
        &["SELECT instance_id, id FROM organizations ORDER BY created_at, id LIMIT 1"],
    )
    .await
    .expect("read the bootstrap organization");
    let mut parts = row.trim().split('|').map(|v| v.parse::<i64>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Inserts the history of `count` users (one statement per table, timed), with the
/// secondary indexes of the growing tables dropped meanwhile and rebuilt afterwards from
/// their own definitions (`pg_get_indexdef`; primary keys stay, the ids come in order), then
/// `VACUUM ANALYZE` and `CHECKPOINT` (timed together). Aborts the benchmark if a statement
/// fails.
async fn generate(env: &TestEnv, count: usize) -> (Vec<GenerationStep>, Duration) {
    let (instance_id, org_id) = instance_and_org(env).await;
    let t0 = (Utc::now() - chrono::Duration::days(366))
        .format("%Y-%m-%d %H:%M:%S+00")
        .to_string();
    let mut steps = Vec::new();
    if count > 0 {
        let indexes = secondary_indexes(env).await;
        let drops: Vec<String> = indexes
            .iter()
            .map(|(name, _)| format!("DROP INDEX {name}"))
            .collect();
        let drops: Vec<&str> = drops.iter().map(String::as_str).collect();
        psql(env, &drops).await.expect("drop the secondary indexes");
        for (table, rows, sql) in generation_sql(count, instance_id, org_id, &t0) {
            let started = Instant::now();
            // Foreign keys are right by construction: skip their per-row triggers.
            let result = psql(env, &["SET session_replication_role = replica", &sql]).await;
            if let Err(e) = result {
                panic!("generating {table} failed: {e}\n{sql}");
            }
            let time = started.elapsed();
            crate::step(&format!(
                "phase 7:   {table}: {rows} rows in {:.1} s",
                time.as_secs_f64()
            ));
            steps.push(GenerationStep {
                what: format!("INSERT INTO {table}"),
                rows,
                time,
            });
        }
        let started = Instant::now();
        let mut creates = vec!["SET maintenance_work_mem = '256MB'"];
        creates.extend(indexes.iter().map(|(_, def)| def.as_str()));
        psql(env, &creates)
            .await
            .expect("rebuild the secondary indexes");
        let time = started.elapsed();
        crate::step(&format!(
            "phase 7:   {} secondary indexes rebuilt in {:.1} s",
            indexes.len(),
            time.as_secs_f64()
        ));
        steps.push(GenerationStep {
            what: format!("CREATE INDEX ({} secondary indexes)", indexes.len()),
            rows: 0,
            time,
        });
    }
    let started = Instant::now();
    psql(env, &["VACUUM ANALYZE"])
        .await
        .expect("VACUUM ANALYZE");
    psql(env, &["CHECKPOINT"]).await.expect("CHECKPOINT");
    (steps, started.elapsed())
}

/// The growing tables as an SQL list of literals, for `IN (...)`.
fn growing_tables_sql_list() -> String {
    GROWING_TABLES
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `(name, definition)` of the indexes of the growing tables that back no constraint.
async fn secondary_indexes(env: &TestEnv) -> Vec<(String, String)> {
    let list = growing_tables_sql_list();
    let rows = psql(
        env,
        &[&format!(
            "SELECT i.indexrelid::regclass, pg_get_indexdef(i.indexrelid) FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indrelid \
             WHERE c.relname IN ({list}) AND c.relnamespace = 'public'::regnamespace \
             AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid) \
             ORDER BY 1"
        )],
    )
    .await
    .expect("list the secondary indexes");
    rows.lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(name, def)| (name.to_string(), def.to_string()))
        .collect()
}

/// The generating statements: `(table, rows, sql)`. User `n` (1..=count) was created at
/// `t0 + n * 365 days / count`, set its address a second later (mail job and attempt), and
/// verified it five minutes later. Ids have the shape of `next_id()` (milliseconds since
/// 2024 in the high bits) with distinct low bits per table, so the tables agree with each
/// other without a lookup.
fn generation_sql(
    count: usize,
    instance_id: i64,
    org_id: i64,
    t0: &str,
) -> Vec<(&'static str, u64, String)> {
    let n = count as u64;
    let from = format!(
        "FROM (SELECT n, t, t + interval '1 second' AS te, \
               'growth-' || n || '@mail' || (n % 97) || '.example.com' AS addr \
             FROM (SELECT n, '{t0}'::timestamptz + make_interval(secs => 31536000.0::float8 * n / {count}) AS t \
                   FROM generate_series(1, {count}) AS n) a) s"
    );
    let id = |time: &str, k: u32| {
        format!(
            "((((extract(epoch FROM {time}) * 1000)::bigint - 1704067200000) << 22) \
             | ((4 * n + {k}) % 4194304))"
        )
    };
    let (user, email, job) = (id("t", 0), id("te", 1), id("te", 2));
    // The api stores a template in its canonical form, `{{UserID}}` for `{{.UserID}}`.
    let template = crate::load::URL_TEMPLATE
        .replace("{{.", "{{")
        .replace('\'', "''");
    vec![
        (
            "users",
            n,
            format!(
                "INSERT INTO users (id, instance_id, org_id, username, created_at, last_sequence, \
                 last_changed_at, deleted_at, preferred_language) \
                 SELECT {user}, {instance_id}, {org_id}, 'growth-' || n, t, 3, \
                 t + interval '5 minutes', NULL, NULL {from}"
            ),
        ),
        (
            "user_emails",
            n,
            format!(
                "INSERT INTO user_emails (id, user_id, purpose, address, verified, code_hash, \
                 code_expires_at, code_failures, created_at, updated_at) \
                 SELECT {email}, {user}, 'contact_email', addr, true, NULL, NULL, 0, te, \
                 t + interval '5 minutes' {from}"
            ),
        ),
        (
            "mail_jobs",
            n,
            format!(
                "INSERT INTO mail_jobs (id, instance_id, org_id, user_id, email_id, purpose, \
                 recipient, url_template, code_ciphertext, code_expires_at, state, attempts, \
                 failed_deliveries, last_error, next_attempt_at, lease_until, superseded_by, \
                 trace_context, created_at, updated_at, sent_at, language) \
                 SELECT {job}, {instance_id}, {org_id}, {user}, {email}, 'contact_email', addr, \
                 '{template}', NULL, te + interval '1 hour', 'sent', 1, 0, NULL, NULL, NULL, \
                 NULL, '00-' || md5(n::text) || '-' || left(md5((-n)::text), 16) || '-01', te, \
                 te + interval '40 milliseconds', te + interval '40 milliseconds', NULL {from}"
            ),
        ),
        (
            "mail_attempts",
            n,
            format!(
                "INSERT INTO mail_attempts (job_id, at, outcome, smtp_reply, duration_ms) \
                 SELECT {job}, te + interval '35 milliseconds', 'sent', '250 2.0.0 OK queued', \
                 2 + n % 5 {from}"
            ),
        ),
        (
            "user_events",
            3 * n,
            format!(
                "INSERT INTO user_events (user_id, sequence, instance_id, event_type, payload, \
                 created_at) \
                 SELECT {user}, e.seq, {instance_id}, e.kind, \
                 CASE e.seq \
                   WHEN 1 THEN jsonb_build_object('username', 'growth-' || n, \
                     'preferredLanguage', NULL, 'email', NULL, 'emailVerified', NULL) \
                   WHEN 2 THEN jsonb_build_object('address', addr, 'verification', 'send_code') \
                   ELSE '{{}}'::jsonb END, \
                 CASE e.seq WHEN 1 THEN t WHEN 2 THEN te ELSE t + interval '5 minutes' END \
                 {from}, LATERAL (VALUES (1, 'user.created'), (2, 'user.email.changed'), \
                 (3, 'user.email.verified')) AS e(seq, kind)"
            ),
        ),
    ]
}

/// `seq_scan` and `seq_tup_read` of the growing tables, summed.
async fn seq_scan_counters(env: &TestEnv) -> (u64, u64) {
    let list = growing_tables_sql_list();
    let row = psql(
        env,
        &[&format!(
            "SELECT coalesce(sum(seq_scan), 0), coalesce(sum(seq_tup_read), 0) \
             FROM pg_stat_user_tables WHERE relname IN ({list})"
        )],
    )
    .await
    .unwrap_or_default();
    let mut parts = row.trim().split('|').map(|v| v.parse::<u64>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Row counts and sizes of the growing tables.
async fn table_sizes(env: &TestEnv) -> String {
    let list = growing_tables_sql_list();
    let rows = psql(
        env,
        &[&format!(
            "SELECT c.relname, c.reltuples::bigint, pg_size_pretty(pg_relation_size(c.oid)), \
             pg_size_pretty(pg_indexes_size(c.oid)) FROM pg_class c \
             WHERE c.relname IN ({list}) AND c.relkind = 'r' ORDER BY c.relname"
        )],
    )
    .await
    .unwrap_or_else(|e| format!("error: {e}"));
    format!("table|rows (estimate)|heap|indexes\n{}", rows.trim_end())
}

/// Parameter values for the statements: the middle generated user (or a load user when
/// nothing was generated), its address, its sent job, the first token and a fresh job id.
async fn sample(env: &TestEnv, generated: usize) -> Sample {
    let (instance_id, _) = instance_and_org(env).await;
    let columns = "SELECT u.id, u.org_id, u.last_sequence, e.id, e.address, j.id \
        FROM users u JOIN user_emails e ON e.user_id = u.id AND e.purpose = 'contact_email' \
        JOIN mail_jobs j ON j.email_id = e.id";
    let by_name = format!(
        "{columns} WHERE lower(u.username) = 'growth-{}' AND u.instance_id = {instance_id} \
         AND u.deleted_at IS NULL ORDER BY j.id DESC LIMIT 1",
        (generated / 2).max(1)
    );
    let mut row = psql(env, &[&by_name]).await.unwrap_or_default();
    if row.trim().is_empty() {
        let any = format!("{columns} ORDER BY j.id DESC LIMIT 1");
        row = psql(env, &[&any]).await.unwrap_or_default();
    }
    let f: Vec<&str> = row.trim().split('|').collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
    let token = psql(
        env,
        &["SELECT id, encode(token_hash, 'hex') FROM api_tokens ORDER BY created_at LIMIT 1"],
    )
    .await
    .unwrap_or_default();
    let (token_id, token_hash_hex) = token.trim().split_once('|').unwrap_or(("0", ""));
    let new_job_id = psql(env, &["SELECT next_id()"])
        .await
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    Sample {
        token_hash_hex: token_hash_hex.to_string(),
        token_id: token_id.parse().unwrap_or(0),
        instance_id,
        org_id: num(1),
        user_id: num(0),
        last_sequence: num(2),
        email_id: num(3),
        address: f.get(4).unwrap_or(&"").to_string(),
        job_id: num(5),
        new_job_id,
    }
}

/// Explains every statement of `growth_sql.rs` with the sample values.
async fn explain_all(env: &TestEnv, sample: &Sample) -> Vec<PlannedStatement> {
    let mut plans = Vec::new();
    for s in growth_sql::statements(sample) {
        let types: Vec<&str> = s.params.iter().map(|(t, _)| *t).collect();
        let values: Vec<String> = s
            .params
            .iter()
            .map(|(t, v)| format!("({v})::{t}"))
            .collect();
        let prepare = if types.is_empty() {
            format!("PREPARE q AS {}", s.sql)
        } else {
            format!("PREPARE q({}) AS {}", types.join(", "), s.sql)
        };
        let execute = if values.is_empty() {
            "EXECUTE q".to_string()
        } else {
            format!("EXECUTE q({})", values.join(", "))
        };
        let custom_explain = if s.analyze {
            format!("EXPLAIN (ANALYZE, BUFFERS) {execute}")
        } else {
            format!("EXPLAIN {execute}")
        };
        let generic_explain = format!("EXPLAIN {execute}");
        let out = psql(
            env,
            &[
                &prepare,
                "SET plan_cache_mode = force_custom_plan",
                "BEGIN",
                &custom_explain,
                "ROLLBACK",
                "SELECT '@@generic@@'",
                "SET plan_cache_mode = force_generic_plan",
                &generic_explain,
            ],
        )
        .await;
        let (custom, generic, error) = match out {
            Ok(text) => {
                let (c, g) = text.split_once("@@generic@@").unwrap_or((&text, ""));
                (c.trim().to_string(), g.trim().to_string(), None)
            }
            Err(e) => (String::new(), String::new(), Some(e)),
        };
        plans.push(PlannedStatement {
            path: s.path,
            source: s.source.to_string(),
            when: s.when.to_string(),
            sql: s.sql,
            custom,
            generic,
            error,
        });
    }
    plans
}

/// The rows of a user the API made (created, then its address set by the load, mails sent)
/// next to those of a generated user, as JSON, to compare their shape.
async fn shape(env: &TestEnv, real_user: &str, generated_user: i64) -> String {
    let real: i64 = real_user.trim().parse().unwrap_or(0);
    let mut out = String::new();
    for (who, id) in [
        ("made through the API", real),
        ("generated", generated_user),
    ] {
        let queries = [
            format!("SELECT 'users: ' || row_to_json(t) FROM users t WHERE id = {id}"),
            format!(
                "SELECT 'user_emails: ' || row_to_json(t) FROM user_emails t WHERE user_id = {id}"
            ),
            format!(
                "SELECT 'user_events: ' || row_to_json(t) FROM (SELECT * FROM user_events \
                 WHERE user_id = {id} ORDER BY sequence LIMIT 3) t"
            ),
            format!(
                "SELECT 'mail_jobs: ' || row_to_json(t) FROM (SELECT * FROM mail_jobs \
                 WHERE user_id = {id} AND state = 'sent' ORDER BY id DESC LIMIT 1) t"
            ),
            format!(
                "SELECT 'mail_attempts: ' || row_to_json(t) FROM (SELECT a.* FROM mail_attempts a \
                 JOIN mail_jobs j ON j.id = a.job_id WHERE j.user_id = {id} AND j.state = 'sent' \
                 ORDER BY a.id DESC LIMIT 1) t"
            ),
        ];
        let refs: Vec<&str> = queries.iter().map(String::as_str).collect();
        let rows = psql(env, &refs)
            .await
            .unwrap_or_else(|e| format!("error: {e}"));
        out.push_str(&format!("-- user {id}, {who}\n{}\n", rows.trim_end()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(custom: &str, generic: &str) -> PlannedStatement {
        PlannedStatement {
            path: Path::Request,
            source: "x".into(),
            when: "y".into(),
            sql: "SELECT 1".into(),
            custom: custom.into(),
            generic: generic.into(),
            error: None,
        }
    }

    #[test]
    fn reads_plans() {
        let p = planned(
            "Update on mail_jobs  (cost=0.42..8.45 rows=0 width=0) (actual time=0.1..0.1 rows=0 loops=1)\n  \
             ->  Index Scan using mail_jobs_email_pending on mail_jobs  (cost=0.42..8.45 rows=1 width=10)\n        \
             Index Cond: (email_id = '1'::bigint)\n        Rows Removed by Filter: 7\nPlanning Time: 0.2 ms\nExecution Time: 0.052 ms",
            "Update on mail_jobs  (cost=0.00..30000.00 rows=0 width=0)\n  ->  Seq Scan on mail_jobs  (cost=0.00..30000.00 rows=1 width=10)\n        Filter: (email_id = $5)",
        );
        assert_eq!(p.top_node(), "Update on mail_jobs");
        assert_eq!(
            p.scans(),
            vec!["Index Scan using mail_jobs_email_pending on mail_jobs".to_string()]
        );
        assert!(p.seq_scans().is_empty());
        assert_eq!(p.generic_seq_scans(), vec!["mail_jobs".to_string()]);
        assert_eq!(p.execution_ms(), Some(0.052));
        assert!(p.unconditioned_index_scans().is_empty());
        assert_eq!(p.rows_removed(), 7);
        let whole = planned(
            "Update on mail_jobs  (cost=0.28..4.29 rows=0 width=0)\n  ->  Index Scan using \
             mail_jobs_email_pending on mail_jobs  (cost=0.28..4.29 rows=1 width=14)\n        \
             Filter: ((id = ANY ('{1}'::bigint[])) AND (state = 'sending'::text))",
            "",
        );
        assert_eq!(
            whole.unconditioned_index_scans(),
            vec!["Index Scan using mail_jobs_email_pending on mail_jobs".to_string()]
        );
        // A table that does not grow with users is not flagged.
        let small = planned("Seq Scan on outbox  (cost=0.00..1.01 rows=1 width=8)", "");
        assert!(small.seq_scans().is_empty());
        assert_eq!(small.scans(), vec!["Seq Scan on outbox".to_string()]);
    }

    #[test]
    fn generation_covers_every_growing_table() {
        let sql = generation_sql(10, 1, 2, "2025-12-01 00:00:00+00");
        let tables: Vec<&str> = sql.iter().map(|(t, _, _)| *t).collect();
        for t in GROWING_TABLES {
            assert!(tables.contains(&t), "{t} is not generated");
        }
        assert_eq!(sql.iter().map(|(_, n, _)| n).sum::<u64>(), 70);
    }
}
