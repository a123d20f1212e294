-- Token lifecycle (SPEC 2, 7): tokens may expire, can be revoked, and show when they were
-- last used.
ALTER TABLE api_tokens
  ADD COLUMN expires_at   timestamptz,
  ADD COLUMN revoked_at   timestamptz,
  ADD COLUMN last_used_at timestamptz;
CREATE INDEX api_tokens_instance ON api_tokens (instance_id, created_at);

-- The resend limits (SPEC 3.4) are per instance and recipient, whoever asks: the cooldown
-- and the hourly cap read the recent mails to one recipient of one instance.
DROP INDEX mail_jobs_cooldown;
CREATE INDEX mail_jobs_recipient ON mail_jobs (instance_id, lower(recipient), created_at DESC);
