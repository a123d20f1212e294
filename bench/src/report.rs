//! Everything one benchmark run found, and its two renderings: a summary table for stdout and
//! the markdown report written to `bench/results/`.

use std::fmt::Write as _;
use std::time::Duration;

use crate::load::LoadResult;
use crate::mailflow::{EndToEnd, MailRate};
use crate::pgbench::{DbCounters, PgbenchResult};
use crate::procfs::{CpuSnapshot, Memory};
use crate::stats::{Latency, mib, ms, ratio};

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
}

#[derive(Debug, Clone, Default)]
pub struct Results {
    pub machine: Machine,
    pub settings: Settings,
    pub api: ApiPhase,
    pub worker: WorkerPhase,
    pub e2e: EndToEnd,
    pub outage: Option<OutagePhase>,
    pub total_time: Duration,
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn lat_row(name: &str, l: &Latency) -> String {
    format!(
        "| {name} | {} | {} | {} | {} | {} | {} |\n",
        l.count,
        ms(l.p50),
        ms(l.p90),
        ms(l.p99),
        ms(l.max),
        ms(l.mean)
    )
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

    /// The full markdown report.
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let s = &self.settings;
        let a = &self.api;
        let w = &self.worker;
        let mut o = String::new();
        let _ = writeln!(o, "# Benchmark results, {}\n", m.date);
        let _ = writeln!(
            o,
            "One run of `bench/run.sh` ({} in total). What is measured and how: \
             [bench/README.md](../README.md).\n",
            secs(self.total_time)
        );

        let _ = writeln!(o, "## Summary\n");
        let _ = writeln!(o, "| measure | result | ceiling | ratio |");
        let _ = writeln!(o, "|---|---|---|---|");
        let _ = writeln!(
            o,
            "| API `PUT /v3alpha/users/{{id}}/email` (sendCode), {} connections | {:.0} req/s | pgbench, same SQL, {} clients: {:.0} tps | **{}** |",
            s.connections,
            a.load.throughput(),
            a.pgbench.clients,
            a.pgbench.tps,
            ratio(a.load.throughput(), a.pgbench.tps)
        );
        let _ = writeln!(
            o,
            "| same load with the worker stopped (the API alone) | {:.0} req/s | {:.0} tps | {} |",
            a.load_no_worker.throughput(),
            a.pgbench.tps,
            ratio(a.load_no_worker.throughput(), a.pgbench.tps)
        );
        let _ = writeln!(
            o,
            "| same, against pgbench with {} clients (the API's pool size) | {:.0} req/s | {:.0} tps | {} |",
            a.pgbench_pool_sized.clients,
            a.load.throughput(),
            a.pgbench_pool_sized.tps,
            ratio(a.load.throughput(), a.pgbench_pool_sized.tps)
        );
        let _ = writeln!(
            o,
            "| worker draining {} queued jobs (steady: first to last mail) | {:.0} mails/s | lettre, same mails, {} in flight, pooled: {:.0} mails/s | **{}** |",
            w.jobs,
            w.worker.rate_steady(),
            s.worker_concurrency,
            w.ceiling.rate_steady(),
            ratio(w.worker.rate_steady(), w.ceiling.rate_steady())
        );
        let _ = writeln!(
            o,
            "| worker, from process spawn to last mail | {:.0} mails/s ({}) | lettre from first send: {:.0} mails/s ({}) | {} |",
            w.worker.rate_from_start(),
            secs(w.worker.from_start),
            w.ceiling.rate_from_start(),
            secs(w.ceiling.from_start),
            ratio(w.worker.rate_from_start(), w.ceiling.rate_from_start())
        );
        let _ = writeln!(
            o,
            "| diagnostic: worker vs lettre on {} connections with `TCP_NODELAY` | {:.0} mails/s | {:.0} mails/s | {} |",
            s.worker_concurrency,
            w.worker.rate_steady(),
            w.direct_nodelay.rate_steady(),
            ratio(w.worker.rate_steady(), w.direct_nodelay.rate_steady())
        );
        let _ = writeln!(
            o,
            "| end-to-end, request sent to mail received (sequential, {} mails) | p50 {} / p99 {} | | |",
            self.e2e.to_mail.count,
            ms(self.e2e.to_mail.p50),
            ms(self.e2e.to_mail.p99)
        );
        let _ = writeln!(
            o,
            "| peak RSS (VmHWM) api / worker during API load | {} / {} | | |",
            mib(a.api_memory.peak_kib),
            mib(a.worker_memory.peak_kib)
        );
        let _ = writeln!(
            o,
            "| peak RSS (VmHWM) api after the second load (worker stopped) | {} | | |",
            mib(a.api_memory_no_worker.peak_kib)
        );
        let _ = writeln!(
            o,
            "| peak RSS (VmHWM) worker during the drain / api of that run | {} / {} | | |",
            mib(w.worker_memory.peak_kib),
            mib(w.api_memory.peak_kib)
        );
        if let Some(out) = &self.outage {
            let _ = writeln!(
                o,
                "| request latency, broker unreachable (sequential) | p50 {} / p99 {} | broker up: p50 {} / p99 {} | |",
                ms(out.broker_down.p50),
                ms(out.broker_down.p99),
                ms(out.broker_up.p50),
                ms(out.broker_up.p99)
            );
        }
        let _ = writeln!(o);

        let _ = writeln!(o, "## Machine and settings\n");
        let _ = writeln!(o, "| | |\n|---|---|");
        let rows = [
            ("date (UTC)", m.date.clone()),
            ("host", m.hostname.clone()),
            (
                "CPU",
                format!("{} ({} logical CPUs, `nproc`)", m.cpu_model, m.nproc),
            ),
            ("RAM", mib(m.mem_total_kib)),
            ("kernel", m.kernel.clone()),
            ("rustc", m.rustc.clone()),
            (
                "build",
                format!("{} (binaries from `{}`)", m.profile, m.bin_dir),
            ),
            ("source", m.git.clone()),
            ("PostgreSQL", m.postgres.clone()),
            ("pgbench", m.pgbench.clone()),
            ("RabbitMQ", m.rabbitmq.clone()),
            (
                "load average before / after (1, 5, 15 min)",
                format!("{} / {}", m.load_before, m.load_after),
            ),
        ];
        for (k, v) in rows {
            let _ = writeln!(o, "| {k} | {v} |");
        }
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "Settings: {} connections, warm-up {} then {} measured; {} users per connection \
             ({} users); `RESEND_COOLDOWN=0s`; `DATABASE_POOL_SIZE={}` (api and worker); \
             `WORKER_CONCURRENCY={}`; `RUST_LOG=info`, `LOG_FORMAT=json` (the harness's \
             defaults, logs to a file); SMTP: the harness's in-process sink (plain SMTP, \
             127.0.0.1); pgbench `-M prepared -j {}`; {} jobs for the worker drain; {} \
             sequential end-to-end mails. Every request sends `sendCode` with a URL template \
             and a new address, so every request changes the address and enqueues a mail.\n",
            s.connections,
            secs(s.warmup),
            secs(s.duration),
            s.users_per_connection,
            a.users,
            s.pool_size,
            s.worker_concurrency,
            s.pgbench_threads,
            s.jobs,
            s.e2e_mails
        );
        let _ = writeln!(
            o,
            "**Caveat: one machine, {} cores.** The load generator (and the in-process SMTP \
             sink), the api, the worker, PostgreSQL and RabbitMQ all share them; pgbench \
             competes only with PostgreSQL. Other engineers' builds and tests may have run at \
             the same time (see the load average and the \"other\" CPU column). Figures are \
             from one run: compare ratios, not absolute numbers, across machines.\n",
            m.nproc
        );

