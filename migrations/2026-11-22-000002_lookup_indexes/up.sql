-- The resend cooldown looks up the last mail of an address to a recipient on every call that
-- would send one; without this index it scanned every job (found by the benchmark).
CREATE INDEX mail_jobs_cooldown ON mail_jobs (email_id, lower(recipient), created_at DESC);

-- Confirmed publishes delete outbox rows by job id; after a broker outage the outbox is long.
CREATE INDEX outbox_job ON outbox (job_id);
