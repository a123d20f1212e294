//! The supporting calls of SPEC 3.5: create, get and delete a user, `/healthz`, `/readyz`,
//! and what every answer carries (`x-request-id`, the SPEC 3.6 error body).

use serde_json::json;
use tests::app::{spawn_app, spawn_app_from};
use tests::scenario::*;
use tests::{Method, TestEnv};

/// `POST /v3alpha/users` answers 201 with the id, family-A details (sequence 1, the org as
/// resource owner) and, for `returnCode`, the code; each email choice behaves as in set
/// contact email.
#[tokio::test]
async fn create_user_answers_201_with_id_details_and_code() {
    let (w, _app) = spawn_app().await;

    let resp = w.api.post("/v3alpha/users", json!({})).await;
    assert_request_id(&resp);
    assert_eq!(resp.status, 201, "{resp:?}");
    assert_decimal_string(&resp["id"]);
    assert_details_a(&resp["details"]);
    assert_eq!(resp["details"]["sequence"], "1");
    assert_eq!(resp["details"]["resourceOwner"], json!(w.org_id()));
    assert!(resp.json.get("verificationCode").is_none(), "{resp:?}");

    let resp = w
        .api
        .post(
            "/v3alpha/users",
            json!({"username": "mini", "email": {"address": "mini@create.example.com", "returnCode": {}}}),
        )
        .await
        .expect_status(201);
    let user = resp.str_at("/id").to_string();
    let code = resp.str_at("/verificationCode").to_string();
    assert_code_shape(&code, 6, CONTACT_ALPHABET);
    let got = w.get_user(&user).await;
    assert_eq!(got["username"], "mini");
    assert_eq!(
        got["contact"]["email"],
        json!({"address": "mini@create.example.com", "isVerified": false})
    );
    w.fam(Family::A).verify(&user, &code).await.ok();
    assert_eq!(w.contact(&user).await["isVerified"], true);

    let verified = w
        .create_user_with(
            json!({"email": {"address": "ver@create.example.com", "isVerified": true}}),
        )
        .await;
    assert_eq!(w.contact(&verified).await["isVerified"], true);

    let mailed = w
        .create_user_with(json!({"email": {"address": "mail@create.example.com"}}))
        .await;
    let mail = w.mail_to("mail@create.example.com", 1).await;
    assert_eq!(mail.link_param("userID").as_deref(), Some(mailed.as_str()));
    let code = contact_code(&mail);
    w.fam(Family::B).verify(&mailed, &code).await.ok();

    for bad in [
        json!({"email": {"address": "not an address"}}),
        json!({"email": {"address": "a@example.com", "isVerified": false}}),
        json!({"email": {"address": "a@example.com", "returnCode": {}, "isVerified": true}}),
        json!({"email": {"address": "a@example.com", "sendCode": {"urlTemplate": "{{Nope}}"}}}),
    ] {
        let resp = w.api.post("/v3alpha/users", bad.clone()).await;
        assert_eq!(resp.status, 400, "{bad}: {resp:?}");
        assert_error(&resp, 400, 3, None);
    }
    let resp = w
        .api
        .post_raw("/v3alpha/users", "{", "application/json")
        .await;
    assert_error(&resp, 400, 3, None);
    w.assert_mails_stay(1).await;
}

/// Without `organization` a user lands in the token's organization, else the instance's
/// first organization; `organization.orgId` picks another organization of the instance; an
/// unknown organization is 404.
#[tokio::test]
async fn create_user_picks_the_organization() {
    let (mut w, _app) = spawn_app().await;
    let second = w.env.run_bootstrap(&["--org-name", "Second"]).await;
    let default = w.user().await;
    assert_eq!(
        w.get_user(&default).await["organizationId"],
        json!(w.org_id())
    );

    let explicit = w
        .create_user_with(json!({"organization": {"orgId": second.org_id}}))
        .await;
    let got = w.get_user(&explicit).await;
    assert_eq!(got["organizationId"], json!(second.org_id));
    assert_eq!(got["details"]["resourceOwner"], json!(second.org_id));

    let limited = w
        .token_client(&[
            "--instance",
            &w.instance_id(),
            "--org",
            &second.org_id,
            "--permission",
            "user.write",
        ])
        .await;
    let by_limited = create_user(&limited, json!({})).await;
    assert_eq!(
        w.get_user(&by_limited).await["organizationId"],
        json!(second.org_id)
    );

    let resp = w
        .api
        .post(
            "/v3alpha/users",
            json!({"organization": {"orgId": "123456789012345678"}}),
        )
        .await;
    assert_error(&resp, 404, 5, None);
}

