//! The email manager's settings against the NocoBase emulator (`tests/common/nocobase_emu.rs`):
//! discovery through the API documentation, a first write, a quiet period with no rewrite,
//! a valid change, an edit made in NocoBase, every refusal (missing collection, field or
//! record, several records, a write that lands nowhere), NocoBase refreshing during a
//! write, the fallback without the API-doc plugin, cleanup, and a scan for leaked secrets.

use std::collections::BTreeMap;
use std::time::Duration;

use nocobase_mail_operator::api::MailSettings;
use nocobase_mail_operator::mailsettings::{
    MailOutcome, MailSettingsStatus, Wanted, cleanup, field_fingerprint, reason, sync,
};
use nocobase_mail_operator::nocobase::{NocoBaseClient, NocoBaseOptions};
use secrecy::SecretString;
use serde_json::{Value, json};
use wiremock::MockServer;

#[path = "common/nocobase_emu.rs"]
mod nocobase_emu;
use nocobase_emu::*;

const CLIENT_ID: &str = "11111111-2222-4333-8444-555555555555";
const SECRET: &str = "Q~xR8~kZ3vW9pLm_YhT2.nBq7XcJf5Gd0sAe4Ru~K";
const ROTATED: &str = "Zq7~8Q~pW2.xYc4Lm_Nr9vT3bKf6Gd1sAh5Ju~E";
const UID: &[u8] = b"0b7f2e8c-uid-of-the-resource";

struct Emu {
    server: MockServer,
    nb: NocoBase,
}

/// A `mailSettings` collection shaped as the email manager's is believed to be: a record
/// per provider, a client ID and a client secret hidden from reads.
fn mail_collection(secret_hidden: bool) -> Collection {
    let rec = |id: u64, provider: &str| {
        json!({"id": id, "provider": provider, "clientId": "", "clientSecret": "",
               "createdAt": "2026-05-04T09:00:00.000Z", "updatedAt": "2026-05-04T09:00:00.000Z"})
        .as_object()
        .unwrap()
        .clone()
    };
    Collection {
        fields: [
            "id",
            "provider",
            "clientId",
            "clientSecret",
            "createdAt",
            "updatedAt",
        ]
        .map(str::to_owned)
        .to_vec(),
        hidden: if secret_hidden {
            vec!["clientSecret".into()]
        } else {
            vec![]
        },
        ignored: vec![],
        records: vec![rec(1, "gmail"), rec(2, "outlook")],
    }
}

impl Emu {
    async fn start(secret_hidden: bool) -> Self {
        capture_logs();
        let nb = NocoBase::with_collections([("mailSettings", mail_collection(secret_hidden))]);
        Self {
            server: nb.serve().await,
            nb,
        }
    }

    fn client(&self) -> NocoBaseClient {
        NocoBaseClient::new(
            &self.server.uri(),
            SecretString::from(API_KEY),
            None,
            NocoBaseOptions {
                connect_timeout: Duration::from_millis(500),
                request_timeout: Duration::from_secs(2),
                ..Default::default()
            },
        )
        .unwrap()
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.nb.state.lock().unwrap()
    }

    fn field(&self, id: u64, f: &str) -> Value {
        let st = self.st();
        let c = &st.collections["mailSettings"];
        c.records.iter().find(|r| r["id"] == id).unwrap()[f].clone()
    }

    fn updates(&self) -> usize {
        self.st().record_updates
    }

    async fn requests(&self) -> Vec<String> {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .map(|r| format!("{} {}", r.method, r.url.path().trim_start_matches("/api/")))
            .collect()
    }
}

fn wanted(secret: &str) -> Wanted {
    Wanted {
        client_id: CLIENT_ID.into(),
        client_secret: SecretString::from(secret),
        credentials_fingerprint: format!("fp-of-{}", &secret[..3]),
    }
}

fn settings() -> MailSettings {
    MailSettings {
        enabled: true,
        ..Default::default()
    }
}

fn visible(o: &MailOutcome) -> String {
    format!("{} {} {:?} {:?}", o.reason, o.message, o, o.state)
}

fn assert_no_leak(text: &str) {
    for s in [SECRET, ROTATED, API_KEY] {
        assert!(!text.contains(s), "a secret leaked: {text}");
        assert!(
            !text.contains(&s[..8]),
            "a piece of a secret leaked: {text}"
        );
    }
}

