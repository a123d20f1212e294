//! Domain values that are valid by construction ("parse, don't validate"), and the requests
//! of the email calls built from them. Every edge (HTTP families, gRPC) parses its input into
//! these types, so every rule about input is written once, here.

pub mod code;
pub mod email_address;
pub mod language;
pub mod requests;
pub mod url_template;

pub use code::{CodeKeys, CodeSpec, SubmittedCode};
pub use email_address::EmailAddress;
pub use language::LanguageTag;
pub use requests::*;
pub use url_template::{LinkValues, UrlTemplate};
