//! Authentication, permissions and tenancy (SPEC 2): 401 before anything else, 403
//! `AUTHZ-HKJD33` after validation and lookup, organization-limited and self-service tokens,
//! and the `instance` / `organization` request fields (404 with the call's user-not-found id
//! when the user is elsewhere; never 403 across instances). Run against both route families.

use serde_json::json;
use tests::scenario::*;
use tests::{Api, Body, Method, both_families};

/// Every operation succeeds in turn on `user` (a full set / resend / verify / add / resend /
/// verify / remove cycle) through `fam`. `tag` keeps addresses apart.
async fn full_cycle(fam: &Fam, user: &str, tag: &str) {
    let code = fam
        .set(
            user,
            json!({"address": format!("{tag}@cycle.example.com"), "returnCode": {}}),
        )
        .await
        .ok()
        .expect_code();
    let code = fam
        .resend(user, json!({"returnCode": {}}))
        .await
        .ok()
        .code()
        .unwrap_or(code);
    fam.verify(user, &code).await.ok();
    let otp = fam
        .add_otp(
            user,
            json!({"address": format!("{tag}-otp@cycle.example.com"), "returnCode": {}}),
        )
        .await
        .ok();
    let otp_id = otp.otp_id();
    let code = fam
        .resend_otp(user, &otp_id, json!({"returnCode": {}}))
        .await
        .ok()
        .expect_code();
    fam.verify_otp(user, &otp_id, &code).await.ok();
    fam.remove_otp(user, &otp_id).await.ok();
}

/// Every operation on `user` (with `otp`) through `fam` is 404 with the call's id.
async fn all_not_found(fam: &Fam, user: &str, otp: &str, what: &str) {
    for op in Op::ALL {
        let out = fam.call(op, user, otp, Fam::sample_input(op)).await;
        assert_eq!(out.status(), 404, "{what}: {out:?}");
        assert_error(&out.resp, 404, 5, Some(op.user_not_found_id()));
    }
}

/// Every operation on `user` (with `otp`) through `fam` is 403 `AUTHZ-HKJD33`.
async fn all_denied(fam: &Fam, user: &str, otp: &str, what: &str) {
    for op in Op::ALL {
        let out = fam.call(op, user, otp, Fam::sample_input(op)).await;
        assert_eq!(out.status(), 403, "{what}: {out:?}");
        assert_error(&out.resp, 403, 7, Some(ids::PERMISSION_DENIED));
    }
}

/// A user of the world with a pending contact code and a pending OTP Email; returns
/// (user, otpEmailId).
async fn user_with_otp(w: &World, tag: &str) -> (String, String) {
    let (user, _) = w
        .user_with_pending(&format!("{tag}@tenancy.example.com"))
        .await;
    let otp = w
        .fam(Family::A)
        .add_otp(
            &user,
            json!({"address": format!("{tag}-otp@tenancy.example.com"), "returnCode": {}}),
        )
        .await
        .ok()
        .otp_id();
    (user, otp)
}

/// No token, an unknown token or a malformed `Authorization` header is 401 code 16 on every
/// route of both families and on the supporting calls, even when the body is invalid or the
/// user unknown; nothing changes.
/// Clients without a valid token: no header, unknown tokens, malformed `Authorization`.
/// Fresh clients (own connection pools) each time they are made.
fn anonymous_clients(w: &World) -> Vec<(&'static str, Api)> {
    let anonymous = Api::new(w.env.api_url(), None);
    vec![
        ("no header", anonymous.clone()),
        ("unknown token", anonymous.with_token("ce_not-a-real-token")),
        (
            "token with a wrong last character",
            anonymous.with_token(format!("{}x", w.env.token())),
        ),
        (
            "basic scheme",
            anonymous.with_header("Authorization", "Basic YTpi"),
        ),
        (
            "empty bearer",
            anonymous.with_header("Authorization", "Bearer "),
        ),
        (
            "token without scheme",
            anonymous.with_header("Authorization", w.env.token()),
        ),
    ]
}

