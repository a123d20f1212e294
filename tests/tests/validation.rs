//! Request validation (SPEC 3, 3.1, 3.6, 5): address rules, the verification choice, URL
//! templates, code lengths, malformed / oversized / non-JSON bodies, input spellings. Every
//! scenario runs against both route families, and every rejected request must change
//! nothing: the user's sequence stays, no mail is sent, an earlier code keeps working.

use serde_json::{Value, json};
use tests::app::{spawn_app, spawn_app_with};
use tests::both_families;
use tests::scenario::*;

/// An address of exactly `len` characters: `user@` and labels of at most 50 characters.
fn long_address(len: usize) -> String {
    let mut domain = String::from("com");
    let target = len - "user@".len();
    while domain.len() < target {
        let room = target - domain.len();
        // A label plus its dot; never leave room for a lone dot.
        let label = if room > 51 { 50 } else { room - 1 };
        let label = if label == 0 { 1 } else { label };
        domain = format!("{}.{domain}", "d".repeat(label));
    }
    let address = format!("user@{domain}");
    assert_eq!(address.len(), len, "{address}");
    address
}

const INVALID_ADDRESSES: &[&str] = &[
    "",
    "   ",
    "\t",
    "plain",
    "user@",
    "@example.com",
    "user@@example.com",
    "us@er@example.com",
    "a b@example.com",
    "user@example.com\r\nBcc: evil@example.net",
    "user@exam\nple.com",
    "us\rer@example.com",
    "us\ter@example.com",
    "user@example.com\u{0}",
    "us\u{7f}er@example.com",
    "user\u{1b}@example.com",
    "user@example.com\u{85}",
    "Mini Mouse <mini@example.com>",
    "<mini@example.com>",
    "\"mini mouse\"@example.com",
    "\"mini\"@example.com",
    "mini@[127.0.0.1]",
    "mini@[IPv6:::1]",
    "a..b@example.com",
    ".ab@example.com",
    "ab.@example.com",
    "a(comment)b@example.com",
    "user@-example.com",
    "user@example-.com",
    "user@example..com",
    "user@.example.com",
    "user@example.com.",
    "user@exa_mple.com",
    "user@exa mple.com",
];

/// Invalid addresses are 400 code 3 naming the field, on set and add, for known and unknown
/// users (validation comes before lookup); nothing changes.
async fn invalid_addresses_are_rejected(f: Family) {
    let (w, _app) = spawn_app().await;
    let fam = w.fam(f);
    let user = w.user().await;
    let seq = w.seq(&user).await;
    let too_long = long_address(201);
    let mut cases: Vec<&str> = INVALID_ADDRESSES.to_vec();
    cases.push(&too_long);
    for address in cases {
        for op in [Op::SetEmail, Op::AddOtp] {
            for target in [user.as_str(), "123456789012345678"] {
                let out = fam
                    .call(
                        op,
                        target,
                        "",
                        json!({"address": address, "returnCode": {}}),
                    )
                    .await
                    .err_code(400, 3);
                let message = out.resp.json["message"].as_str().unwrap_or_default();
                assert!(
                    message.to_lowercase().contains("address"),
                    "{op:?} {address:?}: the message does not name the field: {out:?}"
                );
            }
        }
        // Without a choice (a mail would be sent) too.
        fam.set(&user, json!({"address": address}))
            .await
            .err_code(400, 3);
    }
    // A missing address is rejected as well.
    fam.set(&user, json!({"returnCode": {}}))
        .await
        .err_code(400, 3);
    fam.add_otp(&user, json!({"returnCode": {}}))
        .await
        .err_code(400, 3);
    assert_eq!(w.seq(&user).await, seq);
    let got = w.get_user(&user).await;
    assert!(got.get("contact").is_none(), "{got}");
    assert_eq!(got["otpEmail"], json!([]));
    w.assert_mails_stay(0).await;
}

