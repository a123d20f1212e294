//! Guessing and resending limits (SPEC 3.4: `VERIFY_MAX_ATTEMPTS`, `RESEND_COOLDOWN`) and
//! the code settings (`EMAIL_CODE_LENGTH`/`_ALPHABET`, `OTP_EMAIL_CODE_LENGTH`/`_ALPHABET`),
//! including how codes travel in links (SPEC 5: percent-encoded, never HTML-escaped). Each
//! scenario runs against both route families.

use serde_json::json;
use tests::both_families;
use tests::scenario::*;

/// After `VERIFY_MAX_ATTEMPTS` (3 here) wrong codes the code is void: every verify, even with
/// the right code, is 400 code 9 `CODE-Lk7Gq2`, until a resend (whose new code has a fresh
/// count) or a new address. The same holds for OTP Email codes.
async fn too_many_wrong_codes_void_the_code(f: Family) {
    let w = World::start_with(&[("VERIFY_MAX_ATTEMPTS", "3")]).await;
    let fam = w.fam(f);
    let (user, code) = w.user_with_pending("guess@example.com").await;
    let wrong = wrong_code(&code);
    for _ in 0..3 {
        fam.verify(&user, &wrong).await.err(400, 3, ids::CODE_WRONG);
    }
    for attempt in [code.as_str(), wrong.as_str(), code.as_str()] {
        fam.verify(&user, attempt)
            .await
            .err(400, 9, ids::CODE_TOO_MANY_ATTEMPTS);
    }
    assert_eq!(w.contact(&user).await["isVerified"], false);

    // A resend makes a new code with a fresh count.
    let fresh = fam
        .resend(&user, json!({"returnCode": {}}))
        .await
        .ok()
        .expect_code();
    for _ in 0..2 {
        fam.verify(&user, &wrong_code(&fresh))
            .await
            .err(400, 3, ids::CODE_WRONG);
    }
    fam.verify(&user, &fresh).await.ok();
    assert_eq!(w.contact(&user).await["isVerified"], true);

    // A new address makes a new code too.
    let (user2, code2) = w.user_with_pending("guess2@example.com").await;
    for _ in 0..3 {
        fam.verify(&user2, &wrong_code(&code2))
            .await
            .err(400, 3, ids::CODE_WRONG);
    }
    fam.verify(&user2, &code2)
        .await
        .err(400, 9, ids::CODE_TOO_MANY_ATTEMPTS);
    let code3 = fam
        .set(
            &user2,
            json!({"address": "guess3@example.com", "returnCode": {}}),
        )
        .await
        .ok()
        .expect_code();
    fam.verify(&user2, &code3).await.ok();

    // OTP Email codes.
    let otp = fam
        .add_otp(
            &user,
            json!({"address": "guess-otp@example.com", "returnCode": {}}),
        )
        .await
        .ok();
    let (otp_id, otp_code) = (otp.otp_id(), otp.expect_code());
    for _ in 0..3 {
        fam.verify_otp(&user, &otp_id, &wrong_code(&otp_code))
            .await
            .err(400, 3, ids::CODE_WRONG);
    }
    fam.verify_otp(&user, &otp_id, &otp_code)
        .await
        .err(400, 9, ids::CODE_TOO_MANY_ATTEMPTS);
    let fresh = fam
        .resend_otp(&user, &otp_id, json!({"returnCode": {}}))
        .await
        .ok()
        .expect_code();
    fam.verify_otp(&user, &otp_id, &fresh).await.ok();
    assert_eq!(w.get_user(&user).await["otpEmail"][0]["isVerified"], true);
}

/// The `Retry-After` of a 429: whole seconds within the cooldown.
#[track_caller]
fn assert_cooldown(out: Out) {
    let out = out.err(429, 8, ids::RESEND_COOLDOWN);
    let retry_after = out
        .resp
        .header("retry-after")
        .unwrap_or_else(|| panic!("429 without Retry-After: {out:?}"));
    let seconds: u64 = retry_after
        .parse()
        .unwrap_or_else(|_| panic!("Retry-After {retry_after:?} is not whole seconds"));
    assert!(
        (1..=30).contains(&seconds),
        "Retry-After {seconds} outside the 30 s cooldown"
    );
}

