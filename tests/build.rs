//! Generates a gRPC client for the tests from the api's own `.proto` files (`api/proto`), so
//! the tests talk to the server exactly as a generated client of those files would. Parsed by
//! `protox` (pure Rust), like the api's: no `protoc` needed.

use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from("../api/proto");
    let mut protos = Vec::new();
    collect_protos(&root, &mut protos)?;
    protos.sort();
    let descriptors = protox::compile(&protos, [&root])?;
    tonic_prost_build::configure()
        .build_server(false)
        .build_transport(false)
        .include_file("contact_email_proto.rs")
        .compile_fds(descriptors)?;
    println!("cargo:rerun-if-changed=../api/proto");
    Ok(())
}

fn collect_protos(dir: &Path, into: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, into)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            into.push(path);
        }
    }
    Ok(())
}
