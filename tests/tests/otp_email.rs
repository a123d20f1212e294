//! OTP Email authenticators (SPEC 3.4: add, verify, resend, remove), each scenario run
//! against both route families with the same assertions.

use serde_json::json;
use tests::scenario::*;
use tests::{TestEnv, both_families};

fn addr(f: Family, local: &str) -> String {
    format!("{local}-{f:?}@otp.example.com").to_lowercase()
}

/// Adding without a choice mails an 8-digit code with the OTP Email template and the default
/// OTP link; the authenticator is listed unverified until the mailed code verifies it.
async fn add_mails_an_8_digit_code_with_its_own_template(f: Family) {
    let w = World::start().await;
    let fam = w.fam(f);
    let user = w.user().await;
    let address = addr(f, "otp");
    let seq = w.seq(&user).await;

    let added = fam.add_otp(&user, json!({"address": address})).await.ok();
    added.expect_no_code();
    let otp_id = added.otp_id();
    assert_eq!(added.owner(), w.org_id());
    if f == Family::A {
        assert_eq!(added.sequence().as_deref(), Some("2"));
    }
    assert_ne!(w.seq(&user).await, seq);
    let got = w.get_user(&user).await;
    assert_eq!(
        got["otpEmail"],
        json!([{"otpEmailId": otp_id, "address": address, "isVerified": false}])
    );

    let otp_mail = w.mail_to(&address, 1).await;
    let link = otp_mail.extract_link().expect("a link in the OTP mail");
    assert!(
        link.starts_with(&format!("{DEFAULT_OTP_LINK}?")),
        "{link} is not DEFAULT_OTP_EMAIL_URL_TEMPLATE's"
    );
    assert_eq!(
        otp_mail.link_param("userID").as_deref(),
        Some(user.as_str())
    );
    assert_eq!(otp_mail.link_param("orgID"), Some(w.org_id()));
    let code = otp_code(&otp_mail);

    // The contact email mail of the same user uses another template.
    let contact = addr(f, "contact");
    fam.set(&user, json!({"address": contact})).await.ok();
    let contact_mail = w.mail_to(&contact, 1).await;
    assert_ne!(
        otp_mail.subject(),
        contact_mail.subject(),
        "OTP Email mails have their own template"
    );

    fam.verify_otp(&user, &otp_id, &wrong_code(&code))
        .await
        .err(400, 3, ids::CODE_WRONG);
    fam.verify_otp(&user, &otp_id, &code).await.ok();
    let got = w.get_user(&user).await;
    assert_eq!(got["otpEmail"][0]["isVerified"], true);
    assert!(
        !got.to_string().contains(&code),
        "GET shows the OTP code: {got}"
    );
    // The contact email is untouched by the OTP verification.
    assert_eq!(got["contact"]["email"]["isVerified"], false);
}

