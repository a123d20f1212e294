//! Everything one benchmark run found, and its two renderings: a summary table for stdout and
//! the markdown report written to `bench/results/`.

use std::fmt::Write as _;
use std::time::Duration;

use crate::load::LoadResult;
use crate::mailflow::{EndToEnd, MailRate};
use crate::pgbench::{DbCounters, PgbenchResult};
use crate::procfs::{CpuSnapshot, Memory};
use crate::stats::{Latency, mib, ms, ratio};

mod markdown;

/// The machine and software the run happened on.
#[derive(Debug, Clone, Default)]
pub struct Machine {
    pub date: String,
    pub hostname: String,
    pub cpu_model: String,
    pub nproc: usize,
    pub mem_total_kib: u64,
    pub kernel: String,
    pub rustc: String,
    pub profile: String,
    pub bin_dir: String,
    pub git: String,
    pub postgres: String,
    pub rabbitmq: String,
    pub pgbench: String,
    pub load_before: String,
    pub load_after: String,
}

/// Phase 1: the API under load, and the pgbench ceiling on the same database.
#[derive(Debug, Clone, Default)]
pub struct ApiPhase {
    pub users: usize,
    pub load: LoadResult,
    pub cpu: CpuSnapshot,
    pub mails_during_window: usize,
    /// The same load with the worker stopped.
    pub load_no_worker: LoadResult,
    pub cpu_no_worker: CpuSnapshot,
    pub db_no_worker: DbCounters,
    /// VmHWM of the api after both loads.
    pub api_memory_no_worker: Memory,
    pub api_memory: Memory,
    pub worker_memory: Memory,
    /// `state count` lines of `mail_jobs` right after the load, and the outbox backlog.
    pub job_states: String,
    pub outbox_after: String,
    pub api_log_bytes: u64,
    pub api_log_lines: u64,
    pub pgbench: PgbenchResult,
    pub pgbench_cpu: CpuSnapshot,
    /// `pg_stat_database` deltas over the API window and over the 64-client pgbench run.
    pub db_api: DbCounters,
    pub db_pgbench: DbCounters,
    pub pgbench_pool_sized: PgbenchResult,
    pub pgbench_cooldown: PgbenchResult,
    pub mail_jobs_rows: String,
    /// `pg_stat_user_tables` after the first API load, and after all pgbench runs.
    pub table_stats: String,
    pub table_stats_after_pgbench: String,
    pub explain_cooldown: String,
    pub explain_outbox_delete: String,
    pub script: String,
}

/// Phase 2: the worker draining a backlog, and the lettre ceiling.
#[derive(Debug, Clone, Default)]
pub struct WorkerPhase {
    pub jobs: usize,
    pub enqueue_time: Duration,
    pub enqueue_errors: u64,
    pub publish_wait: Duration,
    pub worker: MailRate,
    pub mails_total: usize,
    pub job_states: String,
    pub cpu: CpuSnapshot,
    pub worker_memory: Memory,
    pub api_memory: Memory,
    pub ceiling: MailRate,
    /// The diagnostic runs: long-lived lettre connections without / with `TCP_NODELAY`.
    pub direct_nagle: MailRate,
    pub direct_nodelay: MailRate,
    /// SMTP attempt duration recorded by the worker during the drain: p50, p99, mean (ms).
    pub smtp_attempt_ms: Vec<f64>,
    /// End-to-end mails: job created -> SMTP attempt started p50, p99; SMTP attempt p50, p99
    /// (ms).
    pub e2e_breakdown: Vec<f64>,
    pub mail_size: usize,
}

/// Phase 5 (optional): request latency with the broker unreachable.
#[derive(Debug, Clone, Default)]
pub struct OutagePhase {
    pub requests: usize,
    pub broker_up: Latency,
    pub broker_down: Latency,
    pub errors_up: usize,
    pub errors_down: usize,
    pub readyz_down: String,
    /// Time from the broker being reachable again to the last of the outage's mails.
    pub recovered_after: Option<Duration>,
}

