//! The NocoBase paths as a user meets them (issue 20 item 2): the release binary under the
//! chart's ServiceAccount on the real control plane of `scripts/real-kube.sh`, writing into
//! the real NocoBase 2.2.15 of `scripts/real-nocobase.sh`, with the Microsoft emulator as
//! the tenant. Everything in the cluster is done with helm and kubectl as a user does it;
//! everything in NocoBase is checked through its REST API as an administrator would.
//!
//! The chart lists the real NocoBase (`http://127.0.0.1:13000`, loopback, so `http://` is
//! accepted) in `allowedHosts.nocobase` and a stand-in for the email manager's settings
//! collection in `allowedMailCollections` (the email manager is commercial and cannot be
//! installed: the stand-in is created through NocoBase's own `collections:create`, as
//! tests/reconciler.rs does). Variables are named `E2E_J<pid>_...` and the stand-in
//! `mmoMailJourney<pid>`, so another run sharing the NocoBase is not disturbed.
//!
//! Skips, saying so, without a cluster or a NocoBase, unless `KUBE_REAL_REQUIRED=1` or
//! `NOCOBASE_REAL_REQUIRED=1`.

mod common;

use common::cluster::*;
use common::entra::EntraApp;
use common::real_kube::*;
use common::real_nocobase::RealNocoBase;
use common::{CLIENT, TENANT, assert_no_secret, condition_of, host_port};
use serde_json::{Map, Value, json};

/// A value Microsoft refuses (not a credential of the app registration).
const REJECTED: &str = "Zt4Wq9Lm2Xv7Kp3Rb8Nc1Hd6Jf5Gy0Ss9Qe4UaP";
/// A second credential of the app registration, put in the Secret as a rotation.
const ROTATED: &str = "Mx6Tb1Vq8Zk3Wp5Rn9Lc2Hf7Jd4Gs0Ys6Ue1OaB";

/// How long a change may take to reach NocoBase: a sync waits out its own refresh, and
/// another suite may be refreshing the shared NocoBase too.
const SYNC: u64 = 120;

/// The integration's conditions as `kubectl get mmi NAME -o json` shows them.
fn kubectl_mmi(env: &Env, name: &str) -> Value {
    let out = env
        .kube
        .kubectl_ok(&["get", "mmi", name, "-n", &env.ns, "-o", "json"]);
    serde_json::from_str(&out).expect("kubectl prints JSON")
}

