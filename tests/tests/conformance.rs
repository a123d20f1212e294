//! ZITADEL's own integration cases for the v3alpha contact email RPCs (SetContactEmail,
//! VerifyContactEmail, ResendContactEmailCode), as tables run against both route families.
//! Case names follow ZITADEL's (`email patch, no context`, ...). Where ZITADEL's request
//! names an organization, so does ours (`organization.orgId`).

use serde_json::json;
use tests::both_families;
use tests::scenario::*;

/// A client of the world whose token has no permission on `user`: a self-service token of
/// another user (ZITADEL's "no permission" case uses a user without IAM rights).
async fn no_permission(w: &World, f: Family) -> Fam {
    let someone = w.user().await;
    let api = w
        .token_client(&["--instance", &w.instance_id(), "--subject", &someone])
        .await;
    w.fam(f).with_api(api)
}

async fn set_contact_email(f: Family) {
    let w = World::start().await;
    let org = Scope::org_id(w.org_id());
    let fam = w.fam(f).scoped(org.clone());
    let user = w.user().await;
    let before = fam
        .set(
            &user,
            json!({"address": "before@conf.example.com", "isVerified": true}),
        )
        .await
        .ok();
    let new = json!({"address": "new@conf.example.com", "returnCode": {}});

    // email patch, no context
    fam.with_api(w.api.without_token())
        .set(&user, new.clone())
        .await
        .err_code(401, 16);
    // email patch, no permission
    no_permission(&w, f)
        .await
        .scoped(org.clone())
        .set(&user, new.clone())
        .await
        .err(403, 7, ids::PERMISSION_DENIED);
    // email patch, not found
    fam.set("123456789012345678", new.clone())
        .await
        .err(404, 5, ids::USER_NOT_FOUND);
    // email patch, not found, org
    fam.scoped(Scope::org_id("not-existing"))
        .set(&user, new.clone())
        .await
        .err(404, 5, ids::USER_NOT_FOUND);
    // email patch, empty
    fam.set(&user, json!({"address": ""}))
        .await
        .err_code(400, 3);
    // email patch, no change: success with the details of the last change
    let same = fam
        .set(&user, json!({"address": "before@conf.example.com"}))
        .await
        .ok();
    same.expect_no_code();
    assert_eq!(same.changed(), before.changed(), "no change: details");
    assert_eq!(same.sequence(), before.sequence(), "no change: details");
    assert_eq!(same.owner(), w.org_id());
    w.assert_mails_stay(0).await;
    // email patch, no org
    w.fam(f)
        .set(&user, json!({"address": "noorg@conf.example.com"}))
        .await
        .ok()
        .expect_no_code();
    w.mail_to("noorg@conf.example.com", 1).await;
    // email patch, return, ok
    let code = fam
        .set(
            &user,
            json!({"address": "return@conf.example.com", "returnCode": {}}),
        )
        .await
        .ok()
        .expect_code();
    assert!(!code.is_empty());
    // email patch, return, invalid template
    fam.set(
        &user,
        json!({"address": "invalid@conf.example.com", "sendCode": {"urlTemplate": "{{"}}),
    )
    .await
    .err(400, 3, ids::TEMPLATE_SYNTAX);
    assert_eq!(w.contact(&user).await["address"], "return@conf.example.com");
    // email patch, verified, ok
    fam.set(
        &user,
        json!({"address": "verified@conf.example.com", "isVerified": true}),
    )
    .await
    .ok()
    .expect_no_code();
    assert_eq!(w.contact(&user).await["isVerified"], true);
    // email patch, template, ok
    fam.set(
        &user,
        json!({"address": "template@conf.example.com", "sendCode": {"urlTemplate": "https://example.com/email/verify?userID={{.UserID}}&code={{.Code}}&orgID={{.OrgID}}"}}),
    )
    .await
    .ok()
    .expect_no_code();
    let mail = w.mail_to("template@conf.example.com", 1).await;
    assert!(
        mail.extract_link()
            .unwrap()
            .starts_with("https://example.com/email/verify?")
    );
    assert_eq!(mail.link_param("userID").as_deref(), Some(user.as_str()));
    assert_eq!(mail.link_param("orgID"), Some(w.org_id()));
    contact_code(&mail);
    // email patch, sent, ok
    fam.set(
        &user,
        json!({"address": "sent@conf.example.com", "sendCode": {}}),
    )
    .await
    .ok()
    .expect_no_code();
    let code = contact_code(&w.mail_to("sent@conf.example.com", 1).await);
    fam.verify(&user, &code).await.ok();
    w.assert_mails_stay(3).await;
}

