//! Issue 21's "done when", through the binaries on the real control plane of
//! `scripts/real-kube.sh`: an administrator with a Microsoft Entra tenant and nothing else
//! reaches a Ready integration with one `helm install` and one `register` command.
//!
//! The tenant is the emulator of `tests/common/entra_tenant.rs` (device code sign-in,
//! Graph's directory calls, replication delay, and the client-credentials grant the
//! operator asks): `register` and the operator talk to the same one. The chart is
//! installed with the real helm and the operator binary runs under its ServiceAccount;
//! `register` runs as its own process, signed into the cluster as a ServiceAccount bound to
//! exactly the Role `docs/src/register.md` documents (read from the book, so the book and
//! this test cannot drift), with the device code sign-in against the tenant. Then what a
//! user checks: `kubectl get mmi`, the Secret (against the tenant's record, never
//! printed), the Deployment's injection, no secret in any output or log, no 403 in the
//! audit log; and a re-run of the same command that adopts everything and changes nothing.
//!
//! Skips, saying so, without a cluster, unless `KUBE_REAL_REQUIRED=1`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::cluster::*;
use common::entra_tenant::{ADMIN_TOKEN, Browser, DEVICE_CODE, EntraTenant};
use common::real_kube::*;
use common::{TENANT, assert_no_secret, host_port};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use serde_json::Value;

const PUBLIC: &str = "https://crm.example.com";
/// The account the administrator runs `register` as in the cluster.
const ADMIN: &str = "mail-admin";

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// The README's command, with the emulator's hosts (and the allow-lists naming them), as
/// the administrator types it, logging at trace level so that the leak scans see the most.
async fn register(t: &EntraTenant, ns: &str, kubeconfig: &Path) -> Run {
    let hp = host_port(&t.uri());
    let started = Instant::now();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_nocobase-mail-operator"))
        .args(["register", "--tenant-id", TENANT, "--public-url", PUBLIC])
        .args(["-n", ns, "--target-deployment", "nocobase"])
        .args(["--authority-host", &t.uri(), "--graph-host", &t.uri()])
        .args(["--allowed-authority-hosts", &hp])
        .args(["--allowed-graph-hosts", &hp])
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "trace")
        .env_remove("HTTPS_PROXY")
        .env_remove("HTTP_PROXY")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("register runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
        took: started.elapsed(),
    }
}

/// [`register`], then what every run must show: no secret in its output, success, and each
/// of `lines` in what it says to the administrator.
async fn register_saying(
    what: &str,
    t: &EntraTenant,
    ns: &str,
    kubeconfig: &Path,
    lines: &[&str],
) -> Run {
    let run = register(t, ns, kubeconfig).await;
    scan("register's stdout", &run.stdout, t);
    scan("register's stderr", &run.stderr, t);
    say(&format!("{what}: {:?}\n{}", run.took, said(&run.stderr)));
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    for line in lines {
        assert!(run.stderr.contains(line), "{line:?}:\n{}", run.stderr);
    }
    run
}

/// The Role the book gives for the account that runs `register`.
fn documented_role() -> Value {
    let book =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/src/register.md"))
            .unwrap();
    let block = book
        .split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.contains("kind: Role"))
        .expect("docs/src/register.md gives the Role of the register user");
    serde_saphyr::from_str(block).expect("the documented Role is YAML")
}

/// A ServiceAccount bound to the documented Role only, and a kubeconfig holding its token.
async fn register_user(env: &Env) -> std::path::PathBuf {
    let mut role = documented_role();
    role["metadata"]["namespace"] = env.ns.clone().into();
    let role_name = role["metadata"]["name"].as_str().unwrap().to_owned();
    env.apply(&role);
    let ns = env.ns.as_str();
    env.kube
        .kubectl_ok(&["create", "serviceaccount", ADMIN, "-n", ns]);
    let subject = format!("{ns}:{ADMIN}");
    env.kube.kubectl_ok(&[
        "create",
        "rolebinding",
        "mail-admin-register",
        "--role",
        &role_name,
        "--serviceaccount",
        &subject,
        "-n",
        ns,
    ]);
    let token = service_account_token(&env.client, ns, ADMIN).await;
    let dir = env.dir.path().join("register-user");
    std::fs::create_dir_all(&dir).unwrap();
    env.kube.kubeconfig_for_token(&token, ns, &dir)
}