/// The settings of the run.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub connections: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub users_per_connection: usize,
    pub jobs: usize,
    pub worker_concurrency: usize,
    pub pool_size: usize,
    pub e2e_mails: usize,
    pub pgbench_threads: usize,
    /// libpq `sslmode` of the run's database connections (api, worker, pgbench).
    pub db_sslmode: String,
    /// Phases left out with `--phases` (their figures stay zero in the report).
    pub skipped_phases: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Results {
    pub machine: Machine,
    pub settings: Settings,
    pub api: ApiPhase,
    pub worker: WorkerPhase,
    pub e2e: EndToEnd,
    pub outage: Option<OutagePhase>,
    /// Phase 6, when it ran.
    pub open_loop: Option<crate::openloop::OpenLoopPhase>,
    /// Phase 7 (opt-in), when it ran.
    pub growth: Option<crate::growth::GrowthPhase>,
    /// Phase 8 (opt-in), when it ran.
    pub scaling: Option<crate::scaling::ScalingPhase>,
    pub total_time: Duration,
}

impl Results {
    /// The headline figures as a plain table for the terminal.
    pub fn summary(&self) -> String {
        let a = &self.api;
        let w = &self.worker;
        let mut rows: Vec<(String, String)> = vec![
            (
                format!(
                    "API set-email throughput ({} conns, {} s)",
                    self.settings.connections,
                    self.settings.duration.as_secs()
                ),
                format!("{:.0} req/s", a.load.throughput()),
            ),
            (
                "API latency p50 / p90 / p99".into(),
                format!(
                    "{} / {} / {}",
                    ms(a.load.latency.p50),
                    ms(a.load.latency.p90),
                    ms(a.load.latency.p99)
                ),
            ),
            (
                "API errors in window".into(),
                a.load.error_count().to_string(),
            ),
            (
                format!("pgbench ceiling ({} clients)", a.pgbench.clients),
                format!("{:.0} tps", a.pgbench.tps),
            ),
            (
                "API / pgbench".into(),
                ratio(a.load.throughput(), a.pgbench.tps),
            ),
            (
                "API throughput, worker stopped".into(),
                format!(
                    "{:.0} req/s ({} of pgbench)",
                    a.load_no_worker.throughput(),
                    ratio(a.load_no_worker.throughput(), a.pgbench.tps)
                ),
            ),
            (
                format!(
                    "pgbench ({} clients = pool size)",
                    a.pgbench_pool_sized.clients
                ),
                format!("{:.0} tps", a.pgbench_pool_sized.tps),
            ),
            (
                "pgbench with the cooldown query".into(),
                format!("{:.0} tps", a.pgbench_cooldown.tps),
            ),
            (
                format!("worker drain ({} mails, steady)", w.jobs),
                format!("{:.0} mails/s", w.worker.rate_steady()),
            ),
            (
                "worker drain incl. start-up".into(),
                format!("{:.0} mails/s", w.worker.rate_from_start()),
            ),
            (
                "lettre ceiling (steady)".into(),
                format!("{:.0} mails/s", w.ceiling.rate_steady()),
            ),
            (
                "worker / lettre".into(),
                ratio(w.worker.rate_steady(), w.ceiling.rate_steady()),
            ),
            (
                "lettre with TCP_NODELAY (diagnostic)".into(),
                format!("{:.0} mails/s", w.direct_nodelay.rate_steady()),
            ),
            (
                "end-to-end request->mail p50 / p99".into(),
                format!(
                    "{} / {}",
                    ms(self.e2e.to_mail.p50),
                    ms(self.e2e.to_mail.p99)
                ),
            ),
            (
                "single request p50 / p99 (idle)".into(),
                format!(
                    "{} / {}",
                    ms(self.e2e.request.p50),
                    ms(self.e2e.request.p99)
                ),
            ),
            (
                "peak RSS api (load) / worker (load)".into(),
                format!(
                    "{} / {}",
                    mib(a.api_memory.peak_kib),
                    mib(a.worker_memory.peak_kib)
                ),
            ),
            (
                "peak RSS worker (drain)".into(),
                mib(w.worker_memory.peak_kib),
            ),
        ];
        if let Some(o) = &self.outage {
            rows.push((
                "request p50 / p99, broker up".into(),
                format!("{} / {}", ms(o.broker_up.p50), ms(o.broker_up.p99)),
            ));
            rows.push((
                "request p50 / p99, broker down".into(),
                format!("{} / {}", ms(o.broker_down.p50), ms(o.broker_down.p99)),
            ));
        }
        if let Some(g) = &self.growth {
            rows.push((
                format!("API with {} / {} users", g.small.users, g.large.users),
                format!(
                    "{:.0} / {:.0} req/s ({}, target >= 85 %)",
                    g.small.load.throughput(),
                    g.large.load.throughput(),
                    ratio(g.large.load.throughput(), g.small.load.throughput())
                ),
            ));
            rows.push((
                format!("history of {} users generated in", g.large.generated_users),
                format!("{:.1} s", g.large.generation_time().as_secs_f64()),
            ));
            let seq: Vec<&str> = g
                .seq_scan_statements()
                .iter()
                .map(|p| p.source.as_str())
                .collect();
            rows.push((
                format!("statements with a seq scan at {} users", g.large.users),
                if seq.is_empty() {
                    format!("none of {}", g.plans.len())
                } else {
                    format!("{} of {}: {}", seq.len(), g.plans.len(), seq.join("; "))
                },
            ));
        }
        if let Some(sc) = &self.scaling {
            for round in &sc.rounds {
                rows.push((
                    format!(
                        "{} worker(s) draining {} jobs (steady)",
                        round.workers, sc.jobs
                    ),
                    format!(
                        "{:.0} mails/s (x{:.2})",
                        round.rate.rate_steady(),
                        sc.speedup(round)
                    ),
                ));
            }
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        let rule = "-".repeat(width + 24);
        let _ = writeln!(out, "{rule}");
        for (k, v) in rows {
            let _ = writeln!(out, "{k:<width$}  {v}");
        }
        let _ = writeln!(out, "{rule}");
        out
    }

    /// The full markdown report (see [`markdown`]).
    pub fn markdown(&self) -> String {
        markdown::render(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::growth::{GenerationStep, GrowthPhase, GrowthRun, PlannedStatement};
    use crate::growth_sql::Path;
    use crate::scaling::{ScalingPhase, ScalingRound};

    fn latency(base_ms: u64, count: usize) -> Latency {
        let d = Duration::from_micros;
        Latency {
            count,
            mean: d(base_ms * 1100),
            p50: d(base_ms * 1000),
            p90: d(base_ms * 1700 + 3),
            p99: d(base_ms * 2900 + 7),
            max: d(base_ms * 5100 + 11),
        }
    }

    fn cpu(scale: f64) -> CpuSnapshot {
        CpuSnapshot {
            api: 5.5 * scale,
            worker: 3.25 * scale,
            bench: 2.125 * scale,
            postgres: 12.75 * scale,
            rabbitmq: 1.5 * scale,
            machine_busy: 28.0 * scale,
            machine_total: 40.0 * scale,
        }
    }

    fn counters(base: f64) -> DbCounters {
        let mut values = [0.0; DbCounters::NAMES.len()];
        for (i, v) in values.iter_mut().enumerate() {
            *v = base * (i as f64 + 1.5);
        }
        DbCounters { values }
    }

    fn load(ok: u64, window_secs: u64, errors: &[(&str, u64)]) -> LoadResult {
        LoadResult {
            warmup: Duration::from_secs(5),
            window: Duration::from_secs(window_secs),
            ok,
            errors: errors.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            errors_outside: 3,
            total_sent: ok + 1234,
            latency: latency(21, ok as usize),
        }
    }

    fn pgbench(clients: usize, tps: f64) -> PgbenchResult {
        PgbenchResult {
            clients,
            threads: 2,
            duration: Duration::from_secs(20),
            tps,
            transactions: (tps * 20.0) as u64,
            failed: 1,
            latency: latency(9, (tps * 20.0) as usize),
            output: "pgbench (15.4)\ntps = 1234.5 (without initial connection time)\n".into(),
        }
    }

    fn rate(count: usize, from_start_ms: u64, first_to_last_ms: u64) -> MailRate {
        MailRate {
            count,
            from_start: Duration::from_millis(from_start_ms),
            first_to_last: Duration::from_millis(first_to_last_ms),
        }
    }

    fn memory(peak_kib: u64) -> Memory {
        Memory {
            peak_kib,
            current_kib: peak_kib / 2,
        }
    }

    /// Results with every field set to a distinct value, the outage phase included.
    fn fixture() -> Results {
        Results {
            machine: Machine {
                date: "2026-11-22 04:27".into(),
                hostname: "bench-host".into(),
                cpu_model: "Test CPU @ 2.0GHz".into(),
                nproc: 2,
                mem_total_kib: 8_000_000,
                kernel: "6.1.0".into(),
                rustc: "rustc 1.90.0".into(),
                profile: "release".into(),
                bin_dir: "target/release".into(),
                git: "abc1234".into(),
                postgres: "PostgreSQL 15.4".into(),
                rabbitmq: "3.12.1".into(),
                pgbench: "pgbench (PostgreSQL) 15.4".into(),
                load_before: "0.50 0.40 0.30".into(),
                load_after: "5.00 4.00 3.00".into(),
            },
            settings: Settings {
                connections: 64,
                warmup: Duration::from_secs(5),
                duration: Duration::from_secs(20),
                users_per_connection: 50,
                jobs: 2000,
                worker_concurrency: 32,
                pool_size: 16,
                e2e_mails: 200,
                pgbench_threads: 2,
                db_sslmode: "disable".into(),
                skipped_phases: Vec::new(),
            },
            api: ApiPhase {
                users: 3200,
                load: load(24_000, 20, &[("http 500", 2), ("timeout", 1)]),
                cpu: cpu(1.0),
                mails_during_window: 9_876,
                load_no_worker: load(30_000, 20, &[]),
                cpu_no_worker: cpu(0.8),
                db_no_worker: counters(30_000.0),
                api_memory_no_worker: memory(40_000),
                api_memory: memory(35_000),
                worker_memory: memory(25_000),
                job_states: "queued: 10, sent: 9000".into(),
                outbox_after: "7".into(),
                api_log_bytes: 12_345_678,
                api_log_lines: 56_789,
                pgbench: pgbench(64, 2500.25),
                pgbench_cpu: cpu(0.9),
                db_api: counters(24_000.0),
                db_pgbench: counters(50_000.0),
                pgbench_pool_sized: pgbench(16, 2100.5),
                pgbench_cooldown: pgbench(64, 800.75),
                mail_jobs_rows: "mail_jobs 120000, outbox 5, user_events 130000".into(),
                table_stats: "relname | n_tup_ins\nmail_jobs | 24000\n".into(),
                table_stats_after_pgbench: "relname | n_tup_ins\nmail_jobs | 120000\n".into(),
                explain_cooldown: "Aggregate\n  -> Seq Scan on mail_jobs\n".into(),
                explain_outbox_delete: "Delete on outbox\n  -> Index Scan using outbox_job_id\n"
                    .into(),
                script: "\\set u random(1, 50)\nBEGIN;\nCOMMIT;\n".into(),
            },
            worker: WorkerPhase {
                jobs: 2000,
                enqueue_time: Duration::from_millis(4321),
                enqueue_errors: 0,
                publish_wait: Duration::from_millis(250),
                worker: rate(2000, 9000, 8000),
                mails_total: 2000,
                job_states: "sent: 2000".into(),
                cpu: cpu(0.5),
                worker_memory: memory(30_000),
                api_memory: memory(20_000),
                ceiling: rate(2000, 6000, 5800),
                direct_nagle: rate(2000, 7000, 6900),
                direct_nodelay: rate(2000, 1000, 900),
                smtp_attempt_ms: vec![41.0, 44.5, 42.25],
                e2e_breakdown: vec![3.5, 9.75, 41.0, 45.0],
                mail_size: 4321,
            },
            e2e: EndToEnd {
                request: latency(4, 200),
                to_mail: latency(48, 200),
                errors: 1,
            },
            outage: Some(OutagePhase {
                requests: 100,
                broker_up: latency(5, 100),
                broker_down: latency(6, 100),
                errors_up: 0,
                errors_down: 2,
                readyz_down: "{\"broker\":\"degraded\"}".into(),
                recovered_after: Some(Duration::from_millis(3456)),
            }),
            open_loop: Some(crate::openloop::OpenLoopPhase {
                rate: 200,
                duration: Duration::from_secs(30),
                sent: 6000,
                errors: 0,
                latency: latency(3, 6000),
                start_lag: latency(0, 6000),
                to_mail: latency(9, 6000),
                mails_missing: 0,
            }),
            growth: Some(growth_fixture()),
            scaling: Some(scaling_fixture()),
            total_time: Duration::from_secs(245),
        }
    }

    fn planned(source: &str, custom: &str, generic: &str) -> PlannedStatement {
        PlannedStatement {
            path: Path::Request,
            source: source.into(),
            when: "every request".into(),
            sql: "SELECT 1 FROM t WHERE id = $1".into(),
            custom: custom.into(),
            generic: generic.into(),
            error: None,
        }
    }

    fn growth_run(users: u64, generated: usize, ok: u64) -> GrowthRun {
        let step = |what: &str, rows: u64, ms: u64| GenerationStep {
            what: what.into(),
            rows,
            time: Duration::from_millis(ms),
        };
        GrowthRun {
            users,
            load_users: 960,
            generated_users: generated,
            generation: vec![
                step("INSERT INTO users", generated as u64, 9_000),
                step("INSERT INTO user_events", 3 * generated as u64, 31_000),
                step("CREATE INDEX (10 secondary indexes)", 0, 14_000),
            ],
            vacuum: Duration::from_millis(12_345),
            load: load(ok, 20, &[]),
            cpu: cpu(1.0),
            table_sizes: "table|rows (estimate)|heap|indexes\nusers|1000000|80 MB|60 MB".into(),
            load_seq_scans: (users / 100, users * 3),
        }
    }

    /// Phase 7 with one plan of each kind: index only, a seq scan, a seq scan in the generic
    /// plan only, and a statement that no longer runs.
    fn growth_fixture() -> GrowthPhase {
        let whole = "Update on mail_jobs  (cost=0.28..4.29 rows=0 width=0)\n  ->  Index Scan using \
                     mail_jobs_email_pending on mail_jobs  (cost=0.28..4.29 rows=1 width=14)\n\
                     Execution Time: 0.101 ms";
        let index = "Index Scan using users_pkey on users  (cost=0.42..8.44 rows=1 width=8) \
                     (actual time=0.01..0.01 rows=1 loops=1)\n  Index Cond: (id = '5'::bigint)\n\
                     Planning Time: 0.100 ms\nExecution Time: 0.025 ms";
        let seq = "Aggregate  (cost=30000.00..30000.01 rows=1 width=8)\n  ->  Seq Scan on \
                   mail_jobs  (cost=0.00..29000.00 rows=1 width=8)\nExecution Time: 95.5 ms";
        let generic_seq = "Limit  (cost=0.00..25000.00 rows=1 width=40)\n  ->  Seq Scan on \
                           user_emails  (cost=0.00..25000.00 rows=1 width=40)";
        let mut broken = planned("common/src/x.rs: gone", "", "");
        broken.error = Some("ERROR:  column \"gone\" does not exist".into());
        GrowthPhase {
            small: growth_run(1000, 40, 12_000),
            large: growth_run(1_000_000, 999_040, 10_800),
            plans: vec![
                planned("common/src/commands/mod.rs: load_user", index, index),
                planned("common/src/mail_job/query.rs: recent_mails_to", seq, seq),
                planned(
                    "common/src/commands/address.rs: contact_email",
                    index,
                    generic_seq,
                ),
                planned(
                    "common/src/mail_job/lifecycle.rs: renew_leases",
                    whole,
                    whole,
                ),
                broken,
            ],
            small_plans: vec![planned(
                "common/src/commands/mod.rs: load_user",
                "Limit  (cost=0.00..1.50 rows=1 width=8)\n  ->  Seq Scan on users  \
                 (cost=0.00..1.50 rows=1 width=8)",
                "",
            )],
            shape: "-- user 1, made through the API\nusers: {\"id\":1}\n".into(),
            server_settings: "autovacuum=off, work_mem=4096kB".into(),
            total_time: Duration::from_secs(301),
        }
    }

    fn scaling_round(workers: usize, first_to_last_ms: u64, busy: f64) -> ScalingRound {
        ScalingRound {
            workers,
            queued_at_start: "20000".into(),
            rate: rate(20_000, first_to_last_ms + 700, first_to_last_ms),
            mails_total: 20_000,
            job_states: "sent: 20000".into(),
            cpu: CpuSnapshot {
                machine_busy: busy,
                ..cpu(2.0)
            },
            reset_time: Duration::from_millis(if workers == 1 { 0 } else { 6_500 }),
        }
    }

    fn scaling_fixture() -> ScalingPhase {
        ScalingPhase {
            jobs: 20_000,
            worker_concurrency: 32,
            backlog: crate::mailflow::Backlog {
                users: Vec::new(),
                enqueue_time: Duration::from_millis(40_000),
                enqueue_errors: 0,
                publish_wait: Duration::from_millis(300),
            },
            rounds: vec![
                scaling_round(1, 40_000, 78.0),
                scaling_round(2, 36_000, 79.0),
                scaling_round(4, 38_000, 79.5),
            ],
            total_time: Duration::from_secs(250),
        }
    }

    /// Compares `actual` with the golden file `name` under `bench/src/testdata/`; with
    /// `BLESS=1` writes it instead (after a deliberate change to the report).
    fn assert_golden(name: &str, actual: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/testdata")
            .join(name);
        if std::env::var_os("BLESS").is_some() {
            std::fs::write(&path, actual).expect("write the golden file");
            return;
        }
        let expected = std::fs::read_to_string(&path).expect("read the golden file");
        assert!(
            actual == expected,
            "{name} differs from the rendering (BLESS=1 to accept):\n{actual}"
        );
    }

    /// The report of a full run, and of an empty one, are exactly the golden texts: a change
    /// to how the report is built must not change what it says.
    #[test]
    fn markdown_matches_the_golden_reports() {
        assert_golden("report_full.md", &fixture().markdown());
        // The other side of every branch the full report takes.
        let mut variant = fixture();
        variant.api.explain_cooldown = "Index Scan using mail_jobs_recipient".into();
        variant.api.explain_outbox_delete = "Seq Scan on outbox".into();
        variant.api.load.errors.clear();
        variant.worker.direct_nodelay = rate(2000, 6500, 6400);
        if let Some(outage) = &mut variant.outage {
            outage.recovered_after = None;
        }
        if let Some(growth) = &mut variant.growth {
            growth.plans.truncate(1);
            growth.large.load = load(9_000, 20, &[]);
        }
        if let Some(scaling) = &mut variant.scaling {
            for round in &mut scaling.rounds {
                round.cpu.machine_busy = 20.0;
            }
        }
        assert_golden("report_variant.md", &variant.markdown());
        assert_golden("report_empty.md", &Results::default().markdown());
        assert_golden("summary_full.txt", &fixture().summary());
    }

    #[test]
    fn renders_without_panicking_on_empty_results() {
        let r = Results::default();
        assert!(r.summary().contains("API / pgbench"));
        let md = r.markdown();
        assert!(md.contains("## Summary"));
        assert!(md.contains("## 3. End-to-end latency"));
        assert!(!md.contains("## 5."));
        assert!(!md.contains("## 7."));
        assert!(!md.contains("## 8."));
    }
}
