//! The contact email service's shared core: domain types and commands, PostgreSQL schema and
//! migrations, configuration, code crypto, mail jobs, the outbox and the AMQP topology.
//! No HTTP and no SMTP here; those belong to the `api` and `worker` crates.

pub mod amqp;
pub mod auth;
pub mod branding;
pub mod commands;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod mail_job;
pub mod mail_settings;
pub mod metrics;
pub mod outbox;
pub mod schema;
pub mod shutdown;
pub mod telemetry;
pub mod tenancy;
pub mod time;
pub mod trace;
