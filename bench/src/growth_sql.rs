//! Every SQL statement one set-contact-email request (`sendCode` with a URL template) and one
//! mail delivery send, written down from the source as parameterised SQL, for the growth
//! phase to `EXPLAIN` against a database with a million users (`growth.rs`).
//!
//! PostgreSQL here has no `pg_stat_statements` in `shared_preload_libraries`, so the
//! statements cannot be read off the server. The hand-written ones are the very constants
//! `common` runs (`common::mail_job::ENQUEUE_SQL` and the like; `common::db::Prepared` sends
//! a `$n` named twice as two parameters, the same statement to the planner). The others are
//! transcribed from the Diesel queries of `common/src` (the functions named in
//! [`Statement::source`]), in the order a request or a
//! delivery runs them, with the same `$n` parameters Diesel binds (Diesel binds `LIMIT`,
//! `OFFSET`, enum values and `+ 1` as parameters too, and writes `IN` as `= ANY($n)`).
//! Column lists are the `Selectable` structs' fields. Parameter values come from the
//! generated data ([`Sample`]): a user in the middle of the id range, its address and its sent
//! mail job. Keep this list in step with the source: a statement added to a request and not
//! here is simply not checked.

/// Where a statement runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// `PUT /v3alpha/users/{id}/email` with `sendCode`, in the api.
    Request,
    /// One delivery of a mail job, in the worker.
    Delivery,
    /// Timers of the api and the worker (the outbox relay, lease renewal, the stranded-job
    /// sweep), not per request or mail.
    Background,
}

impl Path {
    pub fn name(self) -> &'static str {
        match self {
            Path::Request => "request",
            Path::Delivery => "delivery",
            Path::Background => "background",
        }
    }
}

/// One statement: what it is, where it comes from, and how to run it with sample values.
#[derive(Debug, Clone)]
pub struct Statement {
    pub path: Path,
    /// Source function, `file: function`.
    pub source: &'static str,
    /// When it runs (every request, only with a setting, ...).
    pub when: &'static str,
    /// The statement with `$1`, `$2`, ... as Diesel sends it (column lists in full).
    pub sql: String,
    /// SQL type and SQL literal of each parameter, in order.
    pub params: Vec<(&'static str, String)>,
    /// Whether `EXPLAIN ANALYZE` may run it (in a transaction rolled back); not when the
    /// sample values would break a constraint.
    pub analyze: bool,
}

/// Values from the database the statements are explained against.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Hex of `api_tokens.token_hash`, and the token's id.
    pub token_hash_hex: String,
    pub token_id: i64,
    pub instance_id: i64,
    pub org_id: i64,
    pub user_id: i64,
    pub last_sequence: i64,
    /// The user's contact email row and address.
    pub email_id: i64,
    pub address: String,
    /// A sent job of that address.
    pub job_id: i64,
    /// An id no job has (what `next_id()` would give the new job).
    pub new_job_id: i64,
}

fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `now()` as the timestamps Diesel binds are "now" (`now_ms()` or `Utc::now()`).
const NOW: &str = "now()";
/// A W3C traceparent as the api stores with each job.
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// The columns of `MailJob` (`common/src/mail_job/query.rs`), the worker's view of a job.
const MAIL_JOB_COLUMNS: &str = "id, instance_id, org_id, user_id, purpose, recipient, \
    url_template, code_ciphertext, code_expires_at, state, attempts, failed_deliveries, \
    next_attempt_at, lease_until, created_at, trace_context, language";

/// Every statement, request first, then delivery, then the timers.
pub fn statements(s: &Sample) -> Vec<Statement> {
    let mut all = request(s);
    all.extend(delivery(s));
    all.extend(background(s));
    all
}

