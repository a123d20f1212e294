ALTER TABLE mail_jobs DROP COLUMN language;
ALTER TABLE users DROP COLUMN preferred_language;