        // Observations computed from the figures.
        let _ = writeln!(o, "## Observations\n");
        let nw = &a.cpu_no_worker;
        let nw_ok = a.load_no_worker.ok.max(1) as f64;
        let pg_tx = a.pgbench.transactions.max(1) as f64;
        let _ = writeln!(
            o,
            "- The machine is CPU-bound during the API loads and pgbench (busy {} / {} / {} of its \
             capacity). Without the worker, a request costs {:.2} ms of \
             CPU in all, of which the api process {:.2} ms and PostgreSQL {:.2} ms; a pgbench \
             transaction costs PostgreSQL {:.2} ms. The api process itself and the extra \
             PostgreSQL time per request (+{:.2} ms; not broken down further, \
             `pg_stat_statements` is not loaded on this server) are what separate the API from \
             the ceiling on this box.",
            ratio(a.cpu.machine_busy, a.cpu.machine_total),
            ratio(nw.machine_busy, nw.machine_total),
            ratio(a.pgbench_cpu.machine_busy, a.pgbench_cpu.machine_total),
            1000.0 * nw.machine_busy / nw_ok,
            1000.0 * nw.api / nw_ok,
            1000.0 * nw.postgres / nw_ok,
            1000.0 * a.pgbench_cpu.postgres / pg_tx,
            1000.0 * (nw.postgres / nw_ok - a.pgbench_cpu.postgres / pg_tx)
        );
        let ok = a.load.ok.max(1) as f64;
        let _ = writeln!(
            o,
            "- With the worker running, each request also pays for its mail: {:.2} ms of CPU \
             per request instead of {:.2} ms (worker {:.2} ms, PostgreSQL +{:.2} ms, RabbitMQ \
             +{:.2} ms), so API throughput drops from {:.0} to {:.0} req/s on the shared cores.",
            1000.0 * a.cpu.machine_busy / ok,
            1000.0 * nw.machine_busy / nw_ok,
            1000.0 * a.cpu.worker / ok,
            1000.0 * (a.cpu.postgres / ok - nw.postgres / nw_ok),
            1000.0 * (a.cpu.rabbitmq / ok - nw.rabbitmq / nw_ok),
            a.load_no_worker.throughput(),
            a.load.throughput()
        );
        if a.pgbench_cooldown.tps > 0.0 {
            let how = if a.explain_cooldown.contains("Seq Scan") {
                "finds no index and scans `mail_jobs` sequentially, so it gets slower as the \
                 table grows"
            } else {
                "uses an index (plan in the appendix)"
            };
            let _ = writeln!(
                o,
                "- The resend-cooldown query (`last_enqueued_to`, run by every sending call when \
                 `RESEND_COOLDOWN` > 0, the default) {how}: the same pgbench transaction with it \
                 makes {:.0} tps instead of {:.0} ({}) at the table size of that run ({}).",
                a.pgbench_cooldown.tps,
                a.pgbench.tps,
                ratio(a.pgbench_cooldown.tps, a.pgbench.tps),
                a.mail_jobs_rows.split(',').next().unwrap_or("").trim()
            );
        }
        let e2e_smtp = w.e2e_breakdown.get(2).copied().unwrap_or(f64::NAN);
        let _ = writeln!(
            o,
            "- Mail: the worker's SMTP send takes ~{:.0} ms per mail (p50, as the worker records \
             it) on a loopback connection to an in-process sink, {:.0} of the {:.0} ms \
             end-to-end p50; lettre with `TCP_NODELAY` sends the same mails {:.1}x faster than \
             lettre without it. With 32 mails in flight this caps the worker near {:.0} mails/s \
             whatever else it does.",
            e2e_smtp,
            e2e_smtp,
            1000.0 * self.e2e.to_mail.p50.as_secs_f64(),
            w.direct_nodelay.rate_steady() / w.direct_nagle.rate_steady().max(f64::MIN_POSITIVE),
            w.ceiling.rate_steady()
        );
        let outbox_how = if a.explain_outbox_delete.contains("Seq Scan") {
            "finds no index on `outbox.job_id` and scans the outbox: cheap while it stays near \
             empty, but each batch scans the whole backlog after a broker outage"
        } else {
            "uses the index on `outbox.job_id`, so clearing a backlog after a broker outage \
             stays cheap"
        };
        let _ = writeln!(
            o,
            "- The publisher's `DELETE FROM outbox WHERE job_id = ANY(...)` {outbox_how} (plan \
             in the appendix, taken with {} rows).\n",
            a.mail_jobs_rows.split(',').nth(1).unwrap_or("").trim()
        );

