//! `worker mail code --to ADDR`: the code of the newest mail to an address, read from the
//! `.eml` file the worker wrote to `MAIL_DIR` (the quick start's mode, without `SMTP_URL`).
//!
//! It asks PostgreSQL for the newest job to the address (the request that made it has
//! committed it before answering), then waits for that job's file, so a script that pastes
//! "set email; read code; verify" in one go never reads an older mail. The code is the
//! first line of the decoded text part that holds a single word indented by four spaces:
//! the built-in templates put it there (keep that layout in overrides for this command).

use secrecy::ExposeSecret;
use std::path::Path;
use std::time::{Duration, Instant};

use common::mail_job::{self, JobState, Purpose};
use diesel::prelude::*;

use crate::cli::MailCodeArgs;

/// How often the job and its file are looked at while waiting.
const POLL: Duration = Duration::from_millis(50);

/// Waits (up to `--wait`) for the newest mail to `--to` and returns its code.
pub fn code(args: &MailCodeArgs) -> Result<String, String> {
    let mut conn = PgConnection::establish(args.database.database_url.expose_secret())
        .map_err(|e| format!("cannot connect to PostgreSQL: {e}"))?;
    let deadline = Instant::now() + args.wait;
    let job = newest_job(&mut conn, &args.to, args.purpose)?
        .ok_or_else(|| format!("no mail to {} was requested", args.to))?;
    let file = args.mail_dir.join(format!("{job}.eml"));
    loop {
        if file.exists() {
            return code_of(&file);
        }
        let state = mail_job::state_of(&mut conn, job).map_err(|e| e.to_string())?;
        if !matches!(
            state,
            JobState::Queued | JobState::Sending | JobState::Retrying | JobState::Sent
        ) {
            return Err(format!(
                "the newest mail to {} is {state}: no code",
                args.to
            ));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no mail file {} after {:?} (is the worker running, without SMTP_URL, with this MAIL_DIR?)",
                file.display(),
                args.wait
            ));
        }
        std::thread::sleep(POLL);
    }
}

fn newest_job(
    conn: &mut PgConnection,
    to: &str,
    purpose: Option<Purpose>,
) -> Result<Option<i64>, String> {
    mail_job::newest_to(conn, to.trim(), purpose)
        .map_err(|e| format!("cannot read the mail jobs: {e}"))
}

/// The code in a mail file: the first line of the text part that is four spaces and one
/// word.
fn code_of(file: &Path) -> Result<String, String> {
    let raw = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let message = mail_parser::MessageParser::default()
        .parse(&raw)
        .ok_or_else(|| format!("{} is not a mail", file.display()))?;
    let text = message
        .body_text(0)
        .ok_or_else(|| format!("{} has no text part", file.display()))?;
    text.lines()
        .filter_map(|l| l.strip_prefix("    "))
        .map(str::trim_end)
        .find(|l| !l.is_empty() && !l.contains(char::is_whitespace))
        .map(str::to_owned)
        .ok_or_else(|| format!("no code line in the text part of {}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_code_in_every_encoding_the_worker_writes() {
        let renderer =
            crate::mail::MailRenderer::new("Contact Email <no-reply@example.com>", None).unwrap();
        let dir = std::env::temp_dir().join(format!("ce-mailbox-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (purpose, code) in [
            (Purpose::ContactEmail, "K3PZ7Q"),
            (Purpose::OtpEmail, "12345678"),
        ] {
            let mail = renderer
                .render(&crate::mail::MailInput {
                    job_id: 5,
                    purpose,
                    recipient: "mini@mouse.com",
                    user_id: 386211510029910023,
                    org_id: 386211510029910011,
                    // A long default-style link: quoted-printable text part.
                    url_template: "http://localhost:8080/ui/login/mail/verification?userID={{UserID}}&code={{Code}}&orgID={{OrgID}}",
                    code,
                    code_expires_at: chrono::Utc::now(),
                })
                .unwrap();
            let file = dir.join("5.eml");
            std::fs::write(&file, mail.formatted()).unwrap();
            assert_eq!(code_of(&file).unwrap(), code);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The built-in templates of every language keep the code on a line of its own, indented
    /// by four spaces, whatever the script and the transfer encoding (CJK text goes out
    /// base64, accented text quoted-printable).
    #[test]
    fn finds_the_code_in_every_language() {
        let renderer =
            crate::mail::MailRenderer::new("Contact Email <no-reply@example.com>", None).unwrap();
        let dir = std::env::temp_dir().join(format!("ce-mailbox-lang-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for lang in crate::i18n::BUILT_IN {
            for (purpose, code) in [
                (Purpose::ContactEmail, "K3PZ7Q"),
                (Purpose::OtpEmail, "12345678"),
            ] {
                let reader = crate::mail::MailLanguage {
                    language: Some(lang),
                    default_language: None,
                };
                let mail = renderer
                    .render_in(
                        &crate::mail::MailInput {
                            job_id: 6,
                            purpose,
                            recipient: "mini@mouse.com",
                            user_id: 386211510029910023,
                            org_id: 386211510029910011,
                            url_template: "http://localhost:8080/ui/login/mail/verification?userID={{UserID}}&code={{Code}}&orgID={{OrgID}}",
                            code,
                            code_expires_at: chrono::Utc::now(),
                        },
                        reader,
                    )
                    .unwrap();
                let file = dir.join("6.eml");
                std::fs::write(&file, mail.formatted()).unwrap();
                assert_eq!(code_of(&file).unwrap(), code, "{lang} {}", purpose.as_str());
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
