//! Delivering one job, start to end: load, decide, claim, render, send with quick retries,
//! record, and either finish the job or park it in a delay tier. Returns what to do with
//! the message; the consumer loop acks or hands it back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::amqp::{Outgoing, Publisher, RetryTier, Route};
use common::db::{self, PgPool};
use common::domain::CodeKeys;
use common::error::Error;
use common::mail_job::{self, AttemptOutcome, JobState, MailJob};
use common::mail_settings::{self, InstanceMail};
use common::metrics::{Metrics, OutcomeLabels, ProviderLabels, TierLabels};
use common::trace::TraceParent;
use diesel::{Connection, PgConnection};
use tracing::Instrument;

use crate::batch::Batcher;
use crate::lease::{LEASE, Leases};
use crate::mail::{MailInput, MailLanguage, MailRenderer, RenderedMail, Sender};
use crate::providers::{Admission, Providers, Selected};
use crate::retry::{QUICK_TRIES, RetryPolicy};
use crate::transport::{MailTransport, SendFailure, SmtpHealth};

/// A retrying job whose message comes back this early is sent anyway.
const EARLY_SLACK: Duration = Duration::from_secs(1);

/// Everything a delivery needs; shared by all in-flight deliveries.
pub struct Deliverer {
    pub pool: PgPool,
    pub keys: CodeKeys,
    pub renderer: MailRenderer,
    /// The global transport: `SMTP_URL`, or files in `MAIL_DIR`.
    pub transport: MailTransport,
    /// Instances' own providers (SPEC 9).
    pub providers: Providers,
    pub retry: RetryPolicy,
    pub publisher: Arc<Publisher>,
    pub metrics: Arc<Metrics>,
    /// What `/readyz` reports about the relay.
    pub smtp_health: Arc<SmtpHealth>,
    /// The jobs being sent here, whose leases are kept alive.
    pub leases: Arc<Leases>,
    /// The database work of the deliveries in flight (claims, records of sent mails),
    /// batched.
    pub desk: Batcher<Ask, Answer>,
}

/// Database work a delivery asks for.
pub enum Ask {
    /// The first trip: the settings that apply and the claim.
    Take(i64),
    /// The record of a mail the relay accepted.
    Record(mail_job::Accepted),
}

/// What the desk answers to an [`Ask`], in kind.
pub enum Answer {
    Taken(Box<Taken>),
    Recorded,
}

/// What became of a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Handled (sent, failed, parked, or nothing to do): ack.
    Done,
    /// The broker failed mid-way: hand the message back.
    Retry(String),
    /// PostgreSQL is unreachable: hand the message back and pause consuming.
    DatabaseDown(String),
}

/// How a delivery ended, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    Parked,
    Failed,
    Expired,
    Skipped,
}

/// What the first trip of a delivery found.
pub enum Taken {
    /// Claimed for this delivery, with the settings that apply to its mail.
    Claimed(MailJob, Box<mail_settings::JobMail>),
    /// Not to be sent now (see [`Deliverer::not_now`]).
    NotNow(MailJob),
    /// No such job (deleted with its user's data).
    Unknown,
}

impl Deliverer {
    /// Delivers the job of one message, in a span that joins the trace of the request that
    /// enqueued the mail (`traceparent` from the message headers).
    pub async fn deliver(
        &self,
        job_id: i64,
        redelivered: bool,
        traceparent: Option<&str>,
    ) -> Disposition {
        let span = tracing::info_span!(
            "deliver",
            job_id,
            redelivered,
            trace_id = tracing::field::Empty
        );
        common::trace::set_parent(&span, traceparent);
        if let Some(tp) = traceparent.and_then(TraceParent::parse) {
            span.record("trace_id", tp.trace_id.as_str());
        }
        self.deliver_in_span(job_id).instrument(span).await
    }

