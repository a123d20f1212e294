//! The mails themselves (SPEC 6, SPEC 7 `MAIL_DIR`/`MAIL_TEMPLATES_DIR`): without `SMTP_URL`
//! they are `.eml` files whose code verifies; operators' templates replace the built-in ones,
//! and a template that cannot render stops the worker at start.

use std::time::Duration;

use serde_json::json;
use tests::{ParsedMail, TestEnv, eventually, mail::query_param};

#[tokio::test]
async fn without_smtp_mails_are_eml_files_whose_code_verifies() {
    let env = TestEnv::builder().file_mail().start().await;
    let api = env.api();
    let user = api
        .post("/v3alpha/users", json!({}))
        .await
        .expect_status(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    api.put(
        &format!("/v3alpha/users/{user}/email"),
        json!({"email": {"address": "files@example.com",
                         "sendCode": {"urlTemplate": "https://x.example/v?c={{.Code}}"}}}),
    )
    .await
    .expect_status(200);
    let env_ref = &env;
    let file = eventually(
        "an .eml file in MAIL_DIR",
        Duration::from_secs(20),
        || async move { env_ref.mail_files().into_iter().next() },
    )
    .await;
    let mail = ParsedMail::from_file(&file);
    assert_eq!(mail.to, ["files@example.com"]);
    let text = mail.text.as_deref().expect("a text part");
    let link = tests::mail::first_url(text).expect("a link in the text part");
    let code = query_param(&link, "c").expect("the code in the link");
    assert!(
        text.contains(&format!("    {code}")),
        "the code stands alone: {text}"
    );
    assert!(mail.html.as_deref().expect("an HTML part").contains(&code));
    assert_eq!(env.sink.count(), 0, "nothing went over SMTP");
    api.post(
        &format!("/v3alpha/users/{user}/email/verify"),
        json!({"verificationCode": code}),
    )
    .await
    .expect_status(200);
}

#[tokio::test]
async fn templates_from_mail_templates_dir_replace_the_built_in_ones() {
    let templates = std::env::temp_dir().join(format!("ce-templates-{}", rand_suffix()));
    std::fs::create_dir_all(&templates).expect("templates dir");
    std::fs::write(
        templates.join("contact_email.subject.hbs"),
        "Your code {{code}}",
    )
    .expect("write subject");
    std::fs::write(
        templates.join("contact_email.txt.hbs"),
        "Custom text for {{address}}: {{code}} at {{link}}\n",
    )
    .expect("write text");
    let env = TestEnv::builder()
        .env("MAIL_TEMPLATES_DIR", templates.display().to_string())
        .start()
        .await;
    let api = env.api();
    let created = api
        .post(
            "/v3alpha/users",
            json!({"email": {"address": "tpl@example.com"}}),
        )
        .await
        .expect_status(201);
    assert!(created.json.get("verificationCode").is_none());
    let mail = env
        .sink
        .wait_for(1, Duration::from_secs(20))
        .await
        .remove(0);
    let code = mail.link_param("code").expect("code in the default link");
    assert_eq!(mail.subject(), format!("Your code {code}"));
    assert!(
        mail.text_body()
            .starts_with("Custom text for tpl@example.com: ")
    );
    // Parts without an override keep the built-in template.
    assert!(
        mail.html_body()
            .contains(&format!("<strong>{code}</strong>"))
    );

    // A template with an unknown variable stops the worker at start, naming the problem.
    std::fs::write(templates.join("otp_email.txt.hbs"), "{{nope}}").expect("write bad");
    let out = env.run_worker(&["run"]).await;
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("otp_email.txt.hbs"), "{}", out.stderr);
    let _ = std::fs::remove_dir_all(&templates);
}

fn rand_suffix() -> u64 {
    use rand::Rng;
    rand::rng().random()
}
