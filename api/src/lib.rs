//! The contact email service's API process as a library: the HTTP/JSON and gRPC surfaces,
//! the serve loop and the admin command line. `main.rs` is the thin binary on top, and the
//! fuzz targets reach the request parsers through here.

pub mod cli;
pub mod grpc;
pub mod http;
pub mod serve;
pub mod service;
pub mod state;
