//! The admin commands of the `api` binary (SPEC 7, 9): `migrate`, `bootstrap`, `token
//! create|list|revoke` and `instance mail-settings show|set|test`. Each one opens the database, does its one thing and prints the
//! result for a script to read.

use secrecy::ExposeSecret;
use std::process::ExitCode;

use common::auth::{self, NewToken, TokenInfo};
use common::config::StartupError;
use common::error::Error;
use common::tenancy;
use diesel::prelude::*;

use common::mail_settings::{self, HttpProvider, MailSettings, Provider, SmtpProvider};

use crate::cli::{
    BootstrapArgs, MailSettingsSetArgs, MailSettingsShowArgs, MailSettingsTestArgs, MigrateArgs,
    SettingsField, TokenCreateArgs, TokenListArgs, TokenRevokeArgs,
};

/// Why an admin command failed, and so its exit status (SPEC 7).
#[derive(Debug)]
pub enum Failure {
    /// Exit 1: the database or another part of the system failed.
    Operational(String),
    /// Exit 2: bad usage or configuration.
    Usage(String),
}

impl Failure {
    /// Prints the failure on stderr (`error: ...` for an operational one) and gives the exit
    /// status.
    pub fn report(&self) -> ExitCode {
        match self {
            Failure::Operational(msg) => {
                eprintln!("error: {msg}");
                ExitCode::from(1)
            }
            Failure::Usage(msg) => {
                eprintln!("{msg}");
                ExitCode::from(2)
            }
        }
    }
}

