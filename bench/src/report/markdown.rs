//! The markdown report, one function per section. [`Markdown`] and [`Table`] keep the
//! mechanics (blank lines, `|` and `|---|`) out of the sections, so each reads as what it
//! says: a heading, a table, a paragraph with its figures.

use std::fmt::Write as _;
use std::time::Duration;

use super::{ApiPhase, Results, WorkerPhase};
use crate::mailflow::MailRate;
use crate::pgbench::DbCounters;
use crate::procfs::CpuSnapshot;
use crate::stats::{Latency, mib, ms, ratio};

/// The whole report: every section in order, ending with one newline.
pub(super) fn render(r: &Results) -> String {
    let mut md = Markdown::default();
    title(&mut md, r);
    summary(&mut md, r);
    machine_and_settings(&mut md, r);
    observations(&mut md, r);
    api_load(&mut md, r);
    api_cpu(&mut md, r);
    api_database(&mut md, &r.api);
    worker_throughput(&mut md, r);
    end_to_end(&mut md, r);
    broker_outage(&mut md, r);
    open_loop(&mut md, r);
    growth(&mut md, r);
    scaling(&mut md, r);
    appendix(&mut md, &r.api);
    md.finish()
}

// ---- sections ----------------------------------------------------------------------------

fn title(md: &mut Markdown, r: &Results) {
    md.para(format!("# Benchmark results, {}", r.machine.date));
    md.para(format!(
        "One run of `bench/run.sh` ({} in total). What is measured and how: \
         [bench/README.md](../README.md).",
        secs(r.total_time)
    ));
    if !r.settings.skipped_phases.is_empty() {
        md.para(format!(
            "**Partial run** (`--phases`): skipped {}; the figures of a skipped phase read \
             zero below.",
            r.settings.skipped_phases.join(", ")
        ));
    }
}

/// The headline figures, each next to its ceiling where it has one.
fn summary(md: &mut Markdown, r: &Results) {
    md.para("## Summary");
    let mut t = Table::new(&["measure", "result", "ceiling", "ratio"]);
    api_summary(&mut t, r);
    worker_summary(&mut t, r);
    latency_and_memory_summary(&mut t, r);
    growth_and_scaling_summary(&mut t, r);
    md.table(t);
}

/// The API against pgbench.
fn api_summary(t: &mut Table, r: &Results) {
    let (s, a) = (&r.settings, &r.api);
    t.row([
        format!(
            "API `PUT /v3alpha/users/{{id}}/email` (sendCode), {} connections",
            s.connections
        ),
        per_second(a.load.throughput(), "req/s"),
        format!(
            "pgbench, same SQL, {} clients: {:.0} tps",
            a.pgbench.clients, a.pgbench.tps
        ),
        bold(ratio(a.load.throughput(), a.pgbench.tps)),
    ]);
    t.row([
        "same load with the worker stopped (the API alone)".into(),
        per_second(a.load_no_worker.throughput(), "req/s"),
        per_second(a.pgbench.tps, "tps"),
        ratio(a.load_no_worker.throughput(), a.pgbench.tps),
    ]);
    t.row([
        format!(
            "same, against pgbench with {} clients (the API's pool size)",
            a.pgbench_pool_sized.clients
        ),
        per_second(a.load.throughput(), "req/s"),
        per_second(a.pgbench_pool_sized.tps, "tps"),
        ratio(a.load.throughput(), a.pgbench_pool_sized.tps),
    ]);
}

/// The worker against lettre.
fn worker_summary(t: &mut Table, r: &Results) {
    let (s, w) = (&r.settings, &r.worker);
    t.row([
        format!(
            "worker draining {} queued jobs (steady: first to last mail)",
            w.jobs
        ),
        per_second(w.worker.rate_steady(), "mails/s"),
        format!(
            "lettre, same mails, {} in flight, pooled: {:.0} mails/s",
            s.worker_concurrency,
            w.ceiling.rate_steady()
        ),
        bold(ratio(w.worker.rate_steady(), w.ceiling.rate_steady())),
    ]);
    t.row([
        "worker, from process spawn to last mail".into(),
        format!(
            "{:.0} mails/s ({})",
            w.worker.rate_from_start(),
            secs(w.worker.from_start)
        ),
        format!(
            "lettre from first send: {:.0} mails/s ({})",
            w.ceiling.rate_from_start(),
            secs(w.ceiling.from_start)
        ),
        ratio(w.worker.rate_from_start(), w.ceiling.rate_from_start()),
    ]);
    t.row([
        format!(
            "diagnostic: worker vs lettre on {} connections with `TCP_NODELAY`",
            s.worker_concurrency
        ),
        per_second(w.worker.rate_steady(), "mails/s"),
        per_second(w.direct_nodelay.rate_steady(), "mails/s"),
        ratio(w.worker.rate_steady(), w.direct_nodelay.rate_steady()),
    ]);
}

/// Figures without a ceiling: end-to-end latency, memory, the broker outage.
fn latency_and_memory_summary(t: &mut Table, r: &Results) {
    let (a, w) = (&r.api, &r.worker);
    t.row([
        format!(
            "end-to-end, request sent to mail received (sequential, {} mails)",
            r.e2e.to_mail.count
        ),
        p50_p99(&r.e2e.to_mail),
    ]);
    t.row([
        "peak RSS (VmHWM) api / worker during API load".into(),
        format!(
            "{} / {}",
            mib(a.api_memory.peak_kib),
            mib(a.worker_memory.peak_kib)
        ),
    ]);
    t.row([
        "peak RSS (VmHWM) api after the second load (worker stopped)".into(),
        mib(a.api_memory_no_worker.peak_kib),
    ]);
    t.row([
        "peak RSS (VmHWM) worker during the drain / api of that run".into(),
        format!(
            "{} / {}",
            mib(w.worker_memory.peak_kib),
            mib(w.api_memory.peak_kib)
        ),
    ]);
    if let Some(ol) = &r.open_loop {
        t.row([
            format!(
                "API latency at {} req/s (open loop, from the intended start)",
                ol.rate
            ),
            p50_p99(&ol.latency),
        ]);
        t.row([
            format!("request to mail received at {} req/s", ol.rate),
            p50_p99(&ol.to_mail),
        ]);
    }
    if let Some(out) = &r.outage {
        t.row([
            "request latency, broker unreachable (sequential)".into(),
            p50_p99(&out.broker_down),
            format!("broker up: {}", p50_p99(&out.broker_up)),
        ]);
    }
}