    async fn deliver_in_span(&self, job_id: i64) -> Disposition {
        match self.try_deliver(job_id).await {
            Ok(outcome) => {
                tracing::info!(?outcome, "delivery finished");
                Disposition::Done
            }
            Err(e) => {
                tracing::warn!(error = %e, "delivery interrupted; the message goes back to the queue");
                match e {
                    Error::DatabaseUnavailable(_) | Error::Database(_) => {
                        Disposition::DatabaseDown(e.to_string())
                    }
                    _ => Disposition::Retry(e.to_string()),
                }
            }
        }
    }

    async fn try_deliver(&self, job_id: i64) -> Result<Outcome, Error> {
        // One trip to the database, shared with the deliveries that start meanwhile.
        let taken = match self.desk.call(Ask::Take(job_id)).await? {
            Answer::Taken(taken) => *taken,
            Answer::Recorded => return Err(Error::Internal("a take answered as a record".into())),
        };
        let (job, applying) = match taken {
            Taken::Claimed(job, applying) => (job, applying),
            Taken::NotNow(job) => return self.not_now(&job).await,
            Taken::Unknown => {
                tracing::warn!("message for an unknown job; dropped");
                return Ok(Outcome::Skipped);
            }
        };
        let _held = self.leases.hold(job_id);
        if job.code_expires_at <= Utc::now() {
            db::run(&self.pool, move |c| Ok(mail_job::mark_expired(c, job_id)?)).await?;
            self.count("expired");
            return Ok(Outcome::Expired);
        }
        let settings = match applying.settings {
            Ok(settings) => settings,
            Err(why) => return self.provider_fault(&job, &why).await,
        };
        let selected = match self.providers.select(settings.as_ref()) {
            Ok(selected) => selected,
            Err(why) => return self.provider_fault(&job, &why).await,
        };
        let _slot = match self.providers.admit(&selected).await {
            Admission::Go(slot) => slot,
            Admission::Busy { stuck } => {
                // Its slot goes to other instances' mail; this one comes back later, its
                // budget untouched.
                let wait = if stuck {
                    Duration::from_secs(30)
                } else {
                    Duration::from_secs(1)
                };
                tracing::info!(
                    stuck,
                    "the instance's mail provider is busy; the mail waits"
                );
                return self
                    .wait_for_provider(&job, wait, "the instance's mail provider is busy")
                    .await;
            }
        };
        let mut sender = match Sender::of(
            settings.as_ref().and_then(|s| s.from.as_deref()),
            settings.as_ref().and_then(|s| s.reply_to.as_deref()),
        ) {
            Ok(sender) => sender,
            Err(why) => return self.provider_fault(&job, &why).await,
        };
        sender.branding = match &settings {
            Some(s) => applying.org_branding.falling_back_to(&s.branding),
            None => applying.org_branding,
        };
        let mail = match self.build(&job, settings.as_ref(), &sender) {
            Ok(m) => m,
            Err(why) => return self.fail(&job, &why).await,
        };
        self.send(&job, &selected, &mail).await
    }

    /// A job the claim did not take: already finished, not yet due, or held by another
    /// delivery.
    async fn not_now(&self, job: &MailJob) -> Result<Outcome, Error> {
        if !JobState::NOT_YET_SENT.contains(&job.state) {
            return Ok(Outcome::Skipped);
        }
        if job.state == JobState::Retrying
            && let Some(due) = job.next_attempt_at
            && let Ok(wait) = (due - Utc::now()).to_std()
        {
            // Early (a duplicate, or a delay longer than the longest tier): wait again.
            self.park(job, wait).await?;
            return Ok(Outcome::Parked);
        }
        if job.state == JobState::Sending
            && let Some(until) = job.lease_until
            && let Ok(left) = (until - Utc::now()).to_std()
        {
            // Another delivery holds the job and renews its lease: this message is a copy
            // (a redelivery after the holder's broker link failed). It waits in a delay
            // tier; if the holder dies, the lease runs out and the copy takes the job.
            tracing::info!(
                lease_left_ms = left.as_millis() as u64,
                "job held by another delivery; the message waits"
            );
            self.park(job, left.min(LEASE)).await?;
            return Ok(Outcome::Parked);
        }
        // Between the claim and this read the job became due or its holder's lease ran
        // out: the message comes back at once and claims it then.
        self.park(job, Duration::ZERO).await?;
        Ok(Outcome::Parked)
    }

