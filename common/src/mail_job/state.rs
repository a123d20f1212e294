//! The words of a mail job: what it is for ([`Purpose`]) and where it stands ([`JobState`]),
//! and how both are stored. In PostgreSQL they are `text` (kept honest by CHECK constraints);
//! in Diesel their columns have their own SQL types ([`crate::schema::sql_types`]) that only
//! these enums can be written to, so a misspelt state or purpose does not compile.

use std::fmt;
use std::io::Write;
use std::str::FromStr;

use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, IsNull, Output, ToSql};

use crate::schema::sql_types::{JobStateText, PurposeText};

/// What a mail is for. Each purpose has its own code policy
/// (`commands::issuance::CodeRules::for_purpose`) and its own templates
/// (`worker/templates/<purpose>.*.hbs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, AsExpression, FromSqlRow)]
#[diesel(sql_type = PurposeText)]
pub enum Purpose {
    ContactEmail,
    OtpEmail,
}

impl Purpose {
    pub const ALL: [Purpose; 2] = [Purpose::ContactEmail, Purpose::OtpEmail];

    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::ContactEmail => "contact_email",
            Purpose::OtpEmail => "otp_email",
        }
    }
}

impl FromStr for Purpose {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Purpose::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown purpose {s:?}"))
    }
}

/// The life of a job (SPEC 7). Each move is a function of `lifecycle.rs`, an UPDATE that
/// only matches the states it starts from:
///
/// | move | from | to |
/// | --- | --- | --- |
/// | `enqueue` | (new) | `queued` |
/// | `claim` | `queued`, `retrying` once due; `sending` whose lease ran out (its holder stopped renewing it) | `sending` |
/// | `release` | `sending` (a stopping worker hands back what it could not finish) | `retrying` |
/// | `record_sent` | `sending`; `superseded`, `cancelled` (the mail was already on its way) | `sent` |
/// | `mark_retrying`, `mark_failed`, `mark_expired` | `sending` | `retrying`, `failed`, `expired` |
/// | `supersede_unsent` | `queued`, `retrying`, `sending` | `superseded` |
/// | `cancel_unsent_for_user` | `queued`, `retrying`, `sending` | `cancelled` |
/// | `requeue_for_replay` | `failed`, `expired` | `queued` |
///
/// `queued` and `retrying` may be sent; the states but `sending` are final until an
/// operator replays a `failed` (or `expired`) job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, AsExpression, FromSqlRow)]
#[diesel(sql_type = JobStateText)]
pub enum JobState {
    Queued,
    Sending,
    Retrying,
    Sent,
    Failed,
    Superseded,
    Cancelled,
    Expired,
}

impl JobState {
    pub const ALL: [JobState; 8] = [
        JobState::Queued,
        JobState::Sending,
        JobState::Retrying,
        JobState::Sent,
        JobState::Failed,
        JobState::Superseded,
        JobState::Cancelled,
        JobState::Expired,
    ];

    /// States a job can still be sent from without an operator.
    pub const UNSENT: [JobState; 2] = [JobState::Queued, JobState::Retrying];

    /// States whose job is not sent yet: [`JobState::UNSENT`] and `sending` (an attempt
    /// running). A newer code or a deleted user takes these away from the worker; it checks
    /// after each attempt.
    pub const NOT_YET_SENT: [JobState; 3] =
        [JobState::Queued, JobState::Retrying, JobState::Sending];

    /// States a replay takes a job from.
    pub const REPLAYABLE: [JobState; 2] = [JobState::Failed, JobState::Expired];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Sending => "sending",
            JobState::Retrying => "retrying",
            JobState::Sent => "sent",
            JobState::Failed => "failed",
            JobState::Superseded => "superseded",
            JobState::Cancelled => "cancelled",
            JobState::Expired => "expired",
        }
    }
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown state {s:?} (known: queued, sending, retrying, sent, failed, superseded, cancelled, expired)"
                )
            })
    }
}

/// How one SMTP attempt ended (`mail_attempts.outcome`, and the `mail_deliveries` metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Sent,
    /// A 4xx reply, a refused connection, a timeout: worth trying again.
    Transient,
    /// A 5xx reply: the mail will not go through.
    Permanent,
    /// A fault of the worker's own SMTP configuration: the job waits, its budget untouched.
    Configuration,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Sent => "sent",
            AttemptOutcome::Transient => "transient",
            AttemptOutcome::Permanent => "permanent",
            AttemptOutcome::Configuration => "configuration",
        }
    }
}

/// `Display`, `ToSql` and `FromSql` of a text enum, from its `as_str` and `FromStr`. Reading
/// a column into a `String` stays possible (for display); writing takes the enum.
macro_rules! text_enum {
    ($rust:ty, $sql:ty) => {
        impl fmt::Display for $rust {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // `pad`, not `write_str`: tables format states with a width.
                f.pad(self.as_str())
            }
        }

        impl ToSql<$sql, Pg> for $rust {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
                out.write_all(self.as_str().as_bytes())?;
                Ok(IsNull::No)
            }
        }

        impl FromSql<$sql, Pg> for $rust {
            fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
                Ok(std::str::from_utf8(value.as_bytes())?.parse()?)
            }
        }

        impl FromSql<$sql, Pg> for String {
            fn from_sql(value: PgValue<'_>) -> deserialize::Result<Self> {
                Ok(std::str::from_utf8(value.as_bytes())?.to_owned())
            }
        }
    };
}

text_enum!(Purpose, PurposeText);
text_enum!(JobState, JobStateText);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_and_purpose_reads_back_from_its_text() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>(), Ok(state));
        }
        for purpose in Purpose::ALL {
            assert_eq!(purpose.as_str().parse::<Purpose>(), Ok(purpose));
        }
        assert!("sendng".parse::<JobState>().is_err());
        assert!("otp".parse::<Purpose>().is_err());
    }

    #[test]
    fn a_state_pads_like_a_string_in_tables() {
        assert_eq!(format!("[{:<8}]", JobState::Sent), "[sent    ]");
    }
}