/// `RESEND_COOLDOWN=30s`: a second mail to the same recipient for the same user and purpose
/// within the cooldown is 429 code 8 `COMMAND-Rs8wq1` with `Retry-After`, and changes nothing
/// (same sequence, no mail, the earlier code still works). `returnCode` and `isVerified` are
/// never limited; another recipient or purpose is not limited; an unchanged address is a
/// no-op, not a 429.
async fn resend_cooldown_limits_mails_to_the_same_recipient(f: Family) {
    let w = World::start_with(&[("RESEND_COOLDOWN", "30s")]).await;
    let fam = w.fam(f);
    let user = w.user().await;
    let (a1, a2) = ("cool1@example.com", "cool2@example.com");

    fam.set(&user, json!({"address": a1, "sendCode": {}}))
        .await
        .ok();
    w.mail_to(a1, 1).await;
    // Unchanged address: nothing would be sent, so no 429.
    fam.set(&user, json!({"address": a1, "sendCode": {}}))
        .await
        .ok();
    let seq = w.seq(&user).await;
    assert_cooldown(fam.resend(&user, json!({})).await);
    assert_cooldown(
        fam.resend(
            &user,
            json!({"sendCode": {"urlTemplate": "https://x.example/v?c={{Code}}"}}),
        )
        .await,
    );
    assert_eq!(w.seq(&user).await, seq, "a 429 changed the user");

    // returnCode is never limited.
    fam.resend(&user, json!({"returnCode": {}}))
        .await
        .ok()
        .expect_code();

    // Another recipient is not limited; going back to the first one within the cooldown is.
    fam.set(&user, json!({"address": a2})).await.ok();
    let code2 = contact_code(&w.mail_to(a2, 1).await);
    let seq = w.seq(&user).await;
    assert_cooldown(fam.set(&user, json!({"address": a1, "sendCode": {}})).await);
    assert_cooldown(fam.set(&user, json!({"address": a1})).await);
    assert_eq!(w.seq(&user).await, seq, "a 429 changed the user");
    assert_eq!(w.contact(&user).await["address"], json!(a2));
    fam.verify(&user, &code2).await.ok();
    // isVerified is never limited.
    fam.set(&user, json!({"address": a1, "isVerified": true}))
        .await
        .ok();
    assert_eq!(w.contact(&user).await["address"], json!(a1));

    // OTP Email: its own purpose, limited per recipient.
    let a3 = "cool3@example.com";
    let otp_id = fam
        .add_otp(&user, json!({"address": a3}))
        .await
        .ok()
        .otp_id();
    w.mail_to(a3, 1).await;
    let seq = w.seq(&user).await;
    assert_cooldown(fam.resend_otp(&user, &otp_id, json!({})).await);
    assert_eq!(w.seq(&user).await, seq, "a 429 changed the user");
    fam.resend_otp(&user, &otp_id, json!({"returnCode": {}}))
        .await
        .ok()
        .expect_code();
    // The contact email to the same address is another purpose.
    fam.set(&user, json!({"address": a3})).await.ok();
    w.mail_to(a3, 2).await;

    // The cooldown is per recipient, whoever asks: another user may not mail a1 either
    // (whatever the case of the address).
    let other = w.user().await;
    assert_cooldown(
        fam.set(&other, json!({"address": "COOL1@Example.com"}))
            .await,
    );
    w.assert_mails_stay(4).await;
}

