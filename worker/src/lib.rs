//! The contact email service's mail worker as a library: [`Application`] (build it, then run
//! it until a shutdown) and the operators' commands. `main.rs` is the thin binary on top;
//! tests can start an [`Application`] in their own runtime.

mod batch;
pub mod cli;
mod consumer;
mod deliver;
mod health;
pub mod i18n;
mod lease;
mod mail;
pub mod mailbox;
pub mod ops;
pub mod providers;
mod retry;
pub mod run;
pub mod testmail;
mod transport;

pub use run::Application;
