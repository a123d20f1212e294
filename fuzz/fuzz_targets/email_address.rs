//! `EmailAddress::parse` (SPEC 3.1): never panics; accepts exactly what SPEC 3.1 allows; an
//! accepted address is the input trimmed of spaces and tabs, at most 200 characters, without
//! control characters or white space, with exactly one '@', a dot-atom local part and a
//! domain of letter/digit/inner-hyphen labels, and parses again to itself.
#![no_main]

use contact_email_fuzz::check_email;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(raw) = std::str::from_utf8(data) {
        check_email(raw, "email.address");
    }
});