fn st(
    path: Path,
    source: &'static str,
    when: &'static str,
    sql: &str,
    params: Vec<(&'static str, String)>,
) -> Statement {
    Statement {
        path,
        source,
        when,
        sql: sql.to_string(),
        params,
        analyze: true,
    }
}

/// A `bigint[]` literal.
fn ids(v: &[i64]) -> String {
    let list: Vec<String> = v.iter().map(|i| i.to_string()).collect();
    lit(&format!("{{{}}}", list.join(",")))
}

fn int(v: i64) -> String {
    v.to_string()
}

/// The request, in order (`api/src/http/extract.rs` authenticates, then
/// `common/src/commands/email.rs` `set_contact_email` runs in one transaction, then the
/// outbox publisher runs after commit).
fn request(s: &Sample) -> Vec<Statement> {
    use Path::Request as R;
    let token = format!("'\\x{}'", s.token_hash_hex);
    let new_address = lit("growth-explain@bench.example.com");
    let template = lit(crate::load::URL_TEMPLATE);
    vec![
        st(
            R,
            "common/src/auth.rs: authenticate_until",
            "token-cache miss (the api keeps a token 2 s)",
            "SELECT id, instance_id, org_id, subject_user_id, permissions, last_used_at, \
             expires_at FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > $2) LIMIT $3",
            vec![
                ("bytea", token),
                ("timestamptz", NOW.into()),
                ("bigint", int(1)),
            ],
        ),
        st(
            R,
            "common/src/auth.rs: authenticate_until (last_used_at)",
            "token-cache miss, at most once a minute per token",
            "UPDATE api_tokens SET last_used_at = $1 WHERE id = $2",
            vec![("timestamptz", NOW.into()), ("bigint", int(s.token_id))],
        ),
        st(
            R,
            "common/src/commands/mod.rs: load_user (lock)",
            "every request",
            "SELECT id, instance_id, org_id, username, preferred_language, last_sequence, \
             last_changed_at FROM users WHERE id = $1 AND instance_id = $2 \
             AND deleted_at IS NULL LIMIT $3 FOR UPDATE",
            vec![
                ("bigint", int(s.user_id)),
                ("bigint", int(s.instance_id)),
                ("bigint", int(1)),
            ],
        ),
        st(
            R,
            "common/src/commands/address.rs: contact_email",
            "every request",
            "SELECT id, address, verified, code_hash, code_expires_at, code_failures \
             FROM user_emails WHERE user_id = $1 AND purpose = $2 LIMIT $3",
            vec![
                ("bigint", int(s.user_id)),
                ("text", lit("contact_email")),
                ("bigint", int(1)),
            ],
        ),
        Statement {
            // The sample user has a contact email already: the insert would break
            // `user_emails_contact`, so it is only explained.
            analyze: false,
            ..st(
                R,
                "common/src/commands/address.rs: insert",
                "a user's first address (no contact email yet); EXPLAIN only",
                "INSERT INTO user_emails (user_id, purpose, address, verified, created_at, \
             updated_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                vec![
                    ("bigint", int(s.user_id)),
                    ("text", lit("contact_email")),
                    ("text", new_address.clone()),
                    ("boolean", "false".into()),
                    ("timestamptz", NOW.into()),
                    ("timestamptz", NOW.into()),
                ],
            )
        },
        st(
            R,
            "common/src/commands/address.rs: set_address",
            "every request that changes the address",
            common::commands::SET_ADDRESS_SQL,
            vec![
                ("text", new_address.clone()),
                ("boolean", "false".into()),
                ("timestamptz", NOW.into()),
                ("bigint", int(s.email_id)),
            ],
        ),
        st(
            R,
            "common/src/mail_job/lifecycle.rs: supersede_unsent",
            "isVerified or returnCode (not in this load; with sendCode the enqueue statement supersedes)",
            common::mail_job::SUPERSEDE_UNSENT_SQL,
            vec![
                ("bigint", "NULL".into()),
                ("timestamptz", NOW.into()),
                ("bigint", int(s.email_id)),
                ("bigint", int(0)),
            ],
        ),
        st(
            R,
            "common/src/mail_settings.rs: templates",
            "sendCode without a urlTemplate (not in this load)",
            "SELECT url_template, otp_email_url_template FROM instance_mail_settings \
             WHERE instance_id = $1 LIMIT $2",
            vec![("bigint", int(s.instance_id)), ("bigint", int(1))],
        ),
        st(
            R,
            "common/src/mail_job/query.rs: lock_recipient",
            "RESEND_COOLDOWN > 0 or MAIL_RECIPIENT_HOURLY_LIMIT > 0 (the defaults; off in this load)",
            common::mail_job::LOCK_RECIPIENT_SQL,
            vec![
                ("integer", int(0x4d41_494c)),
                ("text", lit(&format!("{}:{}", s.instance_id, s.address))),
            ],
        ),
        st(
            R,
            "common/src/mail_job/query.rs: recent_mails_to",
            "RESEND_COOLDOWN > 0 or MAIL_RECIPIENT_HOURLY_LIMIT > 0 (the defaults; off in this load)",
            common::mail_job::RECENT_MAILS_TO_SQL,
            vec![
                ("bigint", int(s.instance_id)),
                ("text", lit(&s.address)),
                ("text", lit("contact_email")),
                ("timestamptz", "now() - interval '30 seconds'".into()),
                ("timestamptz", "now() - interval '1 hour'".into()),
                ("bigint", int(9)),
            ],
        ),
        st(
            R,
            "common/src/commands/address.rs: set_pending_code",
            "returnCode (not in this load; with sendCode the enqueue statement stores the code)",
            common::commands::SET_PENDING_CODE_SQL,
            vec![
                ("bytea", format!("'\\x{}'", "ab".repeat(32))),
                ("timestamptz", "now() + interval '1 hour'".into()),
                ("timestamptz", NOW.into()),
                ("bigint", int(s.email_id)),
            ],
        ),
        st(
            R,
            "common/src/db.rs: next_id",
            "every request (mail_job::enqueue)",
            "SELECT next_id()",
            vec![],
        ),
        st(
            R,
            "common/src/mail_job/lifecycle.rs: enqueue",
            "every request (stores the code hash, supersedes the older unsent jobs, inserts the job and its outbox row)",
            common::mail_job::ENQUEUE_SQL,
            vec![
                ("bigint", int(s.new_job_id)),
                ("bigint", int(s.instance_id)),
                ("bigint", int(s.org_id)),
                ("bigint", int(s.user_id)),
                ("bigint", int(s.email_id)),
                ("text", lit("contact_email")),
                ("text", new_address.clone()),
                ("text", template),
                ("bytea", format!("'\\x{}'", "cd".repeat(46))),
                ("timestamptz", "now() + interval '1 hour'".into()),
                ("text", lit(TRACEPARENT)),
                ("text", "NULL".into()),
                ("timestamptz", NOW.into()),
                ("bytea", format!("'\\x{}'", "ab".repeat(32))),
            ],
        ),
        st(
            R,
            "common/src/commands/mod.rs: append_event",
            "every request (the event and the user's last sequence)",
            common::commands::APPEND_EVENT_SQL,
            vec![
                ("bigint", int(s.user_id)),
                ("bigint", int(s.last_sequence + 1)),
                ("bigint", int(s.instance_id)),
                ("text", lit("user.email.changed")),
                (
                    "jsonb",
                    lit(
                        "{\"address\": \"growth-explain@bench.example.com\", \"verification\": \"send_code\"}",
                    ),
                ),
                ("timestamptz", NOW.into()),
            ],
        ),
        st(
            R,
            "common/src/outbox.rs: remove (publish_and_forget)",
            "after commit, per publish batch (up to 256 jobs)",
            "DELETE FROM outbox WHERE job_id = ANY($1)",
            vec![("bigint[]", ids(&[s.new_job_id]))],
        ),
    ]
}

