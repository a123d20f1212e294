//! `/openapi.json` says what the server does (issue 12, item 6): a client generated from it
//! can call every operation, and the validation rules of SPEC 3.1, 3.4 and 5 are in it.

use serde_json::Value;
use tests::TestEnv;

async fn document() -> Value {
    let env = TestEnv::builder().without_worker().start().await;
    env.api()
        .without_token()
        .get("/openapi.json")
        .await
        .expect_status(200)
        .json
}

fn operation<'a>(doc: &'a Value, path: &str, method: &str) -> &'a Value {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "{method} {path} missing");
    op
}

fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    let s = &doc["components"]["schemas"][name];
    assert!(s.is_object(), "schema {name} missing");
    s
}

#[tokio::test]
async fn the_openapi_document_agrees_with_the_server() {
    let doc = document().await;

    // Family-B verify: a bare JSON string, sent as application/json.
    for (path, max) in [
        ("/resources/v3alpha/users/{id}/email/_verify", 20),
        (
            "/resources/v3alpha/users/{id}/otp_email/{otpEmailId}/_verify",
            200,
        ),
    ] {
        let content = &operation(&doc, path, "post")["requestBody"]["content"];
        assert!(content.get("text/plain").is_none(), "{path}: {content}");
        let body = &content["application/json"]["schema"];
        assert_eq!(body["type"], "string", "{path}");
        assert_eq!(body["minLength"], 1, "{path}");
        assert_eq!(body["maxLength"], max, "{path}");
    }

    // Bodies that may be left out (an empty body is `{}`), and the ones that may not.
    for (path, required) in [
        ("/v3alpha/users", false),
        ("/v3alpha/users/{userId}/email/resend", false),
        ("/resources/v3alpha/users/{id}/email/_resend", false),
        (
            "/v3alpha/users/{userId}/otp_email/{otpEmailId}/resend",
            false,
        ),
        (
            "/resources/v3alpha/users/{id}/otp_email/{otpEmailId}/_resend",
            false,
        ),
        ("/v3alpha/users/{userId}/email/verify", true),
        ("/resources/v3alpha/users/{id}/email/_verify", true),
    ] {
        assert_eq!(
            operation(&doc, path, "post")["requestBody"]["required"],
            required,
            "{path}"
        );
    }

    // servers and the global bearer security; the operational endpoints need none.
    assert_eq!(doc["servers"][0]["url"], "/");
    assert!(doc["security"][0]["bearer"].is_array());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        assert_eq!(
            operation(&doc, path, "get")["security"],
            serde_json::json!([]),
            "{path}"
        );
    }

    // SetEmail: the address rules, `isVerified` only true, at most one choice.
    let set_email = schema(&doc, "SetEmailDto");
    assert_eq!(set_email["required"], serde_json::json!(["address"]));
    let address = &set_email["properties"]["address"];
    assert_eq!(address["type"], "string");
    assert_eq!(address["minLength"], 1);
    assert_eq!(address["maxLength"], 200);
    assert!(address["pattern"].is_string());
    assert_eq!(
        set_email["properties"]["isVerified"]["enum"],
        serde_json::json!([true, null])
    );
    let choices = set_email["oneOf"].as_array().expect("SetEmailDto.oneOf");
    assert_eq!(choices.len(), 4, "none, sendCode, returnCode, isVerified");
    assert_eq!(
        schema(&doc, "EmailRequest")["required"],
        serde_json::json!(["email"])
    );
    assert_eq!(
        schema(&doc, "ResendRequest")["oneOf"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );

    // Lengths of codes, usernames and URL templates.
    assert_eq!(
        schema(&doc, "VerifyRequest")["properties"]["verificationCode"]["maxLength"],
        20
    );
    assert_eq!(
        schema(&doc, "VerifyOtpEmailRequest")["properties"]["verificationCode"]["maxLength"],
        200
    );
    let username = &schema(&doc, "CreateUserRequest")["properties"]["username"]["oneOf"][1];
    assert_eq!(username["minLength"], 1);
    assert_eq!(username["maxLength"], 200);
    let template = &schema(&doc, "SendCodeDto")["properties"]["urlTemplate"]["oneOf"][1];
    assert_eq!(template["maxLength"], 200);
    assert!(template["pattern"].is_string());

    // Every authenticated operation lists its error answers with the SPEC 3.6 body.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if op["security"] == serde_json::json!([]) {
                continue;
            }
            let responses = op["responses"].as_object().unwrap();
            let mut expected = vec!["401", "403", "404", "500", "503"];
            if op.get("requestBody").is_some() {
                expected.extend(["400", "413", "415"]);
            }
            for status in expected {
                let schema = &responses
                    .get(status)
                    .unwrap_or_else(|| panic!("{method} {path}: no {status}"))["content"]["application/json"]
                    ["schema"]["$ref"];
                assert_eq!(
                    schema, "#/components/schemas/ErrorBody",
                    "{method} {path} {status}"
                );
            }
        }
    }
}
