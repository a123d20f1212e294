-- Schema of the contact email service. PostgreSQL is the source of truth: user state,
-- the per-user event history, mail jobs with their attempts, and the transactional outbox.

-- Snowflake-like 64-bit ids: milliseconds since 2024-01-01 in the high bits, a sequence in
-- the low 22 bits. Unique across replicas because the sequence is the database's.
CREATE SEQUENCE id_seq;

CREATE FUNCTION next_id() RETURNS bigint
LANGUAGE sql VOLATILE AS $$
  SELECT ((floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint - 1704067200000) << 22)
         | (nextval('id_seq') % 4194304)
$$;

CREATE TABLE instances (
  id         bigint PRIMARY KEY DEFAULT next_id(),
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE instance_domains (
  domain      text PRIMARY KEY,
  instance_id bigint NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX instance_domains_instance ON instance_domains (instance_id);

CREATE TABLE organizations (
  id             bigint PRIMARY KEY DEFAULT next_id(),
  instance_id    bigint NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
  name           text NOT NULL,
  primary_domain text NOT NULL UNIQUE,
  created_at     timestamptz NOT NULL DEFAULT now(),
  UNIQUE (instance_id, name)
);

CREATE TABLE users (
  id              bigint PRIMARY KEY DEFAULT next_id(),
  instance_id     bigint NOT NULL REFERENCES instances (id),
  org_id          bigint NOT NULL REFERENCES organizations (id),
  username        text,
  created_at      timestamptz NOT NULL,
  last_sequence   bigint NOT NULL,
  last_changed_at timestamptz NOT NULL,
  deleted_at      timestamptz
);
CREATE INDEX users_org ON users (org_id);
CREATE UNIQUE INDEX users_username ON users (instance_id, lower(username))
  WHERE deleted_at IS NULL AND username IS NOT NULL;

-- Every address of a user that is verified by a mailed code: the contact email (at most one
-- per user) and the OTP Email authenticators. One table, so the verification rules
-- (code hash, expiry, wrong-code counter) are stored and applied once.
CREATE TABLE user_emails (
  id              bigint PRIMARY KEY DEFAULT next_id(),
  user_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  purpose         text NOT NULL CHECK (purpose IN ('contact_email', 'otp_email')),
  address         text NOT NULL,
  verified        boolean NOT NULL DEFAULT false,
  code_hash       bytea,
  code_expires_at timestamptz,
  code_failures   integer NOT NULL DEFAULT 0,
  created_at      timestamptz NOT NULL,
  updated_at      timestamptz NOT NULL
);
CREATE UNIQUE INDEX user_emails_contact ON user_emails (user_id) WHERE purpose = 'contact_email';
CREATE UNIQUE INDEX user_emails_otp_address ON user_emails (user_id, lower(address))
  WHERE purpose = 'otp_email';

CREATE TABLE user_events (
  user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  sequence    bigint NOT NULL,
  instance_id bigint NOT NULL,
  event_type  text NOT NULL,
  payload     jsonb NOT NULL DEFAULT '{}'::jsonb,
  created_at  timestamptz NOT NULL,
  PRIMARY KEY (user_id, sequence)
);

CREATE TABLE api_tokens (
  id              bigint PRIMARY KEY DEFAULT next_id(),
  instance_id     bigint NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
  org_id          bigint REFERENCES organizations (id) ON DELETE CASCADE,
  subject_user_id bigint,
  permissions     text[] NOT NULL,
  token_hash      bytea NOT NULL UNIQUE,
  created_at      timestamptz NOT NULL DEFAULT now()
);

-- One mail to deliver. The code travels only here, AEAD-encrypted, and is wiped once the
-- mail is sent or can no longer be sent.
CREATE TABLE mail_jobs (
  id              bigint PRIMARY KEY,
  instance_id     bigint NOT NULL,
  org_id          bigint NOT NULL,
  user_id         bigint NOT NULL,
  email_id        bigint NOT NULL,
  purpose         text NOT NULL,
  recipient       text NOT NULL,
  url_template    text NOT NULL,
  code_ciphertext bytea,
  code_expires_at timestamptz NOT NULL,
  state           text NOT NULL CHECK (state IN ('queued', 'sending', 'retrying', 'sent', 'failed',
                                                  'superseded', 'cancelled', 'expired')),
  attempts        integer NOT NULL DEFAULT 0,
  -- `attempts` when the job was last replayed: MAIL_MAX_ATTEMPTS counts from here.
  attempts_before_replay integer NOT NULL DEFAULT 0,
  last_error      text,
  next_attempt_at timestamptz,
  lease_until     timestamptz,
  superseded_by   bigint,
  trace_context   text,
  created_at      timestamptz NOT NULL,
  updated_at      timestamptz NOT NULL,
  sent_at         timestamptz
);
CREATE INDEX mail_jobs_user ON mail_jobs (user_id, created_at DESC);
CREATE INDEX mail_jobs_email_pending ON mail_jobs (email_id) WHERE state IN ('queued', 'retrying', 'sending');
CREATE INDEX mail_jobs_state ON mail_jobs (state, updated_at DESC);
CREATE INDEX mail_jobs_created ON mail_jobs (created_at DESC);

CREATE TABLE mail_attempts (
  id          bigserial PRIMARY KEY,
  job_id      bigint NOT NULL REFERENCES mail_jobs (id) ON DELETE CASCADE,
  at          timestamptz NOT NULL,
  outcome     text NOT NULL,
  smtp_reply  text,
  duration_ms integer NOT NULL
);
CREATE INDEX mail_attempts_job ON mail_attempts (job_id, id);

-- Transactional outbox: a row per job id that still has to reach RabbitMQ.
CREATE TABLE outbox (
  id         bigserial PRIMARY KEY,
  job_id     bigint NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_created ON outbox (created_at);
