//! The calls of the API, independent of the wire: each runs its domain command on the
//! blocking pool and, after commit, hands the enqueued mail job to the outbox publisher.
//! The HTTP route families (and gRPC) only translate to and from these. A call that may
//! enqueue a mail takes the request's [`TraceContext`], which the job carries to the worker.

use common::auth::Principal;
use common::branding::{self, Branding};
use common::commands::{CreateUser, Details, EmailTarget, Outcome, UserRef, UserView};
use common::db;
use common::domain::{CodeDelivery, SetEmail, SubmittedCode};
use common::error::Error;
use common::mail_settings::{self, MailSettings};
use common::tenancy::Scope;
use common::trace::TraceContext;

use crate::state::AppState;

impl AppState {
    /// Runs a command that may enqueue a mail in the trace `trace`, then publishes the mail
    /// without waiting.
    async fn changing<F>(&self, trace: TraceContext, command: F) -> Result<Outcome, Error>
    where
        F: FnOnce(
                &common::commands::Commands,
                &mut diesel::PgConnection,
                Option<&str>,
            ) -> Result<Outcome, Error>
            + Send
            + 'static,
    {
        let commands = self.commands.clone();
        let traceparent = trace.into_traceparent();
        let for_command = traceparent.clone();
        let outcome = db::run(&self.pool, move |conn| {
            command(&commands, conn, Some(&for_command))
        })
        .await?;
        if let Some(job_id) = outcome.job_id {
            self.outbox.notify(job_id, Some(traceparent));
        }
        Ok(outcome)
    }

    async fn plain<T, F>(&self, command: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&common::commands::Commands, &mut diesel::PgConnection) -> Result<T, Error>
            + Send
            + 'static,
    {
        let commands = self.commands.clone();
        db::run(&self.pool, move |conn| command(&commands, conn)).await
    }

    pub async fn set_contact_email(
        &self,
        trace: TraceContext,
        principal: Principal,
        scope: Scope,
        user_id: String,
        request: SetEmail,
    ) -> Result<Outcome, Error> {
        self.changing(trace, move |c, conn, trace| {
            c.set_contact_email(conn, &who(&principal, &scope, &user_id, trace), &request)
        })
        .await
    }

    pub async fn verify_email(
        &self,
        principal: Principal,
        scope: Scope,
        user_id: String,
        otp_email_id: Option<String>,
        code: SubmittedCode,
    ) -> Result<Details, Error> {
        self.plain(move |c, conn| {
            c.verify_email(
                conn,
                &who(&principal, &scope, &user_id, None),
                target(otp_email_id.as_deref()),
                &code,
            )
        })
        .await
    }

    pub async fn resend_email_code(
        &self,
        trace: TraceContext,
        principal: Principal,
        scope: Scope,
        user_id: String,
        otp_email_id: Option<String>,
        delivery: CodeDelivery,
    ) -> Result<Outcome, Error> {
        self.changing(trace, move |c, conn, trace| {
            c.resend_email_code(
                conn,
                &who(&principal, &scope, &user_id, trace),
                target(otp_email_id.as_deref()),
                &delivery,
            )
        })
        .await
    }

    pub async fn add_otp_email(
        &self,
        trace: TraceContext,
        principal: Principal,
        scope: Scope,
        user_id: String,
        request: SetEmail,
    ) -> Result<Outcome, Error> {
        self.changing(trace, move |c, conn, trace| {
            c.add_otp_email(conn, &who(&principal, &scope, &user_id, trace), &request)
        })
        .await
    }

    pub async fn remove_otp_email(
        &self,
        principal: Principal,
        scope: Scope,
        user_id: String,
        otp_email_id: String,
    ) -> Result<Details, Error> {
        self.plain(move |c, conn| {
            c.remove_otp_email(
                conn,
                &who(&principal, &scope, &user_id, None),
                &otp_email_id,
            )
        })
        .await
    }

    pub async fn create_user(
        &self,
        trace: TraceContext,
        principal: Principal,
        scope: Scope,
        request: CreateUser,
    ) -> Result<Outcome, Error> {
        self.changing(trace, move |c, conn, trace| {
            c.create_user(conn, &principal, &scope, &request, trace)
        })
        .await
    }