/// `sendCode` with a template renders it for the OTP mail; `returnCode` returns an 8-digit
/// code and mails nothing; `isVerified` adds a verified authenticator and mails nothing.
async fn add_with_template_return_code_and_is_verified(f: Family) {
    let w = World::start().await;
    let fam = w.fam(f);
    let user = w.user().await;

    let templated = addr(f, "tpl");
    let added = fam
        .add_otp(
            &user,
            json!({"address": templated, "sendCode": {"urlTemplate": "https://otp.example.com/v?u={{.UserID}}&c={{.Code}}&o={{.OrgID}}"}}),
        )
        .await
        .ok();
    let tpl_id = added.otp_id();
    let mail = w.mail_to(&templated, 1).await;
    assert!(
        mail.extract_link()
            .unwrap()
            .starts_with("https://otp.example.com/v?")
    );
    assert_eq!(mail.link_param("u").as_deref(), Some(user.as_str()));
    assert_eq!(mail.link_param("o"), Some(w.org_id()));
    let code = mailed_code(&mail, "c", 8, OTP_ALPHABET);
    fam.verify_otp(&user, &tpl_id, &code).await.ok();

    let ret = fam
        .add_otp(&user, json!({"address": addr(f, "ret"), "returnCode": {}}))
        .await
        .ok();
    let ret_id = ret.otp_id();
    let ret_code = ret.expect_code();
    assert_code_shape(&ret_code, 8, OTP_ALPHABET);

    let ver = fam
        .add_otp(
            &user,
            json!({"address": addr(f, "ver"), "isVerified": true}),
        )
        .await
        .ok();
    ver.expect_no_code();
    let ver_id = ver.otp_id();
    assert!(tpl_id != ret_id && ret_id != ver_id && tpl_id != ver_id);

    let got = w.get_user(&user).await;
    let listed: Vec<(String, bool)> = got["otpEmail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["otpEmailId"].as_str().unwrap().to_string(),
                o["isVerified"].as_bool().unwrap(),
            )
        })
        .collect();
    for expected in [(tpl_id, true), (ret_id.clone(), false), (ver_id, true)] {
        assert!(listed.contains(&expected), "{expected:?} not in {listed:?}");
    }
    fam.verify_otp(&user, &ret_id, &ret_code).await.ok();
    w.assert_mails_stay(1).await;
}