    /// Gives a claimed job back for `wait` without spending its budget (its provider is
    /// busy): `retrying`, and the message in the matching delay tier.
    async fn wait_for_provider(
        &self,
        job: &MailJob,
        wait: Duration,
        why: &str,
    ) -> Result<Outcome, Error> {
        Ok(if self.retry_in(job, wait, why, false).await? {
            Outcome::Parked
        } else {
            Outcome::Skipped
        })
    }

    /// An instance's settings that cannot be used (a secret no key decrypts, a provider that
    /// cannot be built): the instance's configuration, not the mail's fault. The job waits
    /// without spending its budget, as for a fault of the worker's own configuration.
    async fn provider_fault(&self, job: &MailJob, why: &str) -> Result<Outcome, Error> {
        tracing::warn!(reason = %why, instance_id = job.instance_id, "instance mail settings unusable; the job waits");
        let level = (job.attempts as u32).div_ceil(QUICK_TRIES).max(1);
        self.schedule_retry(job, level, why, false).await
    }

    fn build(
        &self,
        job: &MailJob,
        settings: Option<&InstanceMail>,
        sender: &Sender,
    ) -> Result<RenderedMail, String> {
        let ciphertext = job
            .code_ciphertext
            .as_deref()
            .ok_or_else(|| "the job has no code any more".to_string())?;
        let code = self.keys.decrypt(job.id, ciphertext)?;
        let reader = MailLanguage {
            language: job.language.as_deref(),
            default_language: settings.and_then(|s| s.default_language.as_deref()),
        };
        self.renderer.render_for(
            &MailInput {
                job_id: job.id,
                purpose: job.purpose,
                recipient: &job.recipient,
                user_id: job.user_id,
                org_id: job.org_id,
                url_template: &job.url_template,
                code: &code,
                code_expires_at: job.code_expires_at,
            },
            reader,
            sender,
        )
    }

    /// One delivery: the mail tried a few times in quick succession, each attempt recorded.
    /// A delivery that ends without the mail counts once against `MAIL_MAX_ATTEMPTS`,
    /// however many quick tries it made; a fault of the worker's own configuration never
    /// counts and never fails the job.
    async fn send(
        &self,
        job: &MailJob,
        selected: &Selected,
        mail: &RenderedMail,
    ) -> Result<Outcome, Error> {
        let mut quick = self.retry.quick();
        let mut tries = 0;
        loop {
            tries += 1;
            let at = Utc::now();
            let started = Instant::now();
            let result = self
                .providers
                .send(&self.transport, selected, job.id, mail)
                .await;
            let elapsed = started.elapsed();
            if selected.is_global() {
                // `/readyz` speaks of the worker's own relay, not of instances' providers.
                self.smtp_health.record(&result);
            }
            let id = job.id;
            let (outcome, failure) = match result {
                Ok(reply) => {
                    // The attempt, its count and `sent`, in one statement with the other
                    // mails accepted meanwhile.
                    self.desk
                        .call(Ask::Record(mail_job::Accepted {
                            job_id: id,
                            at,
                            reply,
                            duration: elapsed,
                        }))
                        .await?;
                    self.count_send(selected, AttemptOutcome::Sent);
                    let latency = (Utc::now() - job.created_at).to_std().unwrap_or_default();
                    self.metrics.delivery_latency.observe(latency.as_secs_f64());
                    return Ok(Outcome::Sent);
                }
                Err(failure) => (failure.outcome(), failure),
            };
            let reply_owned = failure.reply().to_owned();
            let now = db::run(&self.pool, move |c| {
                Ok(mail_job::record_attempt(
                    c,
                    id,
                    at,
                    outcome,
                    &reply_owned,
                    elapsed,
                )?)
            })
            .await?;
            self.count_send(selected, outcome);
            if !now.held {
                // Superseded or cancelled while this attempt ran: its code is void.
                return Ok(Outcome::Skipped);
            }
            if now.code_expired {
                db::run(&self.pool, move |c| Ok(mail_job::mark_expired(c, id)?)).await?;
                self.count("expired");
                return Ok(Outcome::Expired);
            }
            match failure {
                SendFailure::Permanent(reply) => return self.fail(job, &reply).await,
                SendFailure::Configuration(reply) => {
                    tracing::warn!(reason = %reply, "SMTP configuration fault; the job waits");
                    // Waits grow with the attempts made, but the budget is left alone.
                    let level = (job.attempts as u32 + tries).div_ceil(QUICK_TRIES);
                    return self.schedule_retry(job, level, &reply, false).await;
                }
                SendFailure::Transient(reply) => match quick.next_wait() {
                    Some(wait) if tries < QUICK_TRIES => tokio::time::sleep(wait).await,
                    _ => {
                        let failed = job.failed_deliveries.max(0) as u32 + 1;
                        if failed >= self.retry.max_attempts {
                            let why = format!("{reply} (gave up after {failed} deliveries)");
                            return self.fail(job, &why).await;
                        }
                        return self.schedule_retry(job, failed, &reply, true).await;
                    }
                },
            }
        }
    }