async fn run(
    emu: &Emu,
    s: &MailSettings,
    secret: &str,
    prev: Option<&MailSettingsStatus>,
) -> MailOutcome {
    let out = sync(&emu.client(), s, &wanted(secret), UID, prev).await;
    assert_no_leak(&visible(&out));
    out
}

#[tokio::test]
async fn discovery_first_write_quiet_period_and_a_valid_change() {
    let emu = Emu::start(true).await;
    let s = settings();
    let first = run(&emu, &s, SECRET, None).await;
    assert!(first.ok, "{}", first.message);
    assert_eq!(first.reason, reason::SYNCED);
    assert_eq!(first.written, ["clientId", "clientSecret"]);
    // the outlook record, not gmail's
    assert_eq!(emu.field(2, "clientId"), CLIENT_ID);
    assert_eq!(emu.field(2, "clientSecret"), SECRET);
    assert_eq!(emu.field(1, "clientSecret"), "");
    // the hidden secret cannot be confirmed, and the message says so
    let state = first.state.clone().unwrap();
    assert_eq!(state.unconfirmed, ["clientSecret"]);
    assert!(
        first
            .message
            .contains("confirmed by reading back: clientId")
    );
    assert!(first.message.contains("not confirmed: clientSecret"));
    assert_eq!(
        (state.collection.as_str(), state.record.as_str()),
        ("mailSettings", "2")
    );
    assert_eq!(state.credentials_fingerprint, "fp-of-Q~x");
    assert_eq!(
        state.fields["clientSecret"],
        field_fingerprint(UID, "mailSettings", "2", "clientSecret", SECRET)
    );
    assert!(state.updated_at.is_some());
    let reqs = emu.requests().await;
    assert_eq!(
        reqs,
        [
            "GET swagger:get",
            "GET mailSettings:list",
            "POST mailSettings:update",
            "GET mailSettings:list"
        ]
    );

    // quiet period: the same credentials, nothing written
    for _ in 0..3 {
        let again = run(&emu, &s, SECRET, first.state.as_ref()).await;
        assert!(again.ok && again.written.is_empty(), "{}", again.message);
        assert!(again.message.contains("unchanged"));
        assert_eq!(again.state, first.state);
    }
    assert_eq!(emu.updates(), 1);

    // a valid new secret: only the secret field is written
    let rotated = run(&emu, &s, ROTATED, first.state.as_ref()).await;
    assert!(rotated.ok);
    assert_eq!(rotated.written, ["clientSecret"]);
    assert_eq!(emu.field(2, "clientSecret"), ROTATED);
    assert!(rotated.message.contains("clientSecret (value changed)"));
    assert_eq!(emu.updates(), 2);
}

#[tokio::test]
async fn an_edit_made_in_nocobase_is_written_again() {
    let emu = Emu::start(true).await;
    let s = settings();
    let first = run(&emu, &s, SECRET, None).await;
    {
        let mut st = emu.st();
        let c = st.collections.get_mut("mailSettings").unwrap();
        let r = c.records.iter_mut().find(|r| r["id"] == 2).unwrap();
        r.insert("clientSecret".into(), json!("typed-by-hand"));
        r.insert("updatedAt".into(), json!("2026-06-01T00:00:00.000Z"));
    }
    let again = run(&emu, &s, SECRET, first.state.as_ref()).await;
    assert_eq!(again.written, ["clientSecret"]);
    assert!(
        again.message.contains("changed in NocoBase"),
        "{}",
        again.message
    );
    assert_eq!(emu.field(2, "clientSecret"), SECRET);
}

#[tokio::test]
async fn a_readable_secret_is_confirmed_and_compared_directly() {
    let emu = Emu::start(false).await;
    let out = run(&emu, &settings(), SECRET, None).await;
    assert!(out.ok);
    assert!(out.state.as_ref().unwrap().unconfirmed.is_empty());
    assert!(
        out.message
            .contains("confirmed by reading back: clientId, clientSecret")
    );
    // equal values read back: nothing to write even without a record in status
    let again = run(&emu, &settings(), SECRET, None).await;
    assert!(again.written.is_empty());
}

