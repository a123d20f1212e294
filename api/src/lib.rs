//! The contact email service's API process as a library: the HTTP/JSON and gRPC surfaces,
//! [`Application`] (build it, then run it until a shutdown) and the admin commands. `main.rs`
//! is the thin binary on top; the in-process tests start an [`Application`] on port 0, and the
//! fuzz targets reach the request parsers through here.

pub mod admin;
pub mod application;
pub mod cli;
pub mod grpc;
pub mod http;
pub mod service;
pub mod state;
pub mod token_cache;

pub use application::Application;