/// The opt-in phases: throughput as the data grows, the plans, and workers added.
fn growth_and_scaling_summary(t: &mut Table, r: &Results) {
    if let Some(g) = &r.growth {
        t.row([
            format!(
                "API (phase 1's load) with {} users, against {} users",
                g.large.users, g.small.users
            ),
            per_second(g.large.load.throughput(), "req/s"),
            format!(
                "{:.0} req/s with {} users; target: drop <= 15 %",
                g.small.load.throughput(),
                g.small.users
            ),
            bold(ratio(g.large.load.throughput(), g.small.load.throughput())),
        ]);
        let seq = g.seq_scan_statements();
        t.row([
            format!(
                "statements of a request and a delivery with a `Seq Scan` on a growing table at {} users",
                g.large.users
            ),
            if seq.is_empty() {
                format!("none of {}", g.plans.len())
            } else {
                let names: Vec<&str> = seq.iter().map(|p| p.source.as_str()).collect();
                format!("**{} of {}**: {}", seq.len(), g.plans.len(), names.join("; "))
            },
            "target: every query an index scan".into(),
        ]);
        t.row([
            format!(
                "generating the history of {} users (inserts, VACUUM ANALYZE, CHECKPOINT)",
                g.large.generated_users
            ),
            secs(g.large.generation_time()),
        ]);
    }
    if let Some(sc) = &r.scaling {
        let base = sc.rounds.first().map_or(0.0, |b| b.rate.rate_steady());
        for round in &sc.rounds {
            t.row([
                format!(
                    "{} worker process(es) draining {} jobs (steady)",
                    round.workers, sc.jobs
                ),
                per_second(round.rate.rate_steady(), "mails/s"),
                format!("1 worker: {base:.0} mails/s"),
                format!("x{:.2}", sc.speedup(round)),
            ]);
        }
    }
}

fn machine_and_settings(md: &mut Markdown, r: &Results) {
    let (m, s) = (&r.machine, &r.settings);
    md.para("## Machine and settings");
    let mut t = Table::new(&["", ""]);
    t.row(["date (UTC)", &m.date]);
    t.row(["host", &m.hostname]);
    let cpu = format!("{} ({} logical CPUs, `nproc`)", m.cpu_model, m.nproc);
    t.row(["CPU", &cpu]);
    t.row(["RAM", &mib(m.mem_total_kib)]);
    t.row(["kernel", &m.kernel]);
    t.row(["rustc", &m.rustc]);
    let build = format!("{} (binaries from `{}`)", m.profile, m.bin_dir);
    t.row(["build", &build]);
    t.row(["source", &m.git]);
    t.row(["PostgreSQL", &m.postgres]);
    t.row(["pgbench", &m.pgbench]);
    t.row(["RabbitMQ", &m.rabbitmq]);
    let load = format!("{} / {}", m.load_before, m.load_after);
    t.row(["load average before / after (1, 5, 15 min)", &load]);
    md.table(t);
    md.para(format!(
        "Settings: {} connections, warm-up {} then {} measured; {} users per connection \
         ({} users); `RESEND_COOLDOWN=0s`; `DATABASE_POOL_SIZE={}` (api and worker); \
         `WORKER_CONCURRENCY={}`; `RUST_LOG=info`, `LOG_FORMAT=json` (the harness's \
         defaults, logs to a file); database connections (api, worker, pgbench): TCP to \
         127.0.0.1 with `sslmode={}`; SMTP: the harness's in-process sink (plain SMTP, \
         127.0.0.1); pgbench `-M prepared -j {}`; {} jobs for the worker drain; {} \
         sequential end-to-end mails. Every request sends `sendCode` with a URL template \
         and a new address, so every request changes the address and enqueues a mail.",
        s.connections,
        secs(s.warmup),
        secs(s.duration),
        s.users_per_connection,
        r.api.users,
        s.pool_size,
        s.worker_concurrency,
        s.db_sslmode,
        s.pgbench_threads,
        s.jobs,
        s.e2e_mails
    ));
    md.para(format!(
        "**Caveat: one machine, {} cores.** The load generator (and the in-process SMTP \
         sink), the api, the worker, PostgreSQL and RabbitMQ all share them; pgbench \
         competes only with PostgreSQL. Other engineers' builds and tests may have run at \
         the same time (see the load average and the \"other\" CPU column). Figures are \
         from one run: compare ratios, not absolute numbers, across machines.",
        m.nproc
    ));
}

/// Conclusions computed from the figures: where the CPU goes, what the mail costs, and
/// what the two query plans mean.
fn observations(md: &mut Markdown, r: &Results) {
    let a = &r.api;
    md.para("## Observations");
    let nw = &a.cpu_no_worker;
    let nw_ok = a.load_no_worker.ok.max(1) as f64;
    let pg_tx = a.pgbench.transactions.max(1) as f64;
    md.line(format!(
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
    ));
    let ok = a.load.ok.max(1) as f64;
    md.line(format!(
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
    ));
    query_and_mail_observations(md, r);
}