#[tokio::test]
async fn a_missing_field_is_reported_with_the_field_list_and_nothing_is_written() {
    let emu = Emu::start(true).await;
    let mut s = settings();
    s.fields.client_secret = "secret".into();
    let out = run(&emu, &s, SECRET, None).await;
    assert!(!out.ok);
    assert_eq!(out.reason, reason::FIELD_UNKNOWN);
    assert!(!out.transient);
    assert!(out.message.contains("no field secret"), "{}", out.message);
    assert!(
        out.message
            .contains("clientId, clientSecret, createdAt, id, provider, updatedAt"),
        "{}",
        out.message
    );
    assert!(out.message.contains("API documentation"));
    assert_eq!(emu.updates(), 0);
    assert!(out.state.is_none());

    let mut m = settings();
    m.match_fields = BTreeMap::from([("kind".into(), "outlook".into())]);
    let out = run(&emu, &m, SECRET, None).await;
    assert_eq!(out.reason, reason::FIELD_UNKNOWN);
    assert!(out.message.contains("mailSettings.match"));
    assert_eq!(emu.updates(), 0);
}

#[tokio::test]
async fn missing_collection_record_or_several_records_write_nothing() {
    let emu = Emu::start(true).await;
    let mut s = settings();
    s.collection = "emailSettings".into();
    let out = run(&emu, &s, SECRET, None).await;
    assert_eq!(out.reason, reason::NOT_FOUND, "{}", out.message);
    assert!(out.message.contains("emailSettings"));

    let mut s = settings();
    s.match_fields = BTreeMap::from([("provider".into(), "exchange".into())]);
    let out = run(&emu, &s, SECRET, None).await;
    assert_eq!(out.reason, reason::RECORD_NOT_FOUND);
    assert!(out.message.contains("provider=exchange") && out.message.contains("clientSecret"));

    let mut s = settings();
    s.match_fields.clear();
    let out = run(&emu, &s, SECRET, None).await;
    assert_eq!(out.reason, reason::AMBIGUOUS);
    assert!(out.message.starts_with("NocoBase at"));
    assert_eq!(emu.updates(), 0);
}

#[tokio::test]
async fn a_write_that_lands_nowhere_is_not_applied() {
    let emu = Emu::start(false).await;
    emu.st()
        .collections
        .get_mut("mailSettings")
        .unwrap()
        .ignored = vec!["clientId".into(), "clientSecret".into()];
    let out = run(&emu, &settings(), SECRET, None).await;
    assert!(!out.ok);
    assert_eq!(out.reason, reason::NOT_APPLIED);
    assert!(
        out.message.contains("clientId, clientSecret"),
        "{}",
        out.message
    );
    assert!(out.state.is_none(), "nothing recorded as written");
}

#[tokio::test]
async fn nocobase_refreshing_during_a_write_is_transient_and_the_next_sync_writes() {
    let emu = Emu::start(true).await;
    emu.st().fail_next_update = true;
    let out = run(&emu, &settings(), SECRET, None).await;
    assert!(!out.ok && out.transient, "{out:?}");
    assert!(out.message.contains("APP_COMMANDING"), "{}", out.message);
    assert_eq!(emu.field(2, "clientSecret"), "");
    assert!(out.state.is_none());
    // refreshing before anything was read: transient too
    emu.st().commanding = 1;
    let out = run(&emu, &settings(), SECRET, None).await;
    assert!(!out.ok && out.transient);
    let out = run(&emu, &settings(), SECRET, None).await;
    assert!(out.ok);
    assert_eq!(emu.field(2, "clientSecret"), SECRET);
}

#[tokio::test]
async fn without_the_api_doc_plugin_the_record_keys_are_used_and_hidden_fields_are_named() {
    let emu = Emu::start(false).await;
    emu.st().no_api_doc = true;
    let out = run(&emu, &settings(), SECRET, None).await;
    assert!(out.ok, "{}", out.message);

    let emu = Emu::start(true).await;
    emu.st().no_api_doc = true;
    let out = run(&emu, &settings(), SECRET, None).await;
    assert_eq!(out.reason, reason::FIELD_UNKNOWN);
    assert!(out.message.contains("record's keys") && out.message.contains("hidden from reads"));
    assert!(out.message.contains("plugin-api-doc"), "{}", out.message);
    assert_eq!(emu.updates(), 0);
}

#[tokio::test]
async fn a_wrong_api_key_is_rejected_not_a_missing_collection() {
    let emu = Emu::start(true).await;
    let client = NocoBaseClient::new(
        &emu.server.uri(),
        SecretString::from("wrong-key"),
        None,
        NocoBaseOptions::default(),
    )
    .unwrap();
    let out = sync(&client, &settings(), &wanted(SECRET), UID, None).await;
    assert_eq!(out.reason, "ApiKeyRejected");
}

