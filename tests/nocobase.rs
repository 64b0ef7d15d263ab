//! The NocoBase sync against a local emulator of NocoBase's API shaped like the real one
//! (paths, `{"data": ...}` envelopes, error statuses and bodies from
//! `tests/fixtures/nocobase`, sources in its SOURCES.md): first sync, no-op, rotation,
//! every failure reason, `X-App`, cleanup, and a scan for leaked secrets.

use std::sync::Arc;
use std::time::Duration;

use nocobase_mail_operator::nocobase::{
    DesiredVar, NocoBaseClient, NocoBaseOptions, SyncOutcome, SyncedState, VarKind, VarWrite,
    cleanup, reason, sync,
};
use secrecy::SecretString;
use serde_json::{Value, json};
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, ResponseTemplate};

#[path = "common/nocobase_emu.rs"]
mod nocobase_emu;
use nocobase_emu::*;

const CLIENT_ID: &str = "11111111-2222-4333-8444-555555555555";
const TENANT_ID: &str = "72f988bf-0000-4000-8000-000000000001";
const SECRET: &str = "Q~xR8~kZ3vW9pLm_YhT2.nBq7XcJf5Gd0sAe4Ru~K";
const ROTATED: &str = "Zq7~8Q~pW2.xYc4Lm_Nr9vT3bKf6Gd1sAh5Ju~E";
const UID: &[u8] = b"0b7f2e8c-uid-of-the-resource";

const ID_VAR: &str = "MICROSOFT_CLIENT_ID";
const TENANT_VAR: &str = "MICROSOFT_TENANT_ID";
const SECRET_VAR: &str = "MICROSOFT_CLIENT_SECRET";

struct Emulator {
    server: MockServer,
    nocobase: NocoBase,
}

impl Emulator {
    async fn start() -> Self {
        Self::with(None, true).await
    }

    async fn with(app: Option<&str>, plugin_enabled: bool) -> Self {
        capture_logs();
        let server = MockServer::start().await;
        let nocobase = NocoBase {
            state: Arc::default(),
            app: app.map(str::to_owned),
            plugin_enabled,
        };
        Mock::given(path_regex("^/"))
            .respond_with(nocobase.clone())
            .mount(&server)
            .await;
        Self { server, nocobase }
    }

    fn client(&self) -> NocoBaseClient {
        client_for(&self.server.uri(), API_KEY, None)
    }

    fn put(&self, name: &str, kind: &str, value: &str) {
        let mut st = self.nocobase.state.lock().unwrap();
        let at = st.tick();
        st.vars.insert(
            name.into(),
            Var {
                kind: Some(kind.into()),
                value: value.into(),
                updated_at: at,
            },
        );
    }

    fn var(&self, name: &str) -> Option<Var> {
        self.nocobase.state.lock().unwrap().vars.get(name).cloned()
    }

    fn names(&self) -> Vec<String> {
        let st = self.nocobase.state.lock().unwrap();
        st.vars.keys().cloned().collect()
    }

    fn refreshes(&self) -> usize {
        self.nocobase.state.lock().unwrap().refreshes
    }

    /// `METHOD /path?query` of every request so far.
    async fn calls(&self) -> Vec<String> {
        self.server
            .received_requests()
            .await
            .unwrap()
            .iter()
            .map(|r| {
                let q = r.url.query().map(|q| format!("?{q}")).unwrap_or_default();
                format!("{} {}{q}", r.method, r.url.path())
            })
            .collect()
    }

    async fn reset_calls(&self) {
        self.server.reset().await;
        Mock::given(path_regex("^/"))
            .respond_with(self.nocobase.clone())
            .mount(&self.server)
            .await;
    }
}

#[path = "common/logs.rs"]
mod logs;
use logs::capture_logs;

fn fast() -> NocoBaseOptions {
    NocoBaseOptions {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(800),
        ..Default::default()
    }
}

fn client_for(uri: &str, key: &str, app: Option<&str>) -> NocoBaseClient {
    capture_logs();
    NocoBaseClient::new(
        uri,
        SecretString::from(key.to_owned()),
        app.map(str::to_owned),
        fast(),
    )
    .unwrap()
}

