//! `api instance mail-settings test` (SPEC 9): one mail sent now through the provider an
//! instance's mail would take, rendered from the same templates the worker uses, so that an
//! operator sees the provider's answer before real mail depends on it.

use chrono::Utc;
use common::mail_job::Purpose;
use common::mail_settings::InstanceMail;

use crate::cli::DeliveryArgs;
use crate::mail::{MailInput, MailLanguage, MailRenderer, Sender};
use crate::providers::{Providers, Selected};
use crate::run::{helo_name, mail_transport};
use crate::transport::SendFailure;

/// The code a test mail shows: plainly not a real one.
const SAMPLE_CODE: &str = "TEST-0000";

/// Sends one test mail to `to` as an instance with `settings` (or none) would; `Ok` holds the
/// provider's answer, `Err` why it failed.
pub async fn send(
    delivery: &DeliveryArgs,
    settings: Option<&InstanceMail>,
    url_template: &str,
    to: &str,
) -> Result<String, String> {
    delivery.validate().map_err(|e| e.to_string())?;
    let renderer = MailRenderer::new(&delivery.mail_from, delivery.mail_templates_dir.as_deref())?;
    let global = mail_transport(delivery, &renderer, 1).map_err(|e| e.to_string())?;
    let providers = Providers::new(
        helo_name(delivery, &renderer),
        delivery.smtp_tls_ca_file.clone(),
        4,
        delivery.provider_destinations(),
    );
    let selected = providers.select(settings)?;
    let mut sender = Sender::of(
        settings.and_then(|s| s.from.as_deref()),
        settings.and_then(|s| s.reply_to.as_deref()),
    )?;
    sender.branding = settings.map(|s| s.branding.clone()).unwrap_or_default();
    // A job id of its own (negative, never a real job's), so the Message-ID is unique.
    let job_id = -Utc::now().timestamp_millis();
    let mail = renderer.render_for(
        &MailInput {
            job_id,
            purpose: Purpose::ContactEmail,
            recipient: to,
            user_id: 0,
            org_id: 0,
            url_template,
            code: SAMPLE_CODE,
            code_expires_at: Utc::now() + chrono::Duration::hours(1),
        },
        MailLanguage {
            language: None,
            default_language: settings.and_then(|s| s.default_language.as_deref()),
        },
        &sender,
    )?;
    let via = match &selected {
        Selected::Global => "the global transport",
        Selected::Instance { .. } => "the instance's provider",
    };
    let kind = selected.kind(&global);
    providers
        .send(&global, &selected, job_id, &mail)
        .await
        .map(|reply| format!("sent via {via} ({kind}): {reply}"))
        .map_err(|failure| {
            let (what, reply) = match failure {
                SendFailure::Transient(r) => ("temporary failure", r),
                SendFailure::Permanent(r) => ("refused", r),
                SendFailure::Configuration(r) => ("configuration fault", r),
            };
            format!("not sent via {via} ({kind}): {what}: {reply}")
        })
}
