//! The contact email calls of SPEC 3.4 (set, verify, resend), each scenario run against both
//! route families (SPEC 3.2 family A and 3.3 family B) with the same assertions.

use std::time::Duration;

use serde_json::json;
use tests::app::{spawn_app, spawn_app_with};
use tests::both_families;
use tests::env::MAIL_FROM;
use tests::scenario::*;

fn addr(f: Family, local: &str) -> String {
    format!("{local}-{f:?}@mouse.example.com").to_lowercase()
}

/// `sendCode` with a template: the answer has no code, the mail arrives with the rendered
/// link (user, org, code) and the code on its own; the mailed code verifies the address.
async fn send_code_with_template_mails_the_link(f: Family) {
    let (w, _app) = spawn_app().await;
    let fam = w.fam(f);
    let user = w.user().await;
    let address = addr(f, "mini");
    let template = "https://login.example.com/verify?u={{UserID}}&c={{Code}}&o={{OrgID}}";

    let set = fam
        .set(
            &user,
            json!({"address": address, "sendCode": {"urlTemplate": template}}),
        )
        .await
        .ok();
    set.expect_no_code();
    assert_eq!(set.owner(), w.org_id());
    if f == Family::A {
        assert_eq!(set.sequence().as_deref(), Some("2"));
    }
    let got = w.get_user(&user).await;
    assert_eq!(got["contact"]["email"]["address"], json!(address));
    assert_eq!(got["contact"]["email"]["isVerified"], false);
    assert_eq!(got["details"]["sequence"], "2");
    assert_eq!(
        got["details"]["changeDate"].as_str(),
        Some(set.changed().as_str())
    );

    let mail = w.mail_to(&address, 1).await;
    assert_eq!(mail.to(), std::slice::from_ref(&address));
    assert_eq!(mail.recipients, std::slice::from_ref(&address));
    assert_eq!(
        mail.from(),
        "no-reply@ce-test.localhost",
        "From of {MAIL_FROM}"
    );
    let link = mail.extract_link().expect("a link in the text part");
    assert!(
        link.starts_with("https://login.example.com/verify?"),
        "{link}"
    );
    assert_eq!(mail.link_param("u").as_deref(), Some(user.as_str()));
    assert_eq!(mail.link_param("o"), Some(w.org_id()));
    let code = mailed_code(&mail, "c", 6, CONTACT_ALPHABET);
    assert_eq!(
        mail.extract_html_link().as_deref(),
        Some(link.as_str()),
        "the HTML part links to the same URL"
    );
    let get_text = w
        .api
        .get(&format!("/v3alpha/users/{user}"))
        .await
        .expect_status(200)
        .text;
    assert!(!get_text.contains(&code), "GET shows the code: {get_text}");

    let verified = fam.verify(&user, &code).await.ok();
    if f == Family::A {
        assert_eq!(verified.sequence().as_deref(), Some("3"));
    }
    assert_eq!(verified.owner(), w.org_id());
    let contact = w.contact(&user).await;
    assert_eq!(contact["isVerified"], true);
    assert_eq!(contact["address"], json!(address));
    w.assert_mails_stay(1).await;
}

/// No choice, `sendCode: {}` and `sendCode: {"urlTemplate": ""}` all mail the link of
/// `DEFAULT_URL_TEMPLATE` (userID, code, orgID).
async fn without_template_the_default_url_template_is_used(f: Family) {
    let (w, _app) = spawn_app().await;
    let fam = w.fam(f);
    let cases = [
        ("none", json!({})),
        ("empty-send-code", json!({"sendCode": {}})),
        ("empty-template", json!({"sendCode": {"urlTemplate": ""}})),
    ];
    for (name, choice) in cases {
        let user = w.user().await;
        let address = addr(f, name);
        let mut email = choice.clone();
        email["address"] = json!(address);
        fam.set(&user, email).await.ok().expect_no_code();
        let mail = w.mail_to(&address, 1).await;
        let link = mail.extract_link().expect("a link in the mail");
        assert!(
            link.starts_with(&format!("{DEFAULT_CONTACT_LINK}?")),
            "{name}: link {link} is not the default template's"
        );
        assert_eq!(mail.link_param("userID").as_deref(), Some(user.as_str()));
        assert_eq!(mail.link_param("orgID"), Some(w.org_id()));
        let code = contact_code(&mail);
        fam.verify(&user, &code).await.ok();
        assert_eq!(w.contact(&user).await["isVerified"], true, "{name}");
    }
}