fn desired(secret: &str) -> Vec<DesiredVar> {
    vec![
        DesiredVar::new(ID_VAR, VarKind::Default, CLIENT_ID.into(), UID),
        DesiredVar::new(TENANT_VAR, VarKind::Default, TENANT_ID.into(), UID),
        DesiredVar::new(
            SECRET_VAR,
            VarKind::Secret,
            SecretString::from(secret.to_owned()),
            UID,
        ),
    ]
}

/// [`desired`] with `spec.nocobase.adoptExisting`.
fn adopting(secret: &str) -> Vec<DesiredVar> {
    desired(secret)
        .into_iter()
        .map(|d| d.adopting(true))
        .collect()
}

/// Everything an administrator or a log could see of an outcome.
fn visible(o: &SyncOutcome) -> String {
    format!(
        "{}\n{o:?}\n{}",
        o.message,
        serde_json::to_string(&o.state).unwrap()
    )
}

fn assert_no_leak(text: &str) {
    for s in [
        API_KEY,
        "FAKE-NOCOBASE-API-KEY",
        SECRET,
        ROTATED,
        CLIENT_ID,
        TENANT_ID,
    ] {
        assert!(!text.contains(s), "leaked {s:?} in: {text}");
    }
}

fn assert_failed(o: &SyncOutcome, reason: &str, transient: bool) {
    assert!(!o.ok, "{o:?}");
    assert_eq!(o.reason, Some(reason), "{}", o.message);
    assert_eq!(o.transient, transient, "{}", o.message);
    assert_no_leak(&visible(o));
}

#[tokio::test]
async fn first_sync_creates_three_variables_and_refreshes_once() {
    let emu = Emulator::start().await;
    let o = sync(&emu.client(), &desired(SECRET), &SyncedState::default()).await;
    assert!(o.ok, "{}", o.message);
    assert_eq!(o.writes, 3);
    assert_eq!(o.created, [ID_VAR, TENANT_VAR, SECRET_VAR]);
    assert!(o.updated.is_empty());
    assert!(o.refreshed);
    assert_eq!(emu.refreshes(), 1);

    let id = emu.var(ID_VAR).unwrap();
    assert_eq!(
        (id.kind.as_deref(), id.value.as_str()),
        (Some("default"), CLIENT_ID)
    );
    let tenant = emu.var(TENANT_VAR).unwrap();
    assert_eq!(
        (tenant.kind.as_deref(), tenant.value.as_str()),
        (Some("default"), TENANT_ID)
    );
    let secret = emu.var(SECRET_VAR).unwrap();
    assert_eq!(
        (secret.kind.as_deref(), secret.value.as_str()),
        (Some("secret"), SECRET)
    );

    // The state records fingerprints, NocoBase's updatedAt and ownership; no value.
    assert_eq!(o.state.owned, [ID_VAR, SECRET_VAR, TENANT_VAR]);
    assert_eq!(o.state.variables.len(), 3);
    assert_eq!(
        o.state.variables[SECRET_VAR].updated_at.as_deref(),
        Some(secret.updated_at.as_str())
    );
    assert!(!o.state.refresh_pending);
    assert_no_leak(&visible(&o));

    // list, one create per variable, read back, refresh, and a list that finds NocoBase
    // back after the refresh.
    assert_eq!(
        emu.calls().await,
        [
            "GET /api/environmentVariables:list?paginate=false",
            "POST /api/environmentVariables:create",
            "POST /api/environmentVariables:create",
            "POST /api/environmentVariables:create",
            "GET /api/environmentVariables:list?paginate=false",
            "POST /api/app:refresh",
            "GET /api/environmentVariables:list?paginate=false",
        ]
    );
    for r in emu.server.received_requests().await.unwrap() {
        assert_eq!(r.headers["authorization"], format!("Bearer {API_KEY}"));
        assert_eq!(r.headers["x-locale"], "en-US");
        assert!(r.headers.get("x-app").is_none());
        if r.url.path().ends_with(":create") {
            assert_eq!(r.headers["content-type"], "application/json");
            let body: Value = serde_json::from_slice(&r.body).unwrap();
            let item = &body[0];
            assert_eq!(item.as_object().unwrap().len(), 3, "{{name,type,value}}");
            assert!(valid_kind(item["type"].as_str().unwrap()));
        }
    }
}

