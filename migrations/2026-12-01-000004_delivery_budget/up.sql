-- MAIL_MAX_ATTEMPTS counts deliveries, not SMTP attempts (a delivery's quick in-process
-- tries count once), so the budget outlasts a greylisting relay. Replay starts it again.
ALTER TABLE mail_jobs ADD COLUMN failed_deliveries integer NOT NULL DEFAULT 0;
UPDATE mail_jobs
   SET failed_deliveries = (attempts - attempts_before_replay + 2) / 3
 WHERE attempts > attempts_before_replay;
ALTER TABLE mail_jobs DROP COLUMN attempts_before_replay;