        // Phase 1
        let _ = writeln!(o, "## 1. API load and the pgbench ceiling\n");
        let _ = writeln!(
            o,
            "{} connections in closed loops (each its own HTTP/1.1 connection), each cycling \
             through its own {} users, for {} after {} of warm-up; the worker ran and \
             delivered to the sink meanwhile. Latency is measured by the client (it includes \
             queueing in the load generator on the shared CPUs).\n",
            s.connections,
            s.users_per_connection,
            secs(a.load.window),
            secs(a.load.warmup)
        );
        let _ = writeln!(
            o,
            "| | count | p50 | p90 | p99 | max | mean |\n|---|---|---|---|---|---|---|"
        );
        o.push_str(&lat_row("API request (worker running)", &a.load.latency));
        o.push_str(&lat_row(
            "API request (worker stopped)",
            &a.load_no_worker.latency,
        ));
        o.push_str(&lat_row(
            &format!("pgbench transaction ({} clients)", a.pgbench.clients),
            &a.pgbench.latency,
        ));
        let _ = writeln!(o);
        let errors = if a.load.errors.is_empty() {
            "none".to_string()
        } else {
            a.load
                .errors
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            o,
            "- API: **{:.0} req/s**, {} requests answered 200 in the window; errors in the \
             window: {errors}; errors outside it: {}; {} requests sent in total.",
            a.load.throughput(),
            a.load.ok,
            a.load.errors_outside,
            a.load.total_sent
        );
        let _ = writeln!(
            o,
            "- The same load again with the worker stopped (jobs stay queued in RabbitMQ): \
             **{:.0} req/s** ({} of pgbench), {} errors in the window.",
            a.load_no_worker.throughput(),
            ratio(a.load_no_worker.throughput(), a.pgbench.tps),
            a.load_no_worker.error_count()
        );
        let _ = writeln!(
            o,
            "- pgbench, the same transaction, {} clients: **{:.0} tps** ({} transactions, {} \
             failed); with {} clients (the API's pool size): {:.0} tps; with the resend-cooldown \
             query added (what the API runs when `RESEND_COOLDOWN` > 0, default 30 s): {:.0} tps.",
            a.pgbench.clients,
            a.pgbench.tps,
            a.pgbench.transactions,
            a.pgbench.failed,
            a.pgbench_pool_sized.clients,
            a.pgbench_pool_sized.tps,
            a.pgbench_cooldown.tps
        );
        let _ = writeln!(
            o,
            "- Mails the worker delivered during the measured window: {} ({:.0}/s). Jobs right \
             after the load: {}; outbox rows: {}.",
            a.mails_during_window,
            a.mails_during_window as f64 / a.load.window.as_secs_f64(),
            a.job_states,
            a.outbox_after
        );
        let reqs = a.users as u64 + a.load.total_sent + a.load_no_worker.total_sent;
        let _ = writeln!(
            o,
            "- The api's log (`RUST_LOG=info`, JSON): {} bytes in {} lines ({:.0} bytes per \
             line) for about {} requests in all (user creation and both loads, plus readiness probes): one \
             `request served` line per request.",
            a.api_log_bytes,
            a.api_log_lines,
            a.api_log_bytes as f64 / a.api_log_lines.max(1) as f64,
            reqs
        );
        let _ = writeln!(
            o,
            "- Peak RSS (VmHWM): api {} (now {}), worker {} (now {}).\n",
            mib(a.api_memory.peak_kib),
            mib(a.api_memory.current_kib),
            mib(a.worker_memory.peak_kib),
            mib(a.worker_memory.current_kib)
        );
        let _ = writeln!(
            o,
            "Where the CPU went (seconds of CPU from `/proc`; the machine has {} s per second \
             of wall time). PostgreSQL and RabbitMQ are the whole servers (other users' databases \
             included); \"other\" is every other process (pgbench itself in the pgbench row) \
             plus kernel time charged to no process, mostly interrupt and softirq work of the \
             loopback network traffic:\n",
            m.nproc
        );
        let _ = writeln!(
            o,
            "| interval | wall | machine busy | api | worker | PostgreSQL | RabbitMQ | load generator + sink | other |\n|---|---|---|---|---|---|---|---|---|"
        );
        let cpu_row = |o: &mut String, name: &str, wall: Duration, c: &CpuSnapshot| {
            let _ = writeln!(
                o,
                "| {name} | {} | {:.1} ({}) | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
                secs(wall),
                c.machine_busy,
                ratio(c.machine_busy, c.machine_total),
                c.api,
                c.worker,
                c.postgres,
                c.rabbitmq,
                c.bench,
                c.other()
            );
        };
        cpu_row(&mut o, "API load (worker running)", a.load.window, &a.cpu);
        cpu_row(
            &mut o,
            "API load (worker stopped)",
            a.load_no_worker.window,
            &a.cpu_no_worker,
        );
        cpu_row(
            &mut o,
            "pgbench (64 clients)",
            a.pgbench.duration,
            &a.pgbench_cpu,
        );
        cpu_row(&mut o, "worker drain", w.worker.from_start, &w.cpu);
        let per_request = |c: &CpuSnapshot, n: u64| {
            let n = n.max(1) as f64;
            format!(
                "all {:.2} ms: api {:.2}, PostgreSQL {:.2}, worker {:.2}, RabbitMQ {:.2}, load \
                 generator {:.2}, other {:.2}",
                1000.0 * c.machine_busy / n,
                1000.0 * c.api / n,
                1000.0 * c.postgres / n,
                1000.0 * c.worker / n,
                1000.0 * c.rabbitmq / n,
                1000.0 * c.bench / n,
                1000.0 * c.other() / n
            )
        };
        let _ = writeln!(
            o,
            "\nCPU per API request with the worker running: {}.  \nWithout the worker: {}.  \n\
             Per pgbench transaction: {} (pgbench itself is in \"other\").\n",
            per_request(&a.cpu, a.load.ok),
            per_request(&a.cpu_no_worker, a.load_no_worker.ok),
            per_request(&a.pgbench_cpu, a.pgbench.transactions)
        );

