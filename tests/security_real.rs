//! Issue 19 items 1, 2, 4, 5, 9 and 10 (3, 6, 7 and 8: tests/security_bounds_real.rs),
//! through the program a user meets: the chart installed with the real helm under its
//! **default** allow-lists, the operator binary under the release's ServiceAccount on the
//! real control plane, resources applied with kubectl as an integration's author would,
//! and every http:// request the operator makes to any host sent through a forward proxy
//! (`HTTP_PROXY`) that is the NocoBase emulator: it sees the host each request was meant
//! for and the credential it carried, so "nothing was sent" is observed, not assumed.
//!
//! Runs against the cluster of `scripts/real-kube.sh`, like tests/kube_real.rs; skips,
//! saying so, without one, unless `KUBE_REAL_REQUIRED=1`.

mod common;

use std::time::Duration;

use common::cluster::*;
use common::entra::EntraApp;
use common::host_port;
use common::nocobase_emu::{API_KEY, NocoBase, Var};
use common::operator_process::free_port;
use common::real_kube::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use nocobase_mail_operator::api::MicrosoftMailIntegration;
use nocobase_mail_operator::credentials;
use nocobase_mail_operator::fingerprint::{OperatorKey, fingerprint};
use nocobase_mail_operator::inject::FINGERPRINT_ANNOTATION;
use nocobase_mail_operator::input::{self, RawCredentials};
use nocobase_mail_operator::rbac::FINGERPRINT_KEY_SECRET;
use serde_json::{Value, json};

/// A namespace Secret the author may name but not read: a database password.
const PASSWORD: &str = "Sunshine2024!";
/// Variables somebody else keeps in NocoBase.
const THEIRS: &str = "their-smtp-password";
const COMPANY: &str = "Example Corp";

fn secrets(env: &Env) -> Vec<Value> {
    let s = |name: &str, key: &str, value: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": env.ns},
            "stringData": {key: value}})
    };
    vec![
        s("entra", "client-secret", OLD),
        s("nocobase-api-key", "api-key", API_KEY),
        s("billing-db", "password", PASSWORD),
    ]
}

/// `spec.nocobase` at `url` with the API key Secret `key` and variables prefixed `prefix`.
fn nocobase(url: &str, key: Value, prefix: &str) -> Value {
    json!({"url": url, "apiKeySecretRef": key,
        "variables": {"clientId": format!("{prefix}_CLIENT_ID"), "tenantId": format!("{prefix}_TENANT_ID"),
            "clientSecret": format!("{prefix}_CLIENT_SECRET")}})
}

/// What the proxy saw: (host, Authorization, path) of every request.
async fn seen(server: &wiremock::MockServer) -> Vec<(String, String, String)> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| {
            let auth = r
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let host = r.url.host_str().unwrap_or_default();
            (host.to_owned(), auth.to_owned(), r.url.path().to_owned())
        })
        .collect()
}

