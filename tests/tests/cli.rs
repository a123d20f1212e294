//! The API's command line (SPEC 7): `api bootstrap` and `api token create`, their output
//! (alone on stdout, logs on stderr) and exit codes (0 success, 1 operational error, 2 bad
//! usage or configuration).

use std::time::Duration;

use serde_json::{Value, json};
use tests::scenario::*;
use tests::{Api, CliOutput, TestEnv};

/// Runs `api ARGS...` with extra variables.
async fn run_api_with(env: &TestEnv, vars: &[(&str, &str)], args: &[&str]) -> CliOutput {
    let mut cmd = env.command("api");
    cmd.args(args);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let output = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("api {args:?} did not finish within 60 s"))
        .expect("run api");
    CliOutput {
        status: output.status,
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `api bootstrap ARGS...`, checks that stdout is exactly one JSON object with the four
/// string fields and nothing else, and returns it.
async fn bootstrap(env: &TestEnv, args: &[&str]) -> Value {
    let mut full = vec!["bootstrap"];
    full.extend_from_slice(args);
    let out = env.run_api(&full).await;
    out.expect_success();
    let value = out.json();
    let obj = value
        .as_object()
        .unwrap_or_else(|| panic!("bootstrap printed no object: {}", out.stdout));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["instanceId", "orgDomain", "orgId", "token"],
        "{value}"
    );
    for key in keys {
        assert!(
            obj[key].as_str().is_some_and(|s| !s.is_empty()),
            "{key} is not a non-empty string: {value}"
        );
    }
    value
}

/// The bootstrap output: one JSON object on stdout; running it again keeps the instance and
/// organization and mints a new admin token; both tokens are instance-wide read and write.
#[tokio::test]
async fn bootstrap_prints_one_json_object_and_mints_a_new_token_each_time() {
    let env = TestEnv::builder().without_bootstrap().start().await;
    let first = bootstrap(&env, &[]).await;
    assert_eq!(first["orgDomain"], "default.localhost");
    let second = bootstrap(&env, &[]).await;
    assert_eq!(second["instanceId"], first["instanceId"]);
    assert_eq!(second["orgId"], first["orgId"]);
    assert_eq!(second["orgDomain"], first["orgDomain"]);
    assert_ne!(second["token"], first["token"]);

    for boot in [&first, &second] {
        let api = Api::new(env.api_url(), boot["token"].as_str().map(str::to_string));
        let user = create_user(&api, json!({})).await;
        let got = get_user(&api, &user).await;
        assert_eq!(got["organizationId"], boot["orgId"]);
        Fam::new(api.clone(), Family::A)
            .set(
                &user,
                json!({"address": "boot@example.com", "isVerified": true}),
            )
            .await
            .ok();
    }
}