/// No token, an unknown token or a malformed `Authorization` header is 401 code 16 on every
/// route of both families and on the supporting calls, even when the body is malformed, not
/// JSON or over 64 KiB, or the user unknown; nothing changes.
#[tokio::test]
async fn missing_or_unknown_token_is_401_before_anything_else() {
    let w = World::start().await;
    let (user, otp) = user_with_otp(&w, "auth").await;
    let seq = w.seq(&user).await;
    let bodies: Vec<(&str, Option<Body>)> = vec![
        (
            "malformed JSON",
            Some(raw(b"{\"email\": ", Some("application/json"))),
        ),
        (
            "wrong content type",
            Some(raw(b"hello", Some("text/plain"))),
        ),
        (
            "oversized",
            Some(raw(vec![b' '; 70 * 1024], Some("application/json"))),
        ),
        ("valid", None),
    ];
    // Shared clients (keep-alive) for small bodies; the oversized body goes on a new
    // connection each time, see `connection_is_usable_after_an_early_401_with_an_unread_body`.
    let shared = anonymous_clients(&w);
    for family in [Family::A, Family::B] {
        for op in Op::ALL {
            for target in [user.as_str(), "123456789012345678"] {
                for (what, body) in &bodies {
                    for (idx, (who, api)) in shared.iter().enumerate() {
                        let fam = Fam::new(api.clone(), family);
                        let (method, path) = fam.route(op, target, &otp);
                        let body = body.clone().or_else(|| {
                            fam.body(op, Fam::sample_input(op)).map(|b| {
                                raw(serde_json::to_vec(&b).unwrap(), Some("application/json"))
                            })
                        });
                        let resp = if *what == "oversized" {
                            send_anonymous(&w, idx, method, &path, body).await
                        } else {
                            api.send(method, &path, body).await
                        };
                        assert_request_id(&resp);
                        assert_eq!(
                            resp.status, 401,
                            "{who}, {family:?} {op:?}, {what}: {resp:?}"
                        );
                        assert_error(&resp, 401, 16, None);
                    }
                }
            }
        }
    }
    for (_, api) in anonymous_clients(&w) {
        for (method, path) in [
            (Method::POST, "/v3alpha/users".to_string()),
            (Method::GET, format!("/v3alpha/users/{user}")),
            (Method::DELETE, format!("/v3alpha/users/{user}")),
            (Method::GET, "/v3alpha/users/123456789012345678".to_string()),
        ] {
            let body = (method == Method::POST).then(|| raw(b"{", Some("application/json")));
            let resp = api.send(method.clone(), &path, body).await;
            assert_request_id(&resp);
            assert_error(&resp, 401, 16, None);
        }
    }
    assert_eq!(w.seq(&user).await, seq);
    w.assert_mails_stay(0).await;
}

/// After a 401 that did not read a large request body, the same keep-alive connection must
/// still answer the next request (or the 401 must announce `Connection: close`): a client
/// must never lose its next request.
#[tokio::test]
async fn connection_is_usable_after_an_early_401_with_an_unread_body() {
    let w = World::start().await;
    let anonymous = Api::new(w.env.api_url(), None);
    for i in 0..20 {
        let resp = anonymous
            .send(
                Method::PUT,
                "/v3alpha/users/1/email",
                Some(raw(vec![b' '; 70 * 1024], Some("application/json"))),
            )
            .await;
        assert_error(&resp, 401, 16, None);
        let closes = resp
            .header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"));
        let next = anonymous
            .try_send(Method::GET, &anonymous.url("/healthz"), None)
            .await;
        assert!(
            closes || next.as_ref().is_ok_and(|r| r.status == 200),
            "round {i}: the request after an early 401 got no answer ({next:?}), \
             and the 401 did not say `Connection: close`"
        );
    }
}

/// Sends with a fresh copy of the `idx`-th anonymous client. A transport error (the
/// early-401 connection reset that `connection_is_usable_after_an_early_401_with_an_unread_body`
/// tests on its own) is retried twice on new connections, so the table checks the status.
async fn send_anonymous(
    w: &World,
    idx: usize,
    method: Method,
    path: &str,
    body: Option<Body>,
) -> tests::Resp {
    let mut last = None;
    for _ in 0..3 {
        let (_, api) = anonymous_clients(w).swap_remove(idx);
        match api.try_send(method.clone(), path, body.clone()).await {
            Ok(resp) => return resp,
            Err(e) => last = Some(e),
        }
    }
    panic!("{method} {path}: no HTTP answer in 3 tries: {last:?}");
}

fn raw(bytes: impl Into<Vec<u8>>, content_type: Option<&str>) -> Body {
    Body {
        bytes: bytes.into(),
        content_type: content_type.map(str::to_string),
    }
}