/// What the resend-cooldown query, the SMTP send and the outbox delete cost.
fn query_and_mail_observations(md: &mut Markdown, r: &Results) {
    let (a, w) = (&r.api, &r.worker);
    if a.pgbench_cooldown.tps > 0.0 {
        let how = if a.explain_cooldown.contains("Seq Scan") {
            "finds no index and scans `mail_jobs` sequentially, so it gets slower as the \
             table grows"
        } else {
            "uses an index (plan in the appendix)"
        };
        md.line(format!(
            "- The resend-limit query (`recent_mails_to`, run by every sending call when \
             `RESEND_COOLDOWN` > 0, the default) {how}: the same pgbench transaction with it \
             makes {:.0} tps instead of {:.0} ({}) at the table size of that run ({}).",
            a.pgbench_cooldown.tps,
            a.pgbench.tps,
            ratio(a.pgbench_cooldown.tps, a.pgbench.tps),
            row_count(&a.mail_jobs_rows, 0)
        ));
    }
    let e2e_smtp = w.e2e_breakdown.get(2).copied().unwrap_or(f64::NAN);
    let cap = if worker_skips_the_delayed_ack(w) {
        format!(
            "The worker sets `TCP_NODELAY` on the connections it opens itself, so pooled \
             lettre's {:.0} mails/s is no cap for it; it drained {:.0} mails/s, bound by \
             what else each mail costs (CPU per mail below).",
            w.ceiling.rate_steady(),
            w.worker.rate_steady()
        )
    } else {
        format!(
            "With 32 mails in flight this caps the worker near {:.0} mails/s whatever else \
             it does.",
            w.ceiling.rate_steady()
        )
    };
    md.line(format!(
        "- Mail: the worker's SMTP send takes ~{:.0} ms per mail (p50, as the worker records \
         it) on a loopback connection to an in-process sink, {:.0} of the {:.0} ms \
         end-to-end p50; lettre with `TCP_NODELAY` sends the same mails {:.1}x faster than \
         lettre without it. {cap}",
        e2e_smtp,
        e2e_smtp,
        1000.0 * r.e2e.to_mail.p50.as_secs_f64(),
        nodelay_speedup(w),
    ));
    let outbox_how = if a.explain_outbox_delete.contains("Seq Scan") {
        "finds no index on `outbox.job_id` and scans the outbox: cheap while it stays near \
         empty, but each batch scans the whole backlog after a broker outage"
    } else {
        "uses the index on `outbox.job_id`, so clearing a backlog after a broker outage \
         stays cheap"
    };
    md.para(format!(
        "- The publisher's `DELETE FROM outbox WHERE job_id = ANY(...)` {outbox_how} (plan \
         in the appendix, taken with {} rows).",
        row_count(&a.mail_jobs_rows, 1)
    ));
}

/// Phase 1: the API's throughput and latency next to pgbench's.
fn api_load(md: &mut Markdown, r: &Results) {
    let (s, a) = (&r.settings, &r.api);
    md.para("## 1. API load and the pgbench ceiling");
    md.para(format!(
        "{} connections in closed loops (each its own HTTP/1.1 connection), each cycling \
         through its own {} users, for {} after {} of warm-up; the worker ran and \
         delivered to the sink meanwhile. Latency is measured by the client (it includes \
         queueing in the load generator on the shared CPUs).",
        s.connections,
        s.users_per_connection,
        secs(a.load.window),
        secs(a.load.warmup)
    ));
    let mut t = latency_table();
    latency_row(&mut t, "API request (worker running)", &a.load.latency);
    latency_row(
        &mut t,
        "API request (worker stopped)",
        &a.load_no_worker.latency,
    );
    let pgbench = format!("pgbench transaction ({} clients)", a.pgbench.clients);
    latency_row(&mut t, &pgbench, &a.pgbench.latency);
    md.table(t);
    api_load_findings(md, a);
}

/// Phase 1's figures beyond latency: throughputs, errors, mails, the log, memory.
fn api_load_findings(md: &mut Markdown, a: &ApiPhase) {
    let errors = if a.load.errors.is_empty() {
        "none".to_string()
    } else {
        let kinds: Vec<String> = a
            .load
            .errors
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        kinds.join(", ")
    };
    md.line(format!(
        "- API: **{:.0} req/s**, {} requests answered 200 in the window; errors in the \
         window: {errors}; errors outside it: {}; {} requests sent in total.",
        a.load.throughput(),
        a.load.ok,
        a.load.errors_outside,
        a.load.total_sent
    ));
    md.line(format!(
        "- The same load again with the worker stopped (jobs stay queued in RabbitMQ): \
         **{:.0} req/s** ({} of pgbench), {} errors in the window.",
        a.load_no_worker.throughput(),
        ratio(a.load_no_worker.throughput(), a.pgbench.tps),
        a.load_no_worker.error_count()
    ));
    md.line(format!(
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
    ));
    md.line(format!(
        "- Mails the worker delivered during the measured window: {} ({:.0}/s). Jobs right \
         after the load: {}; outbox rows: {}.",
        a.mails_during_window,
        a.mails_during_window as f64 / a.load.window.as_secs_f64(),
        a.job_states,
        a.outbox_after
    ));
    let requests = a.users as u64 + a.load.total_sent + a.load_no_worker.total_sent;
    md.line(format!(
        "- The api's log (`RUST_LOG=info`, JSON): {} bytes in {} lines ({:.0} bytes per \
         line) for about {} requests in all (user creation and both loads, plus readiness probes): one \
         `request served` line per request.",
        a.api_log_bytes,
        a.api_log_lines,
        a.api_log_bytes as f64 / a.api_log_lines.max(1) as f64,
        requests
    ));
    md.para(format!(
        "- Peak RSS (VmHWM): api {} (now {}), worker {} (now {}).",
        mib(a.api_memory.peak_kib),
        mib(a.api_memory.current_kib),
        mib(a.worker_memory.peak_kib),
        mib(a.worker_memory.current_kib)
    ));
}