#[tokio::test]
async fn an_author_cannot_send_values_where_the_default_settings_do_not_allow() {
    let Some(env) = Env::new("sec").await else {
        return;
    };
    let app = EntraApp::start(OLD, FAR).await;
    let nb = NocoBase::with_collections([]);
    for (name, kind, value) in [
        ("SMTP_PASSWORD", "secret", THEIRS),
        ("COMPANY_NAME", "default", COMPANY),
    ] {
        let at = nb.state.lock().unwrap().tick();
        nb.state.lock().unwrap().vars.insert(
            name.into(),
            Var {
                kind: Some(kind.into()),
                value: value.into(),
                updated_at: at,
            },
        );
    }
    let proxy = nb.serve().await;
    // A login host that never answers, allowed (as an administrator may list one), and
    // the public cloud's own entry as the default list has it.
    let closed = format!("127.0.0.1:{}", free_port());
    let authority = format!(
        "allowedHosts.authority={{{},{closed},login.microsoftonline.com}}",
        host_port(&app.uri())
    );
    let release = env.release("sec", &app, &["--set", &authority]);
    let no_proxy = "127.0.0.1,localhost";
    let mut op = env
        .run_with(
            &release,
            &[("HTTP_PROXY", &proxy.uri()), ("NO_PROXY", no_proxy)],
        )
        .await;
    for s in secrets(&env) {
        env.apply(&s);
    }
    env.apply(&nocobase_deployment("nocobase"));
    env.apply(&nocobase_deployment("billing"));
    let key = json!({"name": "nocobase-api-key"});
    let own_url = format!("http://nocobase.{}.svc:13000", env.ns);
    let no_targets = |spec: Value| {
        let mut s = spec;
        s["targets"] = json!([]);
        s
    };
    // the control: NocoBase in the integration's own namespace is reached (through the proxy)
    env.apply(&integration(
        "own",
        &app,
        json!({"nocobase": nocobase(&own_url, key.clone(), "OWN")}),
    ));
    // item 1: another namespace's Service, with an unrelated Secret as the "API key"
    env.apply(&integration("leak", &app, no_targets(json!({"nocobase": nocobase(
        "http://collector.attacker.svc:8080", json!({"name": "billing-db", "key": "password"}), "LEAK")}))));
    // item 10: variables somebody else keeps
    let mut theirs = nocobase(&own_url, key.clone(), "X");
    theirs["variables"] = json!({"clientSecret": "SMTP_PASSWORD", "clientId": "COMPANY_NAME", "tenantId": "X_TENANT_ID"});
    env.apply(&integration(
        "adopt",
        &app,
        no_targets(json!({"nocobase": theirs.clone()})),
    ));
    // item 9: the client secret into a collection of the author's choosing
    let mut users = nocobase(&own_url, key.clone(), "COLL");
    users["mailSettings"] = json!({"enabled": true, "collection": "users", "match": {"id": "1"},
        "fields": {"clientId": "nickname", "clientSecret": "password"}});
    env.apply(&integration(
        "coll",
        &app,
        no_targets(json!({"nocobase": users})),
    ));
    // item 4: a port of the public cloud's host that never answers, and unverified
    // injection of the database password into a Deployment
    let billing = |host: &str| {
        json!({"authorityHost": host, "injectUnverified": true,
        "clientSecretRef": {"name": "billing-db", "key": "password"},
        "targets": [{"deploymentName": "billing"}]})
    };
    env.apply(&integration(
        "port",
        &app,
        billing("https://login.microsoftonline.com:1"),
    ));
    env.apply(&integration(
        "unverified",
        &app,
        billing(&format!("http://{closed}")),
    ));

    env.wait_condition("own", "NocoBaseSynced", ("True", "Synced"), 60)
        .await;
    env.wait_condition("leak", "NocoBaseSynced", ("False", "HostNotAllowed"), 60)
        .await;
    env.wait_condition("adopt", "NocoBaseSynced", ("False", "VariableExists"), 60)
        .await;
    env.wait_condition(
        "coll",
        "MailSettingsSynced",
        ("False", "CollectionNotAllowed"),
        60,
    )
    .await;
    env.wait_condition("port", "CredentialsValid", ("False", "HostNotAllowed"), 60)
        .await;
    env.wait_condition(
        "unverified",
        "Injected",
        ("False", "InjectUnverifiedNotAllowed"),
        60,
    )
    .await;
    // a few more reconciles' time for anything that would still go out
    tokio::time::sleep(Duration::from_secs(3)).await;

    let requests = seen(&proxy).await;
    assert!(
        requests
            .iter()
            .any(|(h, a, _)| h == &format!("nocobase.{}.svc", env.ns)
                && a == &format!("Bearer {API_KEY}")),
        "the control reached NocoBase through the proxy: {requests:?}"
    );
    assert!(
        requests
            .iter()
            .all(|(h, a, p)| h != "collector.attacker.svc"
                && !a.contains(PASSWORD)
                && !p.contains("users:")),
        "a request went where the defaults forbid: {requests:?}"
    );
    {
        let st = nb.state.lock().unwrap();
        assert_eq!(
            st.vars["SMTP_PASSWORD"].value, THEIRS,
            "somebody else's variable overwritten"
        );
        assert_eq!(st.vars["COMPANY_NAME"].value, COMPANY);
    }
    // nothing of the password reached a Deployment or a managed Secret
    let deps: Api<Deployment> = Api::namespaced(env.client.clone(), &env.ns);
    let billing_dep = serde_json::to_string(&deps.get("billing").await.unwrap()).unwrap();
    assert!(
        !billing_dep.contains("microsoft-credentials"),
        "{billing_dep}"
    );
    let managed: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    for name in ["port", "unverified"] {
        let got = managed
            .get_opt(&format!("{name}-microsoft-credentials"))
            .await
            .unwrap();
        assert!(got.is_none(), "{name}: a managed Secret was written");
    }
    let (_, message) = env.condition_message("unverified", "Injected").await;
    assert!(message.contains("--allow-inject-unverified"), "{message}");
    let (_, message) = env.condition_message("leak", "NocoBaseSynced").await;
    assert!(
        message.contains("{namespace}") && message.contains(&env.ns),
        "{message}"
    );

    // the opt-in adopts the variables, and they are not owned (a cleanup keeps them)
    theirs["adoptExisting"] = json!(true);
    env.apply(&integration(
        "adopt",
        &app,
        no_targets(json!({"nocobase": theirs})),
    ));
    env.wait_condition("adopt", "NocoBaseSynced", ("True", "Synced"), 60)
        .await;
    assert_eq!(nb.state.lock().unwrap().vars["SMTP_PASSWORD"].value, OLD);
    let owned = env.mmi("adopt").await["status"]["nocobase"]["owned"].clone();
    assert_eq!(
        owned,
        json!(["X_TENANT_ID"]),
        "adopted variables are not owned"
    );

    // no status, Event or log line holds the password
    let everything = format!(
        "{}\n{}\n{}",
        env.kube
            .kubectl_ok(&["get", "mmi", "-n", &env.ns, "-o", "yaml"]),
        env.kube
            .kubectl_ok(&["get", "events", "-n", &env.ns, "-o", "yaml"]),
        op.logs()
    );
    assert!(!everything.contains(PASSWORD), "the password leaked");
    op.stop();
    env.cleanup().await;
}