/// An address already registered as OTP Email for this user, in any case, is 409 code 6
/// `COMMAND-MKL2s` and changes nothing; other users and the contact email do not count.
async fn duplicate_address_is_conflict_case_insensitively(f: Family) {
    let w = World::start().await;
    let fam = w.fam(f);
    let user = w.user().await;
    let address = format!("Dup.Case-{f:?}@OTP.Example.com");
    fam.add_otp(&user, json!({"address": address, "returnCode": {}}))
        .await
        .ok();
    let seq = w.seq(&user).await;
    for dup in [
        address.clone(),
        address.to_uppercase(),
        address.to_lowercase(),
        format!("  {address} "),
    ] {
        for choice in [
            json!({}),
            json!({"returnCode": {}}),
            json!({"isVerified": true}),
        ] {
            let mut email = choice;
            email["address"] = json!(dup);
            fam.add_otp(&user, email)
                .await
                .err(409, 6, ids::OTP_EMAIL_DUPLICATE);
        }
    }
    assert_eq!(w.seq(&user).await, seq);
    assert_eq!(
        w.get_user(&user).await["otpEmail"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // The same address as the contact email, and for another user, is fine.
    fam.set(
        &user,
        json!({"address": addr(f, "contact"), "isVerified": true}),
    )
    .await
    .ok();
    fam.add_otp(
        &user,
        json!({"address": addr(f, "contact"), "returnCode": {}}),
    )
    .await
    .ok();
    let other = w.user().await;
    fam.add_otp(&other, json!({"address": address, "returnCode": {}}))
        .await
        .ok();
    w.assert_mails_stay(0).await;
}

/// A known user with an unknown otpEmailId, or one of another user, is 404 `COMMAND-b312D`
/// on verify, resend and remove, and changes nothing.
async fn unknown_or_foreign_otp_email_id_is_not_found(f: Family) {
    let w = World::start().await;
    let fam = w.fam(f);
    let user = w.user().await;
    let other = w.user().await;
    let foreign = fam
        .add_otp(
            &other,
            json!({"address": addr(f, "foreign"), "returnCode": {}}),
        )
        .await
        .ok();
    let (foreign_id, foreign_code) = (foreign.otp_id(), foreign.expect_code());
    // The user's contact email is not an OTP Email authenticator either.
    fam.set(&user, json!({"address": addr(f, "c"), "returnCode": {}}))
        .await
        .ok();
    let seq = w.seq(&user).await;
    let other_seq = w.seq(&other).await;

    for otp in [
        foreign_id.as_str(),
        "123456789012345678",
        "3f2b8e3c-6d2a-4d3f-9a41-0d7c2b1e5a90",
        "junk",
    ] {
        fam.verify_otp(&user, otp, &foreign_code)
            .await
            .err(404, 5, ids::OTP_EMAIL_NOT_FOUND);
        fam.resend_otp(&user, otp, json!({"returnCode": {}}))
            .await
            .err(404, 5, ids::OTP_EMAIL_NOT_FOUND);
        fam.resend_otp(&user, otp, json!({}))
            .await
            .err(404, 5, ids::OTP_EMAIL_NOT_FOUND);
        fam.remove_otp(&user, otp)
            .await
            .err(404, 5, ids::OTP_EMAIL_NOT_FOUND);
    }
    assert_eq!(w.seq(&user).await, seq);
    assert_eq!(w.seq(&other).await, other_seq);
    // The foreign authenticator still works for its owner.
    fam.verify_otp(&other, &foreign_id, &foreign_code)
        .await
        .ok();
    w.assert_mails_stay(0).await;
}

/// Resend replaces the OTP code (the old one fails), mails it with the OTP template, and
/// has nothing to resend once verified (400 code 9 `COMMAND-QRkNTBwF8q`).
async fn resend_replaces_the_otp_code(f: Family) {
    let w = World::start().await;
    let fam = w.fam(f);
    let user = w.user().await;
    let address = addr(f, "resend");
    let added = fam
        .add_otp(&user, json!({"address": address, "returnCode": {}}))
        .await
        .ok();
    let (otp_id, code1) = (added.otp_id(), added.expect_code());

    let code2 = fam
        .resend_otp(&user, &otp_id, json!({"returnCode": {}}))
        .await
        .ok()
        .expect_code();
    assert_code_shape(&code2, 8, OTP_ALPHABET);
    assert_ne!(code1, code2);

    fam.resend_otp(&user, &otp_id, json!({}))
        .await
        .ok()
        .expect_no_code();
    let mail = w.mail_to(&address, 1).await;
    assert!(mail.extract_link().unwrap().starts_with(DEFAULT_OTP_LINK));
    let code3 = otp_code(&mail);

    for old in [&code1, &code2] {
        if *old != code3 {
            fam.verify_otp(&user, &otp_id, old)
                .await
                .err(400, 3, ids::CODE_WRONG);
        }
    }
    fam.verify_otp(&user, &otp_id, &code3).await.ok();
    let seq = w.seq(&user).await;
    fam.resend_otp(&user, &otp_id, json!({"returnCode": {}}))
        .await
        .err(400, 9, ids::NO_PENDING_CODE);
    // Verifying again: success, nothing changes.
    fam.verify_otp(&user, &otp_id, &code3).await.ok();
    assert_eq!(w.seq(&user).await, seq);
    w.assert_mails_stay(1).await;
}

/// Remove deletes the authenticator: it leaves the GET answer, and every later call on it
/// is 404 `COMMAND-b312D`; its address may be added again.
async fn remove_deletes_the_authenticator(f: Family) {
    let w = World::start().await;
    let fam = w.fam(f);
    let user = w.user().await;
    let keep = fam
        .add_otp(
            &user,
            json!({"address": addr(f, "keep"), "isVerified": true}),
        )
        .await
        .ok()
        .otp_id();
    let gone = fam
        .add_otp(&user, json!({"address": addr(f, "gone"), "returnCode": {}}))
        .await
        .ok();
    let (gone_id, code) = (gone.otp_id(), gone.expect_code());
    let seq: u64 = w.seq(&user).await.parse().unwrap();

    let removed = fam.remove_otp(&user, &gone_id).await.ok();
    if f == Family::A {
        assert_eq!(removed.sequence(), Some((seq + 1).to_string()));
    }
    assert_eq!(removed.owner(), w.org_id());
    let got = w.get_user(&user).await;
    assert_eq!(got["details"]["sequence"], json!((seq + 1).to_string()));
    let ids_left: Vec<&str> = got["otpEmail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["otpEmailId"].as_str().unwrap())
        .collect();
    assert_eq!(ids_left, [keep.as_str()]);

    fam.verify_otp(&user, &gone_id, &code)
        .await
        .err(404, 5, ids::OTP_EMAIL_NOT_FOUND);
    fam.resend_otp(&user, &gone_id, json!({"returnCode": {}}))
        .await
        .err(404, 5, ids::OTP_EMAIL_NOT_FOUND);
    fam.remove_otp(&user, &gone_id)
        .await
        .err(404, 5, ids::OTP_EMAIL_NOT_FOUND);
    assert_eq!(w.seq(&user).await, (seq + 1).to_string());

    let again = fam
        .add_otp(&user, json!({"address": addr(f, "gone"), "returnCode": {}}))
        .await
        .ok();
    assert_ne!(again.otp_id(), gone_id);
}

/// Removing an authenticator whose mail is still unsent (no worker running) supersedes the
/// mail: once a worker runs, only the other authenticator's mail arrives.
async fn remove_supersedes_the_unsent_mail(f: Family) {
    let env = TestEnv::builder().without_worker().start().await;
    let mut w = World::from_env(env);
    let fam = w.fam(f);
    let user = w.user().await;
    let gone = fam
        .add_otp(&user, json!({"address": addr(f, "gone")}))
        .await
        .ok()
        .otp_id();
    let kept = addr(f, "kept");
    fam.add_otp(&user, json!({"address": kept})).await.ok();
    fam.remove_otp(&user, &gone).await.ok();

    w.env.restart_worker().await;
    w.mail_to(&kept, 1).await;
    w.assert_mails_stay(1).await;
    assert!(w.env.sink.messages_to(&addr(f, "gone")).is_empty());
}

/// The OTP verify code is 1..200 characters: 0 and 201 are 400 code 3 (not a wrong code),
/// 200 is checked as a (wrong) code. The `code` field is accepted in family A.
async fn verify_code_length_is_1_to_200(f: Family) {
    let w = World::start().await;
    let fam = w.fam(f);
    let user = w.user().await;
    let added = fam
        .add_otp(&user, json!({"address": addr(f, "len"), "returnCode": {}}))
        .await
        .ok();
    let (otp_id, code) = (added.otp_id(), added.expect_code());
    let seq = w.seq(&user).await;
    for bad in [String::new(), "1".repeat(201)] {
        let out = fam.verify_otp(&user, &otp_id, &bad).await.err_code(400, 3);
        assert_ne!(out.error_id(), Some(ids::CODE_WRONG), "{bad:?}: {out:?}");
    }
    assert_eq!(
        w.seq(&user).await,
        seq,
        "a rejected verify changed the user"
    );
    fam.verify_otp(&user, &otp_id, &"1".repeat(200))
        .await
        .err(400, 3, ids::CODE_WRONG);
    if f == Family::A {
        // SPEC 3.2: `code` is accepted instead of `verificationCode`.
        let (_, path) = fam.route(Op::VerifyOtp, &user, &otp_id);
        let resp = w.api.post(&path, json!({"code": code})).await;
        assert_eq!(resp.status, 200, "{resp:?}");
    } else {
        fam.verify_otp(&user, &otp_id, &code).await.ok();
    }
    assert_eq!(w.get_user(&user).await["otpEmail"][0]["isVerified"], true);
}

both_families!(
    add_mails_an_8_digit_code_with_its_own_template,
    add_with_template_return_code_and_is_verified,
    duplicate_address_is_conflict_case_insensitively,
    unknown_or_foreign_otp_email_id_is_not_found,
    resend_replaces_the_otp_code,
    remove_deletes_the_authenticator,
    remove_supersedes_the_unsent_mail,
    verify_code_length_is_1_to_200,
);