/// Phase 1, continued: the CPU seconds of each process, in all and per request or pgbench
/// transaction (the drain's row is here too, for comparison).
fn api_cpu(md: &mut Markdown, r: &Results) {
    let (a, w) = (&r.api, &r.worker);
    md.para(format!(
        "Where the CPU went (seconds of CPU from `/proc`; the machine has {} s per second \
         of wall time). PostgreSQL and RabbitMQ are the whole servers (other users' databases \
         included); \"other\" is every other process (pgbench itself in the pgbench row) \
         plus kernel time charged to no process, mostly interrupt and softirq work of the \
         loopback network traffic:",
        r.machine.nproc
    ));
    let mut t = Table::new(&[
        "interval",
        "wall",
        "machine busy",
        "api",
        "worker",
        "PostgreSQL",
        "RabbitMQ",
        "load generator + sink",
        "other",
    ]);
    cpu_row(&mut t, "API load (worker running)", a.load.window, &a.cpu);
    cpu_row(
        &mut t,
        "API load (worker stopped)",
        a.load_no_worker.window,
        &a.cpu_no_worker,
    );
    cpu_row(
        &mut t,
        "pgbench (64 clients)",
        a.pgbench.duration,
        &a.pgbench_cpu,
    );
    cpu_row(&mut t, "worker drain", w.worker.from_start, &w.cpu);
    md.table(t);
    md.para(format!(
        "CPU per API request with the worker running: {}.  \nWithout the worker: {}.  \n\
         Per pgbench transaction: {} (pgbench itself is in \"other\").",
        cpu_per(&a.cpu, a.load.ok),
        cpu_per(&a.cpu_no_worker, a.load_no_worker.ok),
        cpu_per(&a.pgbench_cpu, a.pgbench.transactions)
    ));
}

/// Phase 1, continued: what the database did per request and per pgbench transaction.
fn api_database(md: &mut Markdown, a: &ApiPhase) {
    md.para(
        "Database work per API request (everything the api, the worker and the outbox relay \
         did in the window, from `pg_stat_database`) and per pgbench transaction:",
    );
    let mut t = Table::new(&[&[""], &DbCounters::NAMES[..]].concat());
    db_row(
        &mut t,
        "per API request (worker running)",
        &a.db_api.per(a.load.ok as f64),
    );
    db_row(
        &mut t,
        "per API request (worker stopped)",
        &a.db_no_worker.per(a.load_no_worker.ok as f64),
    );
    db_row(
        &mut t,
        "per pgbench transaction",
        &a.db_pgbench.per(a.pgbench.transactions as f64),
    );
    md.table(t);
}

/// Phase 2: the worker draining a backlog, next to lettre alone.
fn worker_throughput(md: &mut Markdown, r: &Results) {
    let (s, w) = (&r.settings, &r.worker);
    let concurrency = s.worker_concurrency;
    md.para("## 2. Worker throughput and the lettre ceiling");
    md.para(format!(
        "With no worker running, {} jobs were enqueued through the API ({} users, one job \
         each so none supersedes another; {} with 16 connections, {} errors), and the api \
         published them to RabbitMQ (outbox empty after {}). Then `worker run` was started \
         (`WORKER_CONCURRENCY={}`) and the clock ran until the sink held all {} mails.",
        w.jobs,
        w.jobs,
        secs(w.enqueue_time),
        w.enqueue_errors,
        secs(w.publish_wait),
        concurrency,
        w.jobs
    ));
    let mut t = Table::new(&[
        "",
        "mails",
        "spawn/first send to last mail",
        "first to last mail",
        "mails/s (from start)",
        "mails/s (steady)",
    ]);
    rate_row(&mut t, "worker", &w.worker);
    let ceiling = format!("lettre ceiling ({concurrency} in flight, pool {concurrency})");
    rate_row(&mut t, &ceiling, &w.ceiling);
    let nagle = format!("diagnostic: {concurrency} lettre connections, no TCP_NODELAY");
    rate_row(&mut t, &nagle, &w.direct_nagle);
    let nodelay = format!("diagnostic: {concurrency} lettre connections, TCP_NODELAY");
    rate_row(&mut t, &nodelay, &w.direct_nodelay);
    md.table(t);
    let per_mail = |rate: &MailRate| {
        if rate.rate_steady() > 0.0 {
            format!("{:.1} ms", 1000.0 * concurrency as f64 / rate.rate_steady())
        } else {
            "n/a".to_string()
        }
    };
    md.line(format!(
        "Time per mail on one connection (concurrency / rate): worker {}, lettre pool {}, \
         lettre without TCP_NODELAY {}, with TCP_NODELAY {}.",
        per_mail(&w.worker),
        per_mail(&w.ceiling),
        per_mail(&w.direct_nagle),
        per_mail(&w.direct_nodelay)
    ));
    if w.direct_nodelay.rate_steady() > 2.0 * w.direct_nagle.rate_steady() {
        md.line(format!(
            "Setting `TCP_NODELAY` makes lettre {:.1}x faster here. lettre writes the \
             message and the final `\\r\\n.\\r\\n` in two writes and never sets \
             `TCP_NODELAY`: Nagle's algorithm holds the terminator until the receiver ACKs \
             the message, and the receiver delays that ACK (about 40 ms on Linux) because it \
             has nothing to answer yet. {}",
            nodelay_speedup(w),
            if worker_skips_the_delayed_ack(w) {
                "The lettre ceiling above pays this on every mail; the worker, which sets \
                 `TCP_NODELAY` on the connections it opens itself, does not, so its fair \
                 ceiling is the `TCP_NODELAY` row."
            } else {
                "The worker and the lettre ceiling above both pay this on every mail, so the \
                 ceiling is a ceiling for *pooled lettre as configured*, not for the sink."
            }
        ));
    }
    md.end_block();
    worker_details(md, w);
}