/// `returnCode`: the code is in the answer (6 characters of A-Z0-9), works, and no mail is sent.
async fn return_code_returns_the_code_and_sends_nothing(f: Family) {
    let (w, _app) = spawn_app().await;
    let fam = w.fam(f);
    let user = w.user().await;
    let code = fam
        .set(&user, json!({"address": addr(f, "ret"), "returnCode": {}}))
        .await
        .ok()
        .expect_code();
    assert_code_shape(&code, 6, CONTACT_ALPHABET);
    assert_eq!(w.contact(&user).await["isVerified"], false);
    fam.verify(&user, &code).await.ok();
    assert_eq!(w.contact(&user).await["isVerified"], true);
    w.assert_mails_stay(0).await;
}

/// `isVerified: true`: verified at once, no code, no mail; resend then has nothing to resend.
async fn is_verified_marks_verified_without_code_or_mail(f: Family) {
    let (w, _app) = spawn_app().await;
    let fam = w.fam(f);
    let user = w.user().await;
    let set = fam
        .set(
            &user,
            json!({"address": addr(f, "ver"), "isVerified": true}),
        )
        .await
        .ok();
    set.expect_no_code();
    if f == Family::A {
        assert_eq!(set.sequence().as_deref(), Some("2"));
    }
    let contact = w.contact(&user).await;
    assert_eq!(contact["isVerified"], true);
    assert_eq!(contact["address"], json!(addr(f, "ver")));
    w.assert_mails_stay(0).await;
}

/// Setting the address the user already has (exactly, after trimming) is a success that
/// appends no event, makes no code and sends no mail, even with `returnCode`; `details`
/// repeat the last change. A change of case is a change.
async fn unchanged_address_is_a_noop(f: Family) {
    let (w, _app) = spawn_app().await;
    let fam = w.fam(f);
    let user = w.user().await;
    let address = addr(f, "same");
    let first = fam
        .set(&user, json!({"address": address, "returnCode": {}}))
        .await
        .ok();
    let code = first.expect_code();
    let seq = w.seq(&user).await;

    for email in [
        json!({"address": address, "returnCode": {}}),
        json!({"address": address, "sendCode": {}}),
        json!({"address": address}),
        json!({"address": format!(" \t{address}\t ")}),
        json!({"address": address, "isVerified": true}),
    ] {
        let again = fam.set(&user, email.clone()).await.ok();
        again.expect_no_code();
        assert_eq!(again.changed(), first.changed(), "details of {email}");
        assert_eq!(again.sequence(), first.sequence(), "details of {email}");
        assert_eq!(w.seq(&user).await, seq, "an event was appended for {email}");
    }
    assert_eq!(
        w.contact(&user).await["isVerified"],
        false,
        "an unchanged address with isVerified must not verify it"
    );
    w.assert_mails_stay(0).await;
    // The first code was not replaced.
    fam.verify(&user, &code).await.ok();

    // Another case is another address: a change with a new event and an unverified address.
    let upper = address.to_uppercase();
    let changed = fam
        .set(&user, json!({"address": upper, "returnCode": {}}))
        .await
        .ok();
    changed.expect_code();
    assert_ne!(w.seq(&user).await, seq);
    let contact = w.contact(&user).await;
    assert_eq!(contact["address"], json!(upper));
    assert_eq!(contact["isVerified"], false);
}

