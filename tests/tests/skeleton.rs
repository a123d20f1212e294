//! The walking skeleton as a client sees it: create a user, set the contact email, get the
//! mail over real SMTP, verify with the code from the mail.

use std::time::Duration;

use serde_json::json;
use tests::TestEnv;

#[tokio::test]
async fn a_mailed_code_verifies_the_contact_email() {
    let env = TestEnv::start().await;
    let api = env.api();
    let created = api
        .post("/v3alpha/users", json!({"username": "mini"}))
        .await
        .expect_status(201);
    let user = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["details"]["sequence"], "1");

    let set = api
        .put(
            &format!("/v3alpha/users/{user}/email"),
            json!({"email": {"address": "mini@mouse.com", "sendCode": {"urlTemplate": "https://login.example.com/verify?u={{.UserID}}&c={{.Code}}"}}}),
        )
        .await
        .expect_status(200);
    assert_eq!(set["details"]["sequence"], "2");
    assert!(set.json.get("verificationCode").is_none());

    let mails = env.sink.wait_for(1, Duration::from_secs(20)).await;
    let mail = &mails[0];
    assert_eq!(mail.to(), ["mini@mouse.com"]);
    let code = mail.link_param("c").expect("code in the link");
    assert_eq!(mail.link_param("u").as_deref(), Some(user.as_str()));
    assert!(mail.text_body().contains(&code));
    assert!(mail.html_body().contains(&code));

    let verified = api
        .post(
            &format!("/v3alpha/users/{user}/email/verify"),
            json!({"verificationCode": code}),
        )
        .await
        .expect_status(200);
    assert_eq!(verified["details"]["sequence"], "3");
    let got = api
        .get(&format!("/v3alpha/users/{user}"))
        .await
        .expect_status(200);
    assert_eq!(got["user"]["contact"]["email"]["isVerified"], true);
}
