DROP INDEX mail_jobs_recipient;
CREATE INDEX mail_jobs_cooldown ON mail_jobs (email_id, lower(recipient), created_at DESC);
DROP INDEX api_tokens_instance;
ALTER TABLE api_tokens
  DROP COLUMN expires_at,
  DROP COLUMN revoked_at,
  DROP COLUMN last_used_at;
