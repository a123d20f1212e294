//! `UrlTemplate::parse` and `render` (SPEC 5): never panic. An accepted template is at most
//! 200 characters, renders with any values, and every link it renders starts with http:// or
//! https:// (any case), holds no white space, control character or backslash, and has no
//! user info; rendered with values as the service makes them, it is an absolute http(s) URL.
//! Refusals are 400, code 3, with a template id and the field named.
//!
//! Input: `template 0xFF userId 0xFF code 0xFF orgId` (values optional).
#![no_main]

use common::domain::LinkValues;
use contact_email_fuzz::{check_template, fields, realistic_values};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let f = fields(data, 4);
    let Ok(raw) = std::str::from_utf8(f[0]) else {
        return;
    };
    let (user, code, org) = (
        String::from_utf8_lossy(f[1]),
        String::from_utf8_lossy(f[2]),
        String::from_utf8_lossy(f[3]),
    );
    let arbitrary = LinkValues {
        user_id: &user,
        code: &code,
        org_id: &org,
    };
    let (r_user, r_code, r_org) = realistic_values(f[1], f[2], f[3]);
    let realistic = LinkValues {
        user_id: &r_user,
        code: &r_code,
        org_id: &r_org,
    };
    check_template(raw, "sendCode.urlTemplate", arbitrary, realistic);
});