/// Phase 2, continued: the ratio and what the drain cost per mail.
fn worker_details(md: &mut Markdown, w: &WorkerPhase) {
    md.line(format!(
        "- Ratio worker / lettre: **{}** steady, {} including the worker's start-up.",
        ratio(w.worker.rate_steady(), w.ceiling.rate_steady()),
        ratio(w.worker.rate_from_start(), w.ceiling.rate_from_start())
    ));
    md.line(format!(
        "- The lettre ceiling sends mails with the subject, text and HTML of a mail the \
         worker sent ({} bytes on the wire), built with lettre's `Message` builder, to a \
         fresh sink of the same kind in the same process; it does no database work.",
        w.mail_size
    ));
    let attempt = |i: usize| w.smtp_attempt_ms.get(i).copied().unwrap_or(f64::NAN);
    md.line(format!(
        "- SMTP send time per mail as the worker records it (`mail_attempts.duration_ms`) \
         during the drain: p50 {:.0} ms, p99 {:.0} ms, mean {:.1} ms.",
        attempt(0),
        attempt(1),
        attempt(2)
    ));
    md.line(format!(
        "- Mails at the sink after the drain: {} (expected {}); jobs: {}.",
        w.mails_total, w.jobs, w.job_states
    ));
    let jobs = w.jobs.max(1) as f64;
    md.line(format!(
        "- CPU per mail during the drain: worker {:.2} ms, PostgreSQL {:.2} ms, RabbitMQ {:.2} ms, sink {:.2} ms.",
        1000.0 * w.cpu.worker / jobs,
        1000.0 * w.cpu.postgres / jobs,
        1000.0 * w.cpu.rabbitmq / jobs,
        1000.0 * w.cpu.bench / jobs
    ));
    md.para(format!(
        "- Peak RSS (VmHWM) of the worker: {} (now {}).",
        mib(w.worker_memory.peak_kib),
        mib(w.worker_memory.current_kib)
    ));
}

/// Phase 3: one request at a time, from the request to its mail.
fn end_to_end(md: &mut Markdown, r: &Results) {
    md.para("## 3. End-to-end latency");
    md.para(format!(
        "{} set-email requests one after another on an otherwise idle service (worker \
         running), each waiting for its mail: from just before the request to the sink \
         receiving the final dot of the mail.",
        r.settings.e2e_mails
    ));
    let mut t = latency_table();
    latency_row(&mut t, "request to mail received", &r.e2e.to_mail);
    latency_row(&mut t, "the request alone", &r.e2e.request);
    md.table(t);
    md.para(format!("Errors: {}.", r.e2e.errors));
    let b = |i: usize| r.worker.e2e_breakdown.get(i).copied().unwrap_or(f64::NAN);
    md.para(format!(
        "Where the time goes, from the database (job `created_at`, set inside the request; \
         attempt `at` = start of the SMTP send and `duration_ms`, recorded by the worker): \
         job created -> SMTP send starts (commit, publish, RabbitMQ, consume, load, claim, \
         decrypt, render): p50 {:.1} ms, p99 {:.1} ms; the SMTP send itself: p50 {:.0} ms, \
         p99 {:.0} ms.",
        b(0),
        b(1),
        b(2),
        b(3)
    ));
}

/// Phase 5, when it ran: request latency with the broker cut off.
fn broker_outage(md: &mut Markdown, r: &Results) {
    let Some(out) = &r.outage else {
        return;
    };
    md.para("## 5. Request latency with the broker unreachable");
    md.para(format!(
        "A separate run with RabbitMQ behind the harness's TCP proxy: {} sequential \
         set-email requests with the broker reachable, then the proxy stopped (every \
         AMQP connection of the api and worker cut, new ones refused) and {} more.",
        out.requests, out.requests
    ));
    let mut t = latency_table();
    latency_row(&mut t, "broker reachable", &out.broker_up);
    latency_row(&mut t, "broker unreachable", &out.broker_down);
    md.table(t);
    let recovered = match out.recovered_after {
        Some(d) => format!(
            "all of them arrived {} after the proxy was started again",
            secs(d)
        ),
        None => "not all of them arrived within the wait".to_string(),
    };
    md.para(format!(
        "Errors: {} with the broker up, {} with it down. `/readyz` while down: `{}`. \
         Mails of the requests made during the outage: {recovered}.",
        out.errors_up, out.errors_down, out.readyz_down
    ));
}

/// Phase 6, when it ran: latency at a fixed rate, from the intended send time.
fn open_loop(md: &mut Markdown, r: &Results) {
    let Some(ol) = &r.open_loop else {
        return;
    };
    md.para("## 6. Latency at a fixed request rate (open loop)");
    md.para(format!(
        "The whole service (api and worker, mail to the sink) at {} set-email requests per \
         second for {} (after a 5 s warm-up at the same rate): each request starts on a fixed \
         schedule whether or not earlier ones have answered, and its latency is counted from \
         the time it was meant to start, so a slow answer cannot delay the next request and \
         hide itself (no coordinated omission). Requests started: {} ({:.1} per second), \
         errors: {}, mails not arrived within 60 s: {}.",
        ol.rate,
        secs(ol.duration),
        ol.sent,
        ol.achieved_rate(),
        ol.errors,
        ol.mails_missing
    ));
    let mut t = latency_table();
    latency_row(&mut t, "request (intended start to answer)", &ol.latency);
    latency_row(&mut t, "request to mail received", &ol.to_mail);
    latency_row(&mut t, "schedule lag of the load generator", &ol.start_lag);
    md.table(t);
}