/// `--domain D --org-name N`: a new instance for a new domain with the organization's
/// primary domain `slug(N).D`; the same domain with another name adds a second organization
/// to that instance; the same name again changes nothing.
#[tokio::test]
async fn bootstrap_domains_and_organizations() {
    let env = TestEnv::builder()
        .without_bootstrap()
        .without_worker()
        .start()
        .await;
    let local = bootstrap(&env, &[]).await;
    let sales = bootstrap(
        &env,
        &[
            "--domain",
            "example.test",
            "--org-name",
            "Sales & Marketing!",
        ],
    )
    .await;
    assert_ne!(sales["instanceId"], local["instanceId"]);
    assert_eq!(sales["orgDomain"], "sales-marketing.example.test");

    let n2 = bootstrap(&env, &["--domain", "example.test", "--org-name", "N2"]).await;
    assert_eq!(n2["instanceId"], sales["instanceId"]);
    assert_ne!(n2["orgId"], sales["orgId"]);
    assert_eq!(n2["orgDomain"], "n2.example.test");

    let weird = bootstrap(
        &env,
        &[
            "--domain",
            "example.test",
            "--org-name",
            "  --Weird__Name--  42 ",
        ],
    )
    .await;
    assert_eq!(weird["instanceId"], sales["instanceId"]);
    assert_eq!(weird["orgDomain"], "weird-name-42.example.test");

    let again = bootstrap(
        &env,
        &[
            "--domain",
            "example.test",
            "--org-name",
            "Sales & Marketing!",
        ],
    )
    .await;
    assert_eq!(again["instanceId"], sales["instanceId"]);
    assert_eq!(again["orgId"], sales["orgId"]);

    // The admin token of the second organization's bootstrap is instance-wide: without an
    // organization a user lands in the instance's first organization, and it may act in both.
    let api = Api::new(env.api_url(), n2["token"].as_str().map(str::to_string));
    let user = create_user(&api, json!({})).await;
    assert_eq!(
        get_user(&api, &user).await["organizationId"],
        sales["orgId"]
    );
    let in_n2 = create_user(&api, json!({"organization": {"orgId": n2["orgId"]}})).await;
    assert_eq!(get_user(&api, &in_n2).await["organizationId"], n2["orgId"]);
    // Addressed by the organization's primary domain.
    Fam::new(api.clone(), Family::B)
        .scoped(Scope::org_domain("n2.example.test"))
        .set(
            &in_n2,
            json!({"address": "n2@example.com", "isVerified": true}),
        )
        .await
        .ok();
    // The localhost instance's token does not see it.
    let local_api = Api::new(env.api_url(), local["token"].as_str().map(str::to_string));
    let resp = local_api.get(&format!("/v3alpha/users/{in_n2}")).await;
    assert_error(&resp, 404, 5, Some(ids::USER_NOT_FOUND));
}

/// `api token create` prints the token alone on one line; permissions repeat or come
/// comma-separated; a subject alone is enough.
#[tokio::test]
async fn token_create_prints_the_token_alone() {
    let w = World::from_env(TestEnv::builder().without_worker().start().await);
    let instance = w.instance_id();
    let user = w.user().await;
    for args in [
        vec![
            "--instance",
            &instance,
            "--permission",
            "user.read,user.write",
        ],
        vec![
            "--instance",
            &instance,
            "--permission",
            "user.read",
            "--permission",
            "user.write",
        ],
        vec!["--instance", &instance, "--permission", "user.write"],
    ] {
        let mut full = vec!["token", "create"];
        full.extend_from_slice(&args);
        let out = w.env.run_api(&full).await;
        out.expect_success();
        assert!(
            out.stdout.ends_with('\n') && out.stdout.lines().count() == 1,
            "{args:?}: the token is not alone on one line: {:?}",
            out.stdout
        );
        let token = out.stdout.trim_end_matches(['\n', '\r']);
        assert!(
            !token.is_empty() && !token.contains(char::is_whitespace),
            "{args:?}: {token:?}"
        );
        let api = w.api.with_token(token);
        Fam::new(api.clone(), Family::A)
            .set(
                &user,
                json!({"address": format!("t{}@example.com", args.len()), "isVerified": true}),
            )
            .await
            .ok();
        get_user(&api, &user).await;
    }
    let out = w
        .env
        .run_api(&[
            "token",
            "create",
            "--instance",
            &instance,
            "--subject",
            &user,
        ])
        .await;
    out.expect_success();
    let own = w.api.with_token(out.stdout.trim());
    assert_eq!(get_user(&own, &user).await["id"], json!(user));
    // Each run mints a different token.
    let a = w
        .env
        .create_token(&["--instance", &instance, "--permission", "user.read"])
        .await;
    let b = w
        .env
        .create_token(&["--instance", &instance, "--permission", "user.read"])
        .await;
    assert_ne!(a, b);
}