/// Everything that must never appear: the Values the tenant handed out (and their base64,
/// as a Secret's data holds them), the administrator's token, the device code.
fn never(t: &EntraTenant) -> Vec<String> {
    let values = t.secrets();
    let mut v: Vec<String> = values.iter().map(|s| b64(s)).collect();
    v.extend(values);
    v.extend([ADMIN_TOKEN.to_owned(), DEVICE_CODE.to_owned()]);
    v
}

fn scan(what: &str, text: &str, t: &EntraTenant) {
    let never = never(t);
    let never: Vec<&str> = never.iter().map(String::as_str).collect();
    say(&format!("scanning {what} ({} bytes)", text.len()));
    assert_no_secret(text, &never);
}

/// What `register` says to the administrator: its stderr without the trace log lines.
fn said(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| !l.starts_with('\u{1b}') && !l.starts_with("20"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `kubectl get mmi`: (READY, VALID, REASON) of `outlook`.
fn get_mmi(env: &Env) -> Vec<String> {
    let table = env.kube.kubectl_ok(&["get", "mmi", "-n", &env.ns]);
    let line = table
        .lines()
        .find(|l| l.starts_with("outlook "))
        .unwrap_or_else(|| panic!("no outlook in:\n{table}"));
    line.split_whitespace()
        .skip(1)
        .take(3)
        .map(str::to_owned)
        .collect()
}

/// What the re-run must leave alone: (object, generation or resourceVersion).
async fn versions(env: &Env) -> Vec<(String, String)> {
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.ns);
    let s = secrets.get("nocobase-entra-app").await.unwrap().metadata;
    let d = deployments.get("nocobase").await.unwrap().metadata;
    let m = env.mmi("outlook").await;
    vec![
        ("Secret".into(), s.resource_version.unwrap_or_default()),
        (
            "integration's resourceVersion".into(),
            m["metadata"]["resourceVersion"].to_string(),
        ),
        ("Deployment".into(), format!("{:?}", d.generation)),
        (
            "integration".into(),
            m["metadata"]["generation"].to_string(),
        ),
    ]
}

#[tokio::test]
async fn one_helm_install_and_one_register_reach_a_ready_integration_and_a_rerun_changes_nothing() {
    let Some(env) = Env::new("register").await else {
        return;
    };
    let started = Instant::now();
    let tenant = EntraTenant::start(Browser::Approves { pending: 1 }).await;
    {
        // replication as seen: the new application, then the new secret, refused once each
        let mut s = tenant.state();
        s.app_replication = 1;
        s.secret_replication = 1;
    }
    let audit = env.kube.audit();
    let mark = audit.as_ref().map_or(0, |a| a.mark());

    // the administrator's cluster: the operator (helm install) and NocoBase
    let release = env.release_for("reg", &tenant.uri(), &[]);
    let mut op = env.run(&release).await;
    env.apply(&nocobase_deployment("nocobase"));
    let kubeconfig = register_user(&env).await;
    say(&format!("installed and running: {:?}", started.elapsed()));

    let first = register_saying(
        "register",
        &tenant,
        &env.ns,
        &kubeconfig,
        &[
            "enter the code",
            "application 'NocoBase email manager': created",
            "service principal: created",
            "Microsoft accepts the new credentials",
            "key client-secret written (the Value is not shown)",
            "MicrosoftMailIntegration",
        ],
    )
    .await;
    let client_id = tenant.state().apps[0].app_id.clone();
    assert!(
        first.stdout.contains(&format!("Client ID: {client_id}")),
        "{}",
        first.stdout
    );

    env.wait_condition("outlook", "Ready", ("True", "Ready"), 60)
        .await;
    say(&format!("Ready: {:?}", started.elapsed()));
    assert_eq!(get_mmi(&env), ["True", "True", "Ready"]);
    what_the_user_checks(&env, &tenant, &client_id).await;

    let rerun_mark = audit.as_ref().map_or(0, |a| a.mark());
    a_rerun_changes_nothing(&env, &tenant, &kubeconfig).await;

    op.stop();
    let log = op.logs();
    assert!(warnings(&log).is_empty(), "warnings:\n{log}");
    scan("the operator's log", &log, &tenant);
    let described = env
        .kube
        .kubectl_ok(&["describe", "mmi", "outlook", "-n", &env.ns]);
    scan("kubectl describe mmi", &described, &tenant);
    for user in [release.user(), sa_user(&env.ns, ADMIN)] {
        let refused = forbidden(&env.kube, &user, mark);
        assert!(refused.is_empty(), "refused by RBAC: {refused:#?}");
    }
    if let Some(a) = &audit {
        // the re-run asks the server what its apply would do (a dry run) and, as nothing
        // would change, writes nothing
        let writes: Vec<String> = a
            .by(&sa_user(&env.ns, ADMIN), rerun_mark)
            .into_iter()
            .filter(|e| e.is_write())
            .map(|e| format!("{} {}", e.verb, e.uri))
            .collect();
        assert!(
            writes.len() == 1 && writes[0].contains("dryRun=All"),
            "{writes:#?}"
        );
    }
    say(&format!("done: {:?}", started.elapsed()));
    env.cleanup().await;
}

/// The Secret holds the Value Microsoft accepted, the operator delivered it to the
/// Deployment (by reference to its managed Secret), and nothing leaked.
async fn what_the_user_checks(env: &Env, tenant: &EntraTenant, client_id: &str) {
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), &env.ns);
    let stored = secrets.get("nocobase-entra-app").await.unwrap();
    let accepted = tenant.state().apps[0].passwords[0].3.clone();
    assert_eq!(tenant.secrets().len(), 1, "one client secret created");
    assert!(
        secret_text(&stored, "client-secret").as_deref() == Some(accepted.as_str()),
        "the Secret does not hold the Value Microsoft accepted (values not shown)"
    );
    let mmi = env.mmi("outlook").await;
    assert_eq!(mmi["spec"]["clientId"], client_id);
    // no Graph read permission was asked for, so the operator does not ask Graph (and is
    // not refused at every validation)
    assert_eq!(mmi["spec"]["secretExpiry"]["discoverFromGraph"], false);
    assert!(
        tenant.state().app_graph.is_empty(),
        "{:?}",
        tenant.state().app_graph
    );
    assert_eq!(
        mmi["status"]["lastValidation"]["expiryNote"],
        "Graph discovery is turned off"
    );
    assert_eq!(mmi["status"]["secretExpiry"]["source"], "Spec");
    assert_eq!(
        mmi["spec"]["secretExpiry"]["expiresAt"],
        tenant.state().apps[0].passwords[0].4.as_str()
    );

    let managed = "outlook-microsoft-credentials";
    eventually("the Deployment injected", 30, || async {
        let deployments: Api<Deployment> = Api::namespaced(env.client.clone(), &env.ns);
        let d = serde_json::to_value(deployments.get("nocobase").await.unwrap()).unwrap();
        let env_vars = d["spec"]["template"]["spec"]["containers"][0]["env"].clone();
        let by_name = |n: &str| {
            env_vars
                .as_array()
                .and_then(|a| a.iter().find(|e| e["name"] == n).cloned())
                .unwrap_or_default()
        };
        [
            "MICROSOFT_CLIENT_ID",
            "MICROSOFT_CLIENT_SECRET",
            "MICROSOFT_TENANT_ID",
        ]
        .iter()
        .all(|n| by_name(n)["valueFrom"]["secretKeyRef"]["name"] == managed)
            && by_name("APP_KEY")["value"] == "k"
    })
    .await;
    let m = secrets.get(managed).await.unwrap();
    assert_eq!(secret_text(&m, "client-id").as_deref(), Some(client_id));
    assert!(
        secret_text(&m, "client-secret").as_deref() == Some(accepted.as_str()),
        "the managed Secret does not hold the accepted Value (values not shown)"
    );
}

