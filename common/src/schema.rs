//! Diesel table definitions, matching `migrations/`. Written by hand from the SQL; keep the
//! two in step (the migration test in `db.rs` catches drift).

/// Column types of our own. Both are `text` in PostgreSQL; in Rust only
/// [`crate::mail_job::JobState`] and [`crate::mail_job::Purpose`] can be written to them.
pub mod sql_types {
    /// A `text` column holding a [`crate::mail_job::JobState`].
    #[derive(diesel::query_builder::QueryId, diesel::sql_types::SqlType, Debug, Clone, Copy)]
    #[diesel(postgres_type(oid = 25, array_oid = 1009))]
    pub struct JobStateText;

    /// A `text` column holding a [`crate::mail_job::Purpose`].
    #[derive(diesel::query_builder::QueryId, diesel::sql_types::SqlType, Debug, Clone, Copy)]
    #[diesel(postgres_type(oid = 25, array_oid = 1009))]
    pub struct PurposeText;
}

diesel::table! {
    instances (id) {
        id -> Int8,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    instance_domains (domain) {
        domain -> Text,
        instance_id -> Int8,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    organizations (id) {
        id -> Int8,
        instance_id -> Int8,
        name -> Text,
        primary_domain -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    users (id) {
        id -> Int8,
        instance_id -> Int8,
        org_id -> Int8,
        username -> Nullable<Text>,
        created_at -> Timestamptz,
        last_sequence -> Int8,
        last_changed_at -> Timestamptz,
        deleted_at -> Nullable<Timestamptz>,
        preferred_language -> Nullable<Text>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use super::sql_types::PurposeText;

    user_emails (id) {
        id -> Int8,
        user_id -> Int8,
        purpose -> PurposeText,
        address -> Text,
        verified -> Bool,
        code_hash -> Nullable<Bytea>,
        code_expires_at -> Nullable<Timestamptz>,
        code_failures -> Int4,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    user_events (user_id, sequence) {
        user_id -> Int8,
        sequence -> Int8,
        instance_id -> Int8,
        event_type -> Text,
        payload -> Jsonb,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    api_tokens (id) {
        id -> Int8,
        instance_id -> Int8,
        org_id -> Nullable<Int8>,
        subject_user_id -> Nullable<Int8>,
        permissions -> Array<Text>,
        token_hash -> Bytea,
        created_at -> Timestamptz,
        expires_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
        last_used_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    use diesel::sql_types::*;
    use super::sql_types::{JobStateText, PurposeText};

    mail_jobs (id) {
        id -> Int8,
        instance_id -> Int8,
        org_id -> Int8,
        user_id -> Int8,
        email_id -> Int8,
        purpose -> PurposeText,
        recipient -> Text,
        url_template -> Text,
        code_ciphertext -> Nullable<Bytea>,
        code_expires_at -> Timestamptz,
        state -> JobStateText,
        attempts -> Int4,
        failed_deliveries -> Int4,
        last_error -> Nullable<Text>,
        next_attempt_at -> Nullable<Timestamptz>,
        lease_until -> Nullable<Timestamptz>,
        superseded_by -> Nullable<Int8>,
        trace_context -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        sent_at -> Nullable<Timestamptz>,
        language -> Nullable<Text>,
    }
}

diesel::table! {
    mail_attempts (id) {
        id -> Int8,
        job_id -> Int8,
        at -> Timestamptz,
        outcome -> Text,
        smtp_reply -> Nullable<Text>,
        duration_ms -> Int4,
    }
}

diesel::table! {
    outbox (id) {
        id -> Int8,
        job_id -> Int8,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    instance_mail_settings (instance_id) {
        instance_id -> Int8,
        mail_from -> Nullable<Text>,
        reply_to -> Nullable<Text>,
        default_language -> Nullable<Text>,
        url_template -> Nullable<Text>,
        otp_email_url_template -> Nullable<Text>,
        provider_kind -> Nullable<Text>,
        provider_url -> Nullable<Text>,
        provider_secret -> Nullable<Bytea>,
        branding -> Nullable<Jsonb>,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    organization_branding (org_id) {
        org_id -> Int8,
        branding -> Nullable<Jsonb>,
        updated_at -> Timestamptz,
    }
}

diesel::joinable!(instance_domains -> instances (instance_id));
diesel::joinable!(instance_mail_settings -> instances (instance_id));
diesel::joinable!(organizations -> instances (instance_id));
diesel::joinable!(organization_branding -> organizations (org_id));
diesel::joinable!(users -> organizations (org_id));
diesel::joinable!(user_emails -> users (user_id));
diesel::joinable!(user_events -> users (user_id));
diesel::joinable!(mail_attempts -> mail_jobs (job_id));

diesel::allow_tables_to_appear_in_same_query!(
    instances,
    instance_domains,
    instance_mail_settings,
    organizations,
    organization_branding,
    users,
    user_emails,
    user_events,
    api_tokens,
    mail_jobs,
    mail_attempts,
    outbox,
);
