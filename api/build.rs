//! Generates the gRPC server code of the `ZITADELUsers` service from the project's own
//! `.proto` files in `proto/`, and the encoded file descriptor set that gRPC server
//! reflection serves (so `grpcurl` can list and call the service without the files).
//!
//! The `.proto` files are parsed by `protox`, a protobuf compiler written in Rust, so a
//! build needs nothing beyond the Rust toolchain (no `protoc` on the machine).

use std::path::{Path, PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from("proto");
    let mut protos = Vec::new();
    collect_protos(&root, &mut protos)?;
    // A stable order keeps the generated code and the descriptor set reproducible.
    protos.sort();
    let descriptors = protox::compile(&protos, [&root])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("contact_email_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_transport(false)
        .include_file("contact_email_proto.rs")
        .compile_fds(descriptors)?;
    println!("cargo:rerun-if-changed=proto");
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