/// A wrong code is 400 `CODE-woT0xc` and is counted (an event); the right code then verifies;
/// verifying an already verified address succeeds and changes nothing.
async fn wrong_code_is_counted_then_right_code_verifies(f: Family) {
    let (w, _app) = spawn_app().await;
    let fam = w.fam(f);
    let (user, code) = w.user_with_pending(&addr(f, "wrong")).await;
    let mut seq: u64 = w.seq(&user).await.parse().unwrap();

    // A wrong code, and the right one in another case (the comparison is exact; a code of
    // digits only has no other case).
    let mut wrong = vec![wrong_code(&code)];
    if code.to_lowercase() != code {
        wrong.push(code.to_lowercase());
    }
    for attempt in wrong {
        fam.verify(&user, &attempt)
            .await
            .err(400, 3, ids::CODE_WRONG);
        seq += 1;
        assert_eq!(
            w.seq(&user).await,
            seq.to_string(),
            "a wrong code appends an event"
        );
    }
    assert_eq!(w.contact(&user).await["isVerified"], false);

    let ok = fam.verify(&user, &code).await.ok();
    seq += 1;
    if f == Family::A {
        assert_eq!(ok.sequence(), Some(seq.to_string()));
    }
    assert_eq!(w.contact(&user).await["isVerified"], true);

    // Already verified: success, nothing changes, whatever the code.
    for c in [code.as_str(), "ZZZZZZ"] {
        let again = fam.verify(&user, c).await.ok();
        assert_eq!(again.changed(), ok.changed());
        assert_eq!(w.seq(&user).await, seq.to_string());
    }
}

/// Verify without a pending code (no email at all, or a verified one): success, no change.
async fn verify_without_pending_code_changes_nothing(f: Family) {
    let (w, _app) = spawn_app().await;
    let fam = w.fam(f);
    let user = w.user().await;
    let seq = w.seq(&user).await;
    fam.verify(&user, "ABC123").await.ok();
    assert_eq!(w.seq(&user).await, seq);
    assert!(w.get_user(&user).await.get("contact").is_none());

    let verified = w.user().await;
    fam.set(
        &verified,
        json!({"address": addr(f, "v"), "isVerified": true}),
    )
    .await
    .ok();
    let seq = w.seq(&verified).await;
    fam.verify(&verified, "ABC123").await.ok();
    assert_eq!(w.seq(&verified).await, seq);
    assert_eq!(w.contact(&verified).await["isVerified"], true);
}

/// Resend without a pending code (no email, verified email): 400 code 9
/// `COMMAND-QRkNTBwF8q`, for every delivery choice; nothing changes, no mail.
async fn resend_without_pending_code_is_failed_precondition(f: Family) {
    let (w, _app) = spawn_app().await;
    let fam = w.fam(f);
    let no_email = w.user().await;
    let verified = w.user().await;
    fam.set(
        &verified,
        json!({"address": addr(f, "done"), "isVerified": true}),
    )
    .await
    .ok();
    let used = w.user().await;
    let code = fam
        .set(&used, json!({"address": addr(f, "used"), "returnCode": {}}))
        .await
        .ok()
        .expect_code();
    fam.verify(&used, &code).await.ok();

    for user in [&no_email, &verified, &used] {
        let seq = w.seq(user).await;
        for body in [
            json!({}),
            json!({"returnCode": {}}),
            json!({"sendCode": {"urlTemplate": "https://x.example/{{Code}}"}}),
        ] {
            fam.resend(user, body)
                .await
                .err(400, 9, ids::NO_PENDING_CODE);
        }
        assert_eq!(w.seq(user).await, seq);
    }
    w.assert_mails_stay(0).await;
}