/// GET shows exactly the documented fields: `id`, `organizationId`, `username` when set,
/// `contact.email {address, isVerified}` when set, `otpEmail` always (possibly empty), and
/// `details`; never a code, a hash or a token.
#[tokio::test]
async fn get_user_shows_the_documented_fields_only() {
    let (w, _app) = spawn_app().await;
    let bare = w.user().await;
    let got = w.get_user(&bare).await;
    assert_eq!(got["id"], json!(bare));
    assert_eq!(got["organizationId"], json!(w.org_id()));
    assert_eq!(got["otpEmail"], json!([]));
    assert!(got.get("contact").is_none(), "{got}");
    assert!(got.get("username").is_none(), "{got}");
    assert_eq!(got["details"]["sequence"], "1");

    let resp = w
        .api
        .post(
            "/v3alpha/users",
            json!({"username": "full", "email": {"address": "full@get.example.com", "returnCode": {}}}),
        )
        .await
        .expect_status(201);
    let full = resp.str_at("/id").to_string();
    let code = resp.str_at("/verificationCode").to_string();
    let before: u64 = w.seq(&full).await.parse().unwrap();
    let otp = w
        .fam(Family::A)
        .add_otp(
            &full,
            json!({"address": "full-otp@get.example.com", "returnCode": {}}),
        )
        .await
        .ok();
    let otp_code = otp.expect_code();
    let resp = w.api.get(&format!("/v3alpha/users/{full}")).await;
    assert_request_id(&resp);
    assert_eq!(resp.status, 200);
    let user = &resp["user"];
    let mut keys: Vec<&str> = user
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "contact",
            "details",
            "id",
            "organizationId",
            "otpEmail",
            "username"
        ]
    );
    assert_eq!(
        user["contact"],
        json!({"email": {"address": "full@get.example.com", "isVerified": false}})
    );
    assert_eq!(
        user["otpEmail"],
        json!([{"otpEmailId": otp.otp_id(), "address": "full-otp@get.example.com", "isVerified": false}])
    );
    assert_eq!(user["details"]["sequence"], json!((before + 1).to_string()));
    for secret in [code.as_str(), otp_code.as_str(), w.env.token()] {
        assert!(
            !resp.text.contains(secret),
            "GET shows {secret}: {}",
            resp.text
        );
    }
    for word in ["hash", "code", "token"] {
        assert!(
            !resp.text.to_lowercase().contains(word),
            "GET mentions {word}: {}",
            resp.text
        );
    }
    let resp = w.api.get("/v3alpha/users/123456789012345678").await;
    assert_error(&resp, 404, 5, Some(ids::USER_NOT_FOUND));
}

/// DELETE answers family-A details; afterwards the user is 404 on every call (with each
/// call's id) and its unsent mail is never sent, while another user's is.
#[tokio::test]
async fn delete_user_makes_it_not_found_and_cancels_its_mail() {
    let (mut w, _app) = spawn_app_from(TestEnv::builder().without_worker()).await;
    let gone = w.user().await;
    let fam = w.fam(Family::A);
    fam.set(&gone, json!({"address": "gone@delete.example.com"}))
        .await
        .ok();
    let otp = fam
        .add_otp(&gone, json!({"address": "gone-otp@delete.example.com"}))
        .await
        .ok()
        .otp_id();
    let kept = w.user().await;
    fam.set(&kept, json!({"address": "kept@delete.example.com"}))
        .await
        .ok();
    let seq: u64 = w.seq(&gone).await.parse().unwrap();

    let resp = w.api.delete(&format!("/v3alpha/users/{gone}")).await;
    assert_request_id(&resp);
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_details_a(&resp["details"]);
    assert_eq!(resp["details"]["sequence"], json!((seq + 1).to_string()));
    assert_eq!(resp["details"]["resourceOwner"], json!(w.org_id()));

    let resp = w.api.get(&format!("/v3alpha/users/{gone}")).await;
    assert_error(&resp, 404, 5, Some(ids::USER_NOT_FOUND));
    let resp = w.api.delete(&format!("/v3alpha/users/{gone}")).await;
    assert_error(&resp, 404, 5, Some(ids::USER_NOT_FOUND));
    for family in [Family::A, Family::B] {
        let fam = w.fam(family);
        for op in Op::ALL {
            let out = fam.call(op, &gone, &otp, Fam::sample_input(op)).await;
            assert_error(&out.resp, 404, 5, Some(op.user_not_found_id()));
        }
    }

    w.env.restart_worker().await;
    w.mail_to("kept@delete.example.com", 1).await;
    w.assert_mails_stay(1).await;
}

/// `/healthz` and `/readyz` need no token; `/readyz` reports the database and the broker.
/// Every answer, unknown routes and errors included, carries `x-request-id`.
#[tokio::test]
async fn health_readiness_and_request_ids() {
    let (w, _app) = spawn_app().await;
    let anonymous = w.api.without_token();
    let health = anonymous.get("/healthz").await;
    assert_request_id(&health);
    assert_eq!(health.status, 200, "{health:?}");
    let ready = anonymous.get("/readyz").await;
    assert_request_id(&ready);
    assert_eq!(ready.status, 200, "{ready:?}");
    assert_eq!(ready.json, json!({"database": "ok", "broker": "ok"}));

    let mut seen = std::collections::HashSet::new();
    let answers = vec![
        anonymous.get("/healthz").await,
        anonymous.get("/no/such/route").await,
        w.api.get("/no/such/route").await,
        anonymous.get("/v3alpha/users/1").await,
        w.api.get("/v3alpha/users/1").await,
        w.api
            .send(Method::PATCH, "/v3alpha/users/1/email", None)
            .await,
        w.api
            .post_raw("/v3alpha/users", "{", "application/json")
            .await,
    ];
    for resp in &answers {
        assert_request_id(resp);
        assert!(
            seen.insert(resp.request_id().unwrap().to_string()),
            "request id repeated: {resp:?}"
        );
    }
    // Error answers are the SPEC 3.6 body.
    assert_error(&answers[3], 401, 16, None);
    assert_error(&answers[4], 404, 5, Some(ids::USER_NOT_FOUND));
    assert_error(&answers[6], 400, 3, None);
}
