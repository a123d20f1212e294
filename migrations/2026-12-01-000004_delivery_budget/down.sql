ALTER TABLE mail_jobs ADD COLUMN attempts_before_replay integer NOT NULL DEFAULT 0;
UPDATE mail_jobs SET attempts_before_replay = greatest(attempts - failed_deliveries * 3, 0);
ALTER TABLE mail_jobs DROP COLUMN failed_deliveries;