/// Item 2: an author who may only reference the platform team's Secret asks for a
/// rotation (with an approval dated a year ahead): without the Secret owner's consent
/// nothing is created in Entra, nothing is written into the Secret, and the reason says
/// what the owner would annotate.
#[tokio::test]
async fn a_rotation_needs_the_secret_owners_consent() {
    let Some(env) = Env::new("consent").await else {
        return;
    };
    let app = EntraApp::start(OLD, FAR).await;
    let release = env.release("consent", &app, &[]);
    let mut op = env.run(&release).await;
    env.apply(&secrets(&env)[0]);
    env.apply(&nocobase_deployment("nocobase"));
    let mut mmi = integration(
        "outlook",
        &app,
        json!({"rotation": {"enabled": true, "retireAfter": "1m"}}),
    );
    mmi["metadata"]["annotations"] =
        json!({"nocobase-mail-operator.dev/retire-approved-at": "2027-12-02T00:00:00Z"});
    env.apply(&mmi);
    env.wait_condition("outlook", "Ready", ("True", "Ready"), 30)
        .await;
    env.cli(&["rotate", "outlook", "-n", &env.ns]);
    eventually("the rotation refused for want of consent", 30, || async {
        env.phase("outlook").await.1 == "RotationNotPermitted"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(app.state().added, 0, "a credential was created in Entra");
    assert!(app.has_secret(OLD), "the credential in use was touched");
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    let entra = secrets.get("entra").await.unwrap();
    assert_eq!(secret_text(&entra, "client-secret").as_deref(), Some(OLD));
    let rotation = env.mmi("outlook").await["status"]["rotation"].clone();
    let message = rotation["message"].as_str().unwrap_or_default();
    assert!(message.contains("rotation-allowed-for"), "{rotation}");
    op.stop();
    env.cleanup().await;
}

/// What an author who reads their integration (and so its UID) computes to test a guess
/// of the secret: the credentials fingerprint keyed by the UID, as it was before the
/// operator held its own key.
fn guessed_fingerprint(mmi: &MicrosoftMailIntegration, guess: &str) -> String {
    let raw = RawCredentials::from_spec(&mmi.spec, guess.as_bytes());
    let creds = input::check(&raw).unwrap();
    let uid = mmi.metadata.uid.clone().unwrap();
    fingerprint(
        uid.as_bytes(),
        &creds,
        mmi.spec.secret_expiry.discover_from_graph,
    )
}

fn template_fingerprint(d: &Deployment) -> Option<String> {
    let t = d.spec.as_ref()?.template.metadata.as_ref()?;
    t.annotations.as_ref()?.get(FINGERPRINT_ANNOTATION).cloned()
}

/// Item 5: the fingerprints an author reads (status, the Deployment's annotation) are
/// keyed by a key the operator keeps in its own namespace, created there on the first
/// start under the chart's RBAC, kept over restarts; a status an older version keyed by
/// the UID is re-keyed on upgrade without asking Microsoft again and without a roll.
#[tokio::test]
async fn fingerprints_cannot_be_recomputed_by_the_author() {
    let Some(env) = Env::new("fpkey").await else {
        return;
    };
    let app = EntraApp::start(OLD, FAR).await;
    let release = env.release("fpkey", &app, &[]);
    let mut op = env.run(&release).await;
    env.apply(&secrets(&env)[0]);
    env.apply(&nocobase_deployment("nocobase"));
    env.apply(&integration("outlook", &app, json!({})));
    env.wait_condition("outlook", "Ready", ("True", "Ready"), 60)
        .await;

    // the key: created by the operator in its own namespace, 32 bytes
    let own: Api<Secret> = Api::namespaced(env.client.clone(), &env.ops);
    let stored = own.get(FINGERPRINT_KEY_SECRET).await.unwrap();
    let key_bytes = stored.data.as_ref().unwrap()["key"].0.clone();
    assert_eq!(key_bytes.len(), 32);
    let key = OperatorKey::from_bytes(&key_bytes).unwrap();

    let mmi = env.mmis().get("outlook").await.unwrap();
    let st = mmi.status.clone().unwrap();
    let fp = st.last_validation.unwrap().credentials_fingerprint.unwrap();
    // keyed by the operator's key...
    let secret = Api::<Secret>::namespaced(env.client.clone(), &env.ns)
        .get("entra")
        .await
        .unwrap();
    let ours = key.integration(mmi.metadata.uid.as_deref().unwrap());
    let (check, _) = credentials::check(&mmi, Some(&secret), &ours);
    assert_eq!(check.fingerprint(), Some(fp.as_str()));
    // ...so the author's dictionary, with the right value in it, finds nothing
    let dictionary = ["Summer2024!", "hunter2", OLD, "Sunshine2024!"];
    let hits: Vec<&str> = dictionary
        .iter()
        .copied()
        .filter(|g| guessed_fingerprint(&mmi, g) == fp)
        .collect();
    assert!(hits.is_empty(), "guessed from status: {hits:?}");
    let deps: Api<Deployment> = Api::namespaced(env.client.clone(), &env.ns);
    let dep = deps.get("nocobase").await.unwrap();
    assert_eq!(template_fingerprint(&dep).as_deref(), Some(fp.as_str()));
    assert_eq!(st.injected[0].fingerprint, fp);

    // an older version's status and annotation, keyed by the UID
    op.stop();
    let legacy = guessed_fingerprint(&mmi, OLD);
    let status_patch = json!({"status": {
        "lastValidation": {"credentialsFingerprint": legacy},
        "injected": [{"deployment": "nocobase", "containers": ["nocobase"],
            "fingerprint": legacy, "rollout": "OnChange"}]}});
    let pp = kube::api::PatchParams::default();
    env.mmis()
        .patch_status("outlook", &pp, &kube::api::Patch::Merge(&status_patch))
        .await
        .unwrap();
    let generation = deps.get("nocobase").await.unwrap().metadata.generation;
    let tokens_before = app.state().token_requests;

    // the restart: the same key, the status re-keyed, no roll
    let mut op = env.run(&release).await;
    eventually("the status re-keyed", 60, || async {
        let m = env.mmi("outlook").await;
        m["status"]["lastValidation"]["credentialsFingerprint"] == json!(fp)
            && m["status"]["injected"][0]["fingerprint"] == json!(fp)
    })
    .await;
    let dep = deps.get("nocobase").await.unwrap();
    assert_eq!(template_fingerprint(&dep).as_deref(), Some(fp.as_str()));
    assert_eq!(
        dep.metadata.generation, generation,
        "re-keying rolled the pods"
    );
    let again = own.get(FINGERPRINT_KEY_SECRET).await.unwrap();
    assert_eq!(
        again.data.unwrap()["key"].0,
        key_bytes,
        "the key was replaced"
    );
    assert_eq!(
        app.state().token_requests,
        tokens_before,
        "re-keying asked Microsoft again"
    );
    env.wait_condition("outlook", "Ready", ("True", "Ready"), 30)
        .await;
    let text = env
        .kube
        .kubectl_ok(&["get", "mmi", "-n", &env.ns, "-o", "yaml"]);
    assert!(!text.contains(&legacy), "a UID-keyed fingerprint is left");
    op.stop();
    env.cleanup().await;
}
