//! Languages (SPEC 9): a user's `preferredLanguage` is taken by create user, shown by get
//! user, and the user's mails are written in it (falling back to the language alone, then
//! English), with `Content-Language`. An invalid tag is 400 (code 3) and creates nothing.

use serde_json::json;
use tests::ReceivedMail;
use tests::app::spawn_app;
use tests::scenario::*;

fn content_language(mail: &ReceivedMail) -> Option<&str> {
    mail.headers()
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("Content-Language"))
        .map(|(_, value)| value.as_str())
}

#[tokio::test]
async fn a_users_mails_are_written_in_the_preferred_language() {
    let (w, _app) = spawn_app().await;

    // German, given in another case: stored and shown canonical.
    let de = w
        .create_user_with(
            json!({"preferredLanguage": "DE", "email": {"address": "lang-de@lang.example.com"}}),
        )
        .await;
    assert_eq!(w.get_user(&de).await["preferredLanguage"], "de");
    let mail = w.mail_to("lang-de@lang.example.com", 1).await;
    assert_eq!(mail.subject(), "Bestätigen Sie Ihre E-Mail-Adresse");
    assert_eq!(content_language(&mail), Some("de"));
    // The code in the German mail verifies.
    let code = contact_code(&mail);
    w.fam(Family::A).verify(&de, &code).await.ok();
    assert_eq!(w.contact(&de).await["isVerified"], true);

    // A regional form with its own templates; `_` is read as `-`.
    let br = w
        .create_user_with(
            json!({"preferredLanguage": "pt_br", "email": {"address": "lang-br@lang.example.com"}}),
        )
        .await;
    assert_eq!(w.get_user(&br).await["preferredLanguage"], "pt-BR");
    let mail = w.mail_to("lang-br@lang.example.com", 1).await;
    assert_eq!(mail.subject(), "Confirme seu endereço de e-mail");
    assert_eq!(content_language(&mail), Some("pt-BR"));

    // A region without templates of its own falls back to the language.
    w.create_user_with(
        json!({"preferredLanguage": "de-CH", "email": {"address": "lang-ch@lang.example.com"}}),
    )
    .await;
    let mail = w.mail_to("lang-ch@lang.example.com", 1).await;
    assert_eq!(mail.subject(), "Bestätigen Sie Ihre E-Mail-Adresse");
    assert_eq!(content_language(&mail), Some("de"));

    // A language without templates, and no language at all: English.
    let none = w
        .create_user_with(
            json!({"preferredLanguage": "tlh", "email": {"address": "lang-tlh@lang.example.com"}}),
        )
        .await;
    let mail = w.mail_to("lang-tlh@lang.example.com", 1).await;
    assert_eq!(mail.subject(), "Verify your email address");
    assert_eq!(content_language(&mail), Some("en"));
    assert_eq!(w.get_user(&none).await["preferredLanguage"], "tlh");
    let plain = w
        .create_user_with(json!({"email": {"address": "lang-none@lang.example.com"}}))
        .await;
    assert!(
        w.get_user(&plain).await.get("preferredLanguage").is_none(),
        "no preferredLanguage is shown when none was given"
    );
    let mail = w.mail_to("lang-none@lang.example.com", 1).await;
    assert_eq!(content_language(&mail), Some("en"));

    // A resend is in the user's language too.
    w.fam(Family::B)
        .resend(&br, json!({"sendCode": {}}))
        .await
        .ok();
    let mail = w.mail_to("lang-br@lang.example.com", 2).await;
    assert_eq!(content_language(&mail), Some("pt-BR"));
}

#[tokio::test]
async fn an_invalid_preferred_language_is_400_and_creates_nothing() {
    let (w, _app) = spawn_app().await;
    for bad in [
        json!("not a tag"),
        json!("de-"),
        json!("x-private"),
        json!("d"),
        json!("de-DE-1996-1996"),
        json!(" de"),
        json!("ünï"),
        json!(7),
    ] {
        let resp = w
            .api
            .post(
                "/v3alpha/users",
                json!({"username": "lang-bad", "preferredLanguage": bad, "email": {"address": "lang-bad@lang.example.com"}}),
            )
            .await;
        assert_error(&resp, 400, 3, None);
    }
    // Nothing was created: the username is still free.
    let resp = w
        .api
        .post(
            "/v3alpha/users",
            json!({"username": "lang-bad", "preferredLanguage": ""}),
        )
        .await;
    assert_eq!(resp.status, 201, "{resp:?}");
    let user = resp.str_at("/id").to_string();
    assert!(w.get_user(&user).await.get("preferredLanguage").is_none());
    w.assert_mails_stay(0).await;
}