/// The same command again: it adopts the registration, sends no Graph write, creates no
/// secret, writes nothing that changes the cluster, and the integration stays Ready.
async fn a_rerun_changes_nothing(env: &Env, tenant: &EntraTenant, kubeconfig: &Path) {
    let before = versions(env).await;
    let (writes, secrets) = {
        let s = tenant.state();
        (s.graph_writes(), s.added_secrets.len())
    };
    let validations = tenant.state().client_credentials;
    let again = register_saying(
        "re-run",
        tenant,
        &env.ns,
        kubeconfig,
        &[
            "application 'NocoBase email manager': found",
            "nothing missing",
            "service principal: found",
            "client secret: none created",
            "outlook: unchanged, nothing applied",
        ],
    )
    .await;
    assert!(
        again.stdout.contains("Nothing was missing"),
        "{}",
        again.stdout
    );
    assert_eq!(tenant.state().graph_writes(), writes, "no Graph write");
    assert_eq!(tenant.state().added_secrets.len(), secrets, "no new secret");
    // a few seconds for anything the apply would have set off
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(versions(env).await, before, "the cluster changed");
    assert_eq!(get_mmi(env), ["True", "True", "Ready"]);
    assert_eq!(
        tenant.state().client_credentials,
        validations,
        "no new check with Microsoft: nothing changed for the operator either"
    );
}