/// The cooldown ends: with `RESEND_COOLDOWN=2s`, after waiting the announced `Retry-After`
/// the same resend succeeds and mails the code.
async fn resend_is_allowed_again_after_the_cooldown(f: Family) {
    let w = World::start_with(&[("RESEND_COOLDOWN", "2s")]).await;
    let fam = w.fam(f);
    let user = w.user().await;
    let address = "after@cooldown.example.com";
    fam.set(&user, json!({"address": address})).await.ok();
    w.mail_to(address, 1).await;
    let out = fam
        .resend(&user, json!({}))
        .await
        .err(429, 8, ids::RESEND_COOLDOWN);
    let seconds: u64 = out
        .resp
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no whole-seconds Retry-After: {out:?}"));
    assert!(
        (1..=2).contains(&seconds),
        "Retry-After {seconds} with a 2 s cooldown"
    );
    tokio::time::sleep(std::time::Duration::from_secs(seconds)).await;
    let mut tries = 0;
    loop {
        let out = fam.resend(&user, json!({})).await;
        if out.status() == 200 || tries == 3 {
            out.ok();
            break;
        }
        // Retry-After is rounded to whole seconds; allow a little slack, no more.
        tries += 1;
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let code = contact_code(&w.mail_to(address, 2).await);
    fam.verify(&user, &code).await.ok();
}

/// `EMAIL_CODE_LENGTH=10`, `EMAIL_CODE_ALPHABET=AB`, `OTP_EMAIL_CODE_LENGTH=4`,
/// `OTP_EMAIL_CODE_ALPHABET=xyz`: returned and mailed codes follow them, and verify.
async fn code_length_and_alphabet_are_configurable(f: Family) {
    let w = World::start_with(&[
        ("EMAIL_CODE_LENGTH", "10"),
        ("EMAIL_CODE_ALPHABET", "AB"),
        ("OTP_EMAIL_CODE_LENGTH", "4"),
        ("OTP_EMAIL_CODE_ALPHABET", "xyz"),
    ])
    .await;
    let fam = w.fam(f);
    let user = w.user().await;
    let code = fam
        .set(
            &user,
            json!({"address": "ab@example.com", "returnCode": {}}),
        )
        .await
        .ok()
        .expect_code();
    assert_code_shape(&code, 10, "AB");
    let resent = fam
        .resend(&user, json!({"returnCode": {}}))
        .await
        .ok()
        .expect_code();
    assert_code_shape(&resent, 10, "AB");
    fam.verify(&user, &resent).await.ok();

    let mailed = w.user().await;
    fam.set(&mailed, json!({"address": "ab-mail@example.com"}))
        .await
        .ok();
    let code = mailed_code(&w.mail_to("ab-mail@example.com", 1).await, "code", 10, "AB");
    fam.verify(&mailed, &code).await.ok();

    let otp = fam
        .add_otp(
            &user,
            json!({"address": "xyz@example.com", "returnCode": {}}),
        )
        .await
        .ok();
    assert_code_shape(&otp.expect_code(), 4, "xyz");
    let otp_id = fam
        .add_otp(&user, json!({"address": "xyz-mail@example.com"}))
        .await
        .ok()
        .otp_id();
    let code = mailed_code(
        &w.mail_to("xyz-mail@example.com", 1).await,
        "code",
        4,
        "xyz",
    );
    fam.verify_otp(&user, &otp_id, &code).await.ok();
}

/// Code characters that mean something in a URL (`&=?#+/%`) are percent-encoded in the
/// mailed link (given and default template), never HTML-escaped: the link's parameter decodes
/// to the code, which verifies; the HTML part links to the same URL.
async fn link_values_are_percent_encoded_not_html_escaped(f: Family) {
    let alphabet = "&=?#+/%";
    let w = World::start_with(&[
        ("EMAIL_CODE_LENGTH", "12"),
        ("EMAIL_CODE_ALPHABET", alphabet),
    ])
    .await;
    let fam = w.fam(f);
    for (name, template, param) in [
        ("given", "https://x.example/cb?c={{Code}}&u={{UserID}}", "c"),
        ("default", "", "code"),
    ] {
        let user = w.user().await;
        let address = format!("{name}@encode.example.com");
        fam.set(
            &user,
            json!({"address": address, "sendCode": {"urlTemplate": template}}),
        )
        .await
        .ok();
        let mail = w.mail_to(&address, 1).await;
        let link = mail.extract_link().expect("a link in the text part");
        let code = mail
            .link_param(param)
            .unwrap_or_else(|| panic!("{name}: no {param} in {link}"));
        assert_code_shape(&code, 12, alphabet);
        let raw_value = link
            .split(&format!("{param}="))
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap();
        assert!(
            !raw_value.contains(['#', '+', '=', '?', '/']) && raw_value.len() > 12,
            "{name}: the code is not percent-encoded in {link}"
        );
        assert!(
            !link.contains("&amp;") && !link.contains("&#"),
            "{name}: HTML-escaped text link {link}"
        );
        assert_eq!(
            mail.extract_html_link().as_deref(),
            Some(link.as_str()),
            "{name}: the HTML part links elsewhere (HTML-escaped values?)"
        );
        assert!(
            mail.text_body().contains(&code),
            "{name}: the code is not shown in the text part"
        );
        if template.contains("UserID") {
            assert_eq!(mail.link_param("u").as_deref(), Some(user.as_str()));
        }
        fam.verify(&user, &code).await.ok();
        assert_eq!(w.contact(&user).await["isVerified"], true, "{name}");
    }
}

both_families!(
    too_many_wrong_codes_void_the_code,
    resend_cooldown_limits_mails_to_the_same_recipient,
    resend_is_allowed_again_after_the_cooldown,
    code_length_and_alphabet_are_configurable,
    link_values_are_percent_encoded_not_html_escaped,
);