#[tokio::test]
async fn cleanup_empties_only_the_written_fields_and_only_when_asked() {
    let emu = Emu::start(true).await;
    let s = settings();
    let state = run(&emu, &s, SECRET, None).await.state.unwrap();
    assert!(cleanup(&emu.client(), &s, &state).await.unwrap().is_empty());
    assert_eq!(emu.field(2, "clientSecret"), SECRET);
    let asked = MailSettings {
        clear_on_cleanup: true,
        ..s
    };
    let cleared = cleanup(&emu.client(), &asked, &state).await.unwrap();
    assert_eq!(cleared, ["clientId", "clientSecret"]);
    assert_eq!(emu.field(2, "clientSecret"), "");
    assert_eq!(emu.field(2, "provider"), "outlook");
    assert_eq!(emu.field(1, "provider"), "gmail");
}

#[path = "common/logs.rs"]
mod logs;
use logs::capture_logs;

#[tokio::test]
async fn no_secret_in_logs_at_trace() {
    let emu = Emu::start(false).await;
    let out = run(&emu, &settings(), SECRET, None).await;
    assert!(out.ok);
    let rotated = run(&emu, &settings(), ROTATED, out.state.as_ref()).await;
    assert!(rotated.ok);
    let logs = logs::logs();
    assert!(
        logs.contains("NocoBase answered"),
        "TRACE logs are captured"
    );
    assert_no_leak(&logs);
}

#[path = "common/real_nocobase.rs"]
mod real_nocobase;

/// Against a real NocoBase 2.2.15 (`scripts/real-nocobase.sh`), on a stand-in collection
/// whose secret field is hidden from reads, as the email manager's may be: discovery sees
/// the hidden field through the API documentation, the first write cannot confirm it and
/// says so, the quiet period rewrites nothing (fingerprint and updatedAt), a change in
/// NocoBase is written again, and NocoBase refreshing during a sync is transient.
#[tokio::test]
async fn real_nocobase_hidden_secret_field() {
    let Some(nb) = real_nocobase::RealNocoBase::from_env_or_skip() else {
        return;
    };
    let name = format!("mmoMailHidden{}", std::process::id());
    nb.create_stand_in(&name, true).await;
    let client = NocoBaseClient::new(
        &nb.url,
        SecretString::from(nb.key.clone()),
        None,
        NocoBaseOptions::default(),
    )
    .unwrap();
    let s = MailSettings {
        enabled: true,
        collection: name.clone(),
        ..Default::default()
    };
    let first = sync(&client, &s, &wanted(SECRET), UID, None).await;
    assert!(first.ok, "{}", first.message);
    assert_eq!(first.written, ["clientId", "clientSecret"]);
    assert_eq!(first.state.as_ref().unwrap().unconfirmed, ["clientSecret"]);
    assert!(
        first
            .message
            .contains("not confirmed: clientSecret is hidden from reads"),
        "{}",
        first.message
    );
    let rec = nb.record(&name, "outlook").await;
    assert_eq!(rec["clientId"], CLIENT_ID);
    assert!(rec.get("clientSecret").is_none(), "hidden from reads");
    let at = rec["updatedAt"].clone();

    // quiet period: nothing written (updatedAt does not move)
    for _ in 0..3 {
        let again = sync(&client, &s, &wanted(SECRET), UID, first.state.as_ref()).await;
        assert!(again.ok && again.written.is_empty(), "{}", again.message);
    }
    assert_eq!(nb.record(&name, "outlook").await["updatedAt"], at);

    // NocoBase refreshing during a sync: transient, nothing recorded; then it goes through
    nb.refresh().await;
    let during = sync(&client, &s, &wanted(ROTATED), UID, first.state.as_ref()).await;
    assert!(!during.ok && during.transient, "{during:?}");
    assert_eq!(during.state, first.state);
    let mut after = during;
    for _ in 0..60 {
        after = sync(&client, &s, &wanted(ROTATED), UID, first.state.as_ref()).await;
        if after.ok {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(after.ok, "{}", after.message);
    assert_eq!(after.written, ["clientSecret"]);
    assert_ne!(nb.record(&name, "outlook").await["updatedAt"], at);
    assert_no_leak(&visible(&after));
    nb.destroy(&name).await;
}
