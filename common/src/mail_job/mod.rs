//! Mail jobs: one mail to deliver, its states (SPEC 7) and its history. This module owns the
//! `mail_jobs` and `mail_attempts` tables: every state move and every query of them is here,
//! so the rules of a job's life (the claim and its lease, what may still be sent, what a
//! replay resets) are read in one place.
//!
//! - `state.rs`: [`Purpose`], [`JobState`] (with the table of the moves) and how they are
//!   stored.
//! - `lifecycle.rs`: the moves. Commands enqueue a job inside their own transaction together
//!   with an outbox row (DESIGN decision 1) and supersede or cancel unsent ones; the worker
//!   claims and finishes with conditional updates (decision 3); replay requeues.
//! - `query.rs`: the reads (the worker's job, the operators' list, the resend limits' counts).

mod lifecycle;
mod query;
mod state;

pub use lifecycle::{
    Accepted, AfterAttempt, ENQUEUE_SQL, NewJob, RECORD_SENT_SQL, SUPERSEDE_UNSENT_SQL,
    cancel_unsent_for_user, claim, enqueue, lock_for_replay, mark_expired, mark_failed,
    mark_retrying, record_attempt, record_sent, release, renew_leases, replace_code,
    requeue_for_replay, requeue_stranded, supersede_unsent,
};
pub use query::{
    Addressee, Attempt, JobFilter, JobSummary, LOCK_RECIPIENT_SQL, MailJob, RECENT_MAILS_TO_SQL,
    RecentMails, ReplayCandidate, addressee, attempts, count_by_state, list, load, lock_recipient,
    newest_to, recent_mails_to, replay_candidate, replay_candidates, state_of, summary,
};
pub use state::{AttemptOutcome, JobState, Purpose};