/// Valid edge cases: exactly 200 characters, surrounding spaces and tabs trimmed, case kept,
/// every dot-atom special character.
async fn valid_addresses_are_accepted_and_stored_as_given(f: Family) {
    let (w, _app) = spawn_app().await;
    let fam = w.fam(f);
    let cases = [
        (long_address(200), long_address(200)),
        // 200 characters once the surrounding spaces are trimmed.
        (format!("  {}\t", long_address(200)), long_address(200)),
        (
            " \tMini.Mouse+Tag@Sub-Domain.Example.COM\t ".to_string(),
            "Mini.Mouse+Tag@Sub-Domain.Example.COM".to_string(),
        ),
        (
            "a!#$%&'*+/=?^_`{|}~-z@example.com".to_string(),
            "a!#$%&'*+/=?^_`{|}~-z@example.com".to_string(),
        ),
        (
            "x@a1.b-2.example".to_string(),
            "x@a1.b-2.example".to_string(),
        ),
    ];
    for (given, stored) in cases {
        let user = w.user().await;
        fam.set(&user, json!({"address": given, "returnCode": {}}))
            .await
            .ok()
            .expect_code();
        assert_eq!(w.contact(&user).await["address"], json!(stored));
        let otp = fam
            .add_otp(&user, json!({"address": given, "isVerified": true}))
            .await
            .ok()
            .otp_id();
        let got = w.get_user(&user).await;
        assert_eq!(got["otpEmail"][0]["otpEmailId"], json!(otp));
        assert_eq!(got["otpEmail"][0]["address"], json!(stored));
    }
}

/// More than one of sendCode / returnCode / isVerified, or `isVerified: false`, is 400
/// code 3 on set and add; nothing changes.
async fn verification_choice_is_at_most_one_and_is_verified_only_true(f: Family) {
    let (w, _app) = spawn_app().await;
    let fam = w.fam(f);
    let user = w.user().await;
    let seq = w.seq(&user).await;
    let choices = [
        json!({"sendCode": {}, "returnCode": {}}),
        json!({"sendCode": {}, "isVerified": true}),
        json!({"returnCode": {}, "isVerified": true}),
        json!({"sendCode": {"urlTemplate": "https://x.example/{{Code}}"}, "returnCode": {}, "isVerified": true}),
        json!({"isVerified": false}),
        json!({"isVerified": false, "returnCode": {}}),
    ];
    for choice in choices {
        for op in [Op::SetEmail, Op::AddOtp] {
            let mut email = choice.clone();
            email["address"] = json!("choice@example.com");
            fam.call(op, &user, "", email).await.err_code(400, 3);
        }
    }
    assert_eq!(w.seq(&user).await, seq);
    assert!(w.get_user(&user).await.get("contact").is_none());

    // Resend: at most one of sendCode / returnCode.
    let (pending, code) = w.user_with_pending("choice-resend@example.com").await;
    let otp = fam
        .add_otp(
            &pending,
            json!({"address": "choice-otp@example.com", "returnCode": {}}),
        )
        .await
        .ok();
    let (otp_id, otp_code) = (otp.otp_id(), otp.expect_code());
    let seq = w.seq(&pending).await;
    let both = json!({"sendCode": {}, "returnCode": {}});
    fam.resend(&pending, both.clone()).await.err_code(400, 3);
    fam.resend_otp(&pending, &otp_id, both)
        .await
        .err_code(400, 3);
    assert_eq!(w.seq(&pending).await, seq);
    w.assert_mails_stay(0).await;
    fam.verify(&pending, &code).await.ok();
    fam.verify_otp(&pending, &otp_id, &otp_code).await.ok();
}

const SYNTAX_ERRORS: &[&str] = &[
    "https://x.example/v?c={{Code",
    "https://x.example/v?c={{#if Code}}x",
    "https://x.example/v?c={{Code}}{{/if}}",
];

const INVALID_TEMPLATES: &[&str] = &[
    // unknown variables
    "https://x.example/v?c={{Foo}}",
    "https://x.example/v?c={{.Secret}}",
    "https://x.example/v?c={{user.password}}",
    "https://x.example/v?c={{@index}}",
    "https://x.example/v?c={{this}}",
    // helpers and blocks, built-ins included
    "https://x.example/v?c={{lookup this \"Code\"}}",
    "https://x.example/v?c={{#if Code}}{{Code}}{{/if}}",
    "https://x.example/v?c={{#each this}}{{this}}{{/each}}",
    "https://x.example/v?c={{#with this}}{{Code}}{{/with}}",
    "https://x.example/v?c={{log Code}}",
    "https://x.example/v?c={{#unless Code}}x{{/unless}}",
    // partials
    "https://x.example/v?c={{> header}}",
    // results that are not absolute http(s) URLs
    "ftp://x.example/v?c={{Code}}",
    "/relative/v?c={{Code}}",
    "javascript:alert('{{Code}}')",
    "mailto:a@example.com?body={{Code}}",
    "{{Code}}",
    "x.example/v?c={{Code}}",
];