/// One delivery (`worker/src/deliver.rs` `try_deliver` and `send`), in order; the last two
/// only when a send fails.
fn delivery(s: &Sample) -> Vec<Statement> {
    use Path::Delivery as D;
    let returning = format!(
        "UPDATE mail_jobs SET state = $1, lease_until = $2, updated_at = $3 WHERE id = ANY($4) \
         AND CASE WHEN (((state = $5 OR (state = $6 AND next_attempt_at <= $7)) \
         OR (state = $8 AND next_attempt_at IS NULL)) OR (state = $9 AND lease_until < $10)) \
         THEN $11 ELSE $12 END RETURNING {MAIL_JOB_COLUMNS}"
    );
    vec![
        st(
            D,
            "common/src/mail_settings.rs: for_jobs (worker/src/deliver.rs: take)",
            "every delivery, batched (one statement for the deliveries that start together; the settings that apply: the job's instance settings and org branding)",
            "SELECT mail_jobs.id, instance_mail_settings.instance_id, instance_mail_settings.mail_from, \
             instance_mail_settings.reply_to, instance_mail_settings.default_language, \
             instance_mail_settings.url_template, instance_mail_settings.otp_email_url_template, \
             instance_mail_settings.provider_kind, instance_mail_settings.provider_url, \
             instance_mail_settings.provider_secret, instance_mail_settings.branding, \
             instance_mail_settings.updated_at, organization_branding.branding \
             FROM mail_jobs \
             LEFT OUTER JOIN instance_mail_settings \
               ON instance_mail_settings.instance_id = mail_jobs.instance_id \
             LEFT OUTER JOIN organization_branding \
               ON organization_branding.org_id = mail_jobs.org_id \
             WHERE mail_jobs.id = ANY($1)",
            vec![("bigint[]", ids(&[s.job_id]))],
        ),
        st(
            D,
            "common/src/mail_job/lifecycle.rs: claim",
            "every delivery, batched (same transaction as for_jobs)",
            &returning,
            vec![
                ("text", lit("sending")),
                ("timestamptz", "now() + interval '30 seconds'".into()),
                ("timestamptz", NOW.into()),
                ("bigint[]", ids(&[s.job_id])),
                ("text", lit("queued")),
                ("text", lit("retrying")),
                ("timestamptz", "now() + interval '1 second'".into()),
                ("text", lit("retrying")),
                ("text", lit("sending")),
                ("timestamptz", NOW.into()),
                ("boolean", "true".into()),
                ("boolean", "false".into()),
            ],
        ),
        st(
            D,
            "common/src/mail_job/query.rs: load",
            "only for the jobs the claim did not take (to say why), batched",
            &format!("SELECT {MAIL_JOB_COLUMNS} FROM mail_jobs WHERE id = ANY($1)"),
            vec![("bigint[]", ids(&[s.job_id]))],
        ),
        st(
            D,
            "common/src/mail_job/lifecycle.rs: record_sent",
            "every mail sent, batched (the attempts, their counts and `sent` of the mails accepted together, in one statement)",
            common::mail_job::RECORD_SENT_SQL,
            vec![
                ("bigint[]", ids(&[s.job_id])),
                ("timestamptz[]", format!("ARRAY[{NOW}]")),
                ("text[]", "ARRAY['250 2.0.0 OK queued']".into()),
                ("integer[]", "ARRAY[2]".into()),
                ("timestamptz", NOW.into()),
            ],
        ),
        st(
            D,
            "common/src/mail_job/lifecycle.rs: record_attempt (insert)",
            "a failed SMTP attempt",
            "INSERT INTO mail_attempts (job_id, at, outcome, smtp_reply, duration_ms) \
             VALUES ($1, $2, $3, $4, $5)",
            vec![
                ("bigint", int(s.job_id)),
                ("timestamptz", NOW.into()),
                ("text", lit("transient")),
                ("text", lit("421 try again later")),
                ("integer", int(2)),
            ],
        ),
        st(
            D,
            "common/src/mail_job/lifecycle.rs: record_attempt (count)",
            "a failed SMTP attempt",
            "UPDATE mail_jobs SET attempts = attempts + $1 WHERE id = $2 \
             RETURNING state, code_expires_at",
            vec![("integer", int(1)), ("bigint", int(s.job_id))],
        ),
        st(
            D,
            "common/src/mail_job/lifecycle.rs: finish (mark_retrying, mark_failed, mark_expired)",
            "a delivery without the mail",
            "UPDATE mail_jobs SET state = $1, last_error = $2, next_attempt_at = $3, \
             lease_until = $4, updated_at = $5 WHERE id = $6 \
             AND CASE WHEN state = $7 THEN $8 ELSE $9 END",
            vec![
                ("text", lit("retrying")),
                ("text", lit("421 try again later")),
                ("timestamptz", "now() + interval '5 seconds'".into()),
                ("timestamptz", "NULL".into()),
                ("timestamptz", NOW.into()),
                ("bigint", int(s.job_id)),
                ("text", lit("sending")),
                ("boolean", "true".into()),
                ("boolean", "false".into()),
            ],
        ),
        st(
            D,
            "common/src/mail_job/lifecycle.rs: mark_retrying (budget)",
            "a delivery without the mail that counts",
            "UPDATE mail_jobs SET failed_deliveries = failed_deliveries + $1 WHERE id = $2",
            vec![("integer", int(1)), ("bigint", int(s.job_id))],
        ),
    ]
}