/// Bad usage exits 2 with a message on stderr and nothing on stdout; an unknown instance
/// fails without printing a token.
#[tokio::test]
async fn cli_bad_usage_exits_2() {
    let w = World::from_env(TestEnv::builder().without_worker().start().await);
    let instance = w.instance_id();
    let cases: Vec<(&str, Vec<&str>)> = vec![
        (
            "neither permission nor subject",
            vec!["token", "create", "--instance", &instance],
        ),
        (
            "no instance",
            vec!["token", "create", "--permission", "user.read"],
        ),
        (
            "unknown permission",
            vec![
                "token",
                "create",
                "--instance",
                &instance,
                "--permission",
                "user.admin",
            ],
        ),
        (
            "empty permission",
            vec![
                "token",
                "create",
                "--instance",
                &instance,
                "--permission",
                "",
            ],
        ),
        (
            "unknown flag",
            vec![
                "token",
                "create",
                "--instance",
                &instance,
                "--permission",
                "user.read",
                "--bogus",
            ],
        ),
        ("unknown subcommand", vec!["frobnicate"]),
        ("token without create", vec!["token"]),
        (
            "bootstrap with a stray argument",
            vec!["bootstrap", "stray"],
        ),
    ];
    for (what, args) in cases {
        let out = w.env.run_api(&args).await;
        assert_eq!(
            out.code,
            Some(2),
            "{what}: exit {:?}\nstdout: {}\nstderr: {}",
            out.code,
            out.stdout,
            out.stderr
        );
        assert!(
            out.stdout.trim().is_empty(),
            "{what}: stdout {:?}",
            out.stdout
        );
        assert!(
            !out.stderr.trim().is_empty(),
            "{what}: no message on stderr"
        );
    }
    let out = w
        .env
        .run_api(&[
            "token",
            "create",
            "--instance",
            "123456789012345678",
            "--permission",
            "user.read",
        ])
        .await;
    assert!(
        matches!(out.code, Some(1) | Some(2)),
        "unknown instance: exit {:?}\nstderr: {}",
        out.code,
        out.stderr
    );
    assert!(
        out.stdout.trim().is_empty(),
        "unknown instance: stdout {:?}",
        out.stdout
    );
}

/// An unreachable database is an operational error (exit 1, message on stderr, nothing on
/// stdout); a `DATABASE_URL` that is not a URL is bad configuration (exit 2, naming it).
#[tokio::test]
async fn cli_operational_and_configuration_errors() {
    let env = TestEnv::builder()
        .without_bootstrap()
        .without_api()
        .without_worker()
        .start()
        .await;
    let unreachable = [("DATABASE_URL", "postgres://postgres@127.0.0.1:1/nowhere")];
    for args in [
        vec!["bootstrap"],
        vec![
            "token",
            "create",
            "--instance",
            "1",
            "--permission",
            "user.read",
        ],
    ] {
        let out = run_api_with(&env, &unreachable, &args).await;
        assert_eq!(
            out.code,
            Some(1),
            "{args:?} with the database down: exit {:?}\nstderr: {}",
            out.code,
            out.stderr
        );
        assert!(
            out.stdout.trim().is_empty(),
            "{args:?}: stdout {:?}",
            out.stdout
        );
        assert!(
            !out.stderr.trim().is_empty(),
            "{args:?}: no message on stderr"
        );
    }
    let out = run_api_with(&env, &[("DATABASE_URL", "not a url")], &["bootstrap"]).await;
    assert_eq!(
        out.code,
        Some(2),
        "bad DATABASE_URL: exit {:?}\nstderr: {}",
        out.code,
        out.stderr
    );
    assert!(out.stdout.trim().is_empty());
    assert!(
        out.stderr.contains("DATABASE_URL"),
        "the message does not name DATABASE_URL: {}",
        out.stderr
    );
}

/// Replicas starting together all create the missing database and migrate it: one wins the
/// CREATE DATABASE, the others must take that as success, and migrations take turns.
#[tokio::test]
async fn processes_starting_together_share_one_new_database() {
    let env = TestEnv::builder()
        .without_worker()
        .without_api()
        .without_bootstrap()
        .start()
        .await;
    let runs = (0..6).map(|_| {
        let mut cmd = env.command("api");
        cmd.arg("migrate");
        async move { cmd.output().await.expect("run api migrate") }
    });
    for out in futures_util::future::join_all(runs).await {
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tables = env
        .psql("SELECT count(*) FROM information_schema.tables WHERE table_name = 'mail_jobs'")
        .await;
    assert_eq!(tables.trim(), "1");
}
