-- SPEC 9: an instance's own mail settings. Every field is optional: an unset one takes the
-- global configuration. The provider's secret (the SMTP password, the HTTP signing key) is
-- stored only encrypted with the code key, bound to the instance; `provider_url` never holds
-- a password.
CREATE TABLE instance_mail_settings (
    instance_id bigint PRIMARY KEY REFERENCES instances (id) ON DELETE CASCADE,
    mail_from text,
    reply_to text,
    default_language text,
    url_template text,
    otp_email_url_template text,
    provider_kind text CHECK (provider_kind IN ('smtp', 'http')),
    provider_url text,
    provider_secret bytea,
    -- The HTML mails' colors and logo (`{"primaryColor", ...}`), as ZITADEL's label policy.
    branding jsonb,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((provider_kind IS NULL) = (provider_url IS NULL))
);

-- An organization's own branding; each unset field falls back to its instance's.
CREATE TABLE organization_branding (
    org_id bigint PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    branding jsonb,
    updated_at timestamptz NOT NULL DEFAULT now()
);
