//! `register` through the binary, against the Microsoft tenant emulator: the device code
//! sign-in (approved, declined, expired, slow_down), the first registration, re-runs that
//! change nothing or repair, a refused admin consent, replication delay (of the service
//! principal and of the credentials), and --dry-run.
//! Every run's stdout and stderr (trace logging on) are scanned for the delegated token,
//! the device code and every secret Value the emulator handed out.

mod common;

use common::entra_tenant::{ADMIN_TOKEN, App, Browser, DEVICE_CODE, EntraTenant};
use common::*;
use serde_json::{Value, json};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `register` against the emulator; `secret_in_stdout`: the run prints the Secret
/// manifest on purpose (--include-secret), so only stderr is scanned for the Value.
async fn register(t: &EntraTenant, extra: &[&str], secret_in_stdout: bool) -> Run {
    let hp = host_port(&t.uri());
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_nocobase-mail-operator"));
    cmd.args([
        "register",
        "--tenant-id",
        TENANT,
        "--authority-host",
        &t.uri(),
        "--graph-host",
        &t.uri(),
    ])
    .args([
        "--allowed-authority-hosts",
        &hp,
        "--allowed-graph-hosts",
        &hp,
    ])
    .args(extra)
    .env("RUST_LOG", "trace")
    .env("KUBECONFIG", "/nonexistent/kubeconfig")
    .env_remove("HTTPS_PROXY")
    .env_remove("HTTP_PROXY")
    .stdin(std::process::Stdio::null());
    let out = cmd.output().await.unwrap();
    let run = Run {
        code: out.status.code().unwrap(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    };
    let secrets = t.secrets();
    let mut never: Vec<&str> = vec![ADMIN_TOKEN, DEVICE_CODE];
    let values: Vec<&str> = secrets.iter().map(String::as_str).collect();
    assert_no_secret(&run.stderr, &[never.as_slice(), values.as_slice()].concat());
    if !secret_in_stdout {
        never.extend(values.iter());
    }
    assert_no_secret(&run.stdout, &never);
    run
}

fn token_file(dir: &tempfile::TempDir) -> String {
    let p = dir.path().join("token");
    std::fs::write(&p, format!("{ADMIN_TOKEN}\n")).unwrap();
    p.display().to_string()
}

const PUBLIC: &str = "https://crm.example.com";
const REDIRECT: &str = "https://crm.example.com/admin/settings/mail/oauth2";

fn graph_ids(app: &App) -> Vec<String> {
    app.rra[0]["resourceAccess"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            format!(
                "{}={}",
                a["id"].as_str().unwrap(),
                a["type"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn first_registration_signs_in_registers_waits_and_prints_the_manifests() {
    let t = EntraTenant::start(Browser::Approves { pending: 2 }).await;
    let run = register(
        &t,
        &[
            "--public-url",
            PUBLIC,
            "--output",
            "yaml",
            "--include-secret",
            "-n",
            "crm",
        ],
        true,
    )
    .await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("enter the code YZMYLD4K"),
        "{}",
        run.stderr
    );
    let s = t.state();
    assert_eq!(s.polls.len(), 3, "two pending answers, then the token");
    let app = &s.apps[0];
    assert_eq!(app.display_name, "NocoBase email manager");
    assert_eq!(app.audience, "AzureADandPersonalMicrosoftAccount");
    assert_eq!(app.redirect_uris, [REDIRECT]);
    assert_eq!(
        app.rra[0]["resourceAppId"],
        "00000003-0000-0000-c000-000000000000"
    );
    assert_eq!(
        graph_ids(app),
        [
            "64a6cdd6-aab1-4aaf-94b8-3cc8405e90d0=Scope",
            "7427e0e9-2fba-42fe-b0c0-848c9e6a8182=Scope",
            "652390e4-393a-48de-9484-05f9b1212954=Scope",
            "258f6531-6087-4cc4-bb90-092c5fb3ed3f=Scope",
            "e1fe6dd8-ba31-4d61-89e7-88639da4683d=Scope"
        ]
    );
    assert!(
        s.sps.iter().any(|(_, a)| *a == app.app_id),
        "service principal created"
    );
    assert_eq!(app.passwords.len(), 1);
    assert!(
        app.passwords[0].1.starts_with("nocobase-mail-operator"),
        "{}",
        app.passwords[0].1
    );
    // replication: 2 refusals as "application not found", 2 as "invalid secret", then a token
    assert_eq!(s.client_credentials, 5, "{}", run.stderr);
    assert!(
        run.stderr.contains("AADSTS700016") && run.stderr.contains("AADSTS7000215"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("WARNING: the output holds the client secret Value"),
        "{}",
        run.stderr
    );
    let docs: Vec<Value> = serde_saphyr::from_multiple(&run.stdout).unwrap();
    assert_eq!(docs[0]["kind"], "Secret");
    assert_eq!(docs[0]["metadata"]["namespace"], "crm");
    assert_eq!(
        docs[0]["stringData"]["client-secret"],
        s.added_secrets[0].as_str()
    );
    assert_eq!(docs[1]["kind"], "MicrosoftMailIntegration");
    assert_eq!(docs[1]["spec"]["clientId"], app.app_id.as_str());
    assert_eq!(docs[1]["spec"]["tenantId"], TENANT);
    assert_eq!(
        docs[1]["spec"]["clientSecretRef"],
        json!({"name": "nocobase-entra-app", "key": "client-secret"})
    );
    assert_eq!(
        docs[1]["spec"]["secretExpiry"]["expiresAt"],
        app.passwords[0].4.as_str()
    );
    assert_eq!(
        docs[1]["spec"]["secretExpiry"]["discoverFromGraph"], false,
        "no Graph read permission was asked for"
    );
}

#[tokio::test]
async fn a_declined_sign_in_changes_nothing() {
    let t = EntraTenant::start(Browser::Declines).await;
    let run = register(&t, &["--output", "yaml"], false).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("declined"), "{}", run.stderr);
    assert!(t.state().graph.is_empty(), "nothing sent to Graph");
}

#[tokio::test]
async fn an_expired_device_code_changes_nothing() {
    let t = EntraTenant::start(Browser::Expires { pending: 1 }).await;
    let run = register(&t, &["--output", "yaml"], false).await;
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("expired"), "{}", run.stderr);
    assert_eq!(t.state().polls.len(), 2);
    assert!(t.state().graph.is_empty());
}

#[tokio::test]
async fn slow_down_adds_five_seconds_to_the_interval() {
    let t = EntraTenant::start(Browser::SlowDownThenApproves).await;
    let run = register(&t, &["--output", "yaml", "--dry-run"], false).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let polls = t.state().polls.clone();
    assert_eq!(polls.len(), 2);
    let gap = polls[1] - polls[0];
    assert!(gap.as_secs_f64() >= 5.9, "interval 1 s + 5 s, got {gap:?}");
}

#[tokio::test]
async fn a_refused_admin_consent_keeps_the_earlier_steps_and_says_whom_to_ask() {
    let t = EntraTenant::start(Browser::Approves { pending: 0 }).await;
    t.state().may_consent = false;
    let dir = tempfile::tempdir().unwrap();
    let tok = token_file(&dir);
    let run = register(
        &t,
        &[
            "--access-token-file",
            &tok,
            "--with-expiry-discovery",
            "--output",
            "yaml",
            "--include-secret",
        ],
        true,
    )
    .await;
    assert_eq!(run.code, 4, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("refused: Microsoft Graph refused to grant the application permission Application.Read.All") && run.stderr.contains("Privileged Role Administrator"), "{}", run.stderr);
    let s = t.state();
    assert!(s.polls.is_empty(), "the token file replaces the sign-in");
    assert_eq!(s.apps.len(), 1);
    assert_eq!(s.apps[0].passwords.len(), 1, "the secret stays");
    assert_eq!(s.sps.len(), 2, "Graph's and the new one");
    assert!(s.assignments.is_empty());
    assert!(
        graph_ids(&s.apps[0]).contains(&"9a5d68dd-52b0-4cc2-bd40-abcf44ac3a30=Role".to_owned())
    );
    assert!(
        run.stdout.contains("kind: MicrosoftMailIntegration"),
        "the manifests are still printed"
    );
    let docs: Vec<Value> = serde_saphyr::from_multiple(&run.stdout).unwrap();
    assert_eq!(
        docs[1]["spec"]["secretExpiry"]["discoverFromGraph"], true,
        "on, to work once an administrator grants the consent"
    );
}

#[tokio::test]
async fn a_rerun_sends_no_graph_write() {
    let t = EntraTenant::start(Browser::Approves { pending: 0 }).await;
    let dir = tempfile::tempdir().unwrap();
    let tok = token_file(&dir);
    let args = [
        "--access-token-file",
        &tok,
        "--public-url",
        PUBLIC,
        "--with-rotation",
        "--output",
        "yaml",
        "--include-secret",
    ];
    let first = register(&t, &args, true).await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    let writes = t.state().graph_writes();
    assert!(
        writes.iter().any(|(_, p)| p.ends_with("/owners/$ref")),
        "{writes:?}"
    );
    let again = register(&t, &args, true).await;
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(t.state().graph_writes(), writes, "no new write");
    assert!(
        again.stderr.contains("Nothing was missing"),
        "{}",
        again.stderr
    );
    assert!(
        again.stderr.contains("nothing missing") && again.stderr.contains("none created"),
        "{}",
        again.stderr
    );
    assert_eq!(
        t.state().apps[0].passwords.len(),
        1,
        "no second secret without --new-secret"
    );
}

#[tokio::test]
async fn a_rerun_repairs_a_missing_redirect_uri_and_permission_and_keeps_the_users_own() {
    let t = EntraTenant::start(Browser::Approves { pending: 0 }).await;
    let dir = tempfile::tempdir().unwrap();
    let tok = token_file(&dir);
    let first = register(
        &t,
        &[
            "--access-token-file",
            &tok,
            "--output",
            "yaml",
            "--include-secret",
        ],
        true,
    )
    .await;
    assert_eq!(first.code, 0, "{}", first.stderr);
    {
        let mut s = t.state();
        let app = &mut s.apps[0];
        app.redirect_uris = vec!["https://other.example.com/callback".into()];
        // the user removed SMTP.Send and added a permission of their own
        let access = app.rra[0]["resourceAccess"].as_array_mut().unwrap();
        access.retain(|a| a["id"] != "258f6531-6087-4cc4-bb90-092c5fb3ed3f");
        access.push(json!({"id": "user-added-scope", "type": "Scope"}));
    }
    let before = t.state().graph_writes().len();
    let run = register(
        &t,
        &[
            "--access-token-file",
            &tok,
            "--public-url",
            PUBLIC,
            "--output",
            "yaml",
        ],
        false,
    )
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let s = t.state();
    let writes = &s.graph_writes()[before..];
    assert_eq!(writes.len(), 1, "one PATCH: {writes:?}");
    assert_eq!(writes[0].0, "PATCH");
    let app = &s.apps[0];
    assert_eq!(
        app.redirect_uris,
        ["https://other.example.com/callback", REDIRECT]
    );
    let ids = graph_ids(app);
    assert!(
        ids.contains(&"258f6531-6087-4cc4-bb90-092c5fb3ed3f=Scope".to_owned()),
        "{ids:?}"
    );
    assert!(
        ids.contains(&"user-added-scope=Scope".to_owned()),
        "{ids:?}"
    );
    assert!(
        run.stderr.contains("SMTP.Send") && run.stderr.contains(REDIRECT),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn credentials_that_never_replicate_are_reported_after_the_bounded_wait() {
    let t = EntraTenant::start(Browser::Approves { pending: 0 }).await;
    t.state().secret_replication = u32::MAX;
    let dir = tempfile::tempdir().unwrap();
    let tok = token_file(&dir);
    let started = std::time::Instant::now();
    let run = register(
        &t,
        &[
            "--access-token-file",
            &tok,
            "--propagation-timeout",
            "4s",
            "--output",
            "yaml",
            "--include-secret",
        ],
        true,
    )
    .await;
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    assert!(started.elapsed().as_secs() < 30);
    assert!(
        run.stderr
            .contains("did not accept the new credentials within 4s"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains("kind: Secret"),
        "the Value is not lost: {}",
        run.stdout
    );
}

fn service_principal_posts(t: &EntraTenant) -> usize {
    t.state()
        .graph
        .iter()
        .filter(|(m, p)| m == "POST" && p == "/v1.0/servicePrincipals")
        .count()
}

#[tokio::test]
async fn a_service_principal_refused_while_the_application_replicates_is_asked_again() {
    let t = EntraTenant::start(Browser::Approves { pending: 0 }).await;
    t.state().sp_replication = 2;
    let dir = tempfile::tempdir().unwrap();
    let tok = token_file(&dir);
    let started = std::time::Instant::now();
    let run = register(
        &t,
        &[
            "--access-token-file",
            &tok,
            "--output",
            "yaml",
            "--include-secret",
        ],
        true,
    )
    .await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(service_principal_posts(&t), 3, "two refusals, then created");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(3),
        "paused 1 s, then 2 s"
    );
    for said in [
        "service principal: Microsoft Graph does not know the new application yet (HTTP 400 Request_BadRequest, still replicating); asking again in 1s",
        "asking again in 2s",
        "service principal: created",
        "Microsoft accepts the new credentials",
    ] {
        assert!(
            run.stderr.contains(said),
            "{said:?} missing:\n{}",
            run.stderr
        );
    }
    let s = t.state();
    assert_eq!(s.apps.len(), 1);
    assert!(s.sps.iter().any(|(_, a)| a == &s.apps[0].app_id));
    assert_eq!(s.added_secrets.len(), 1);
}

#[tokio::test]
async fn an_application_that_never_replicates_is_reported_and_a_rerun_adopts_it() {
    let t = EntraTenant::start(Browser::Approves { pending: 0 }).await;
    {
        let mut s = t.state();
        s.sp_replication = u32::MAX;
        s.app_replication = 0;
        s.secret_replication = 0;
    }
    let dir = tempfile::tempdir().unwrap();
    let tok = token_file(&dir);
    let started = std::time::Instant::now();
    let yaml = ["--output", "yaml", "--include-secret"];
    let args = [&["--access-token-file", tok.as_str()][..], &yaml].concat();
    let bounded = [&args[..], &["--propagation-timeout", "3s"]].concat();
    let run = register(&t, &bounded, true).await;
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    assert!(started.elapsed().as_secs() < 30);
    assert_eq!(service_principal_posts(&t), 3, "at 0 s, 1 s and 3 s");
    let app_id = t.state().apps[0].app_id.clone();
    for said in [
        "Could not create the service principal: Microsoft Graph still did not know the application after 3 attempts over 3s".to_owned(),
        format!("HTTP 400 Request_BadRequest: The appId '{app_id}' of the service principal does not reference a valid application object."),
        format!("The app registration 'NocoBase email manager' (client ID {app_id}) stays in place, without a client secret yet: run the same command again with --new-secret"),
    ] {
        assert!(run.stderr.contains(&said), "{said:?} missing:\n{}", run.stderr);
    }
    assert!(
        t.state().added_secrets.is_empty(),
        "no secret before the service principal"
    );
    assert!(run.stdout.is_empty(), "no manifest: {}", run.stdout);

    // replicated now: the re-run the message names finishes the job on the same application
    t.state().sp_replication = 0;
    let rerun = [&args[..], &["--new-secret"]].concat();
    let run = register(&t, &rerun, true).await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains("application 'NocoBase email manager': found"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("service principal: created"),
        "{}",
        run.stderr
    );
    let s = t.state();
    assert_eq!(s.apps.len(), 1, "adopted, not created again");
    assert_eq!(s.added_secrets.len(), 1);
    assert!(run.stdout.contains(&app_id), "{}", run.stdout);
}

#[tokio::test]
async fn dry_run_prints_the_requests_and_sends_nothing_after_the_sign_in() {
    let t = EntraTenant::start(Browser::Approves { pending: 0 }).await;
    let run = register(
        &t,
        &["--dry-run", "--public-url", PUBLIC, "--with-rotation"],
        false,
    )
    .await;
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let s = t.state();
    assert_eq!(s.polls.len(), 1, "signed in");
    assert!(s.graph.is_empty(), "no Graph request: {:?}", s.graph);
    assert_eq!(s.client_credentials, 0);
    let uri = t.uri();
    for line in [
        format!(
            "GET {uri}/v1.0/applications?$filter=displayName%20eq%20%27NocoBase%20email%20manager%27"
        ),
        format!("POST {uri}/v1.0/applications "),
        format!("POST {uri}/v1.0/servicePrincipals "),
        format!("POST {uri}/v1.0/applications/{{application-object-id}}/addPassword"),
        format!("POST {uri}/v1.0/servicePrincipals/{{service-principal-id}}/appRoleAssignments"),
        format!("POST {uri}/v1.0/applications/{{application-object-id}}/owners/$ref"),
    ] {
        assert!(
            run.stdout.contains(&line),
            "missing {line:?} in\n{}",
            run.stdout
        );
    }
    assert!(run.stdout.contains(REDIRECT));
    assert!(run.stdout.contains("nothing was sent"), "{}", run.stdout);
}

#[tokio::test]
async fn hosts_outside_the_allow_list_are_refused_before_the_sign_in() {
    let t = EntraTenant::start(Browser::Approves { pending: 0 }).await;
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_nocobase-mail-operator"));
    cmd.args([
        "register",
        "--tenant-id",
        TENANT,
        "--authority-host",
        &t.uri(),
        "--graph-host",
        &t.uri(),
        "--output",
        "yaml",
    ]);
    let out = cmd.output().await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allowed-authority-hosts"));
    assert!(t.state().polls.is_empty() && t.state().graph.is_empty());
}

/// `--help`'s paragraph for `flag`: from its line to the next option.
fn help_of(command: &str, flag: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nocobase-mail-operator"))
        .args([command, "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    let mut lines = help
        .lines()
        .skip_while(|l| !l.starts_with(&format!("      {flag} ")));
    let first = lines
        .next()
        .unwrap_or_else(|| panic!("{flag} missing from {command} --help:\n{help}"));
    let next_option = |l: &&str| l.starts_with("  -") || l.starts_with("      --");
    let body: Vec<&str> = lines.take_while(|l| !next_option(l)).collect();
    format!("{first}\n{}", body.join("\n"))
}

#[test]
fn check_and_register_take_the_same_microsoft_flags() {
    for flag in [
        "--tenant-id",
        "--cloud",
        "--authority-host",
        "--graph-host",
        "--ca-bundle",
    ] {
        let (check, register) = (help_of("check", flag), help_of("register", flag));
        assert_eq!(check, register, "{flag} differs between check and register");
    }
    assert!(help_of("register", "--ca-bundle").contains("NOCOBASE_MAIL_OPERATOR_CA_BUNDLE"));
    assert!(help_of("check", "--cloud").contains("[default: AzurePublic]"));
}