async fn verify_contact_email(f: Family) {
    let w = World::start().await;
    let org = Scope::org_id(w.org_id());
    let fam = w.fam(f).scoped(org.clone());
    let (user, code) = w.user_with_pending("verify@conf.example.com").await;

    // email verify, no context
    fam.with_api(w.api.without_token())
        .verify(&user, &code)
        .await
        .err_code(401, 16);
    // email verify, no permission
    no_permission(&w, f)
        .await
        .scoped(org.clone())
        .verify(&user, &code)
        .await
        .err(403, 7, ids::PERMISSION_DENIED);
    // email verify, not found
    fam.verify("123456789012345678", &code)
        .await
        .err(404, 5, ids::USER_NOT_FOUND_VERIFY);
    // email verify, not found, org
    fam.scoped(Scope::org_id("not-existing"))
        .verify(&user, &code)
        .await
        .err(404, 5, ids::USER_NOT_FOUND_VERIFY);
    // email verify, wrong code
    fam.verify(&user, &wrong_code(&code))
        .await
        .err(400, 3, ids::CODE_WRONG);
    assert_eq!(w.contact(&user).await["isVerified"], false);
    // email verify, no org
    w.fam(f).verify(&user, &code).await.ok();
    assert_eq!(w.contact(&user).await["isVerified"], true);
    // email verify, ok (with org)
    let (other, code) = w.user_with_pending("verify2@conf.example.com").await;
    let out = fam.verify(&other, &code).await.ok();
    assert_eq!(out.owner(), w.org_id());
    assert_eq!(w.contact(&other).await["isVerified"], true);
}

async fn resend_contact_email_code(f: Family) {
    let w = World::start().await;
    let org = Scope::org_id(w.org_id());
    let fam = w.fam(f).scoped(org.clone());
    let address = "resend@conf.example.com";
    let (user, _) = w.user_with_pending(address).await;
    let ret = json!({"returnCode": {}});

    // email resend, no context
    fam.with_api(w.api.without_token())
        .resend(&user, ret.clone())
        .await
        .err_code(401, 16);
    // email resend, no permission
    no_permission(&w, f)
        .await
        .scoped(org.clone())
        .resend(&user, ret.clone())
        .await
        .err(403, 7, ids::PERMISSION_DENIED);
    // email resend, not found
    fam.resend("123456789012345678", ret.clone())
        .await
        .err(404, 5, ids::USER_NOT_FOUND_RESEND);
    // email resend, not found, org
    fam.scoped(Scope::org_id("not-existing"))
        .resend(&user, ret.clone())
        .await
        .err(404, 5, ids::USER_NOT_FOUND_RESEND);
    // email resend, no code
    let verified = w.user().await;
    fam.set(
        &verified,
        json!({"address": "nocode@conf.example.com", "isVerified": true}),
    )
    .await
    .ok();
    fam.resend(&verified, ret.clone())
        .await
        .err(400, 9, ids::NO_PENDING_CODE);
    w.assert_mails_stay(0).await;
    // email resend, no org
    w.fam(f)
        .resend(&user, json!({}))
        .await
        .ok()
        .expect_no_code();
    contact_code(&w.mail_to(address, 1).await);
    // email resend, return, ok
    let code = fam.resend(&user, ret.clone()).await.ok().expect_code();
    assert_code_shape(&code, 6, CONTACT_ALPHABET);
    // email resend, sent, ok
    fam.resend(
        &user,
        json!({"sendCode": {"urlTemplate": "https://example.com/email/verify?userID={{.UserID}}&code={{.Code}}&orgID={{.OrgID}}"}}),
    )
    .await
    .ok()
    .expect_no_code();
    let mail = w.mail_to(address, 2).await;
    assert!(
        mail.extract_link()
            .unwrap()
            .starts_with("https://example.com/email/verify?")
    );
    let code = contact_code(&mail);
    fam.verify(&user, &code).await.ok();
    w.assert_mails_stay(2).await;
}

both_families!(
    set_contact_email,
    verify_contact_email,
    resend_contact_email_code
);