/// A `user.read` token may GET but not change: every change is 403 `AUTHZ-HKJD33` (after
/// validation: an invalid body is 400; after lookup: an unknown user is 404); nothing changes.
async fn read_only_token_can_get_but_not_change(f: Family) {
    let w = World::start().await;
    let reader = w
        .token_client(&["--instance", &w.instance_id(), "--permission", "user.read"])
        .await;
    let fam = w.fam(f).with_api(reader.clone());
    let (user, otp) = user_with_otp(&w, "ro").await;
    let seq = w.seq(&user).await;

    let got = get_user(&reader, &user).await;
    assert_eq!(got["id"], json!(user));
    all_denied(&fam, &user, &otp, "user.read token").await;
    all_not_found(
        &fam,
        "123456789012345678",
        &otp,
        "user.read token, unknown user",
    )
    .await;
    fam.set(&user, json!({"address": "not an address"}))
        .await
        .err_code(400, 3);
    let created = reader.post("/v3alpha/users", json!({})).await;
    assert_error(&created, 403, 7, Some(ids::PERMISSION_DENIED));
    let deleted = reader.delete(&format!("/v3alpha/users/{user}")).await;
    assert_error(&deleted, 403, 7, Some(ids::PERMISSION_DENIED));

    assert_eq!(w.seq(&user).await, seq);
    w.assert_mails_stay(0).await;
    // The admin token still can.
    full_cycle(&w.fam(f), &user, "admin").await;
}

/// A token limited to organization O (`--org O --permission user.write`) gets 403 on users
/// of another organization of the same instance, and works on O's users; users it creates
/// without an organization land in O.
async fn org_limited_token_only_touches_its_org(f: Family) {
    let mut w = World::start().await;
    let second = w.env.run_bootstrap(&["--org-name", "Second Org"]).await;
    assert_eq!(second.instance_id, w.instance_id());
    assert_ne!(second.org_id, w.org_id());
    let limited = w
        .token_client(&[
            "--instance",
            &w.instance_id(),
            "--org",
            &w.org_id(),
            "--permission",
            "user.write",
        ])
        .await;
    let fam = w.fam(f).with_api(limited.clone());

    let theirs = create_user(&w.api, json!({"organization": {"orgId": second.org_id}})).await;
    assert_eq!(
        w.get_user(&theirs).await["organizationId"],
        json!(second.org_id)
    );
    let their_otp = w
        .fam(Family::A)
        .add_otp(
            &theirs,
            json!({"address": "theirs@example.com", "returnCode": {}}),
        )
        .await
        .ok()
        .otp_id();
    let seq = w.seq(&theirs).await;
    all_denied(&fam, &theirs, &their_otp, "org-limited token, other org").await;
    let got = limited.get(&format!("/v3alpha/users/{theirs}")).await;
    assert_error(&got, 403, 7, Some(ids::PERMISSION_DENIED));
    let created = limited
        .post(
            "/v3alpha/users",
            json!({"organization": {"orgId": second.org_id}}),
        )
        .await;
    assert_error(&created, 403, 7, Some(ids::PERMISSION_DENIED));
    assert_eq!(w.seq(&theirs).await, seq);

    let mine = create_user(&limited, json!({})).await;
    assert_eq!(w.get_user(&mine).await["organizationId"], json!(w.org_id()));
    full_cycle(&fam, &mine, "mine").await;
    let ours = w.user().await;
    full_cycle(&fam, &ours, "ours").await;
    w.assert_mails_stay(0).await;
}

