DROP INDEX outbox_job;
DROP INDEX mail_jobs_cooldown;
