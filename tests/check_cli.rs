//! The `check` command through the binary: exit statuses, the JSON contract, the text
//! report, and that nothing secret is ever printed (with trace logging on).

mod common;

use common::*;
use serde_json::Value;
use std::sync::Arc;
use wiremock::ResponseTemplate;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn check(emu: Option<&Emulator>, tenant: &str, secret: &str, extra: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("client-secret");
    std::fs::write(&secret_file, secret).unwrap();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_nocobase-mail-operator"));
    cmd.args([
        "check",
        "--tenant-id",
        tenant,
        "--client-id",
        CLIENT,
        "--secret-file",
    ])
    .arg(&secret_file)
    .args(extra)
    // as much logging as there is, so the leak scan sees everything
    .env("RUST_LOG", "trace")
    .env_remove("HTTPS_PROXY")
    .env_remove("HTTP_PROXY");
    if let Some(emu) = emu {
        cmd.args(["--authority-host", &emu.uri(), "--graph-host", &emu.uri()]);
    }
    let out = cmd.output().await.unwrap();
    let run = Run {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    };
    assert_no_secret(&run.stdout, &[secret.trim(), SECRET, SECRET_ID]);
    assert_no_secret(&run.stderr, &[secret.trim(), SECRET, SECRET_ID]);
    run
}