        let _ = writeln!(
            o,
            "Database work per API request (everything the api, the worker and the outbox relay \
             did in the window, from `pg_stat_database`) and per pgbench transaction:\n"
        );
        let _ = writeln!(
            o,
            "| | {} |\n|---|{}",
            DbCounters::NAMES.join(" | "),
            "---|".repeat(DbCounters::NAMES.len())
        );
        let db_row = |o: &mut String, name: &str, c: &DbCounters| {
            let cells: Vec<String> = c.values.iter().map(|v| format!("{v:.1}")).collect();
            let _ = writeln!(o, "| {name} | {} |", cells.join(" | "));
        };
        db_row(
            &mut o,
            "per API request (worker running)",
            &a.db_api.per(a.load.ok as f64),
        );
        db_row(
            &mut o,
            "per API request (worker stopped)",
            &a.db_no_worker.per(a.load_no_worker.ok as f64),
        );
        db_row(
            &mut o,
            "per pgbench transaction",
            &a.db_pgbench.per(a.pgbench.transactions as f64),
        );
        let _ = writeln!(o);

        // Phase 2
        let _ = writeln!(o, "## 2. Worker throughput and the lettre ceiling\n");
        let _ = writeln!(
            o,
            "With no worker running, {} jobs were enqueued through the API ({} users, one job \
             each so none supersedes another; {} with 16 connections, {} errors), and the api \
             published them to RabbitMQ (outbox empty after {}). Then `worker run` was started \
             (`WORKER_CONCURRENCY={}`) and the clock ran until the sink held all {} mails.\n",
            w.jobs,
            w.jobs,
            secs(w.enqueue_time),
            w.enqueue_errors,
            secs(w.publish_wait),
            s.worker_concurrency,
            w.jobs
        );
        let _ = writeln!(
            o,
            "| | mails | spawn/first send to last mail | first to last mail | mails/s (from start) | mails/s (steady) |\n|---|---|---|---|---|---|"
        );
        let rate_row = |o: &mut String, name: &str, r: &MailRate| {
            let _ = writeln!(
                o,
                "| {name} | {} | {} | {} | {:.0} | {:.0} |",
                r.count,
                secs(r.from_start),
                secs(r.first_to_last),
                r.rate_from_start(),
                r.rate_steady()
            );
        };
        rate_row(&mut o, "worker", &w.worker);
        rate_row(
            &mut o,
            &format!(
                "lettre ceiling ({} in flight, pool {})",
                s.worker_concurrency, s.worker_concurrency
            ),
            &w.ceiling,
        );
        rate_row(
            &mut o,
            &format!(
                "diagnostic: {} lettre connections, no TCP_NODELAY",
                s.worker_concurrency
            ),
            &w.direct_nagle,
        );
        rate_row(
            &mut o,
            &format!(
                "diagnostic: {} lettre connections, TCP_NODELAY",
                s.worker_concurrency
            ),
            &w.direct_nodelay,
        );
        let per_mail = |r: &MailRate| {
            if r.rate_steady() > 0.0 {
                format!(
                    "{:.1} ms",
                    1000.0 * s.worker_concurrency as f64 / r.rate_steady()
                )
            } else {
                "n/a".to_string()
            }
        };
        let _ = writeln!(
            o,
            "\nTime per mail on one connection (concurrency / rate): worker {}, lettre pool {}, \
             lettre without TCP_NODELAY {}, with TCP_NODELAY {}.",
            per_mail(&w.worker),
            per_mail(&w.ceiling),
            per_mail(&w.direct_nagle),
            per_mail(&w.direct_nodelay)
        );
        if w.direct_nodelay.rate_steady() > 2.0 * w.direct_nagle.rate_steady() {
            let _ = writeln!(
                o,
                "Setting `TCP_NODELAY` makes lettre {:.1}x faster here. lettre writes the \
                 message and the final `\\r\\n.\\r\\n` in two writes and never sets \
                 `TCP_NODELAY`: Nagle's algorithm holds the terminator until the receiver ACKs \
                 the message, and the receiver delays that ACK (about 40 ms on Linux) because it \
                 has nothing to answer yet. The worker and the lettre ceiling above both pay \
                 this on every mail, so the ceiling is a ceiling for *pooled lettre as \
                 configured*, not for the sink.",
                w.direct_nodelay.rate_steady()
                    / w.direct_nagle.rate_steady().max(f64::MIN_POSITIVE)
            );
        }
        let _ = writeln!(
            o,
            "\n- Ratio worker / lettre: **{}** steady, {} including the worker's start-up.",
            ratio(w.worker.rate_steady(), w.ceiling.rate_steady()),
            ratio(w.worker.rate_from_start(), w.ceiling.rate_from_start())
        );
        let _ = writeln!(
            o,
            "- The lettre ceiling sends mails with the subject, text and HTML of a mail the \
             worker sent ({} bytes on the wire), built with lettre's `Message` builder, to a \
             fresh sink of the same kind in the same process; it does no database work.",
            w.mail_size
        );
        let m = |i: usize| w.smtp_attempt_ms.get(i).copied().unwrap_or(f64::NAN);
        let _ = writeln!(
            o,
            "- SMTP send time per mail as the worker records it (`mail_attempts.duration_ms`) \
             during the drain: p50 {:.0} ms, p99 {:.0} ms, mean {:.1} ms.",
            m(0),
            m(1),
            m(2)
        );
        let _ = writeln!(
            o,
            "- Mails at the sink after the drain: {} (expected {}); jobs: {}.",
            w.mails_total, w.jobs, w.job_states
        );
        let jobs = w.jobs.max(1) as f64;
        let _ = writeln!(
            o,
            "- CPU per mail during the drain: worker {:.2} ms, PostgreSQL {:.2} ms, RabbitMQ {:.2} ms, sink {:.2} ms.",
            1000.0 * w.cpu.worker / jobs,
            1000.0 * w.cpu.postgres / jobs,
            1000.0 * w.cpu.rabbitmq / jobs,
            1000.0 * w.cpu.bench / jobs
        );
        let _ = writeln!(
            o,
            "- Peak RSS (VmHWM) of the worker: {} (now {}).\n",
            mib(w.worker_memory.peak_kib),
            mib(w.worker_memory.current_kib)
        );