fn valid_kind(k: &str) -> bool {
    k == "default" || k == "secret"
}

#[tokio::test]
async fn unchanged_credentials_write_nothing_and_do_not_refresh() {
    let emu = Emulator::start().await;
    let first = sync(&emu.client(), &desired(SECRET), &SyncedState::default()).await;
    assert!(first.ok);
    emu.reset_calls().await;

    let again = sync(&emu.client(), &desired(SECRET), &first.state).await;
    assert!(again.ok, "{}", again.message);
    assert_eq!(again.writes, 0);
    assert!(!again.refreshed);
    assert_eq!(again.state, first.state);
    assert!(again.message.contains("unchanged"), "{}", again.message);
    assert_eq!(
        emu.calls().await,
        ["GET /api/environmentVariables:list?paginate=false"]
    );
    assert_eq!(emu.refreshes(), 1);
}

#[tokio::test]
async fn rotation_updates_the_secret_variable_only_and_refreshes_once() {
    let emu = Emulator::start().await;
    let first = sync(&emu.client(), &desired(SECRET), &SyncedState::default()).await;
    emu.reset_calls().await;

    let o = sync(&emu.client(), &desired(ROTATED), &first.state).await;
    assert!(o.ok, "{}", o.message);
    assert_eq!(o.writes, 1);
    assert_eq!(o.updated, [SECRET_VAR]);
    assert!(o.created.is_empty());
    assert!(o.refreshed);
    assert_eq!(emu.refreshes(), 2);
    assert_eq!(emu.var(SECRET_VAR).unwrap().value, ROTATED);
    assert_eq!(emu.var(SECRET_VAR).unwrap().kind.as_deref(), Some("secret"));
    assert_ne!(
        o.state.variables[SECRET_VAR].fingerprint,
        first.state.variables[SECRET_VAR].fingerprint
    );
    assert_eq!(o.state.owned, first.state.owned);
    assert_eq!(
        emu.calls().await,
        [
            "GET /api/environmentVariables:list?paginate=false",
            "POST /api/environmentVariables:update?filterByTk=MICROSOFT_CLIENT_SECRET",
            "GET /api/environmentVariables:list?paginate=false",
            "POST /api/app:refresh",
            "GET /api/environmentVariables:list?paginate=false",
        ]
    );
    // The update sends the value only, never a type.
    let reqs = emu.server.received_requests().await.unwrap();
    let body: Value = serde_json::from_slice(&reqs[1].body).unwrap();
    assert_eq!(
        body.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["value"]
    );
    assert_no_leak(&visible(&o));
}

#[tokio::test]
async fn a_value_edited_in_nocobase_is_written_again() {
    let emu = Emulator::start().await;
    let first = sync(&emu.client(), &desired(SECRET), &SyncedState::default()).await;
    emu.put(SECRET_VAR, "secret", "pasted-by-hand");
    let o = sync(&emu.client(), &desired(SECRET), &first.state).await;
    assert!(o.ok, "{}", o.message);
    assert_eq!(o.updated, [SECRET_VAR]);
    assert_eq!(emu.var(SECRET_VAR).unwrap().value, SECRET);
    assert_eq!(emu.refreshes(), 2);
}

#[tokio::test]
async fn an_existing_variable_is_left_alone_unless_adoption_is_opted_in() {
    let emu = Emulator::start().await;
    emu.put(ID_VAR, "default", "typed-by-an-admin");
    // Not opted in: somebody else's variable, nothing at all is written.
    let o = sync(&emu.client(), &desired(SECRET), &SyncedState::default()).await;
    assert_failed(&o, reason::VARIABLE_EXISTS, false);
    assert!(o.message.contains(ID_VAR), "{}", o.message);
    assert!(o.message.contains("adoptExisting"), "{}", o.message);
    assert_eq!(o.writes, 0);
    assert_eq!(emu.names(), [ID_VAR]);
    assert_eq!(emu.var(ID_VAR).unwrap().value, "typed-by-an-admin");
    // Opted in: adopted (updated) but not owned.
    let o = sync(&emu.client(), &adopting(SECRET), &SyncedState::default()).await;
    assert!(o.ok, "{}", o.message);
    assert_eq!(o.updated, [ID_VAR]);
    assert_eq!(o.created, [TENANT_VAR, SECRET_VAR]);
    assert_eq!(emu.var(ID_VAR).unwrap().value, CLIENT_ID);
    assert_eq!(o.state.owned, [SECRET_VAR, TENANT_VAR]);
    assert_eq!(emu.refreshes(), 1);
}

