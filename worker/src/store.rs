//! The worker's state moves of `mail_jobs` live in `common::mail_job`, the one owner of a
//! job's lifecycle; this path is kept for the sweeper in `run.rs`.

pub use common::mail_job::requeue_stranded;