/// Resend replaces the code: the old one stops working; `returnCode` returns the new one,
/// `{}` mails it with the default template, `sendCode` with the given template.
async fn resend_replaces_the_code(f: Family) {
    let (w, _app) = spawn_app().await;
    let fam = w.fam(f);
    let address = addr(f, "resend");
    let (user, code1) = w.user_with_pending(&address).await;
    let seq: u64 = w.seq(&user).await.parse().unwrap();

    let r = fam.resend(&user, json!({"returnCode": {}})).await.ok();
    let code2 = r.expect_code();
    assert_code_shape(&code2, 6, CONTACT_ALPHABET);
    assert_ne!(code1, code2);
    if f == Family::A {
        assert_eq!(r.sequence(), Some((seq + 1).to_string()));
    }
    assert_eq!(w.seq(&user).await, (seq + 1).to_string());

    fam.resend(&user, json!({})).await.ok().expect_no_code();
    let mail = w.mail_to(&address, 1).await;
    assert!(
        mail.extract_link()
            .unwrap()
            .starts_with(DEFAULT_CONTACT_LINK)
    );
    let code3 = contact_code(&mail);

    fam.resend(
        &user,
        json!({"sendCode": {"urlTemplate": "https://app.example.com/confirm/{{UserID}}?code={{Code}}"}}),
    )
    .await
    .ok()
    .expect_no_code();
    let mail = w.mail_to(&address, 2).await;
    let link = mail.extract_link().unwrap();
    assert!(
        link.starts_with(&format!("https://app.example.com/confirm/{user}?code=")),
        "{link}"
    );
    let code4 = contact_code(&mail);

    for old in [&code1, &code2, &code3] {
        if *old != code4 {
            fam.verify(&user, old).await.err(400, 3, ids::CODE_WRONG);
        }
    }
    fam.verify(&user, &code4).await.ok();
    assert_eq!(w.contact(&user).await["isVerified"], true);
    w.assert_mails_stay(2).await;
}

/// An unknown user is 404 code 5 with the id of the call, before anything else about the
/// user is looked at (an unknown `otpEmailId` too), for numeric, UUID and junk ids.
async fn unknown_user_is_not_found_with_the_calls_id(f: Family) {
    let (w, _app) = spawn_app().await;
    let fam = w.fam(f);
    for user in [
        "123456789012345678",
        "3f2b8e3c-6d2a-4d3f-9a41-0d7c2b1e5a90",
        "no-such-user",
    ] {
        for op in Op::ALL {
            let out = fam.call(op, user, "98765", Fam::sample_input(op)).await;
            let id = op.user_not_found_id();
            assert_error(&out.resp, 404, 5, Some(id));
        }
    }
    w.assert_mails_stay(0).await;
}

/// A code past its lifetime (`EMAIL_CODE_TTL=1s`, `OTP_EMAIL_CODE_TTL=1s`) is 400 code 9
/// `CODE-QvUQ4P`; a resend gives a working code.
async fn expired_code_is_rejected(f: Family) {
    let (w, _app) = spawn_app_with(&[("EMAIL_CODE_TTL", "1s"), ("OTP_EMAIL_CODE_TTL", "1s")]).await;
    let fam = w.fam(f);
    let (user, code) = w.user_with_pending(&addr(f, "ttl")).await;
    let otp = fam
        .add_otp(
            &user,
            json!({"address": addr(f, "ttl-otp"), "returnCode": {}}),
        )
        .await
        .ok();
    let (otp_id, otp_code) = (otp.otp_id(), otp.expect_code());
    tokio::time::sleep(Duration::from_millis(1600)).await;

    fam.verify(&user, &code)
        .await
        .err(400, 9, ids::CODE_EXPIRED);
    fam.verify_otp(&user, &otp_id, &otp_code)
        .await
        .err(400, 9, ids::CODE_EXPIRED);
    assert_eq!(w.contact(&user).await["isVerified"], false);

    let fresh = fam
        .resend(&user, json!({"returnCode": {}}))
        .await
        .ok()
        .expect_code();
    fam.verify(&user, &fresh).await.ok();
    let fresh = fam
        .resend_otp(&user, &otp_id, json!({"returnCode": {}}))
        .await
        .ok()
        .expect_code();
    fam.verify_otp(&user, &otp_id, &fresh).await.ok();
    let got = w.get_user(&user).await;
    assert_eq!(got["contact"]["email"]["isVerified"], true);
    assert_eq!(got["otpEmail"][0]["isVerified"], true);
}

both_families!(
    send_code_with_template_mails_the_link,
    without_template_the_default_url_template_is_used,
    return_code_returns_the_code_and_sends_nothing,
    is_verified_marks_verified_without_code_or_mail,
    unchanged_address_is_a_noop,
    wrong_code_is_counted_then_right_code_verifies,
    verify_without_pending_code_changes_nothing,
    resend_without_pending_code_is_failed_precondition,
    resend_replaces_the_code,
    unknown_user_is_not_found_with_the_calls_id,
    expired_code_is_rejected,
);
