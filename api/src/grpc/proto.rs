//! The code generated from `api/proto` (see `build.rs`): the `ZITADELUsers` server, its
//! messages, and the encoded descriptor set that server reflection serves.

#![allow(clippy::all, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/contact_email_proto.rs"));

/// All the project's `.proto` files (and the well-known types they import), encoded.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/contact_email_descriptor.bin"));
