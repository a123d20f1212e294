//! The database ceiling: `pgbench` running the SQL of one set-contact-email request (with
//! `sendCode`, address changed, `RESEND_COOLDOWN=0s`) against the benchmark's own database,
//! so "API throughput / pgbench throughput" says how much of what PostgreSQL can do the
//! service turns into requests.
//!
//! The script reproduces, statement by statement and in order, what the API sends for that
//! request (see `common/src/auth.rs` `authenticate`, `common/src/commands/mod.rs`
//! `load_user` / `append_event`, `common/src/commands/email.rs` `set_contact_email` /
//! `replace_contact_email` / `code_for` / `check_send_limits`, `common/src/mail_job/`
//! `enqueue` / `lock_recipient` / `recent_mails_to`):
//!
//! 1. token lookup (its own pool checkout in the API, before the transaction);
//! 2. `BEGIN`; the user row `FOR UPDATE`; the contact email row;
//! 3. (only when the resend limits are on) the recipient's advisory lock, then one statement
//!    for the last mail to it for the purpose within the cooldown and the 10th latest mail
//!    to it within the hour;
//! 4. update the address;
//! 5. `next_id()`; one statement that stores the new code hash, supersedes the older unsent
//!    jobs, inserts the mail job and its outbox row;
//! 6. one statement that inserts the event and updates the user's last sequence; `COMMIT`.
//!
//! Differences, all small: the script finds its user through a `bench_users` helper table in
//! a sub-select of the `FOR UPDATE` statement (no extra round trip); timestamps come from
//! `now()` instead of bound parameters; the code hash and ciphertext are constant bytes of the
//! real sizes (the API computes them in Rust). What the API does *after* commit (publish to
//! RabbitMQ, then `DELETE FROM outbox`) is not in the script: the ceiling is the transaction.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::stats::Latency;

/// What the script needs to know about the benchmark database.
#[derive(Debug, Clone)]
pub struct ScriptParams {
    /// Hex (no `\x`) of the SHA-256 token hash stored in `api_tokens`.
    pub token_hash_hex: String,
    pub instance_id: String,
    /// Users per pgbench client: client `c` uses `bench_users.n` in `c*per+1 ..= (c+1)*per`.
    pub users_per_client: usize,
    /// Also run the resend-cooldown query (what the API does when `RESEND_COOLDOWN` > 0).
    pub with_cooldown_query: bool,
    /// The URL template stored with each job.
    pub url_template: String,
}

/// HMAC-SHA-256 size: the code hash stored on the address row.
const CODE_HASH_BYTES: usize = 32;
/// XChaCha20-Poly1305 of a 6-character code: 24-byte nonce + 6 + 16-byte tag.
const CIPHERTEXT_BYTES: usize = 46;
/// A W3C traceparent, as the api stores with each job.
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Makes the `bench_users (n, user_id)` helper table: every user that has a contact email,
/// numbered from 1. Returns the SQL to run (idempotent).
pub fn helper_table_sql() -> &'static str {
    "DROP TABLE IF EXISTS bench_users; \
     CREATE TABLE bench_users AS \
       SELECT (row_number() OVER (ORDER BY u.id))::int AS n, u.id AS user_id \
       FROM users u JOIN user_emails e ON e.user_id = u.id AND e.purpose = 'contact_email' \
       WHERE u.deleted_at IS NULL; \
     ALTER TABLE bench_users ADD PRIMARY KEY (n); \
     ANALYZE;"
}

fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn hex_bytes(n: usize, seed: u8) -> String {
    (0..n)
        .map(|i| format!("{:02x}", (i as u8).wrapping_mul(37).wrapping_add(seed)))
        .collect()
}