fn kubectl_condition(env: &Env, name: &str, t: &str) -> (String, String, String) {
    let m = kubectl_mmi(env, name);
    if m["status"]["conditions"].is_array() {
        let has = m["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == t);
        if has {
            return condition_of(&m, t);
        }
    }
    Default::default()
}

/// Waits until kubectl shows condition `t` with `want` (status, reason).
async fn until(env: &Env, t: &str, want: (&str, &str), secs: u64) {
    let what = format!("outlook: {t} {want:?}");
    eventually(&what, secs, || async {
        let (s, r, _) = kubectl_condition(env, "outlook", t);
        (s.as_str(), r.as_str()) == want
    })
    .await;
}

/// This run's variables as NocoBase lists them (secrets without a value).
async fn variables(nb: &RealNocoBase, prefix: &str) -> Vec<Value> {
    let (status, body) = nb
        .api("GET", "environmentVariables:list?paginate=false", None)
        .await;
    assert_eq!(status, 200, "environmentVariables:list: {body}");
    let mut vars: Vec<Value> = body["data"]
        .as_array()
        .expect("a list")
        .iter()
        .filter(|v| v["name"].as_str().is_some_and(|n| n.starts_with(prefix)))
        .cloned()
        .collect();
    vars.sort_by_key(|v| v["name"].as_str().unwrap_or_default().to_owned());
    vars
}

/// (name, type, value) of each variable.
fn shapes(vars: &[Value]) -> Vec<(String, String, Value)> {
    vars.iter()
        .map(|v| {
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
            (s("name"), s("type"), v["value"].clone())
        })
        .collect()
}

fn updated_at(vars: &[Value], name: &str) -> Value {
    vars.iter()
        .find(|v| v["name"] == name)
        .map(|v| v["updatedAt"].clone())
        .unwrap_or_else(|| panic!("no variable {name} in {vars:?}"))
}

/// The record's keys the operator does not write, as NocoBase returns them (JSON text).
fn others(record: &Value) -> String {
    let mut m: Map<String, Value> = record.as_object().expect("a record").clone();
    for k in ["clientId", "clientSecret", "updatedAt"] {
        m.remove(k);
    }
    Value::Object(m).to_string()
}

struct Names {
    prefix: String,
    id: String,
    tenant: String,
    secret: String,
    /// A variable of this run that the integration does not name.
    foreign: String,
    collection: String,
}

impl Names {
    fn new() -> Self {
        let prefix = format!("E2E_J{}_", std::process::id());
        Self {
            id: format!("{prefix}CLIENT_ID"),
            tenant: format!("{prefix}TENANT_ID"),
            secret: format!("{prefix}CLIENT_SECRET"),
            foreign: format!("{prefix}SMTP_HOST"),
            collection: format!("mmoMailJourney{}", std::process::id()),
            prefix,
        }
    }
}

/// The stand-in settings collection, its Gmail record filled in as an administrator would
/// have it, and a variable of somebody else; returns (gmail, outlook) records as read.
async fn prepare_nocobase(nb: &RealNocoBase, n: &Names) -> (Value, Value) {
    nb.create_stand_in(&n.collection, false).await;
    let gmail = nb.record(&n.collection, "gmail").await;
    let (status, body) = nb
        .api(
            "POST",
            &format!("{}:update?filterByTk={}", n.collection, gmail["id"]),
            Some(json!({"clientId": "gmail-id.apps.example", "clientSecret": "GOCSPX-gmail-kept"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = nb
        .api(
            "POST",
            "environmentVariables:create",
            Some(json!({"name": n.foreign, "type": "default", "value": "smtp.example.com"})),
        )
        .await;
    assert_eq!(
        status, 200,
        "environmentVariables:create: {}",
        body["errors"]
    );
    (
        nb.record(&n.collection, "gmail").await,
        nb.record(&n.collection, "outlook").await,
    )
}

/// The integration a user applies: Variables with names of this run, removed on cleanup,
/// and the email manager's settings in the stand-in's Outlook record (default mapping).
fn journey_integration(app: &EntraApp, nb: &RealNocoBase, n: &Names) -> Value {
    integration(
        "outlook",
        app,
        json!({"targets": [], "nocobase": {
            "url": nb.url,
            "apiKeySecretRef": {"name": "nocobase-api-key"},
            "variables": {"clientId": n.id, "tenantId": n.tenant, "clientSecret": n.secret},
            "deleteOnCleanup": true,
            "mailSettings": {"enabled": true, "collection": n.collection}}}),
    )
}

/// Removes what this run put into NocoBase (whatever the operator left), as the real
/// suite does: destroyed, then one refresh.
async fn remove_leftovers(nb: &RealNocoBase, n: &Names) {
    for v in variables(nb, &n.prefix).await {
        let name = v["name"].as_str().unwrap();
        nb.api(
            "POST",
            &format!("environmentVariables:destroy?filterByTk={name}"),
            None,
        )
        .await;
    }
    nb.destroy(&n.collection).await;
    nb.refresh().await;
}

#[tokio::test]
async fn variables_and_mail_settings_through_the_binary_into_a_real_nocobase() {
    let Some(nb) = RealNocoBase::from_env_or_skip() else {
        return;
    };
    let Some(env) = Env::new("ncbj").await else {
        return;
    };
    let n = Names::new();
    let (gmail_before, outlook_before) = prepare_nocobase(&nb, &n).await;
    let app = EntraApp::start(OLD, FAR).await;
    let mark = env.kube.audit().map_or(0, |a| a.mark());
    // The administrator lists exactly the NocoBase and the collection (--set-json: a list).
    let nocobase = format!("allowedHosts.nocobase=[\"{}\"]", host_port(&nb.url));
    let collections = format!("allowedMailCollections=[\"{}\"]", n.collection);
    let release = env.release(
        "ncbj",
        &app,
        &["--set-json", &nocobase, "--set-json", &collections],
    );
    let mut op = env.run(&release).await;

    env.apply(&user_secret("entra", OLD));
    // the API key Secret as nocobase-variables.md step 1 creates it
    let literal = format!("--from-literal=api-key={}", nb.key);
    env.kube.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "nocobase-api-key",
        "-n",
        &env.ns,
        &literal,
    ]);
    env.apply(&journey_integration(&app, &nb, &n));

    first_sync(&env, &nb, &n, &gmail_before, &outlook_before).await;
    rejected_then_rotated(&env, &nb, &n, &app).await;
    let described = env
        .kube
        .kubectl_ok(&["describe", "mmi", "outlook", "-n", &env.ns]);
    for want in ["NocoBaseSynced", "MailSettingsSynced", "Events:"] {
        assert!(described.contains(want), "no {want} in:\n{described}");
    }
    deletion(&env, &nb, &n, &gmail_before).await;

    let events = env
        .kube
        .kubectl_ok(&["get", "events", "-n", &env.ns, "-o", "yaml"]);
    let secrets = [OLD, REJECTED, ROTATED, nb.key.as_str()];
    assert_no_secret(&described, &secrets);
    assert_no_secret(&events, &secrets);
    stop_clean(&env, &mut op, &release, mark, &secrets);
    remove_leftovers(&nb, &n).await;
    env.cleanup().await;
}

/// The first sync: the three variables with their types and values, the Outlook record
/// holding the credentials, every other key and record as before.
async fn first_sync(env: &Env, nb: &RealNocoBase, n: &Names, gmail: &Value, outlook: &Value) {
    until(env, "NocoBaseSynced", ("True", "Synced"), SYNC).await;
    until(env, "MailSettingsSynced", ("True", "Synced"), SYNC).await;
    until(env, "Ready", ("True", "Ready"), SYNC).await;
    let table = env.kube.kubectl_ok(&["get", "mmi", "-n", &env.ns]);
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("outlook"))
        .unwrap()
        .split_whitespace()
        .take(4)
        .collect();
    assert_eq!(row, ["outlook", "True", "True", "Ready"], "{table}");

    let vars = variables(nb, &n.prefix).await;
    assert_eq!(
        shapes(&vars),
        [
            (n.id.clone(), "default".into(), json!(CLIENT)),
            // secrets are listed without their value
            (n.secret.clone(), "secret".into(), Value::Null),
            (
                n.foreign.clone(),
                "default".into(),
                json!("smtp.example.com")
            ),
            (n.tenant.clone(), "default".into(), json!(TENANT)),
        ]
    );
    let rec = nb.record(&n.collection, "outlook").await;
    assert_eq!(rec["clientId"], CLIENT);
    assert_eq!(rec["clientSecret"], OLD);
    assert_eq!(others(&rec), others(outlook), "the record's other keys");
    assert_eq!(
        nb.record(&n.collection, "gmail").await.to_string(),
        gmail.to_string(),
        "the Gmail record"
    );
}

/// A rejected value put into the Secret never reaches NocoBase (status says why); a
/// valid one is delivered to the secret variable and the settings, nothing else rewritten.
async fn rejected_then_rotated(env: &Env, nb: &RealNocoBase, n: &Names, app: &EntraApp) {
    let vars = variables(nb, &n.prefix).await;
    let (secret_at, id_at) = (updated_at(&vars, &n.secret), updated_at(&vars, &n.id));
    let rec_at = nb.record(&n.collection, "outlook").await["updatedAt"].clone();

    env.apply(&user_secret("entra", REJECTED));
    until(env, "CredentialsValid", ("False", "InvalidSecret"), 60).await;
    eventually("the settings held back", 30, || async {
        kubectl_condition(env, "outlook", "MailSettingsSynced").1 == "AwaitingValidCredentials"
    })
    .await;
    let (status, _, message) = kubectl_condition(env, "outlook", "NocoBaseSynced");
    assert_eq!(status, "True", "{message}");
    assert!(message.contains("still holds"), "{message}");
    // give a wrong write the time to land before looking
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let vars = variables(nb, &n.prefix).await;
    assert_eq!(updated_at(&vars, &n.secret), secret_at, "secret rewritten");
    let rec = nb.record(&n.collection, "outlook").await;
    assert_eq!(rec["clientSecret"], OLD);
    assert_eq!(rec["updatedAt"], rec_at);

    app.add_existing(ROTATED, Some("rotated by hand"), FAR);
    env.apply(&user_secret("entra", ROTATED));
    eventually("the rotated value delivered", SYNC, || async {
        let vars = variables(nb, &n.prefix).await;
        updated_at(&vars, &n.secret) != secret_at
            && nb.record(&n.collection, "outlook").await["clientSecret"] == ROTATED
    })
    .await;
    until(env, "NocoBaseSynced", ("True", "Synced"), SYNC).await;
    until(env, "MailSettingsSynced", ("True", "Synced"), SYNC).await;
    until(env, "Ready", ("True", "Ready"), SYNC).await;
    let vars = variables(nb, &n.prefix).await;
    assert_eq!(updated_at(&vars, &n.id), id_at, "the client ID rewritten");
}

/// `kubectl delete mmi` completes; the operator's variables are gone from NocoBase, the
/// foreign one and the settings stay.
async fn deletion(env: &Env, nb: &RealNocoBase, n: &Names, gmail: &Value) {
    env.kube
        .kubectl_ok(&["delete", "mmi", "outlook", "-n", &env.ns, "--timeout=180s"]);
    let gone = env.kube.kubectl(&["get", "mmi", "outlook", "-n", &env.ns]);
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("NotFound"),
        "{gone:?}"
    );
    let left: Vec<String> = variables(nb, &n.prefix)
        .await
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        left,
        [n.foreign.as_str()],
        "only the foreign variable is left"
    );
    // clearOnCleanup is off: the email manager keeps its settings
    let rec = nb.record(&n.collection, "outlook").await;
    assert_eq!(rec["clientSecret"], ROTATED);
    assert_eq!(
        nb.record(&n.collection, "gmail").await.to_string(),
        gmail.to_string()
    );
}