/// The timers of the api and the worker.
fn background(s: &Sample) -> Vec<Statement> {
    use Path::Background as B;
    vec![
        st(
            B,
            "common/src/outbox.rs: claim_due (run_relay)",
            "every second, in the api and in each worker",
            "WITH claimed AS ( UPDATE outbox SET created_at = now() WHERE id IN ( \
             SELECT id FROM outbox WHERE created_at < now() - make_interval(secs => $1) \
             ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING job_id) \
             SELECT claimed.job_id, mail_jobs.trace_context FROM claimed \
             LEFT JOIN mail_jobs ON mail_jobs.id = claimed.job_id",
            vec![("double precision", "3".into()), ("bigint", int(500))],
        ),
        st(
            B,
            "common/src/mail_job/lifecycle.rs: renew_leases (worker/src/lease.rs)",
            "every 10 s in each worker while it sends",
            "UPDATE mail_jobs SET lease_until = $1 WHERE id = ANY($2) \
             AND CASE WHEN state = $3 THEN $4 ELSE $5 END",
            vec![
                ("timestamptz", "now() + interval '30 seconds'".into()),
                ("bigint[]", ids(&[s.job_id])),
                ("text", lit("sending")),
                ("boolean", "true".into()),
                ("boolean", "false".into()),
            ],
        ),
        st(
            B,
            "common/src/mail_job/lifecycle.rs: requeue_stranded (worker/src/run.rs)",
            "every 60 s in each worker",
            "UPDATE mail_jobs SET updated_at = now() WHERE id IN ( \
             SELECT id FROM mail_jobs \
             WHERE ((state = ANY($2) \
                     AND coalesce(next_attempt_at, updated_at) < now() - make_interval(secs => $1) \
                     AND updated_at < now() - make_interval(secs => $1)) \
                OR (state = $3 AND lease_until < now() - make_interval(secs => $1))) \
               AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.job_id = mail_jobs.id) \
             ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED) \
             RETURNING id",
            vec![
                ("double precision", "600".into()),
                ("text[]", lit("{queued,retrying}")),
                ("text", lit("sending")),
            ],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each statement has as many parameters as it uses, `$1` to `$n`, none skipped.
    #[test]
    fn parameters_match_placeholders() {
        for s in statements(&Sample::default()) {
            let mut highest = 0;
            for n in 1..=20 {
                let placeholder = format!("${n}");
                let used = s.sql.match_indices(&placeholder).any(|(i, _)| {
                    !s.sql[i + placeholder.len()..].starts_with(|c: char| c.is_ascii_digit())
                });
                if used {
                    assert_eq!(highest, n - 1, "{} skips a placeholder", s.source);
                    highest = n;
                }
            }
            assert_eq!(highest, s.params.len(), "{}: parameters", s.source);
        }
    }
}