/// The pgbench script (one transaction = one set-contact-email request).
pub fn script(p: &ScriptParams) -> String {
    let addr = "('p' || :n::text || '-' || :r::text || '@bench.example.com')";
    let mut s = String::new();
    let mut line = |l: &str| {
        s.push_str(l);
        s.push('\n');
    };
    line("-- One PUT /v3alpha/users/{id}/email with sendCode (see bench/src/pgbench.rs).");
    line(&format!(
        "\\set n :client_id * {per} + random(1, {per})",
        per = p.users_per_client
    ));
    line("\\set r random(1, 2000000000)");
    // auth::authenticate
    line(&format!(
        "SELECT id, instance_id, org_id, subject_user_id, permissions FROM api_tokens \
         WHERE token_hash = '\\x{}'::bytea LIMIT 1;",
        p.token_hash_hex
    ));
    line("BEGIN;");
    // load_user (lock = true)
    line(&format!(
        "SELECT id, instance_id, org_id, username, last_sequence, last_changed_at FROM users \
         WHERE id = (SELECT user_id FROM bench_users WHERE n = :n) AND instance_id = {inst} \
         AND deleted_at IS NULL LIMIT 1 FOR UPDATE \\gset u_",
        inst = p.instance_id
    ));
    // contact_row
    line(
        "SELECT id, address, verified, code_hash, code_expires_at, code_failures FROM user_emails \
         WHERE user_id = :u_id AND purpose = 'contact_email' LIMIT 1 \\gset e_",
    );
    if p.with_cooldown_query {
        // check_send_limits -> lock_recipient, recent_mails_to
        line(&format!(
            "SELECT pg_advisory_xact_lock(1296124236, hashtext({inst} || ':' || lower({addr})));",
            inst = p.instance_id
        ));
        line(&format!(
            "SELECT (SELECT max(created_at) FROM mail_jobs WHERE instance_id = {inst} \
             AND lower(recipient) = lower({addr}) AND created_at > now() - interval '30 seconds' \
             AND purpose = 'contact_email') AS last_of_purpose, \
             (SELECT created_at FROM mail_jobs WHERE instance_id = {inst} \
             AND lower(recipient) = lower({addr}) AND created_at > now() - interval '1 hour' \
             ORDER BY created_at DESC OFFSET 9 LIMIT 1) AS nth_latest;",
            inst = p.instance_id
        ));
    }
    // replace_contact_email: the address
    line(&format!(
        "UPDATE user_emails SET address = {addr}, verified = false, code_hash = NULL, \
         code_expires_at = NULL, code_failures = 0, updated_at = now() WHERE id = :e_id;"
    ));
    // mail_job::enqueue
    line("SELECT next_id() AS job_id \\gset");
    // ... with the older unsent jobs superseded and the outbox row, in one statement
    line(&format!(
        "WITH pending AS (UPDATE user_emails SET code_hash = '\\x{hash}'::bytea, \
         code_expires_at = now() + interval '1 hour', code_failures = 0, updated_at = now() \
         WHERE id = :e_id), \
         superseded AS (UPDATE mail_jobs SET state = 'superseded', superseded_by = :job_id, \
         code_ciphertext = NULL, updated_at = now() WHERE email_id = :e_id \
         AND state IN ('queued', 'retrying', 'sending')), \
         job AS (INSERT INTO mail_jobs (id, instance_id, org_id, user_id, email_id, purpose, \
         recipient, url_template, code_ciphertext, code_expires_at, state, trace_context, language, \
         created_at, updated_at) \
         VALUES (:job_id, :u_instance_id, :u_org_id, :u_id, :e_id, 'contact_email', {addr}, {tpl}, \
         '\\x{ct}'::bytea, now() + interval '1 hour', 'queued', {tp}, NULL, now(), now())) \
         INSERT INTO outbox (job_id) VALUES (:job_id);",
        hash = hex_bytes(CODE_HASH_BYTES, 7),
        tpl = sql_string(&p.url_template),
        ct = hex_bytes(CIPHERTEXT_BYTES, 11),
        tp = sql_string(TRACEPARENT),
    ));
    // append_event: the event and the user's last sequence in one statement
    line("\\set seq :u_last_sequence + 1");
    line(&format!(
        "WITH event AS (INSERT INTO user_events (user_id, sequence, instance_id, event_type, \
         payload, created_at) VALUES (:u_id, :seq, :u_instance_id, 'user.email.changed', \
         ('{{\"address\": \"' || {addr} || '\", \"verification\": \"send_code\"}}')::jsonb, now())) \
         UPDATE users SET last_sequence = :seq, last_changed_at = now() WHERE id = :u_id;"
    ));
    line("COMMIT;");
    s
}