#[tokio::test]
async fn a_variable_of_the_other_type_is_a_conflict_and_nothing_is_written() {
    let emu = Emulator::start().await;
    emu.put(SECRET_VAR, "default", "plain-text-somebody-stored");
    let o = sync(&emu.client(), &desired(SECRET), &SyncedState::default()).await;
    assert_failed(&o, reason::VARIABLE_TYPE_CONFLICT, false);
    assert!(
        o.message
            .contains("MICROSOFT_CLIENT_SECRET is of type default (wanted secret)")
    );
    assert_eq!(o.writes, 0);
    assert_eq!(o.state, SyncedState::default());
    assert_eq!(
        emu.calls().await,
        ["GET /api/environmentVariables:list?paginate=false"]
    );
    assert_eq!(emu.names(), [SECRET_VAR]);
    assert_eq!(
        emu.var(SECRET_VAR).unwrap().value,
        "plain-text-somebody-stored"
    );
}

#[tokio::test]
async fn nocobase_unreachable_connection_refused_timeout_and_503() {
    // Connection refused: a port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = client_for(&format!("http://127.0.0.1:{port}"), API_KEY, None);
    let o = sync(&c, &desired(SECRET), &SyncedState::default()).await;
    assert_failed(&o, reason::NOCOBASE_UNREACHABLE, true);
    assert!(o.message.contains("could not connect"), "{}", o.message);

    // Timeout.
    let slow = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(json_fixture(200, "list.json").set_delay(Duration::from_secs(3)))
        .mount(&slow)
        .await;
    let o = sync(
        &client_for(&slow.uri(), API_KEY, None),
        &desired(SECRET),
        &SyncedState::default(),
    )
    .await;
    assert_failed(&o, reason::NOCOBASE_UNREACHABLE, true);
    assert!(o.message.contains("did not answer"), "{}", o.message);

    // 503 from a proxy, and from a NocoBase whose application was stopped or failed:
    // nothing comes back by itself there.
    for body in [
        json!("Service Unavailable"),
        json!({"error": {"status": 503, "maintaining": true, "message": "application main is stopped", "code": "APP_STOPPED"}}),
        json!({"error": {"status": 503, "maintaining": true, "message": "", "code": "APP_ERROR"}}),
    ] {
        let busy = MockServer::start().await;
        Mock::given(path_regex("^/"))
            .respond_with(json_body(503, &body))
            .mount(&busy)
            .await;
        let o = sync(
            &client_for(&busy.uri(), API_KEY, None),
            &desired(SECRET),
            &SyncedState::default(),
        )
        .await;
        assert_failed(&o, reason::NOCOBASE_UNREACHABLE, true);
    }
}

/// The real gateway answers `503 {"error":{"maintaining":true,"code":"APP_COMMANDING"}}`
/// while the application reloads (after `app:refresh`, while starting): its own reason,
/// transient, not "unreachable".
#[tokio::test]
async fn a_restarting_nocobase_is_its_own_transient_reason() {
    let busy = MockServer::start().await;
    Mock::given(path_regex("^/"))
        .respond_with(json_fixture(503, "error_app_commanding.json"))
        .mount(&busy)
        .await;
    let o = sync(
        &client_for(&busy.uri(), API_KEY, None),
        &desired(SECRET),
        &SyncedState::default(),
    )
    .await;
    assert_failed(&o, reason::NOCOBASE_RESTARTING, true);
    assert!(
        o.message.contains("restarting (APP_COMMANDING)"),
        "{}",
        o.message
    );
    assert!(
        !o.message.contains("load plugin"),
        "NocoBase's text is not quoted"
    );
    for code in [
        "APP_STARTING",
        "APP_INITIALIZING",
        "APP_PREPARING",
        "COMMAND_END",
    ] {
        let s = MockServer::start().await;
        Mock::given(path_regex("^/"))
            .respond_with(json_body(
                503,
                &json!({"error": {"status": 503, "maintaining": true, "message": "", "code": code}}),
            ))
            .mount(&s)
            .await;
        let err = client_for(&s.uri(), API_KEY, None)
            .list()
            .await
            .unwrap_err();
        assert_eq!(err.reason, reason::NOCOBASE_RESTARTING, "{code}");
    }
}