        // Phase 3
        let _ = writeln!(o, "## 3. End-to-end latency\n");
        let _ = writeln!(
            o,
            "{} set-email requests one after another on an otherwise idle service (worker \
             running), each waiting for its mail: from just before the request to the sink \
             receiving the final dot of the mail.\n",
            s.e2e_mails
        );
        let _ = writeln!(
            o,
            "| | count | p50 | p90 | p99 | max | mean |\n|---|---|---|---|---|---|---|"
        );
        o.push_str(&lat_row("request to mail received", &self.e2e.to_mail));
        o.push_str(&lat_row("the request alone", &self.e2e.request));
        let _ = writeln!(o, "\nErrors: {}.\n", self.e2e.errors);
        let b = |i: usize| w.e2e_breakdown.get(i).copied().unwrap_or(f64::NAN);
        let _ = writeln!(
            o,
            "Where the time goes, from the database (job `created_at`, set inside the request; \
             attempt `at` = start of the SMTP send and `duration_ms`, recorded by the worker): \
             job created -> SMTP send starts (commit, publish, RabbitMQ, consume, load, claim, \
             decrypt, render): p50 {:.1} ms, p99 {:.1} ms; the SMTP send itself: p50 {:.0} ms, \
             p99 {:.0} ms.\n",
            b(0),
            b(1),
            b(2),
            b(3)
        );