impl From<StartupError> for Failure {
    fn from(e: StartupError) -> Self {
        match e {
            StartupError::Configuration(_) => Failure::Usage(e.to_string()),
            StartupError::Operational(msg) => Failure::Operational(msg),
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Failure::Operational(e.to_string()))?
}

/// `api migrate`.
pub async fn migrate(args: MigrateArgs) -> Result<(), Failure> {
    let applied = crate::application::migrate(&args.database).await?;
    tracing::info!(applied, "migrations applied");
    Ok(())
}

fn connect(url: &str) -> Result<PgConnection, Failure> {
    PgConnection::establish(url)
        .map_err(|e| Failure::Operational(format!("cannot connect to PostgreSQL: {e}")))
}

fn db_failure(e: Error) -> Failure {
    Failure::Operational(e.to_string())
}

/// `api bootstrap`: the instance, its first organization and an admin token.
pub async fn bootstrap(args: BootstrapArgs) -> Result<(), Failure> {
    let domain = args.domain.trim().to_lowercase();
    if !common::domain::email_address::is_domain(&domain) {
        return Err(Failure::Usage(format!(
            "invalid --domain {:?}: expected a domain name",
            args.domain
        )));
    }
    if tenancy::slug(&args.org_name).is_empty() {
        return Err(Failure::Usage(format!(
            "invalid --org-name {:?}: needs at least one letter or digit",
            args.org_name
        )));
    }
    let url = args.database.database_url.expose_secret().to_owned();
    let out = blocking(move || {
        common::db::prepare(&url).map_err(Failure::Operational)?;
        let mut conn = connect(&url)?;
        let made = tenancy::bootstrap(&mut conn, &domain, &args.org_name).map_err(db_failure)?;
        let token = auth::mint(
            &mut conn,
            NewToken {
                instance_id: made.instance_id,
                org_id: None,
                subject_user_id: None,
                permissions: &[auth::USER_READ, auth::USER_WRITE],
                expires_at: None,
            },
        )
        .map_err(db_failure)?;
        Ok(serde_json::json!({
            "instanceId": made.instance_id.to_string(),
            "orgId": made.org_id.to_string(),
            "orgDomain": made.org_domain,
            "token": token,
        }))
    })
    .await?;
    println!("{out}");
    Ok(())
}

fn parse_id(flag: &str, raw: &str) -> Result<i64, Failure> {
    raw.trim()
        .parse::<i64>()
        .map_err(|_| Failure::Usage(format!("error: {flag} {raw:?} is not an id")))
}

/// `api token create`.
pub async fn token_create(args: TokenCreateArgs) -> Result<(), Failure> {
    let instance_id = parse_id("--instance", &args.instance)?;
    let org_id = args
        .org
        .as_deref()
        .map(|o| parse_id("--org", o))
        .transpose()?;
    let subject = args
        .subject
        .as_deref()
        .map(|s| parse_id("--subject", s))
        .transpose()?;
    let expires_at = args
        .expires_in
        .map(|d| {
            chrono::TimeDelta::from_std(d)
                .ok()
                .and_then(|d| common::time::now_ms().checked_add_signed(d))
                .ok_or_else(|| Failure::Usage("error: --expires-in is too long".into()))
        })
        .transpose()?;
    let url = args.database.database_url.expose_secret().to_owned();
    let permissions = args.permissions.clone();
    let token = blocking(move || {
        let mut conn = connect(&url)?;
        auth::create(
            &mut conn,
            NewToken {
                instance_id,
                org_id,
                subject_user_id: subject,
                permissions: &permissions,
                expires_at,
            },
        )
        .map_err(db_failure)?
        .map_err(|refused| Failure::Usage(format!("error: {refused}")))
    })
    .await?;
    println!("{token}");
    Ok(())
}

/// `api token list`.
pub async fn token_list(args: TokenListArgs) -> Result<(), Failure> {
    let instance_id = parse_id("--instance", &args.instance)?;
    let url = args.database.database_url.expose_secret().to_owned();
    let tokens = blocking(move || {
        let mut conn = connect(&url)?;
        auth::list(&mut conn, instance_id).map_err(db_failure)
    })
    .await?;
    if args.json {
        let rows: Vec<_> = tokens.iter().map(token_json).collect();
        println!("{}", serde_json::Value::Array(rows));
    } else {
        print!("{}", token_table(&tokens));
    }
    Ok(())
}

/// A token as `token list --json` prints it: ids as strings, times RFC 3339, unset `null`.
fn token_json(t: &TokenInfo) -> serde_json::Value {
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(common::time::rfc3339_ms);
    serde_json::json!({
        "id": t.id.to_string(),
        "orgId": t.org_id.map(|o| o.to_string()),
        "subject": t.subject_user_id.map(|u| u.to_string()),
        "permissions": t.permissions,
        "createdAt": common::time::rfc3339_ms(t.created_at),
        "expiresAt": time(t.expires_at),
        "revokedAt": time(t.revoked_at),
        "lastUsedAt": time(t.last_used_at),
    })
}

fn token_table(tokens: &[TokenInfo]) -> String {
    let dash = || "-".to_string();
    let time =
        |t: Option<chrono::DateTime<chrono::Utc>>| t.map_or_else(dash, common::time::rfc3339_ms);
    let mut rows = vec![
        [
            "ID",
            "ORG",
            "SUBJECT",
            "PERMISSIONS",
            "CREATED",
            "EXPIRES",
            "REVOKED",
            "LAST USED",
        ]
        .map(String::from),
    ];
    for t in tokens {
        rows.push([
            t.id.to_string(),
            t.org_id.map_or_else(dash, |o| o.to_string()),
            t.subject_user_id.map_or_else(dash, |u| u.to_string()),
            if t.permissions.is_empty() {
                dash()
            } else {
                t.permissions.join(",")
            },
            common::time::rfc3339_ms(t.created_at),
            time(t.expires_at),
            time(t.revoked_at),
            time(t.last_used_at),
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// `api token revoke`.
pub async fn token_revoke(args: TokenRevokeArgs) -> Result<(), Failure> {
    let id = parse_id("token id", &args.id)?;
    let url = args.database.database_url.expose_secret().to_owned();
    let found = blocking(move || {
        let mut conn = connect(&url)?;
        auth::revoke(&mut conn, id).map_err(db_failure)
    })
    .await?;
    if !found {
        return Err(Failure::Operational(format!("token {id} not found")));
    }
    println!("revoked {id}");
    Ok(())
}

/// The instance an `instance mail-settings` command names, which must exist.
fn existing_instance(conn: &mut PgConnection, raw: &str) -> Result<i64, Failure> {
    let id = parse_id("--instance", raw)?;
    let exists: bool = diesel::select(diesel::dsl::exists(
        common::schema::instances::table.find(id),
    ))
    .get_result(conn)
    .map_err(|e| db_failure(e.into()))?;
    if !exists {
        return Err(Failure::Usage(format!(
            "error: instance {id} does not exist"
        )));
    }
    Ok(id)
}

/// `api instance mail-settings show`.
pub async fn mail_settings_show(args: MailSettingsShowArgs) -> Result<(), Failure> {
    let url = args.database.database_url.expose_secret().to_owned();
    let settings = blocking(move || {
        let mut conn = connect(&url)?;
        let instance = existing_instance(&mut conn, &args.instance)?;
        mail_settings::show(&mut conn, instance).map_err(db_failure)
    })
    .await?;
    print_settings(&settings, args.json);
    Ok(())
}

/// `api instance mail-settings set`: the current settings with the flags' changes, saved as
/// the JSON API's `PUT` saves them (stored secrets are kept unless replaced).
pub async fn mail_settings_set(args: MailSettingsSetArgs) -> Result<(), Failure> {
    let keys = args
        .keys
        .keys()
        .map_err(|e| Failure::Usage(e.to_string()))?;
    let url = args.database.database_url.expose_secret().to_owned();
    let saved = blocking(move || {
        let mut conn = connect(&url)?;
        let instance = existing_instance(&mut conn, &args.instance)?;
        let mut settings = mail_settings::show(&mut conn, instance).map_err(db_failure)?;
        apply_flags(&mut settings, &args);
        mail_settings::replace(&mut conn, &keys, instance, &settings).map_err(|e| match e {
            Error::Rejected(r) => Failure::Usage(format!("error: {}", r.message)),
            other => db_failure(other),
        })
    })
    .await?;
    print_settings(&saved, false);
    Ok(())
}

fn apply_flags(settings: &mut MailSettings, args: &MailSettingsSetArgs) {
    for field in &args.clear {
        match field {
            SettingsField::From => settings.from = None,
            SettingsField::ReplyTo => settings.reply_to = None,
            SettingsField::DefaultLanguage => settings.default_language = None,
            SettingsField::UrlTemplate => settings.url_template = None,
            SettingsField::OtpUrlTemplate => settings.otp_email_url_template = None,
            SettingsField::Provider => settings.provider = None,
            SettingsField::Branding => settings.branding = None,
        }
    }
    let branding_flags = [
        &args.primary_color,
        &args.background_color,
        &args.font_color,
        &args.logo_url,
    ];
    if branding_flags.iter().any(|f| f.is_some()) {
        let branding = settings.branding.get_or_insert_with(Default::default);
        set(&mut branding.primary_color, &args.primary_color);
        set(&mut branding.background_color, &args.background_color);
        set(&mut branding.font_color, &args.font_color);
        set(&mut branding.logo_url, &args.logo_url);
    }
    set(&mut settings.from, &args.from);
    set(&mut settings.reply_to, &args.reply_to);
    set(&mut settings.default_language, &args.default_language);
    set(&mut settings.url_template, &args.url_template);
    set(&mut settings.otp_email_url_template, &args.otp_url_template);
    if let Some(url) = &args.smtp_url {
        settings.provider = Some(Provider::Smtp(SmtpProvider { url: url.clone() }));
    }
    if let Some(url) = &args.http_url {
        settings.provider = Some(Provider::Http(HttpProvider {
            url: url.clone(),
            signing_key: args.http_signing_key.clone(),
        }));
    }
}

/// A flag given replaces the field; one left out keeps it.
fn set(field: &mut Option<String>, flag: &Option<String>) {
    if flag.is_some() {
        field.clone_from(flag);
    }
}

fn print_settings(settings: &MailSettings, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string(settings).expect("settings are JSON")
        );
        return;
    }
    let provider = match &settings.provider {
        None => None,
        Some(Provider::Smtp(smtp)) => Some(format!("smtp {}", smtp.url)),
        Some(Provider::Http(http)) => Some(format!("http {} (signingKey ***)", http.url)),
    };
    let rows = [
        ("from", settings.from.clone()),
        ("replyTo", settings.reply_to.clone()),
        ("defaultLanguage", settings.default_language.clone()),
        ("urlTemplate", settings.url_template.clone()),
        (
            "otpEmailUrlTemplate",
            settings.otp_email_url_template.clone(),
        ),
        ("provider", provider),
        (
            "branding",
            settings
                .branding
                .as_ref()
                .map(|b| serde_json::to_string(b).expect("branding is JSON")),
        ),
    ];
    for (name, value) in rows {
        println!(
            "{name:<20} {}",
            value.as_deref().unwrap_or("- (global configuration)")
        );
    }
}

/// `api instance mail-settings test`: one mail now, through the provider the instance's
/// mail takes; exit 1 when it was not sent.
pub async fn mail_settings_test(args: MailSettingsTestArgs) -> Result<(), Failure> {
    let keys = args
        .keys
        .keys()
        .map_err(|e| Failure::Usage(e.to_string()))?;
    let to = common::domain::EmailAddress::parse(&args.to, "--to")
        .map_err(|r| Failure::Usage(format!("error: {}", r.message)))?
        .to_string();
    let url = args.database.database_url.expose_secret().to_owned();
    let instance_raw = args.instance.clone();
    let (settings, templates) = blocking(move || {
        let mut conn = connect(&url)?;
        let instance = existing_instance(&mut conn, &instance_raw)?;
        let settings = mail_settings::resolve(&mut conn, &keys, instance).map_err(db_failure)?;
        let templates = mail_settings::templates(&mut conn, instance).map_err(db_failure)?;
        Ok((settings, templates))
    })
    .await?;
    let url_template = templates
        .url_template
        .map(|t| t.as_str().to_owned())
        .unwrap_or_else(|| args.codes.default_url_template.clone());
    match worker::testmail::send(&args.delivery, settings.as_ref(), &url_template, &to).await {
        Ok(reply) => {
            println!("{reply}");
            Ok(())
        }
        Err(why) => Err(Failure::Operational(why)),
    }
}
