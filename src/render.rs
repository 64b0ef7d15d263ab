//! `render`: shows offline what the controller would write, with the controller's own
//! planning code ([`crate::inject`]). Secret values are redacted.

use std::path::PathBuf;
use std::process::ExitCode;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use serde_json::{Value, json};

use crate::api::{MicrosoftMailIntegration, NocoBaseSync};
use crate::credentials;
use crate::fingerprint::fingerprint;
use crate::inject;
use crate::input::{self, Credentials};

/// Objects read from the files.
#[derive(Default)]
pub struct Inputs {
    pub integrations: Vec<MicrosoftMailIntegration>,
    pub secrets: Vec<Secret>,
    pub deployments: Vec<Deployment>,
}

fn ns_of(meta_ns: Option<&String>) -> String {
    meta_ns.cloned().unwrap_or_else(|| "default".into())
}

/// Reads multi-document YAML files; other kinds are ignored.
pub fn read(files: &[PathBuf]) -> Result<Inputs, String> {
    let mut out = Inputs::default();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .map_err(|e| format!("{}: not YAML: {e}", f.display()))?;
        for d in docs.into_iter().filter(|d| !d.is_null()) {
            let kind = d["kind"].as_str().unwrap_or_default().to_owned();
            let bad = |e: serde_json::Error| format!("{}: invalid {kind}: {e}", f.display());
            match kind.as_str() {
                "MicrosoftMailIntegration" => out
                    .integrations
                    .push(serde_json::from_value(d).map_err(bad)?),
                "Secret" => out.secrets.push(serde_json::from_value(d).map_err(bad)?),
                "Deployment" => out
                    .deployments
                    .push(serde_json::from_value(d).map_err(bad)?),
                _ => {}
            }
        }
    }
    Ok(out)
}

/// The result of rendering: YAML documents and problems found.
pub struct Rendered {
    pub documents: Vec<Value>,
    pub problems: Vec<String>,
    /// The NocoBase variables that would be written (values redacted), as YAML comments.
    pub nocobase: Vec<String>,
}

/// The integration's credentials from the Secret in the files, read and checked by the
/// controller's own reader; or what is missing or wrong, for a problem line.
fn credentials_for(inputs: &Inputs, mmi: &MicrosoftMailIntegration) -> Result<Credentials, String> {
    let ns = ns_of(mmi.metadata.namespace.as_ref());
    let r = &mmi.spec.client_secret_ref;
    let secret = inputs
        .secrets
        .iter()
        .find(|s| ns_of(s.metadata.namespace.as_ref()) == ns && s.name_any() == r.name)
        .ok_or_else(|| format!("Secret {ns}/{} is not in the files", r.name))?;
    credentials::read(&in_namespace(mmi), Some(secret))
        .map_err(|p| format!("{} ({})", p.message, p.reason))
}

/// A resource from a file without a namespace is in `default`, as kubectl would put it.
fn in_namespace(mmi: &MicrosoftMailIntegration) -> MicrosoftMailIntegration {
    let mut m = mmi.clone();
    m.metadata.namespace = Some(ns_of(mmi.metadata.namespace.as_ref()));
    m
}

/// The managed Secret as the controller would write it, values redacted.
fn managed_secret_doc(mmi: &MicrosoftMailIntegration, creds: &Credentials, fp: &str) -> Value {
    let mut managed = inject::managed_secret(mmi, &creds.client_id, &creds.tenant_id, "", fp);
    managed["data"] = Value::Null;
    managed["stringData"] = json!({
        inject::KEY_CLIENT_ID: creds.client_id,
        inject::KEY_TENANT_ID: creds.tenant_id,
        inject::KEY_CLIENT_SECRET: format!("<redacted; starts with {}>", input::secret_hint(&creds.client_secret)),
    });
    if let Some(m) = managed["metadata"].as_object_mut() {
        m.retain(|k, v| k != "ownerReferences" || v.as_array().is_some_and(|a| !a.is_empty()));
    }
    if let Some(m) = managed.as_object_mut() {
        m.retain(|_, v| !v.is_null());
    }
    managed
}

/// The NocoBase variables that would be written, as YAML comments (secret redacted).
fn nocobase_lines(nb: &NocoBaseSync, creds: &Credentials) -> Vec<String> {
    let v = &nb.variables;
    let app = nb
        .app
        .as_deref()
        .map(|a| format!(", app {a}"))
        .unwrap_or_default();
    vec![
        format!(
            "# NocoBase at {}{app}: Variables and secrets to write",
            nb.url
        ),
        format!("#   {} (default) = {}", v.client_id, creds.client_id),
        format!("#   {} (default) = {}", v.tenant_id, creds.tenant_id),
        format!(
            "#   {} (secret) = <redacted; starts with {}>",
            v.client_secret,
            input::secret_hint(&creds.client_secret)
        ),
    ]
}