fn json(run: &Run) -> Value {
    let v: Value =
        serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", run.stdout));
    assert!(v.is_object());
    for key in [
        "outcome",
        "reason",
        "aadstsCode",
        "message",
        "hint",
        "expiresAt",
        "expirySource",
        "missingPermissions",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    v
}

#[tokio::test]
async fn valid_exits_0_with_expiry_and_missing_permissions() {
    let emu = Emulator::start().await;
    emu.token(json_response(200, "token_success.json")).await;
    emu.graph(json_response(200, "graph_application.json"))
        .await;
    let run = check(
        Some(&emu),
        TENANT,
        &format!("{SECRET}\n"),
        &["--output", "json"],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("TRACE"),
        "trace logging was on, so the leak scan saw the logs"
    );
    let v = json(&run);
    assert_eq!(v["outcome"], "Valid");
    assert_eq!(v["reason"], Value::Null);
    assert_eq!(v["aadstsCode"], Value::Null);
    assert_eq!(v["expiresAt"], "2027-12-26T00:00:00Z");
    assert_eq!(v["expirySource"], "Graph");
    assert_eq!(
        v["missingPermissions"],
        serde_json::json!(["IMAP.AccessAsUser.All", "SMTP.Send"])
    );
    assert!(v["notes"][0].as_str().unwrap().contains("line break"));
}

#[tokio::test]
async fn text_report_is_short_and_readable() {
    let emu = Emulator::start().await;
    emu.token(json_response(200, "token_success.json")).await;
    emu.graph(json_response(
        403,
        "graph_403_authorization_request_denied.json",
    ))
    .await;
    let run = check(Some(&emu), TENANT, SECRET, &[]).await;
    assert_eq!(run.code, 0);
    assert!(run.stdout.starts_with("Valid\n"), "{}", run.stdout);
    assert!(
        run.stdout.contains("Application.Read.All"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.lines().count() <= 6, "{}", run.stdout);
}

#[tokio::test]
async fn rejected_exits_1_with_reason_code_and_next_step() {
    let emu = Emulator::start().await;
    emu.token(json_response(401, "aadsts7000215.json")).await;
    let run = check(Some(&emu), TENANT, SECRET_ID, &["--output", "json"]).await;
    assert_eq!(run.code, 1);
    let v = json(&run);
    assert_eq!(v["outcome"], "Rejected");
    assert_eq!(v["reason"], "SecretIdInsteadOfValue");
    assert_eq!(v["aadstsCode"], 7000215);
    assert!(v["hint"].as_str().unwrap().contains("Value"));

    let emu = Emulator::start().await;
    emu.token(json_response(401, "aadsts7000222.json")).await;
    let run = check(Some(&emu), TENANT, SECRET, &[]).await;
    assert_eq!(run.code, 1);
    assert!(
        run.stdout
            .starts_with("Rejected (SecretExpired, AADSTS7000222)"),
        "{}",
        run.stdout
    );
}

#[tokio::test]
async fn invalid_input_exits_2_and_sends_nothing() {
    let emu = Emulator::start().await;
    emu.token(json_response(200, "token_success.json")).await;
    for (tenant, secret, want) in [
        ("common", SECRET, "NotATenant"),
        ("no tenant", SECRET, "MalformedTenantId"),
        (TENANT, "\n", "EmptySecret"),
        (TENANT, "Q~x a b", "MalformedSecret"),
    ] {
        let run = check(Some(&emu), tenant, secret, &["--output", "json"]).await;
        assert_eq!(run.code, 2, "{tenant:?} {secret:?}");
        assert_eq!(json(&run)["reason"], want);
    }
    let run = check(
        None,
        TENANT,
        SECRET,
        &[
            "--authority-host",
            "http://login.example.test",
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(
        (run.code, json(&run)["reason"].as_str()),
        (2, Some("InvalidHostOverride"))
    );
    assert!(
        emu.token_requests().await.is_empty(),
        "nothing may be sent for invalid input"
    );
}

#[tokio::test]
async fn unavailable_exits_3() {
    let emu = Emulator::start().await;
    emu.token(
        ResponseTemplate::new(429)
            .insert_header("retry-after", "120")
            .set_body_bytes(fixture("throttled_429.txt")),
    )
    .await;
    let run = check(Some(&emu), TENANT, SECRET, &["--output", "json"]).await;
    assert_eq!(run.code, 3);
    let v = json(&run);
    assert_eq!(
        (v["outcome"].as_str(), v["reason"].as_str()),
        (Some("Unavailable"), Some("Throttled"))
    );
    assert_eq!(v["retryAfterSeconds"], 120);
}

#[tokio::test]
async fn secret_from_environment_variable() {
    let emu = Emulator::start().await;
    emu.token(json_response(200, "token_success.json")).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_nocobase-mail-operator"))
        .args([
            "check",
            "--tenant-id",
            TENANT,
            "--client-id",
            CLIENT,
            "--secret-env",
            "MY_SECRET",
            "--no-graph",
        ])
        .args([
            "--authority-host",
            &emu.uri(),
            "--graph-host",
            &emu.uri(),
            "--output",
            "json",
        ])
        .env("MY_SECRET", SECRET)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_no_secret(&stdout, &[SECRET]);
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap()["outcome"],
        "Valid"
    );
}

#[test]
fn help_speaks_to_administrators() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nocobase-mail-operator"))
        .args(["check", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for want in [
        "--tenant-id",
        "--secret-file",
        "--secret-env",
        "--cloud",
        "AzureUSGovernment",
        "Exit status",
    ] {
        assert!(help.contains(want), "{want} missing from:\n{help}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nocobase-mail-operator"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .starts_with("nocobase-mail-operator 0.")
    );
}

#[tokio::test]
async fn render_validate_asks_microsoft_first() {
    let emu = Emulator::start().await;
    emu.token_for_secret(
        "Gq7Zx2Lp9Vt4Rk8Wm1Nc6Hb3Jd5Fy0Ts2Qe7UaK",
        json_response(200, "token_success.json"),
    )
    .await;
    emu.token(json_response(401, "aadsts7000222.json")).await;
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string("examples/integration.yaml").unwrap();
    let with_emulator = example.replace(
        "tenantId: 72f988bf-86f1-41af-91ab-2d7cd011db47",
        &format!(
            "tenantId: {TENANT}\n  authorityHost: {}\n  graphHost: {}",
            emu.uri(),
            emu.uri()
        ),
    );
    let allowed = host_port(&emu.uri());
    let run_with = |secret: &str, allow: &[&str]| {
        let path = dir.path().join("in.yaml");
        std::fs::write(
            &path,
            with_emulator.replace("REPLACE~WithTheSecretValue.FromTheValueColumn0", secret),
        )
        .unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_nocobase-mail-operator"))
            .args(["render", "--validate", "-f"])
            .arg(&path)
            .args(allow)
            .output()
            .unwrap()
    };
    // the emulator is not in the default allow-lists: nothing is sent
    let refused = run_with("Gq7Zx2Lp9Vt4Rk8Wm1Nc6Hb3Jd5Fy0Ts2Qe7UaK", &[]);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("HostNotAllowed"));
    assert!(emu.server.received_requests().await.unwrap().is_empty());
    let flags = [
        "--allowed-authority-hosts",
        allowed.as_str(),
        "--allowed-graph-hosts",
        allowed.as_str(),
    ];
    let run = |secret: &str| run_with(secret, &flags);
    let ok = run("Gq7Zx2Lp9Vt4Rk8Wm1Nc6Hb3Jd5Fy0Ts2Qe7UaK");
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("kind: Deployment"));
    let expired = run("Xr5Tq1Wk7Zm3Lp9Vb2Nc8Hd4Jf6Gy0Sa1Qe5UoP");
    assert_eq!(
        expired.status.code(),
        Some(1),
        "rejected: exit 1 as for check"
    );
    assert!(
        expired.stdout.is_empty(),
        "nothing rendered for rejected credentials"
    );
    assert!(String::from_utf8_lossy(&expired.stderr).contains("SecretExpired"));
    assert_no_secret(
        &String::from_utf8_lossy(&expired.stderr),
        &["Xr5Tq1Wk7Zm3Lp9Vb2Nc8Hd4Jf6Gy0Sa1Qe5UoP"],
    );
}

#[tokio::test]
async fn check_reads_nocobase_variables_with_the_api_key() {
    use common::nocobase_emu::{API_KEY as NOCOBASE_KEY, NocoBase};
    let emu = Emulator::start().await;
    emu.token(json_response(200, "token_success.json")).await;
    let nocobase = NocoBase {
        state: Arc::default(),
        app: None,
        plugin_enabled: true,
    };
    let server = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::path_regex("^/"))
        .respond_with(nocobase)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("key");
    std::fs::write(&good, NOCOBASE_KEY).unwrap();
    let run = check(
        Some(&emu),
        TENANT,
        SECRET,
        &[
            "--no-graph",
            "--output",
            "json",
            "--nocobase-url",
            &server.uri(),
            "--nocobase-api-key-file",
            good.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert_eq!(json(&run)["nocobase"]["ok"], true);
    assert_no_secret(&run.stdout, &[NOCOBASE_KEY]);

    let bad = dir.path().join("bad");
    std::fs::write(&bad, "not-the-key").unwrap();
    let run = check(
        Some(&emu),
        TENANT,
        SECRET,
        &[
            "--no-graph",
            "--output",
            "json",
            "--nocobase-url",
            &server.uri(),
            "--nocobase-api-key-file",
            bad.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(run.code, 4);
    assert_eq!(json(&run)["nocobase"]["reason"], "ApiKeyRejected");
    assert!(!run.stdout.contains("not-the-key"));
}

#[tokio::test]
async fn a_huge_retry_after_is_clamped_not_a_crash() {
    let emu = Emulator::start().await;
    emu.token(
        ResponseTemplate::new(429)
            .insert_header("retry-after", "18446744073709551615")
            .set_body_bytes(fixture("throttled_429.txt")),
    )
    .await;
    let run = check(Some(&emu), TENANT, SECRET, &["--output", "json"]).await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    // Microsoft never means more than an hour; a larger value is read as one hour
    assert_eq!(json(&run)["retryAfterSeconds"], 3600);
}

#[tokio::test]
async fn check_reports_the_app_registration_and_the_email_settings() {
    use common::nocobase_emu::{API_KEY as NOCOBASE_KEY, Collection, NocoBase};
    let emu = Emulator::start().await;
    emu.token(json_response(200, "token_success.json")).await;
    // the original fixture: single tenant, no Web redirect URI, two permissions missing
    emu.graph(json_response(200, "graph_application.json"))
        .await;
    let rec = serde_json::json!({"id": 2, "provider": "outlook", "clientId": "", "clientSecret": "Vx9Qm2Kw7Lr4Tz8Pn3Hj"});
    let nocobase = NocoBase::with_collections([(
        "mailSettings",
        Collection {
            fields: ["id", "provider", "clientId", "clientSecret"]
                .map(str::to_owned)
                .to_vec(),
            records: vec![rec.as_object().unwrap().clone()],
            ..Default::default()
        },
    )]);
    let server = nocobase.serve().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, NOCOBASE_KEY).unwrap();
    let args = |fields: &'static str| {
        vec![
            "--public-url".to_owned(),
            "https://crm.example.com".into(),
            "--nocobase-url".into(),
            server.uri(),
            "--nocobase-api-key-file".into(),
            key.to_str().unwrap().into(),
            "--mail-settings".into(),
            "--mail-fields".into(),
            fields.into(),
        ]
    };
    let a = args("clientId,clientSecret");
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let run = check(Some(&emu), TENANT, SECRET, &a).await;
    assert_eq!(run.code, 0, "{}", run.stdout);
    assert!(run.stdout.contains("app registration: signInAudience AzureADMyOrg: serves only work and school mailboxes of the registration's own organization (single tenant); needs the Web redirect URI https://crm.example.com/admin/settings/mail/oauth2"), "{}", run.stdout);
    assert!(run.stdout.contains("warning (RedirectUriMissing)"));
    assert!(run.stdout.contains("warning (SingleTenantAudience)"));
    assert!(run.stdout.contains("warning (DelegatedPermissionMissing)"));
    assert!(run.stdout.contains("NocoBase email settings: collection mailSettings found; fields clientId and clientSecret found (from the API documentation); record 2 matches provider=outlook"), "{}", run.stdout);
    assert!(!run.stdout.contains("Vx9Qm2Kw7Lr4Tz8Pn3Hj"));
    assert_eq!(
        nocobase.state.lock().unwrap().record_updates,
        0,
        "reads only"
    );

    let mut a = args("clientId,secret");
    a.extend(["--output".into(), "json".into()]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let run = check(Some(&emu), TENANT, SECRET, &a).await;
    assert_eq!(run.code, 4, "{}", run.stdout);
    let v = json(&run);
    assert_eq!(
        v["nocobase"]["mailSettings"]["reason"],
        "MailSettingsFieldUnknown"
    );
    assert!(
        v["nocobase"]["mailSettings"]["message"]
            .as_str()
            .unwrap()
            .contains("clientId, clientSecret, id, provider")
    );
    assert_eq!(v["appRegistration"]["reason"], "RedirectUriMissing");
    assert_eq!(v["appRegistration"]["signInAudience"], "AzureADMyOrg");
    assert!(
        v["appRegistration"]["serves"]
            .as_str()
            .unwrap()
            .contains("single tenant")
    );
    assert_no_secret(&run.stdout, &[NOCOBASE_KEY, "Vx9Qm2Kw7Lr4Tz8Pn3Hj"]);
}