/// Phase 7, when it ran: the same load against 1,000 and against many users, and the plans
/// of every statement at the larger size.
fn growth(md: &mut Markdown, r: &Results) {
    let Some(g) = &r.growth else {
        return;
    };
    let s = &r.settings;
    md.para(format!(
        "## 7. Data growth: {} users against {}",
        g.small.users, g.large.users
    ));
    md.para(format!(
        "Phase 1's load (`sendCode` with a URL template, a new address per request, {} \
         connections in closed loops, {} of warm-up then {} measured, the worker delivering \
         meanwhile) in two fresh environments: one whose database holds {} users, one with \
         {}. In each, the load's {} users are created through the API ({} per connection, so \
         the small database stays at its size) and the other users get a generated history \
         of the shape the service writes: per user the events of a create, a set email with \
         `sendCode` and a verification (`user.created`, `user.email.changed`, \
         `user.email.verified`), a verified contact email, one `sent` mail job and its \
         `sent` attempt, all in the bootstrap instance and organization, spread over the \
         past year. One `INSERT ... SELECT generate_series(...)` per table (foreign-key \
         triggers off, the rows agree by construction; the secondary indexes dropped \
         meanwhile and rebuilt from their definitions afterwards, so they are denser than \
         indexes grown row by row), then `VACUUM ANALYZE` and `CHECKPOINT` before the load. The phase took {}.",
        s.connections,
        secs(g.small.load.warmup),
        secs(g.small.load.window),
        g.small.users,
        g.large.users,
        g.large.load_users,
        g.large.load_users / s.connections.max(1),
        secs(g.total_time)
    ));
    let mut t = Table::new(&[
        "database",
        "users",
        "generated",
        "req/s",
        "p50",
        "p90",
        "p99",
        "errors",
        "machine busy",
        "seq scans of growing tables during the load (rows read)",
    ]);
    for (name, run) in [("small", &g.small), ("large", &g.large)] {
        t.row([
            name.to_string(),
            run.users.to_string(),
            run.generated_users.to_string(),
            format!("{:.0}", run.load.throughput()),
            ms(run.load.latency.p50),
            ms(run.load.latency.p90),
            ms(run.load.latency.p99),
            run.load.error_count().to_string(),
            ratio(run.cpu.machine_busy, run.cpu.machine_total),
            format!("{} ({})", run.load_seq_scans.0, run.load_seq_scans.1),
        ]);
    }
    md.table(t);
    let kept = g.ratio();
    md.para(format!(
        "Throughput with {} users is **{}** of that with {} (a drop of {:.1} %; target: at \
         most 15 %): {}.",
        g.large.users,
        ratio(g.large.load.throughput(), g.small.load.throughput()),
        g.small.users,
        100.0 * (1.0 - kept),
        if kept >= 0.85 { "met" } else { "**not met**" }
    ));
    growth_generation(md, g);
    growth_plans(md, g);
}

/// Phase 7: how the history was generated and what the big database holds.
fn growth_generation(md: &mut Markdown, g: &crate::growth::GrowthPhase) {
    md.para(format!(
        "Generating the history of {} users ({} rows):",
        g.large.generated_users,
        g.large.generated_rows()
    ));
    let mut t = Table::new(&["step", "rows", "time", "rows/s"]);
    for step in &g.large.generation {
        t.row([
            format!("`{}`", step.what),
            step.rows.to_string(),
            secs(step.time),
            if step.rows > 0 {
                format!(
                    "{:.0}",
                    step.rows as f64 / step.time.as_secs_f64().max(1e-9)
                )
            } else {
                String::new()
            },
        ]);
    }
    t.row([
        "`VACUUM ANALYZE`, `CHECKPOINT`".to_string(),
        String::new(),
        secs(g.large.vacuum),
    ]);
    t.row([
        "**total**".to_string(),
        g.large.generated_rows().to_string(),
        bold(secs(g.large.generation_time())),
    ]);
    md.table(t);
    md.para("The growing tables of the large database after the load:");
    md.code(&g.large.table_sizes);
}

/// Phase 7: every statement's plan at the larger size, then each plan in full.
fn growth_plans(md: &mut Markdown, g: &crate::growth::GrowthPhase) {
    md.para(format!("### Plans at {} users", g.large.users));
    md.para(
        "Every SQL statement of the request, of a delivery and of the processes' timers, as \
         the source sends it (transcribed in `bench/src/growth_sql.rs`; `pg_stat_statements` \
         is not loaded on this server), prepared with its `$n` parameters and explained with \
         values from the generated data (the middle user, its address, its sent job), the api \
         and worker stopped. *Custom plan*: `EXPLAIN (ANALYZE, BUFFERS)` with the values \
         known to the planner, in a transaction rolled back (what PostgreSQL runs for \
         Diesel's prepared statements while it re-plans per execution). *Generic plan*: \
         `EXPLAIN` with `plan_cache_mode = force_generic_plan` (what it would run if it cached \
         one plan for all values; it only does when that plan's estimate is no worse). A \
         growing table is one of users, user_emails, user_events, mail_jobs, mail_attempts. \
         An index scan without an `Index Cond` reads its whole index (for a partial index, \
         every row it covers).",
    );
    md.para(format!("Server settings: {}.", g.server_settings));
    let mut t = Table::new(&[
        "#",
        "path",
        "source",
        "runs",
        "top node",
        "scans (custom plan)",
        "seq scan on a growing table",
        "index scans reading the whole index",
        "rows filtered out",
        "generic plan",
        "time",
    ]);
    for (i, p) in g.plans.iter().enumerate() {
        let seq = p.seq_scans();
        let generic = p.generic_seq_scans();
        let time = p
            .execution_ms()
            .map_or_else(|| "-".to_string(), |v| format!("{v:.3} ms"));
        if let Some(e) = &p.error {
            t.row([
                (i + 1).to_string(),
                p.path.name().to_string(),
                format!("`{}`", p.source),
                p.when.clone(),
                format!("**error**: {}", e.lines().next().unwrap_or("")),
            ]);
            continue;
        }
        t.row([
            (i + 1).to_string(),
            p.path.name().to_string(),
            format!("`{}`", p.source),
            p.when.clone(),
            p.top_node(),
            p.scans().join("; "),
            if seq.is_empty() {
                "no".to_string()
            } else {
                format!("**yes: {}**", seq.join(", "))
            },
            p.unconditioned_index_scans().join("; "),
            p.rows_removed().to_string(),
            if generic.is_empty() {
                "no seq scan".to_string()
            } else {
                format!("seq scan on {}", generic.join(", "))
            },
            time,
        ]);
    }
    md.table(t);
    let seq = g.seq_scan_statements();
    if seq.is_empty() {
        md.line(format!(
            "- **No custom plan scans a growing table sequentially** ({} statements): every \
             lookup of the request and the delivery is an index scan.",
            g.plans.len()
        ));
    } else {
        for p in &seq {
            md.line(format!(
                "- **`{}` scans {} sequentially** ({}): it gets slower with every user.",
                p.source,
                p.seq_scans().join(", "),
                p.when
            ));
        }
    }
    for p in g.generic_only_seq_scan_statements() {
        md.line(format!(
            "- `{}`: only its generic plan scans {} (the partial index it uses needs the \
             parameter's value to apply), so it relies on PostgreSQL re-planning it for each \
             execution, which it does as long as the generic plan's estimate is the dearer one.",
            p.source,
            p.generic_seq_scans().join(", ")
        ));
    }
    for (small, large) in g.small_plans.iter().zip(&g.plans) {
        if small.source == large.source && small.error.is_none() && small.scans() != large.scans() {
            md.line(format!(
                "- `{}` is planned differently at {} users (after its load): {}{}.",
                small.source,
                g.small.users,
                small.scans().join("; "),
                if small.seq_scans().is_empty() {
                    String::new()
                } else {
                    format!(" (**seq scan on {}**)", small.seq_scans().join(", "))
                }
            ));
        }
    }
    for p in g.failed_statements() {
        md.line(format!(
            "- `{}` could not be explained: {}",
            p.source,
            p.error
                .as_deref()
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or("")
        ));
    }
    md.end_block();
    for (i, p) in g.plans.iter().enumerate() {
        md.para(format!(
            "#### {}. `{}` ({}, {})",
            i + 1,
            p.source,
            p.path.name(),
            p.when
        ));
        md.sql(&format!("{}\n", p.sql));
        if let Some(e) = &p.error {
            md.code(e);
            continue;
        }
        md.para("Custom plan:");
        md.code(&p.custom);
        md.para("Generic plan:");
        md.code(&p.generic);
    }
    md.para("### Shape check: a user made through the API next to a generated one");
    md.code(&g.shape);
}