/// What one pgbench run measured.
#[derive(Debug, Clone, Default)]
pub struct PgbenchResult {
    pub clients: usize,
    pub threads: usize,
    pub duration: Duration,
    /// `tps = ... (without initial connection time)`.
    pub tps: f64,
    pub transactions: u64,
    pub failed: u64,
    /// From the per-transaction log (`--log`).
    pub latency: Latency,
    /// pgbench's stdout and stderr, for the report's appendix when something looks off.
    pub output: String,
}

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub database: String,
    /// libpq `sslmode` (`PGSSLMODE`), as the api's and the worker's connections use.
    pub sslmode: String,
}

/// Runs `pgbench` with `script_path` for `duration` and parses its result. With `log_dir`,
/// per-transaction latencies are logged there and summarised. Aborts the benchmark when
/// pgbench cannot run at all.
pub async fn run(
    target: &Target,
    script_path: &Path,
    clients: usize,
    threads: usize,
    duration: Duration,
    log_dir: Option<&Path>,
) -> PgbenchResult {
    let mut cmd = tokio::process::Command::new("pgbench");
    cmd.args(["-h", &target.host])
        .args(["-p", &target.port.to_string()])
        .args(["-U", &target.user])
        .env("PGSSLMODE", &target.sslmode)
        .args(["-n", "-M", "prepared"])
        .args(["-c", &clients.to_string()])
        .args(["-j", &threads.to_string()])
        .args(["-T", &duration.as_secs().max(1).to_string()])
        .arg("-f")
        .arg(script_path)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let prefix: Option<PathBuf> = log_dir.map(|d| d.join("pgbench_log"));
    if let Some(prefix) = &prefix {
        cmd.arg("--log")
            .arg(format!("--log-prefix={}", prefix.display()));
    }
    cmd.arg(&target.database);
    let out = cmd
        .output()
        .await
        .expect("run pgbench (is it installed and on PATH?)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let output = format!("{stdout}{stderr}");
    assert!(
        out.status.success(),
        "pgbench failed with {}:\n{output}",
        out.status
    );
    let mut result = parse_output(&stdout);
    result.clients = clients;
    result.threads = threads;
    result.duration = duration;
    result.output = output;
    if let Some(dir) = log_dir {
        result.latency = Latency::of(&read_logs(dir));
    }
    result
}

/// `tps`, processed and failed transactions from pgbench's summary.
pub fn parse_output(stdout: &str) -> PgbenchResult {
    let mut r = PgbenchResult::default();
    for line in stdout.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("tps = ") {
            if let Some(v) = rest.split_whitespace().next().and_then(|v| v.parse().ok()) {
                r.tps = v;
            }
        } else if let Some(rest) = line.strip_prefix("number of transactions actually processed:") {
            r.transactions = rest
                .trim()
                .split('/')
                .next()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
        } else if let Some(rest) = line.strip_prefix("number of failed transactions:") {
            r.failed = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        }
    }
    r
}

/// Latencies of every logged transaction: the third field of each line, in microseconds.
fn read_logs(dir: &Path) -> Vec<Duration> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut samples = Vec::new();
    for entry in entries.flatten() {
        let is_log = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with("pgbench_log"));
        if !is_log {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        samples.extend(parse_log(&text));
    }
    samples
}

fn parse_log(text: &str) -> impl Iterator<Item = Duration> + '_ {
    text.lines().filter_map(|l| {
        l.split_whitespace()
            .nth(2)
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_micros)
    })
}

/// Counters of `pg_stat_database` for one database, to compare the database work per API
/// request with the work per pgbench transaction. PostgreSQL 15 flushes a backend's counters
/// at most once a second, so deltas over a window are approximate at its edges.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DbCounters {
    pub values: [f64; DbCounters::NAMES.len()],
}

impl DbCounters {
    pub const NAMES: [&'static str; 8] = [
        "xact_commit",
        "tup_returned",
        "tup_fetched",
        "tup_inserted",
        "tup_updated",
        "tup_deleted",
        "blks_hit",
        "blks_read",
    ];

    /// The query whose `psql -At` output [`DbCounters::parse`] reads.
    pub fn query() -> String {
        format!(
            "SELECT {} FROM pg_stat_database WHERE datname = current_database()",
            DbCounters::NAMES.join(", ")
        )
    }