/// `key` keys the configuration fingerprints, as the operator's key does in a cluster.
pub fn render(inputs: &Inputs, key: &crate::fingerprint::OperatorKey) -> Rendered {
    let mut documents = vec![];
    let mut problems = vec![];
    let mut nocobase = vec![];
    for mmi in &inputs.integrations {
        let ns = ns_of(mmi.metadata.namespace.as_ref());
        let name = mmi.name_any();
        let who = format!("MicrosoftMailIntegration {ns}/{name}");
        let creds = match credentials_for(inputs, mmi) {
            Ok(c) => c,
            Err(problem) => {
                problems.push(format!("{who}: {problem}"));
                continue;
            }
        };
        // Keyed per integration as the controller keys it (by UID, `namespace/name` for a
        // file without one), from the key given.
        let key = key.integration(&crate::fingerprint::integration_id(&in_namespace(mmi)));
        let fp = fingerprint(
            key.as_bytes(),
            &creds,
            mmi.spec.secret_expiry.discover_from_graph,
        );
        let secret_name = inject::managed_secret_name(&name);
        documents.push(managed_secret_doc(mmi, &creds, &fp));
        if let Some(nb) = &mmi.spec.nocobase {
            nocobase.extend(nocobase_lines(nb, &creds));
            nocobase.extend(mail_settings_hint(nb, &creds));
        }
        for (idx, t) in mmi.spec.targets.iter().enumerate() {
            let matched: Vec<&Deployment> = inputs
                .deployments
                .iter()
                .filter(|d| ns_of(d.metadata.namespace.as_ref()) == ns && inject::selects(t, d))
                .collect();
            if matched.is_empty() {
                problems.push(format!(
                    "{who}: targets[{idx}]: no such Deployment in the files (TargetNotFound)"
                ));
            }
            for d in matched {
                match inject::plan(d, t, &secret_name, &fp) {
                    Ok(plan) => documents.push(
                        serde_json::to_value(inject::apply_locally(d, &plan, t, &secret_name, &fp))
                            .expect("a Deployment serializes"),
                    ),
                    Err(p) => problems.push(format!("{who}: {} ({})", p.message, p.reason)),
                }
            }
        }
    }
    Rendered {
        documents,
        problems,
        nocobase,
    }
}

/// Runs `render`: YAML on stdout, problems on stderr; exit 1 when a target or container is
/// missing or in conflict, 2 when the files cannot be read.
/// `validate`: ask Microsoft first, sending only to hosts in this allow-list.
pub async fn run(
    files: &[PathBuf],
    validate: Option<crate::allow::AllowList>,
    key: &crate::fingerprint::OperatorKey,
) -> ExitCode {
    let inputs = match read(files) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if inputs.integrations.is_empty() {
        eprintln!("error: no MicrosoftMailIntegration in the files");
        return ExitCode::from(2);
    }
    if let Some(allow) = &validate
        && let Some(code) = validate_first(&inputs, allow).await
    {
        return code;
    }
    let r = render(&inputs, key);
    for line in &r.nocobase {
        println!("{line}");
    }
    for d in &r.documents {
        print!(
            "---\n{}",
            serde_saphyr::to_string(d).expect("YAML serializes")
        );
    }
    for p in &r.problems {
        eprintln!("problem: {p}");
    }
    if r.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// With `--validate`: ask Microsoft about each integration first; stop at the first that is
/// not Valid (nothing would be injected for it).
async fn validate_first(inputs: &Inputs, allow: &crate::allow::AllowList) -> Option<ExitCode> {
    let client = match crate::microsoft::MicrosoftClient::new(Default::default()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return Some(ExitCode::from(2));
        }
    };
    for mmi in &inputs.integrations {
        let ns = ns_of(mmi.metadata.namespace.as_ref());
        if let Err(p) = crate::allow::check_resource(&mmi.name_any(), &mmi.spec, allow) {
            eprintln!("{ns}/{}: {} ({})", mmi.name_any(), p.message, p.reason);
            return Some(ExitCode::from(2));
        }
        let verdict = match credentials_for(inputs, mmi) {
            Ok(c) => client.validate(&c, false).await,
            Err(problem) => {
                eprintln!("{ns}/{}: {problem}", mmi.name_any());
                return Some(ExitCode::from(2));
            }
        };
        if verdict.outcome != crate::microsoft::Outcome::Valid {
            eprint!(
                "{}/{}: {}",
                ns,
                mmi.name_any(),
                crate::check::to_text(&verdict)
            );
            return Some(ExitCode::from(verdict.outcome.exit_code()));
        }
    }
    None
}

/// The planned write into the email manager's settings, as YAML comments (a hint only: the
/// collection, record and fields are found in NocoBase at sync time), and the redirect URI
/// the app registration needs.
fn mail_settings_hint(nb: &crate::api::NocoBaseSync, creds: &Credentials) -> Vec<String> {
    let mut out = vec![];
    if let Some(ms) = nb.mail_settings.as_ref().filter(|m| m.enabled) {
        out.push(format!(
            "# NocoBase email manager settings (hint only; checked against NocoBase at sync): collection {}, the record matching {}",
            ms.collection,
            crate::mailsettings::match_text(&ms.match_fields)
        ));
        out.push(format!("#   {} = {}", ms.fields.client_id, creds.client_id));
        out.push(format!(
            "#   {} = <redacted; starts with {}>",
            ms.fields.client_secret,
            input::secret_hint(&creds.client_secret)
        ));
        if let Err(p) = crate::mailsettings::check_settings(ms) {
            out.push(format!("#   problem: {} ({})", p.message, p.reason));
        }
    }
    if let Some(p) = &nb.public_url {
        out.push(format!(
            "# app registration: needs the Web redirect URI {}",
            crate::appreg::required_redirect_uri(
                p,
                nb.app.as_deref(),
                nb.oauth_callback_path.as_deref()
            )
        ));
    }
    out
}