/// Phase 8, when it ran: more worker processes on one backlog.
fn scaling(md: &mut Markdown, r: &Results) {
    let Some(sc) = &r.scaling else {
        return;
    };
    let s = &r.settings;
    md.para("## 8. Worker scaling");
    md.para(format!(
        "Phase 2's backlog, {} jobs ({} users, one job each; enqueued through the API in {} \
         with 16 connections, {} errors; published in {}), drained into the sink by 1, 2, ... \
         `worker run` processes started at once, each with `WORKER_CONCURRENCY={}` and \
         `DATABASE_POOL_SIZE={}`. Between rounds the same jobs are reset (back to `queued` with \
         their encrypted codes, attempts deleted, `VACUUM ANALYZE`, republished by the api's \
         outbox relay) and the round's workers stopped with SIGTERM. The phase took {}.",
        sc.jobs,
        sc.jobs,
        secs(sc.backlog.enqueue_time),
        sc.backlog.enqueue_errors,
        secs(sc.backlog.publish_wait),
        sc.worker_concurrency,
        s.pool_size,
        secs(sc.total_time)
    ));
    let mut t = Table::new(&[
        "workers",
        "queued at start",
        "mails",
        "spawn to last mail",
        "first to last mail",
        "mails/s (from spawn)",
        "mails/s (steady)",
        "speed-up vs 1 (steady)",
        "machine busy",
        "CPU per mail: workers / PostgreSQL / RabbitMQ",
    ]);
    for round in &sc.rounds {
        let n = round.rate.count.max(1) as f64;
        t.row([
            round.workers.to_string(),
            round.queued_at_start.clone(),
            round.rate.count.to_string(),
            secs(round.rate.from_start),
            secs(round.rate.first_to_last),
            format!("{:.0}", round.rate.rate_from_start()),
            format!("{:.0}", round.rate.rate_steady()),
            bold(format!("x{:.2}", sc.speedup(round))),
            ratio(round.cpu.machine_busy, round.cpu.machine_total),
            format!(
                "{:.2} / {:.2} / {:.2} ms",
                1000.0 * round.cpu.worker / n,
                1000.0 * round.cpu.postgres / n,
                1000.0 * round.cpu.rabbitmq / n
            ),
        ]);
    }
    md.table(t);
    for round in &sc.rounds {
        md.line(format!(
            "- {} worker(s): {} mails at the sink (expected {}); jobs afterwards: {}; reset \
             and republish before the round: {}.",
            round.workers,
            round.mails_total,
            sc.jobs,
            round.job_states,
            secs(round.reset_time)
        ));
    }
    if let Some(first) = sc.rounds.first()
        && first.cpu.machine_total > 0.0
        && first.cpu.machine_busy / first.cpu.machine_total >= 0.9
    {
        md.line(format!(
            "- One worker already keeps the machine {} busy ({} cores, shared with \
             PostgreSQL, RabbitMQ and the sink): more processes add no cores, so on this box \
             a speed-up can only come from less waiting per mail, not from more CPU; the \
             figures show what the service allows (several workers on one queue, each job \
             mailed once), not how the worker would scale on machines of its own.",
            ratio(first.cpu.machine_busy, first.cpu.machine_total),
            r.machine.nproc
        ));
    }
    md.end_block();
}

/// The raw material: table statistics, query plans, the pgbench script and output.
fn appendix(md: &mut Markdown, a: &ApiPhase) {
    md.para("## Appendix");
    md.para("### Table activity in the phase-1 database after the API load with the worker");
    md.code(&a.table_stats);
    md.para("### The same after the second API load and all pgbench runs (cumulative)");
    md.code(&a.table_stats_after_pgbench);
    md.para(format!("Rows: {}.", a.mail_jobs_rows.trim()));
    md.para("### Plan of the resend-limit query (`mail_job::recent_mails_to`)");
    md.code(&a.explain_cooldown);
    md.para("### Plan of the publisher's outbox delete (`outbox::remove`)");
    md.code(&a.explain_outbox_delete);
    md.para("### The pgbench script");
    md.sql(&a.script);
    md.para(format!(
        "### pgbench output ({} clients)",
        a.pgbench.clients
    ));
    md.code(&a.pgbench.output);
}