    pub async fn get_user(
        &self,
        principal: Principal,
        scope: Scope,
        user_id: String,
    ) -> Result<UserView, Error> {
        self.plain(move |c, conn| c.get_user(conn, &who(&principal, &scope, &user_id, None)))
            .await
    }

    pub async fn delete_user(
        &self,
        principal: Principal,
        scope: Scope,
        user_id: String,
    ) -> Result<Details, Error> {
        self.plain(move |c, conn| c.delete_user(conn, &who(&principal, &scope, &user_id, None)))
            .await
    }
}

impl AppState {
    /// An instance's mail settings, secrets shown as `***` (SPEC 9; `instance.read`).
    pub async fn mail_settings(
        &self,
        principal: Principal,
        instance_id: String,
    ) -> Result<MailSettings, Error> {
        let instance = instance_of(&principal, &instance_id, false)?;
        self.plain(move |_, conn| mail_settings::show(conn, instance))
            .await
    }

    /// Replaces an instance's mail settings (SPEC 9; `instance.write`); the answer is what
    /// [`AppState::mail_settings`] then shows.
    pub async fn replace_mail_settings(
        &self,
        principal: Principal,
        instance_id: String,
        settings: MailSettings,
    ) -> Result<MailSettings, Error> {
        let instance = instance_of(&principal, &instance_id, true)?;
        self.plain(move |c, conn| mail_settings::replace(conn, &c.keys, instance, &settings))
            .await
    }
}

impl AppState {
    /// An organization's own branding (empty when it has none; `instance.read`).
    pub async fn org_branding(
        &self,
        principal: Principal,
        org_id: String,
    ) -> Result<Branding, Error> {
        self.plain(move |_, conn| {
            let org = org_of(conn, &principal, &org_id, false)?;
            branding::of_org(conn, org)
        })
        .await
    }

    /// Replaces an organization's branding (`instance.write`).
    pub async fn replace_org_branding(
        &self,
        principal: Principal,
        org_id: String,
        new: Branding,
    ) -> Result<Branding, Error> {
        self.plain(move |_, conn| {
            let org = org_of(conn, &principal, &org_id, true)?;
            branding::replace_org(conn, org, &new)
        })
        .await
    }
}

/// The organization of a path, found in the token's instance (else 404), whose settings
/// `principal` may read (or, with `write`, change).
fn org_of(
    conn: &mut diesel::PgConnection,
    principal: &Principal,
    raw: &str,
    write: bool,
) -> Result<i64, Error> {
    let missing = || {
        common::error::Rejection::new(
            common::error::Code::NotFound,
            common::error::ids::ORG_NOT_FOUND,
            "Organization could not be found",
        )
    };
    let id = raw.trim().parse::<i64>().map_err(|_| missing())?;
    branding::check_org(conn, principal.instance_id, id)?;
    principal.authorize_org_settings(id, write)?;
    Ok(id)
}

/// The instance of a path whose settings `principal` may read (or, with `write`, change):
/// an id that is not the token's instance is not found (SPEC 9), then the permission counts.
fn instance_of(principal: &Principal, raw: &str, write: bool) -> Result<i64, Error> {
    let id = raw
        .trim()
        .parse::<i64>()
        .map_err(|_| common::error::Rejection::instance_not_found())?;
    principal.authorize_instance(id, write)?;
    Ok(id)
}

/// The user a call is about, and who asks (in the trace `trace` for a call that may mail).
fn who<'a>(
    principal: &'a Principal,
    scope: &'a Scope,
    user_id: &'a str,
    trace: Option<&'a str>,
) -> UserRef<'a> {
    UserRef {
        principal,
        scope,
        user_id,
        trace,
    }
}

fn target(otp_email_id: Option<&str>) -> EmailTarget<'_> {
    match otp_email_id {
        Some(id) => EmailTarget::OtpEmail(id),
        None => EmailTarget::ContactEmail,
    }
}