    /// After a delivery failed: `retrying`, and the message waits in the tier that matches
    /// the backoff after `failed` deliveries. `count` says whether it counts against the
    /// budget.
    async fn schedule_retry(
        &self,
        job: &MailJob,
        failed: u32,
        reply: &str,
        count: bool,
    ) -> Result<Outcome, Error> {
        let delay = self.retry.delay_after(failed);
        if !self.retry_in(job, delay, reply, count).await? {
            return Ok(Outcome::Skipped);
        }
        self.metrics
            .retries
            .get_or_create(&TierLabels {
                tier: RetryTier::for_delay(delay).name,
            })
            .inc();
        tracing::info!(
            delay_ms = delay.as_millis() as u64,
            "delivery will be retried"
        );
        Ok(Outcome::Parked)
    }

    /// A job this delivery holds becomes `retrying` in `delay` (`count`: a delivery of its
    /// budget spent) and its message waits in the matching delay tier; false when the job is
    /// no longer held (nothing parked).
    async fn retry_in(
        &self,
        job: &MailJob,
        delay: Duration,
        reply: &str,
        count: bool,
    ) -> Result<bool, Error> {
        let next =
            Utc::now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::seconds(5));
        let id = job.id;
        let reply = reply.to_owned();
        let held = db::run(&self.pool, move |c| {
            Ok(mail_job::mark_retrying(c, id, next, &reply, count)?)
        })
        .await?;
        if held == 0 {
            return Ok(false);
        }
        self.park(job, delay).await?;
        Ok(true)
    }

    /// Counts one attempt, overall and by provider kind.
    fn count_send(&self, selected: &Selected, outcome: AttemptOutcome) {
        self.count(outcome.as_str());
        self.metrics
            .provider_sends
            .get_or_create(&ProviderLabels {
                provider: selected.kind(&self.transport),
                outcome: outcome.as_str(),
            })
            .inc();
    }

    fn count(&self, outcome: &'static str) {
        self.metrics
            .deliveries
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Publishes the job to the delay tier for `delay`.
    async fn park(&self, job: &MailJob, delay: Duration) -> Result<(), Error> {
        let tier = RetryTier::for_delay(delay);
        let confirmed = self
            .publisher
            .publish(&[outgoing(job)], Route::Retry(tier))
            .await
            .map_err(|e| Error::Internal(format!("cannot park the job in {}: {e}", tier.name)))?;
        if confirmed.is_empty() {
            return Err(Error::Internal(format!(
                "{} did not confirm the job",
                tier.name
            )));
        }
        Ok(())
    }

    /// `failed`, with the reason; its message goes to the dead-letter queue for inspection.
    async fn fail(&self, job: &MailJob, reason: &str) -> Result<Outcome, Error> {
        let id = job.id;
        let why = reason.to_owned();
        let held = db::run(&self.pool, move |c| Ok(mail_job::mark_failed(c, id, &why)?)).await?;
        if held == 0 {
            return Ok(Outcome::Skipped);
        }
        tracing::warn!(reason, "job failed");
        if let Err(e) = self.publisher.publish(&[outgoing(job)], Route::Dead).await {
            // The database is the truth; the dead-letter copy is only for inspection.
            tracing::warn!(error = %e, "could not copy the failed job to mail.dead");
        }
        Ok(Outcome::Failed)
    }
}