// ---- rows and figures --------------------------------------------------------------------

fn latency_table() -> Table {
    Table::new(&["", "count", "p50", "p90", "p99", "max", "mean"])
}

fn latency_row(t: &mut Table, name: &str, l: &Latency) {
    t.row([
        name.to_string(),
        l.count.to_string(),
        ms(l.p50),
        ms(l.p90),
        ms(l.p99),
        ms(l.max),
        ms(l.mean),
    ]);
}

/// CPU seconds of one interval: the machine's busy time and each process's.
fn cpu_row(t: &mut Table, name: &str, wall: Duration, c: &CpuSnapshot) {
    let one = |seconds: f64| format!("{seconds:.1}");
    t.row([
        name.to_string(),
        secs(wall),
        format!(
            "{:.1} ({})",
            c.machine_busy,
            ratio(c.machine_busy, c.machine_total)
        ),
        one(c.api),
        one(c.worker),
        one(c.postgres),
        one(c.rabbitmq),
        one(c.bench),
        one(c.other()),
    ]);
}

/// The CPU of an interval spread over its `n` requests or transactions, in ms each.
fn cpu_per(c: &CpuSnapshot, n: u64) -> String {
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
}

fn db_row(t: &mut Table, name: &str, c: &DbCounters) {
    let values = c.values.iter().map(|v| format!("{v:.1}"));
    t.row(std::iter::once(name.to_string()).chain(values));
}

fn rate_row(t: &mut Table, name: &str, r: &MailRate) {
    t.row([
        name.to_string(),
        r.count.to_string(),
        secs(r.from_start),
        secs(r.first_to_last),
        format!("{:.0}", r.rate_from_start()),
        format!("{:.0}", r.rate_steady()),
    ]);
}

/// Whether the worker's SMTP sends are free of the ~40 ms delayed-ACK stall that pooled
/// lettre pays on every mail (median send under 20 ms as the worker records it): they are
/// since it sets `TCP_NODELAY` on its own connections. Its drain may still be slower than
/// lettre's, bound by the CPU it shares with PostgreSQL and RabbitMQ.
fn worker_skips_the_delayed_ack(w: &WorkerPhase) -> bool {
    w.smtp_attempt_ms.first().is_some_and(|p50| *p50 < 20.0)
}

/// How many times faster lettre sends with `TCP_NODELAY` than without.
fn nodelay_speedup(w: &WorkerPhase) -> f64 {
    w.direct_nodelay.rate_steady() / w.direct_nagle.rate_steady().max(f64::MIN_POSITIVE)
}

/// The `index`-th count of `mail_jobs N, outbox N, user_events N`.
fn row_count(rows: &str, index: usize) -> &str {
    rows.split(',').nth(index).unwrap_or("").trim()
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// A rate without decimals and its unit, such as `1200 req/s`.
fn per_second(rate: f64, unit: &str) -> String {
    format!("{rate:.0} {unit}")
}

fn p50_p99(l: &Latency) -> String {
    format!("p50 {} / p99 {}", ms(l.p50), ms(l.p99))
}

fn bold(text: String) -> String {
    format!("**{text}**")
}

// ---- markdown mechanics ------------------------------------------------------------------

/// A markdown document being written. Headings, paragraphs, tables and code blocks end with
/// the blank line that separates blocks; [`Markdown::line`] does not, so consecutive lines
/// make one paragraph or list, closed by [`Markdown::end_block`] or a paragraph.
#[derive(Default)]
struct Markdown(String);

impl Markdown {
    /// A heading or a paragraph.
    fn para(&mut self, text: impl AsRef<str>) {
        self.0.push_str(text.as_ref());
        self.0.push_str("\n\n");
    }

    /// One line of a paragraph or a list.
    fn line(&mut self, text: impl AsRef<str>) {
        self.0.push_str(text.as_ref());
        self.0.push('\n');
    }

    /// The blank line after a run of [`Markdown::line`]s.
    fn end_block(&mut self) {
        self.0.push('\n');
    }

    fn table(&mut self, table: Table) {
        self.0.push_str(&table.text);
        self.end_block();
    }

    /// A code block of `text` without its trailing white space.
    fn code(&mut self, text: &str) {
        let _ = write!(self.0, "```\n{}\n```\n\n", text.trim_end());
    }

    /// An SQL code block of `script` as it is (it ends with its own newline).
    fn sql(&mut self, script: &str) {
        let _ = write!(self.0, "```sql\n{script}```\n\n");
    }

    /// The document, ending with exactly one newline.
    fn finish(mut self) -> String {
        self.0.truncate(self.0.trim_end().len());
        self.0.push('\n');
        self.0
    }
}

/// A markdown table being written: the header, the `|---|` rule, then the rows. A row with
/// fewer cells than the header leaves its last columns empty, as does an empty title.
struct Table {
    text: String,
    columns: usize,
}

impl Table {
    fn new(titles: &[&str]) -> Table {
        let mut text = String::from("|");
        for title in titles {
            if title.is_empty() {
                text.push_str(" |");
            } else {
                let _ = write!(text, " {title} |");
            }
        }
        let _ = writeln!(text, "\n|{}", "---|".repeat(titles.len()));
        Table {
            text,
            columns: titles.len(),
        }
    }

    fn row<S: AsRef<str>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.text.push('|');
        let mut written = 0;
        for cell in cells {
            let _ = write!(self.text, " {} |", cell.as_ref());
            written += 1;
        }
        for _ in written..self.columns {
            self.text.push_str(" |");
        }
        self.text.push('\n');
    }
}