/// After its own `app:refresh`, a sync waits (polling) until NocoBase answers again, so
/// the reconcile its own writes trigger finds NocoBase back.
#[tokio::test]
async fn a_sync_waits_for_nocobase_to_come_back_after_its_refresh() {
    let emu = Emulator::start().await;
    emu.nocobase.state.lock().unwrap().restart_after_refresh = 3;
    let o = sync(&emu.client(), &desired(SECRET), &SyncedState::default()).await;
    assert!(o.ok && o.refreshed, "{}", o.message);
    assert!(!o.message.contains("still restarting"), "{}", o.message);
    assert_eq!(emu.nocobase.state.lock().unwrap().restarting_for, 0);
    // What the next reconcile does first: it gets an answer.
    emu.client().list().await.unwrap();
    let calls = emu.calls().await;
    let after_refresh = calls
        .iter()
        .skip_while(|c| !c.ends_with("app:refresh"))
        .skip(1)
        .filter(|c| c.contains("environmentVariables:list"))
        .count();
    assert_eq!(
        after_refresh, 5,
        "3 answered 503, 1 ended the wait, 1 the next list: {calls:?}"
    );

    // Bounded: a NocoBase that stays in maintenance ends the wait, and the sync, which did
    // its work, says so.
    emu.nocobase.state.lock().unwrap().restart_after_refresh = 1_000;
    let short = NocoBaseClient::new(
        &emu.server.uri(),
        SecretString::from(API_KEY),
        None,
        NocoBaseOptions {
            restart_wait: Duration::from_millis(300),
            ..fast()
        },
    )
    .unwrap();
    let started = std::time::Instant::now();
    let rotated = sync(&short, &desired(ROTATED), &o.state).await;
    assert!(rotated.ok, "{}", rotated.message);
    assert!(
        rotated.message.contains("still restarting"),
        "{}",
        rotated.message
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_wrong_api_key_is_rejected_with_401() {
    let emu = Emulator::start().await;
    let c = client_for(&emu.server.uri(), "not-the-key", None);
    let o = sync(&c, &desired(SECRET), &SyncedState::default()).await;
    assert_failed(&o, reason::API_KEY_REJECTED, false);
    assert!(o.message.contains("(INVALID_TOKEN)"), "{}", o.message);
    assert!(!o.message.contains("not-the-key"));
    assert!(emu.names().is_empty());
}

#[tokio::test]
async fn a_key_without_permission_is_rejected_with_403() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/environmentVariables:list"))
        .respond_with(json_fixture(200, "list.json"))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(json_fixture(403, "error_no_permissions.json"))
        .mount(&server)
        .await;
    // the listed variables are adopted, so the first write is an update
    let o = sync(
        &client_for(&server.uri(), API_KEY, None),
        &adopting(ROTATED),
        &SyncedState::default(),
    )
    .await;
    assert_failed(&o, reason::API_KEY_REJECTED, false);
    assert!(
        o.message.contains("environmentVariables:update"),
        "{}",
        o.message
    );
    assert!(
        !o.message.contains("No permissions"),
        "NocoBase's text is not quoted"
    );
}

#[tokio::test]
async fn a_missing_plugin_answers_404() {
    let emu = Emulator::with(None, false).await;
    let o = sync(&emu.client(), &desired(SECRET), &SyncedState::default()).await;
    assert_failed(&o, reason::PLUGIN_MISSING, false);
    assert!(o.message.contains("Variables and secrets"), "{}", o.message);
}

#[tokio::test]
async fn an_invalid_name_is_refused_by_nocobase_with_400_or_before_sending() {
    let emu = Emulator::start().await;
    // NocoBase's own refusal.
    let err = emu
        .client()
        .create(&[VarWrite {
            name: "1_NOT_A_NAME".into(),
            kind: VarKind::Secret,
            value: SecretString::from(SECRET),
        }])
        .await
        .unwrap_err();
    assert_eq!(err.reason, reason::INVALID_VARIABLE_NAME);
    assert!(!err.transient);
    assert!(err.message.contains("1_NOT_A_NAME"));
    assert_no_leak(&format!("{err} {err:?}"));

    // Caught before anything is sent.
    emu.reset_calls().await;
    let mut d = desired(SECRET);
    d[2] = DesiredVar::new("MICROSOFT-SECRET", VarKind::Secret, SECRET.into(), UID);
    let o = sync(&emu.client(), &d, &SyncedState::default()).await;
    assert_failed(&o, reason::INVALID_VARIABLE_NAME, false);
    assert!(o.message.contains("MICROSOFT-SECRET"));
    assert!(emu.calls().await.is_empty());

    // One name for two variables.
    let mut d = desired(SECRET);
    d[1].name = ID_VAR.into();
    let o = sync(&emu.client(), &d, &SyncedState::default()).await;
    assert_failed(&o, reason::INVALID_VARIABLE_NAME, false);
}

#[tokio::test]
async fn a_name_created_concurrently_is_variable_exists() {
    let emu = Emulator::start().await;
    emu.put(ID_VAR, "default", CLIENT_ID);
    let err = emu
        .client()
        .create(&[VarWrite {
            name: ID_VAR.into(),
            kind: VarKind::Default,
            value: SecretString::from(CLIENT_ID),
        }])
        .await
        .unwrap_err();
    assert_eq!(err.reason, reason::VARIABLE_EXISTS);
    assert!(err.transient);
}

#[tokio::test]
async fn the_app_header_selects_the_application() {
    let emu = Emulator::with(Some("crm"), true).await;
    let c = client_for(&emu.server.uri(), API_KEY, Some("crm"));
    let o = sync(&c, &desired(SECRET), &SyncedState::default()).await;
    assert!(o.ok, "{}", o.message);
    assert!(o.message.contains("application crm"), "{}", o.message);
    let reqs = emu.server.received_requests().await.unwrap();
    assert_eq!(reqs.len(), 7);
    assert!(reqs.iter().all(|r| r.headers["x-app"] == "crm"));

    let wrong = client_for(&emu.server.uri(), API_KEY, Some("nope"));
    let o = sync(&wrong, &desired(SECRET), &SyncedState::default()).await;
    assert_failed(&o, reason::APP_NOT_FOUND, false);
    assert!(o.message.contains("\"nope\""), "{}", o.message);
}

#[tokio::test]
async fn cleanup_deletes_only_the_operators_variables_and_only_when_opted_in() {
    let emu = Emulator::start().await;
    emu.put("SMTP_RELAY", "default", "smtp.example.com");
    emu.put(ID_VAR, "default", "typed-by-an-admin"); // adopted, not owned
    let o = sync(&emu.client(), &adopting(SECRET), &SyncedState::default()).await;
    assert!(o.ok, "{}", o.message);
    assert_eq!(o.state.owned, [SECRET_VAR, TENANT_VAR]);

    // Not opted in: nothing is sent, nothing deleted.
    emu.reset_calls().await;
    let kept = cleanup(&emu.client(), &o.state, false).await.unwrap();
    assert!(kept.deleted.is_empty() && !kept.refreshed);
    assert_eq!(kept.kept, [SECRET_VAR, TENANT_VAR]);
    assert!(emu.calls().await.is_empty());
    assert_eq!(emu.names().len(), 4);

    // Opted in: only the variables the operator created, then one refresh.
    let done = cleanup(&emu.client(), &o.state, true).await.unwrap();
    assert_eq!(done.deleted, [SECRET_VAR, TENANT_VAR]);
    assert!(done.refreshed);
    assert_eq!(emu.names(), [ID_VAR, "SMTP_RELAY"]);
    assert_eq!(
        emu.calls().await,
        [
            "GET /api/environmentVariables:list?paginate=false",
            "POST /api/environmentVariables:destroy?filterByTk=MICROSOFT_CLIENT_SECRET",
            "POST /api/environmentVariables:destroy?filterByTk=MICROSOFT_TENANT_ID",
            "POST /api/app:refresh",
        ]
    );

    // Again: nothing left to delete, no refresh.
    let again = cleanup(&emu.client(), &o.state, true).await.unwrap();
    assert!(again.deleted.is_empty() && !again.refreshed);
}

#[tokio::test]
async fn a_failed_refresh_is_retried_by_the_next_sync() {
    let emu = Emulator::start().await;
    let first = sync(&emu.client(), &desired(SECRET), &SyncedState::default()).await;
    // NocoBase fails app:refresh once (mounted with a higher priority).
    Mock::given(path("/api/app:refresh"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&emu.server)
        .await;
    let o = sync(&emu.client(), &desired(ROTATED), &first.state).await;
    assert_failed(&o, reason::NOCOBASE_UNREACHABLE, true);
    assert_eq!(o.updated, [SECRET_VAR]);
    assert!(o.state.refresh_pending);
    assert_eq!(emu.var(SECRET_VAR).unwrap().value, ROTATED);

    let next = sync(&emu.client(), &desired(ROTATED), &o.state).await;
    assert!(next.ok, "{}", next.message);
    assert_eq!(next.writes, 0);
    assert!(next.refreshed);
    assert!(!next.state.refresh_pending);
}

#[tokio::test]
async fn the_real_bodies_are_read() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/environmentVariables:list"))
        .respond_with(json_fixture(200, "list.json"))
        .mount(&server)
        .await;
    Mock::given(path("/api/environmentVariables:update"))
        .respond_with(json_fixture(200, "update.json"))
        .mount(&server)
        .await;
    Mock::given(path("/api/environmentVariables:destroy"))
        .respond_with(json_fixture(200, "destroy.json"))
        .mount(&server)
        .await;
    Mock::given(path("/api/app:refresh"))
        .respond_with(json_fixture(200, "refresh.json"))
        .mount(&server)
        .await;
    let c = client_for(&server.uri(), API_KEY, None);
    let listed = c.list().await.unwrap();
    let kinds: Vec<(&str, VarKind)> = listed.iter().map(|l| (l.name.as_str(), l.kind)).collect();
    assert_eq!(
        kinds,
        [
            (ID_VAR, VarKind::Default),
            (SECRET_VAR, VarKind::Secret),
            (TENANT_VAR, VarKind::Default),
            ("SMTP_RELAY", VarKind::Default),
        ]
    );
    assert_eq!(
        listed[1].updated_at.as_deref(),
        Some("2026-05-04T09:12:31.455Z")
    );
    let w = VarWrite {
        name: SECRET_VAR.into(),
        kind: VarKind::Secret,
        value: SecretString::from(SECRET),
    };
    c.update(&w).await.unwrap();
    c.destroy(SECRET_VAR).await.unwrap();
    c.refresh().await.unwrap();

    // create: one object answers an object, an array answers an array.
    let one = MockServer::start().await;
    Mock::given(path("/api/environmentVariables:create"))
        .respond_with(json_fixture(200, "create_one.json"))
        .mount(&one)
        .await;
    client_for(&one.uri(), API_KEY, None)
        .create(std::slice::from_ref(&w))
        .await
        .unwrap();
    let many = MockServer::start().await;
    Mock::given(path("/api/environmentVariables:create"))
        .respond_with(json_fixture(200, "create_many.json"))
        .mount(&many)
        .await;
    let pair = [
        VarWrite {
            name: ID_VAR.into(),
            kind: VarKind::Default,
            value: SecretString::from(CLIENT_ID),
        },
        VarWrite {
            name: TENANT_VAR.into(),
            kind: VarKind::Default,
            value: SecretString::from(TENANT_ID),
        },
    ];
    client_for(&many.uri(), API_KEY, None)
        .create(&pair)
        .await
        .unwrap();
    let reqs = many.received_requests().await.unwrap();
    let sent: Value = serde_json::from_slice(&reqs[0].body).unwrap();
    assert_eq!(
        sent,
        json!([
            {"name": ID_VAR, "type": "default", "value": CLIENT_ID},
            {"name": TENANT_VAR, "type": "default", "value": TENANT_ID},
        ])
    );
}

#[tokio::test]
async fn unexpected_answers() {
    // An HTML page (the URL points at NocoBase's UI, or a proxy's login page).
    let html = MockServer::start().await;
    Mock::given(path_regex("^/"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-type", "text/html")
                .set_body_string("<!doctype html><html><body>NocoBase</body></html>"),
        )
        .mount(&html)
        .await;
    let o = sync(
        &client_for(&html.uri(), API_KEY, None),
        &desired(SECRET),
        &SyncedState::default(),
    )
    .await;
    assert_failed(&o, reason::UNEXPECTED_RESPONSE, true);
    assert!(!o.message.contains("doctype"));

    // An update that finds no variable (deleted after the list) answers {"data": []}.
    let gone = MockServer::start().await;
    Mock::given(path("/api/environmentVariables:update"))
        .respond_with(json_fixture(200, "update_missing.json"))
        .mount(&gone)
        .await;
    let err = client_for(&gone.uri(), API_KEY, None)
        .update(&VarWrite {
            name: SECRET_VAR.into(),
            kind: VarKind::Secret,
            value: SecretString::from(SECRET),
        })
        .await
        .unwrap_err();
    assert_eq!(err.reason, reason::UNEXPECTED_RESPONSE);
    assert!(err.transient);

    // A redirect (http:// given where NocoBase wants https://).
    let moved = MockServer::start().await;
    Mock::given(path_regex("^/"))
        .respond_with(ResponseTemplate::new(301).insert_header("location", "https://elsewhere/"))
        .mount(&moved)
        .await;
    let err = client_for(&moved.uri(), API_KEY, None)
        .list()
        .await
        .unwrap_err();
    assert_eq!(err.reason, reason::UNEXPECTED_RESPONSE);
    assert!(err.message.contains("redirected"));
}

/// Every message, Debug output and log line of a run through every path, at TRACE level,
/// is free of the API key and of every value written.
#[tokio::test]
async fn no_secret_leaks_into_messages_debug_or_logs() {
    capture_logs();
    let mut seen = String::new();
    let emu = Emulator::start().await;
    let c = emu.client();
    seen += &format!("{c:?}\n{:?}\n", desired(SECRET));
    let first = sync(&c, &desired(SECRET), &SyncedState::default()).await;
    seen += &visible(&first);
    let rotated = sync(&c, &desired(ROTATED), &first.state).await;
    seen += &visible(&rotated);
    emu.put(SECRET_VAR, "default", SECRET);
    seen += &visible(&sync(&c, &desired(ROTATED), &SyncedState::default()).await);
    let bad_key = client_for(&emu.server.uri(), &format!("{API_KEY}x"), None);
    seen += &format!("{bad_key:?}");
    seen += &visible(&sync(&bad_key, &desired(SECRET), &SyncedState::default()).await);
    for w in [
        VarWrite {
            name: "9BAD".into(),
            kind: VarKind::Secret,
            value: SecretString::from(SECRET),
        },
        VarWrite {
            name: TENANT_VAR.into(),
            kind: VarKind::Default,
            value: SecretString::from(ROTATED),
        },
    ] {
        seen += &format!("{w:?}");
        let e = c.create(std::slice::from_ref(&w)).await.unwrap_err();
        seen += &format!("{e}\n{e:?}\n");
    }
    let refused = NocoBaseClient::new(
        "http://user:pw@nocobase",
        SecretString::from(API_KEY),
        None,
        NocoBaseOptions::default(),
    )
    .unwrap_err();
    seen += &refused;
    // Every line logged by every test of this file so far, at TRACE level.
    seen += &logs::logs();
    assert!(seen.contains("[REDACTED]"));
    assert!(seen.contains("NocoBase answered"), "the log capture works");
    // NocoBase echoed the values in its create and update answers; none of that shows.
    assert_no_leak(&seen);
}