/// The URL template rules of SPEC 5, on every call that takes one (set, add, resend, resend
/// OTP): syntax errors `DOMAIN-oGh5e`, unknown variables, helpers, blocks, partials and non
/// http(s) results `DOMAIN-ieYa7`, over 200 characters 400 code 3 (exactly 200 is fine).
/// Checked before the user lookup; nothing changes and earlier codes keep working.
async fn url_templates_are_checked(f: Family) {
    let (w, _app) = spawn_app().await;
    let fam = w.fam(f);
    let (user, code) = w.user_with_pending("tpl@example.com").await;
    let otp = fam
        .add_otp(
            &user,
            json!({"address": "tpl-otp@example.com", "returnCode": {}}),
        )
        .await
        .ok();
    let (otp_id, otp_code) = (otp.otp_id(), otp.expect_code());
    let seq = w.seq(&user).await;

    let over = format!("https://x.example/v?c={{{{Code}}}}&p={}", "p".repeat(200));
    let over = over[..201].to_string();
    let calls = |template: &str| {
        let send = json!({"sendCode": {"urlTemplate": template}});
        let mut set = send.clone();
        set["address"] = json!("tpl-new@example.com");
        vec![
            (Op::SetEmail, user.clone(), set.clone()),
            (Op::SetEmail, "123456789012345678".to_string(), set.clone()),
            (Op::AddOtp, user.clone(), set.clone()),
            (Op::ResendEmail, user.clone(), send.clone()),
            (
                Op::ResendEmail,
                "123456789012345678".to_string(),
                send.clone(),
            ),
            (Op::ResendOtp, user.clone(), send.clone()),
        ]
    };
    for template in SYNTAX_ERRORS {
        for (op, target, input) in calls(template) {
            let out = fam.call(op, &target, &otp_id, input).await;
            assert_error(&out.resp, 400, 3, Some(ids::TEMPLATE_SYNTAX));
        }
    }
    for template in INVALID_TEMPLATES {
        for (op, target, input) in calls(template) {
            let out = fam.call(op, &target, &otp_id, input).await;
            assert_error(&out.resp, 400, 3, Some(ids::TEMPLATE_INVALID));
        }
    }
    for (op, target, input) in calls(&over) {
        fam.call(op, &target, &otp_id, input).await.err_code(400, 3);
    }
    assert_eq!(
        w.seq(&user).await,
        seq,
        "a rejected template changed the user"
    );
    w.assert_mails_stay(0).await;
    fam.verify(&user, &code).await.ok();
    fam.verify_otp(&user, &otp_id, &otp_code).await.ok();

    // Exactly 200 characters is accepted and rendered.
    let exact = format!("https://x.example/v?c={{{{Code}}}}&p={}", "p".repeat(200));
    let exact = exact[..200].to_string();
    let user2 = w.user().await;
    fam.set(
        &user2,
        json!({"address": "tpl200@example.com", "sendCode": {"urlTemplate": exact}}),
    )
    .await
    .ok();
    let mail = w.mail_to("tpl200@example.com", 1).await;
    mailed_code(&mail, "c", 6, CONTACT_ALPHABET);
}

/// The three spellings of SPEC 5 render the same values: `{{UserID}}`, ZITADEL's Go
/// `{{.UserID}}`, and `{{userId}}` (with `Code`/`code`, `OrgID`/`orgId`).
async fn template_variable_spellings(f: Family) {
    let (w, _app) = spawn_app().await;
    let fam = w.fam(f);
    let templates = [
        (
            "handlebars",
            "https://x.example/v?u={{UserID}}&c={{Code}}&o={{OrgID}}",
        ),
        (
            "go",
            "https://x.example/v?u={{.UserID}}&c={{.Code}}&o={{.OrgID}}",
        ),
        (
            "lower",
            "https://x.example/v?u={{userId}}&c={{code}}&o={{orgId}}",
        ),
        (
            "spaced",
            "https://x.example/v?u={{ .UserID }}&c={{ Code }}&o={{orgId}}",
        ),
    ];
    for (name, template) in templates {
        let user = w.user().await;
        let address = format!("{name}@spelling.example.com");
        fam.set(
            &user,
            json!({"address": address, "sendCode": {"urlTemplate": template}}),
        )
        .await
        .ok();
        let mail = w.mail_to(&address, 1).await;
        assert_eq!(
            mail.link_param("u").as_deref(),
            Some(user.as_str()),
            "{name}"
        );
        assert_eq!(mail.link_param("o"), Some(w.org_id()), "{name}");
        let code = mailed_code(&mail, "c", 6, CONTACT_ALPHABET);
        fam.verify(&user, &code).await.ok();
    }
}

