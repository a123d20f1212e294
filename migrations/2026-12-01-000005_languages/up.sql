-- SPEC 9: a user's preferred language (a BCP 47 tag in canonical case), and the language a
-- mail job is written in, taken from its user when the job is made.
ALTER TABLE users ADD COLUMN preferred_language text;
ALTER TABLE mail_jobs ADD COLUMN language text;