/// A self-service token (`--subject U`, no permission) may read and change U's own email and
/// authenticators in the ways that prove the mailbox (mailed codes), not with `isVerified`
/// or `returnCode`; it gets 403 on any other user, and may not create or delete users.
async fn self_service_token_only_touches_its_subject(f: Family) {
    let w = World::start().await;
    let me = w.user().await;
    let (other, other_otp) = user_with_otp(&w, "other").await;
    let own = w
        .token_client(&["--instance", &w.instance_id(), "--subject", &me])
        .await;
    let fam = w.fam(f).with_api(own.clone());

    assert_eq!(get_user(&own, &me).await["id"], json!(me));
    // Self-service proves the mailbox: every code goes by mail.
    fam.set(&me, json!({"address": "self-mail@example.com"}))
        .await
        .ok();
    contact_code(&w.mail_to("self-mail@example.com", 1).await);
    fam.resend(&me, json!({"sendCode": {}})).await.ok();
    let code = contact_code(&w.mail_to("self-mail@example.com", 2).await);
    fam.verify(&me, &code).await.ok();
    assert_eq!(w.contact(&me).await["isVerified"], true);
    let otp_id = fam
        .add_otp(&me, json!({"address": "self-otp@example.com"}))
        .await
        .ok()
        .otp_id();
    otp_code(&w.mail_to("self-otp@example.com", 1).await);
    fam.resend_otp(&me, &otp_id, json!({})).await.ok();
    let code = otp_code(&w.mail_to("self-otp@example.com", 2).await);
    fam.verify_otp(&me, &otp_id, &code).await.ok();
    fam.remove_otp(&me, &otp_id).await.ok();
    // isVerified and returnCode skip the proof: user.write needed even on oneself.
    fam.set(
        &me,
        json!({"address": "claimed@example.com", "isVerified": true}),
    )
    .await
    .err(403, 7, ids::PERMISSION_DENIED);
    fam.set(
        &me,
        json!({"address": "claimed@example.com", "returnCode": {}}),
    )
    .await
    .err(403, 7, ids::PERMISSION_DENIED);

    let seq = w.seq(&other).await;
    all_denied(&fam, &other, &other_otp, "self-service token, other user").await;
    let got = own.get(&format!("/v3alpha/users/{other}")).await;
    assert_error(&got, 403, 7, Some(ids::PERMISSION_DENIED));
    let created = own.post("/v3alpha/users", json!({})).await;
    assert_error(&created, 403, 7, Some(ids::PERMISSION_DENIED));
    for target in [&other, &me] {
        let deleted = own.delete(&format!("/v3alpha/users/{target}")).await;
        assert_error(&deleted, 403, 7, Some(ids::PERMISSION_DENIED));
    }
    assert_eq!(w.seq(&other).await, seq);
    w.assert_mails_stay(4).await;
}

/// `organization` (`orgId` or `orgDomain`, in the body or as query parameters): the user's
/// own organization works; another organization, or one that does not exist, is 404 with
/// the call's user-not-found id, and changes nothing.
async fn organization_field_scopes_the_lookup(f: Family) {
    let mut w = World::start().await;
    let second = w.env.run_bootstrap(&["--org-name", "Second Org"]).await;
    assert_eq!(second.org_domain, "second-org.localhost");
    let first_domain = w.env.bootstrap().org_domain.clone();
    assert_eq!(first_domain, "default.localhost");
    let admin = w.fam(f);
    let (user, otp) = user_with_otp(&w, "scoped").await;
    let seq = w.seq(&user).await;

    let wrong_scopes = vec![
        ("other org id", Scope::org_id(&second.org_id)),
        ("other org domain", Scope::org_domain(&second.org_domain)),
        ("unknown org id", Scope::org_id("123456789012345678")),
        ("unknown org domain", Scope::org_domain("nope.localhost")),
        ("junk org id", Scope::org_id("not-an-org")),
    ];
    let mut fams = vec![admin.clone()];
    if f == Family::A {
        fams.push(admin.scope_via_query());
    }
    for fam in &fams {
        for (what, scope) in &wrong_scopes {
            all_not_found(&fam.scoped(scope.clone()), &user, &otp, what).await;
        }
    }
    assert_eq!(w.seq(&user).await, seq);

    // Family B resend also takes `organization` in its body (SPEC 3.3).
    if f == Family::B {
        let (_, path) = admin.route(Op::ResendEmail, &user, "");
        let resp = w
            .api
            .post(
                &path,
                json!({"organization": {"orgId": second.org_id}, "returnCode": {}}),
            )
            .await;
        assert_error(&resp, 404, 5, Some(ids::USER_NOT_FOUND_RESEND));
        let resp = w
            .api
            .post(
                &path,
                json!({"organization": {"orgDomain": first_domain}, "returnCode": {}}),
            )
            .await;
        assert_eq!(resp.status, 200, "{resp:?}");
        assert!(resp["verificationCode"].is_string(), "{resp:?}");
    }
    for (i, fam) in fams.iter().enumerate() {
        full_cycle(
            &fam.scoped(Scope::org_id(w.org_id())),
            &user,
            &format!("id{i}"),
        )
        .await;
        full_cycle(
            &fam.scoped(Scope::org_domain(&first_domain)),
            &user,
            &format!("domain{i}"),
        )
        .await;
    }
    // A user of the second organization, addressed by its organization.
    let theirs = create_user(&w.api, json!({"organization": {"orgId": second.org_id}})).await;
    full_cycle(
        &admin.scoped(Scope::org_domain(&second.org_domain)),
        &theirs,
        "theirs",
    )
    .await;
    all_not_found(
        &admin.scoped(Scope::org_id(w.org_id())),
        &theirs,
        "1",
        "user of the second org scoped to the first",
    )
    .await;
    w.assert_mails_stay(0).await;
}