    /// Parses one `a|b|c...` line; missing or malformed fields read as 0.
    pub fn parse(line: &str) -> DbCounters {
        let mut values = [0.0; DbCounters::NAMES.len()];
        for (slot, field) in values.iter_mut().zip(line.trim().split('|')) {
            *slot = field.trim().parse().unwrap_or(0.0);
        }
        DbCounters { values }
    }

    /// `self - earlier`.
    pub fn since(&self, earlier: &DbCounters) -> DbCounters {
        let mut values = self.values;
        for (v, e) in values.iter_mut().zip(earlier.values) {
            *v -= e;
        }
        DbCounters { values }
    }

    /// Each counter divided by `n`.
    pub fn per(&self, n: f64) -> DbCounters {
        let mut values = self.values;
        for v in values.iter_mut() {
            *v /= n.max(1.0);
        }
        DbCounters { values }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(cooldown: bool) -> ScriptParams {
        ScriptParams {
            token_hash_hex: "ab".repeat(32),
            instance_id: "42".to_string(),
            users_per_client: 50,
            with_cooldown_query: cooldown,
            url_template: "https://x.example/?c={{Code}}".to_string(),
        }
    }

    #[test]
    fn script_has_the_statements_of_the_request_in_order() {
        let s = script(&params(false));
        let order = [
            "FROM api_tokens",
            "BEGIN;",
            "FOR UPDATE",
            "FROM user_emails",
            "UPDATE user_emails SET address",
            "SELECT next_id()",
            "WITH pending AS (UPDATE user_emails SET code_hash",
            "superseded AS (UPDATE mail_jobs SET state = 'superseded'",
            "INSERT INTO mail_jobs",
            "INSERT INTO outbox",
            "WITH event AS (INSERT INTO user_events",
            "UPDATE users SET last_sequence",
            "COMMIT;",
        ];
        let mut at = 0;
        for needle in order {
            let found = s[at..]
                .find(needle)
                .unwrap_or_else(|| panic!("{needle:?} missing or out of order in:\n{s}"));
            at += found + needle.len();
        }
        assert!(!s.contains("max(created_at)"));
        assert!(s.contains("\\set n :client_id * 50 + random(1, 50)"));
        assert!(s.contains("instance_id = 42"));
        assert!(s.contains("'https://x.example/?c={{Code}}'"));
    }

    #[test]
    fn cooldown_variant_adds_the_query() {
        assert!(script(&params(true)).contains("SELECT (SELECT max(created_at) FROM mail_jobs"));
    }

    #[test]
    fn constant_bytes_have_the_real_sizes() {
        assert_eq!(hex_bytes(CODE_HASH_BYTES, 7).len(), 64);
        assert_eq!(hex_bytes(CIPHERTEXT_BYTES, 11).len(), 92);
    }

    #[test]
    fn parses_the_summary_of_pgbench_15() {
        let out = "transaction type: x.sql\nnumber of clients: 64\n\
                   number of transactions actually processed: 41234\n\
                   number of failed transactions: 3 (0.007%)\n\
                   latency average = 31.042 ms\n\
                   initial connection time = 120.000 ms\n\
                   tps = 2061.712345 (without initial connection time)\n";
        let r = parse_output(out);
        assert_eq!(r.transactions, 41234);
        assert_eq!(r.failed, 3);
        assert!((r.tps - 2061.712345).abs() < 1e-9);
    }

    #[test]
    fn database_counters() {
        let a = DbCounters::parse("10|20|30|40|50|60|70|80\n");
        let b = DbCounters::parse("20|40|60|80|100|120|140|160");
        let d = b.since(&a).per(10.0);
        assert_eq!(d.values, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        assert!(DbCounters::query().contains("xact_commit, tup_returned"));
    }

    #[test]
    fn parses_log_lines() {
        let log = "0 1 1500 0 1700000000 123456\n3 7 250 0 1700000000 223456\n";
        let v: Vec<Duration> = parse_log(log).collect();
        assert_eq!(
            v,
            vec![Duration::from_micros(1500), Duration::from_micros(250)]
        );
    }
}