/// The message that carries a job on, with the trace context of the request that made it.
fn outgoing(job: &MailJob) -> Outgoing {
    Outgoing::new(job.id, job.trace_context.clone())
}

/// The first trip of deliveries, for a batch of job ids (in the caller's transaction): the
/// settings that apply now to each job's mail (a change applies to mail sent after it), then
/// the claim of all the jobs in one statement; only the jobs not taken are read again, to say
/// why. A job id twice in a batch (two messages for one job) is claimed for the first and not
/// taken for the second.
fn take(c: &mut PgConnection, keys: &CodeKeys, ids: &[i64]) -> Result<Vec<Taken>, Error> {
    let mut applying: HashMap<i64, mail_settings::JobMail> =
        mail_settings::for_jobs(c, keys, ids)?.into_iter().collect();
    let mut claimed: HashMap<i64, MailJob> = mail_job::claim(c, ids, LEASE, EARLY_SLACK)?
        .into_iter()
        .map(|job| (job.id, job))
        .collect();
    let mut taken: Vec<Option<Taken>> = ids
        .iter()
        .map(|id| match (claimed.remove(id), applying.remove(id)) {
            (Some(job), Some(mail)) => Some(Taken::Claimed(job, Box::new(mail))),
            _ => None,
        })
        .collect();
    let asked: Vec<i64> = ids
        .iter()
        .zip(&taken)
        .filter(|(_, t)| t.is_none())
        .map(|(id, _)| *id)
        .collect();
    let found: HashMap<i64, MailJob> = if asked.is_empty() {
        HashMap::new()
    } else {
        mail_job::load(c, &asked)?
            .into_iter()
            .map(|job| (job.id, job))
            .collect()
    };
    for (id, slot) in ids.iter().zip(taken.iter_mut()) {
        if slot.is_none() {
            *slot = Some(match found.get(id) {
                Some(job) => Taken::NotNow(job.clone()),
                None => Taken::Unknown,
            });
        }
    }
    Ok(taken.into_iter().flatten().collect())
}

/// One trip for a batch of asks, in one transaction (one commit for the lot): the records
/// of sent mails first, then the takes.
pub fn serve_desk(
    conn: &mut PgConnection,
    keys: &CodeKeys,
    asks: &[Ask],
) -> Result<Vec<Answer>, Error> {
    conn.transaction(|c| {
        let accepted: Vec<mail_job::Accepted> = asks
            .iter()
            .filter_map(|a| match a {
                Ask::Record(r) => Some(r.clone()),
                Ask::Take(_) => None,
            })
            .collect();
        if !accepted.is_empty() {
            mail_job::record_sent(c, &accepted)?;
        }
        let ids: Vec<i64> = asks
            .iter()
            .filter_map(|a| match a {
                Ask::Take(id) => Some(*id),
                Ask::Record(_) => None,
            })
            .collect();
        let mut taken = if ids.is_empty() {
            Vec::new()
        } else {
            take(c, keys, &ids)?
        }
        .into_iter();
        Ok(asks
            .iter()
            .map(|a| match a {
                Ask::Record(_) => Answer::Recorded,
                Ask::Take(_) => Answer::Taken(Box::new(taken.next().unwrap_or(Taken::Unknown))),
            })
            .collect())
    })
}