/// A user of another instance is "not found" (404 with the call's id, never 403), whether
/// the token's instance is used or the other instance is named in `instance`; `instance` by
/// id or domain of the token's own instance works; an unknown instance is 404.
async fn other_instances_are_not_found(f: Family) {
    let mut w = World::start().await;
    let other = w.env.run_bootstrap(&["--domain", "other.example"]).await;
    assert_ne!(other.instance_id, w.instance_id());
    assert_eq!(other.org_domain, "default.other.example");
    let other_api = w.api.with_token(&other.token);
    let foreign = create_user(&other_api, json!({})).await;
    let foreign_otp = Fam::new(other_api.clone(), Family::A)
        .add_otp(
            &foreign,
            json!({"address": "foreign@example.com", "returnCode": {}}),
        )
        .await
        .ok()
        .otp_id();
    let foreign_seq = get_user(&other_api, &foreign).await["details"]["sequence"].clone();
    let (user, otp) = user_with_otp(&w, "home").await;
    let seq = w.seq(&user).await;

    let admin = w.fam(f);
    all_not_found(&admin, &foreign, &foreign_otp, "user of another instance").await;
    for scope in [
        Scope::instance_id(&other.instance_id),
        Scope::instance_domain("other.example"),
    ] {
        all_not_found(
            &admin.scoped(scope.clone()),
            &foreign,
            &foreign_otp,
            "other instance named",
        )
        .await;
        all_not_found(
            &admin.scoped(scope),
            &user,
            &otp,
            "own user, other instance named",
        )
        .await;
    }
    for scope in [
        Scope::instance_id("123456789012345678"),
        Scope::instance_domain("unknown.example"),
    ] {
        all_not_found(&admin.scoped(scope), &user, &otp, "unknown instance").await;
    }
    let resp = w.api.get(&format!("/v3alpha/users/{foreign}")).await;
    assert_error(&resp, 404, 5, Some(ids::USER_NOT_FOUND));
    let other_fam = Fam::new(other_api.clone(), f);
    all_not_found(
        &other_fam,
        &user,
        &otp,
        "the other instance's token on our user",
    )
    .await;
    assert_eq!(w.seq(&user).await, seq);
    assert_eq!(
        get_user(&other_api, &foreign).await["details"]["sequence"],
        foreign_seq
    );

    full_cycle(
        &admin.scoped(Scope::instance_id(w.instance_id())),
        &user,
        "by-id",
    )
    .await;
    full_cycle(
        &admin.scoped(Scope::instance_domain("localhost")),
        &user,
        "by-domain",
    )
    .await;
    full_cycle(&other_fam, &foreign, "foreign").await;
    w.assert_mails_stay(0).await;
}

/// The order of checks of SPEC 2 on one request that is wrong in every way: 401 first, then
/// 400, then 404, then 403.
async fn order_of_checks(f: Family) {
    let w = World::start().await;
    let reader = w
        .token_client(&["--instance", &w.instance_id(), "--permission", "user.read"])
        .await;
    let user = w.user().await;
    let bad = json!({"address": "bad address", "returnCode": {}});
    let good = json!({"address": "good@example.com", "returnCode": {}});
    let unknown = "123456789012345678";
    let anon = w.fam(f).with_api(w.api.without_token());
    let read = w.fam(f).with_api(reader);

    anon.set(unknown, bad.clone()).await.err_code(401, 16);
    read.set(unknown, bad.clone()).await.err_code(400, 3);
    read.set(unknown, good.clone())
        .await
        .err(404, 5, ids::USER_NOT_FOUND);
    read.set(&user, good.clone())
        .await
        .err(403, 7, ids::PERMISSION_DENIED);
    let read_scoped = read.scoped(Scope::org_id("123456789012345678"));
    read_scoped
        .set(&user, good)
        .await
        .err(404, 5, ids::USER_NOT_FOUND);
    assert_eq!(w.seq(&user).await, "1");
    assert!(w.get_user(&user).await.get("contact").is_none());
}

both_families!(
    read_only_token_can_get_but_not_change,
    org_limited_token_only_touches_its_org,
    self_service_token_only_touches_its_subject,
    organization_field_scopes_the_lookup,
    other_instances_are_not_found,
    order_of_checks,
);