/// Contact email verify codes are 1..20 characters: empty and 21 are 400 code 3 without
/// counting as a wrong code; 20 is checked as a (wrong) code.
async fn contact_verify_code_length_is_1_to_20(f: Family) {
    let (w, _app) = spawn_app_with(&[("VERIFY_MAX_ATTEMPTS", "2")]).await;
    let fam = w.fam(f);
    let (user, code) = w.user_with_pending("len@example.com").await;
    let seq = w.seq(&user).await;
    for bad in [String::new(), "A".repeat(21), "A".repeat(200)] {
        for _ in 0..2 {
            let out = fam.verify(&user, &bad).await.err_code(400, 3);
            assert_ne!(out.error_id(), Some(ids::CODE_WRONG), "{bad:?}: {out:?}");
        }
    }
    assert_eq!(
        w.seq(&user).await,
        seq,
        "a rejected verify changed the user"
    );
    fam.verify(&user, &"A".repeat(20))
        .await
        .err(400, 3, ids::CODE_WRONG);
    // Only one wrong code was counted (VERIFY_MAX_ATTEMPTS=2): the right code still works.
    fam.verify(&user, &code).await.ok();
}

/// Malformed JSON and wrong field types are 400 code 3, a body over 64 KiB is HTTP 413 with
/// code 3, a non-JSON content type is HTTP 415 with code 3, on every route with a body;
/// nothing changes. A large body under the limit with unknown fields is fine.
async fn malformed_oversized_and_non_json_bodies(f: Family) {
    let (w, _app) = spawn_app().await;
    let fam = w.fam(f);
    let (user, code) = w.user_with_pending("body@example.com").await;
    let otp = fam
        .add_otp(
            &user,
            json!({"address": "body-otp@example.com", "returnCode": {}}),
        )
        .await
        .ok();
    let (otp_id, otp_code) = (otp.otp_id(), otp.expect_code());
    let seq = w.seq(&user).await;
    let ops = [
        Op::SetEmail,
        Op::VerifyEmail,
        Op::ResendEmail,
        Op::AddOtp,
        Op::VerifyOtp,
        Op::ResendOtp,
    ];
    let huge = format!(r#"{{"pad": "{}"}}"#, "x".repeat(70 * 1024));
    for op in ops {
        for target in [user.as_str(), "123456789012345678"] {
            for malformed in [&b"{\"email\": "[..], b"{", b"not json", b"[1,"] {
                fam.call_raw(op, target, &otp_id, malformed, Some("application/json"))
                    .await
                    .err_code(400, 3);
            }
            let out = fam
                .call_raw(op, target, &otp_id, huge.clone(), Some("application/json"))
                .await;
            assert_error(&out.resp, 413, 3, None);
            let valid =
                serde_json::to_vec(&fam.body(op, Fam::sample_input(op)).expect("a body")).unwrap();
            for content_type in [
                Some("text/plain"),
                Some("application/x-www-form-urlencoded"),
                Some("multipart/form-data; boundary=x"),
                None,
            ] {
                let out = fam
                    .call_raw(op, target, &otp_id, valid.clone(), content_type)
                    .await;
                assert_error(&out.resp, 415, 3, None);
            }
        }
    }
    // Wrong types of known fields.
    let wrong_types: Vec<(Op, Value)> = vec![
        (Op::SetEmail, json!({"address": 5, "returnCode": {}})),
        (
            Op::SetEmail,
            json!({"address": "t@example.com", "returnCode": true}),
        ),
        (
            Op::SetEmail,
            json!({"address": "t@example.com", "isVerified": "yes"}),
        ),
        (
            Op::SetEmail,
            json!({"address": "t@example.com", "sendCode": {"urlTemplate": 7}}),
        ),
        (Op::AddOtp, json!({"address": ["t@example.com"]})),
        (Op::VerifyEmail, json!(123456)),
        (Op::VerifyOtp, json!(["123456"])),
        (Op::ResendEmail, json!({"returnCode": "yes"})),
        (Op::ResendOtp, json!({"sendCode": "https://x.example/"})),
    ];
    for (op, input) in wrong_types {
        fam.call(op, &user, &otp_id, input).await.err_code(400, 3);
    }
    if f == Family::A {
        fam.call_raw(
            Op::SetEmail,
            &user,
            "",
            r#"{"email": "t@example.com"}"#,
            Some("application/json"),
        )
        .await
        .err_code(400, 3);
        fam.call_raw(
            Op::VerifyEmail,
            &user,
            "",
            r#"{"verificationCode": 5}"#,
            Some("application/json"),
        )
        .await
        .err_code(400, 3);
    } else {
        // The family B verify body is a bare JSON string, not an object.
        fam.call_raw(
            Op::VerifyEmail,
            &user,
            "",
            format!(r#"{{"verificationCode": "{code}"}}"#),
            Some("application/json"),
        )
        .await
        .err_code(400, 3);
    }
    assert_eq!(
        w.seq(&user).await,
        seq,
        "a rejected request changed the user"
    );
    w.assert_mails_stay(0).await;
    fam.verify(&user, &code).await.ok();
    fam.verify_otp(&user, &otp_id, &otp_code).await.ok();

    // ~60 KiB with an unknown field is under the limit and accepted.
    let pad = "p".repeat(60 * 1024);
    let other = w.user().await;
    let mut body = fam
        .body(
            Op::SetEmail,
            json!({"address": "big@example.com", "returnCode": {}, "padding": pad}),
        )
        .unwrap();
    body["morePadding"] = json!("q");
    let out = fam
        .call_raw(
            Op::SetEmail,
            &other,
            "",
            serde_json::to_vec(&body).unwrap(),
            Some("application/json; charset=utf-8"),
        )
        .await
        .ok();
    out.expect_code();
}

/// A JSON value followed by more characters is malformed JSON: 400 code 3, nothing changes.
async fn trailing_characters_after_the_json_are_malformed(f: Family) {
    let (w, _app) = spawn_app().await;
    let fam = w.fam(f);
    let (user, code) = w.user_with_pending("trail@example.com").await;
    let seq = w.seq(&user).await;
    let cases: &[(Op, &str)] = &[
        (Op::ResendEmail, r#"{"returnCode": {}}}"#),
        (Op::ResendEmail, r#"{} {"returnCode": {}}"#),
        (Op::ResendEmail, r#"{"returnCode": {}} trailing"#),
        (
            Op::SetEmail,
            match f {
                Family::A => r#"{"email": {"address": "trail2@example.com", "returnCode": {}}}}"#,
                Family::B => r#"{"address": "trail2@example.com", "returnCode": {}}}"#,
            },
        ),
    ];
    for (op, body) in cases {
        let out = fam
            .call_raw(*op, &user, "", body.as_bytes(), Some("application/json"))
            .await;
        assert_error(&out.resp, 400, 3, None);
        out.expect_no_code();
    }
    assert_eq!(
        w.seq(&user).await,
        seq,
        "a malformed request changed the user"
    );
    fam.verify(&user, &code).await.ok();
}

/// Input accepts snake_case as well as lowerCamelCase and ignores unknown fields.
async fn snake_case_and_unknown_fields_are_accepted(f: Family) {
    let (w, _app) = spawn_app().await;
    let fam = w.fam(f);
    let user = w.user().await;
    let code = fam
        .set(
            &user,
            json!({"address": "snake@example.com", "return_code": {}, "unknownField": {"x": 1}}),
        )
        .await
        .ok()
        .expect_code();
    if f == Family::A {
        let (_, path) = fam.route(Op::VerifyEmail, &user, "");
        let resp = w
            .api
            .post(&path, json!({"verification_code": code, "extra": true}))
            .await;
        assert_eq!(resp.status, 200, "{resp:?}");
    } else {
        fam.verify(&user, &code).await.ok();
    }
    assert_eq!(w.contact(&user).await["isVerified"], true);

    let user = w.user().await;
    fam.set(
        &user,
        json!({"address": "snake-send@example.com", "send_code": {"url_template": "https://snake.example/v?c={{Code}}"}}),
    )
    .await
    .ok();
    let mail = w.mail_to("snake-send@example.com", 1).await;
    assert!(
        mail.extract_link()
            .unwrap()
            .starts_with("https://snake.example/v?c=")
    );
    fam.add_otp(
        &user,
        json!({"address": "snake-otp@example.com", "is_verified": true}),
    )
    .await
    .ok();
    assert_eq!(w.get_user(&user).await["otpEmail"][0]["isVerified"], true);
    let resent = fam.resend(&user, json!({"return_code": {}})).await.ok();
    resent.expect_code();
}

both_families!(
    invalid_addresses_are_rejected,
    valid_addresses_are_accepted_and_stored_as_given,
    verification_choice_is_at_most_one_and_is_verified_only_true,
    url_templates_are_checked,
    template_variable_spellings,
    contact_verify_code_length_is_1_to_20,
    malformed_oversized_and_non_json_bodies,
    trailing_characters_after_the_json_are_malformed,
    snake_case_and_unknown_fields_are_accepted,
);