        // Phase 5
        if let Some(out) = &self.outage {
            let _ = writeln!(o, "## 5. Request latency with the broker unreachable\n");
            let _ = writeln!(
                o,
                "A separate run with RabbitMQ behind the harness's TCP proxy: {} sequential \
                 set-email requests with the broker reachable, then the proxy stopped (every \
                 AMQP connection of the api and worker cut, new ones refused) and {} more.\n",
                out.requests, out.requests
            );
            let _ = writeln!(
                o,
                "| | count | p50 | p90 | p99 | max | mean |\n|---|---|---|---|---|---|---|"
            );
            o.push_str(&lat_row("broker reachable", &out.broker_up));
            o.push_str(&lat_row("broker unreachable", &out.broker_down));
            let recovered = match out.recovered_after {
                Some(d) => format!(
                    "all of them arrived {} after the proxy was started again",
                    secs(d)
                ),
                None => "not all of them arrived within the wait".to_string(),
            };
            let _ = writeln!(
                o,
                "\nErrors: {} with the broker up, {} with it down. `/readyz` while down: `{}`. \
                 Mails of the requests made during the outage: {recovered}.\n",
                out.errors_up, out.errors_down, out.readyz_down
            );
        }

        // Appendix
        let _ = writeln!(o, "## Appendix\n");
        let _ = writeln!(
            o,
            "### Table activity in the phase-1 database after the API load with the worker\n"
        );
        let _ = writeln!(o, "```\n{}\n```\n", a.table_stats.trim_end());
        let _ = writeln!(
            o,
            "### The same after the second API load and all pgbench runs (cumulative)\n"
        );
        let _ = writeln!(o, "```\n{}\n```\n", a.table_stats_after_pgbench.trim_end());
        let _ = writeln!(o, "Rows: {}.\n", a.mail_jobs_rows.trim());
        let _ = writeln!(
            o,
            "### Plan of the resend-cooldown query (`mail_job::last_enqueued_to`)\n"
        );
        let _ = writeln!(o, "```\n{}\n```\n", a.explain_cooldown.trim_end());
        let _ = writeln!(
            o,
            "### Plan of the publisher's outbox delete (`outbox::remove`)\n"
        );
        let _ = writeln!(o, "```\n{}\n```\n", a.explain_outbox_delete.trim_end());
        let _ = writeln!(o, "### The pgbench script\n");
        let _ = writeln!(o, "```sql\n{}```\n", a.script);
        let _ = writeln!(o, "### pgbench output ({} clients)\n", a.pgbench.clients);
        let _ = writeln!(o, "```\n{}\n```", a.pgbench.output.trim_end());
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            total_time: Duration::from_secs(245),
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
    }
}
