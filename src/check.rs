//! The `check` command: validate credentials from the command line and report.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use secrecy::{ExposeSecret, SecretSlice};
use serde_json::json;

pub use crate::cli::microsoft::{CloudArg, MicrosoftArgs};
use crate::input::{RawCredentials, check as check_input};
use crate::microsoft::{ClientOptions, MicrosoftClient, Outcome, Verdict, reason};

#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub microsoft: MicrosoftArgs,
    /// Application (client) ID GUID.
    #[arg(long, value_name = "GUID")]
    pub client_id: String,
    /// File holding the client secret Value (a trailing newline is removed).
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "secret_env",
        required_unless_present = "secret_env"
    )]
    pub secret_file: Option<PathBuf>,
    /// Environment variable holding the client secret Value.
    #[arg(long, value_name = "VAR")]
    pub secret_env: Option<String>,
    /// Do not read the secret's expiry and permissions from Microsoft Graph.
    #[arg(long)]
    pub no_graph: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Also check NocoBase's Variables and secrets API at this URL with the API key below
    /// (reads only: lists the variables; exit status 4 when NocoBase refuses).
    #[arg(long, value_name = "URL", requires = "nocobase_api_key_file")]
    pub nocobase_url: Option<String>,
    /// File holding the NocoBase API key.
    #[arg(long, value_name = "FILE")]
    pub nocobase_api_key_file: Option<PathBuf>,
    /// App of a multi-app NocoBase (X-App header).
    #[arg(long, value_name = "APP")]
    pub nocobase_app: Option<String>,
    /// Also tell whether these credentials may add and remove client secrets of their own
    /// app registration (for spec.rotation): the token's permission and ownership, read
    /// through Graph; nothing is created. Exit status 5 when they may not.
    #[arg(long)]
    pub can_rotate: bool,
    /// The address users open NocoBase at: check that the app registration has the Web
    /// redirect URI the email manager needs (with --nocobase-app, the sub-application's).
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// With --public-url: the path of the email manager's OAuth callback (default
    /// /admin/settings/mail/oauth2, as spec.nocobase.oauthCallbackPath).
    #[arg(long, value_name = "PATH", requires = "public_url")]
    pub oauth_callback_path: Option<String>,
    /// With --nocobase-url: also report whether the email manager's settings collection,
    /// its fields and the record are found (reads only).
    #[arg(long, requires = "nocobase_url")]
    pub mail_settings: bool,
    /// Collection of the email manager's settings.
    #[arg(long, value_name = "NAME", default_value = crate::api::DEFAULT_MAIL_COLLECTION)]
    pub mail_collection: String,
    /// Field value selecting the record (repeatable; default provider=outlook).
    #[arg(long, value_name = "FIELD=VALUE")]
    pub mail_match: Vec<String>,
    /// Record fields receiving the client ID and the client secret.
    #[arg(
        long,
        value_name = "ID_FIELD,SECRET_FIELD",
        default_value = "clientId,clientSecret"
    )]
    pub mail_fields: String,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Text,
    Json,
}

/// Runs `check` and returns its exit status (0 valid, 1 rejected, 2 invalid input,
/// 3 unavailable).
pub async fn run(args: CheckArgs) -> ExitCode {
    let verdict = verdict(&args).await;
    let nocobase = match (&args.nocobase_url, verdict.outcome) {
        (Some(url), Outcome::Valid) => Some(check_nocobase(url, &args).await),
        _ => None,
    };
    let rotate = match (args.can_rotate, verdict.outcome) {
        (true, Outcome::Valid) => Some(check_can_rotate(&args).await),
        _ => None,
    };
    let registration = crate::check_mail::app_registration(
        &verdict,
        args.public_url.as_deref(),
        args.nocobase_app.as_deref(),
        args.oauth_callback_path.as_deref(),
    );
    match args.output {
        OutputFormat::Json => {
            let mut v = to_json(&verdict);
            if let Some(nb) = &nocobase {
                v["nocobase"] = nb.clone();
            }
            if let Some(r) = &rotate {
                v["canRotate"] = r.clone();
            }
            if let Some(r) = &registration {
                v["appRegistration"] = r.clone();
            }
            println!("{v}");
        }
        OutputFormat::Text => {
            print!("{}", to_text(&verdict));
            if let Some(r) = &registration {
                print!("{}", crate::check_mail::registration_text(r));
            }
            if let Some(nb) = &nocobase {
                println!("NocoBase: {}", nb["message"].as_str().unwrap_or_default());
                if let Some(m) = nb.get("mailSettings") {
                    println!(
                        "NocoBase email settings: {}",
                        m["message"].as_str().unwrap_or_default()
                    );
                }
            }
            if let Some(r) = &rotate {
                println!("Rotation: {}", r["message"].as_str().unwrap_or_default());
            }
        }
    }
    match (nocobase, rotate) {
        (Some(nb), _) if nb["ok"] != true => ExitCode::from(4),
        (_, Some(r)) if r["allowed"] != true => ExitCode::from(5),
        _ => ExitCode::from(verdict.outcome.exit_code()),
    }
}

/// Whether these credentials may add passwords to their own registration (permission in
/// the token, ownership through Graph); creates nothing.
async fn check_can_rotate(args: &CheckArgs) -> serde_json::Value {
    let creds = match read_secret(args).map(|secret| check_input(&raw(args, &secret))) {
        Ok(Ok(c)) => c,
        _ => {
            return json!({"allowed": false, "reason": "UnreadableSecret", "message": "the secret could not be read again"});
        }
    };
    let opts = ClientOptions {
        ca_bundle_pem: args.microsoft.ca_bundle_pem().ok().flatten(),
        ..Default::default()
    };
    let client = match MicrosoftClient::new(opts) {
        Ok(c) => c,
        Err(e) => return json!({"allowed": false, "reason": "UnreadableCaBundle", "message": e}),
    };
    match crate::microsoft::passwords::can_rotate(&client, &creds).await {
        Ok(r) => json!({"allowed": r.allowed, "reason": null, "permission": r.permission,
                        "owner": r.owner, "message": r.message}),
        Err(e) => json!({"allowed": false, "reason": e.reason, "permission": null, "owner": null,
                         "message": e.message}),
    }
}

/// Lists NocoBase's variables with the API key (no writes): is the key accepted, is the
/// plugin there, which variables exist and of which type.
async fn check_nocobase(url: &str, args: &CheckArgs) -> serde_json::Value {
    use crate::nocobase::{NocoBaseClient, NocoBaseOptions};
    let fail = |reason: &str, message: String| json!({"ok": false, "reason": reason, "message": message, "variables": []});
    let path = args
        .nocobase_api_key_file
        .as_ref()
        .expect("clap requires the key file with the URL");
    let key = match std::fs::read_to_string(path) {
        Ok(k) => k,
        Err(e) => {
            return fail(
                "UnreadableApiKey",
                format!("cannot read {}: {e}", path.display()),
            );
        }
    };
    let client = match NocoBaseClient::new(
        url,
        secrecy::SecretString::from(key),
        args.nocobase_app.clone(),
        NocoBaseOptions::default(),
    ) {
        Ok(c) => c,
        Err(e) => return fail("InvalidNocoBaseSettings", e),
    };
    let mut report = match client.list().await {
        Ok(vars) => {
            let listed: Vec<serde_json::Value> = vars
                .iter()
                .map(|v| json!({"name": v.name, "type": v.kind.as_str()}))
                .collect();
            json!({"ok": true, "reason": null, "variables": listed,
                   "message": format!("the API key is accepted; {} variable(s) exist", listed.len())})
        }
        Err(e) => fail(e.reason, e.message),
    };
    if args.mail_settings {
        let settings = crate::check_mail::settings_from_flags(
            &args.mail_collection,
            &args.mail_match,
            &args.mail_fields,
        );
        let mail = crate::check_mail::mail_settings(&client, settings).await;
        if mail["ok"] != true {
            report["ok"] = json!(false);
        }
        report["mailSettings"] = mail;
    }
    report
}

fn raw<'a>(args: &'a CheckArgs, secret: &'a SecretSlice<u8>) -> RawCredentials<'a> {
    let m = &args.microsoft;
    RawCredentials {
        tenant_id: &m.tenant_id,
        client_id: &args.client_id,
        client_secret: secret.expose_secret(),
        cloud: m.cloud.into(),
        authority_host: m.authority_host.as_deref(),
        graph_host: m.graph_host.as_deref(),
    }
}

async fn verdict(args: &CheckArgs) -> Verdict {
    let secret = match read_secret(args) {
        Ok(s) => s,
        Err(message) => return invalid("UnreadableSecret", message),
    };
    let creds = match check_input(&raw(args, &secret)) {
        Ok(c) => c,
        Err(p) => return p.into(),
    };
    let opts = match args.microsoft.ca_bundle_pem() {
        Ok(ca_bundle_pem) => ClientOptions {
            ca_bundle_pem,
            ..Default::default()
        },
        Err(message) => return invalid("UnreadableCaBundle", message),
    };
    match MicrosoftClient::new(opts) {
        Ok(client) => client.validate(&creds, !args.no_graph).await,
        Err(e) => invalid("UnreadableCaBundle", e),
    }
}

fn invalid(reason: &'static str, message: String) -> Verdict {
    Verdict::new(Outcome::InvalidInput, Some(reason), message)
}

/// The secret's bytes as stored; UTF-8 and whitespace are judged by the input checks.
fn read_secret(args: &CheckArgs) -> Result<SecretSlice<u8>, String> {
    let bytes = if let Some(path) = &args.secret_file {
        std::fs::read(path)
            .map_err(|e| format!("cannot read the secret file {}: {e}", path.display()))?
    } else {
        let var = args.secret_env.as_deref().unwrap_or_default();
        std::env::var_os(var)
            .ok_or_else(|| format!("the environment variable {var} is not set"))?
            .into_encoded_bytes()
    };
    Ok(SecretSlice::from(bytes))
}

/// The one JSON object `check --output json` prints.
pub fn to_json(v: &Verdict) -> serde_json::Value {
    json!({
        "outcome": v.outcome.as_str(),
        "reason": v.reason,
        "aadstsCode": v.aadsts_code,
        "message": v.message,
        "hint": v.hint,
        "expiresAt": v.graph.expiry.expires_at.map(|t| t.to_string()),
        "expirySource": v.graph.expiry.source,
        "expiryNote": v.graph.expiry.note,
        "missingPermissions": v.graph.missing_permissions.clone().unwrap_or_default(),
        "retryAfterSeconds": v.retry_after.map(|d| d.as_secs()),
        "notes": v.notes,
        "traceId": v.trace_id,
        "correlationId": v.correlation_id,
    })
}

/// A short report for a terminal.
pub fn to_text(v: &Verdict) -> String {
    let mut out = String::new();
    let detail = match (v.reason, v.aadsts_code) {
        (Some(r), Some(c)) => format!(" ({r}, AADSTS{c})"),
        (Some(r), None) => format!(" ({r})"),
        _ => String::new(),
    };
    out.push_str(&format!(
        "{}{detail}\n  {}\n",
        v.outcome.as_str(),
        v.message
    ));
    if let Some(h) = &v.hint {
        out.push_str(&format!("  next step: {h}\n"));
    }
    if v.outcome == Outcome::Valid {
        match (&v.graph.expiry.expires_at, &v.graph.expiry.note) {
            (Some(t), _) => {
                out.push_str(&format!("  secret expires: {t} (from Microsoft Graph)\n"))
            }
            (None, Some(n)) => out.push_str(&format!("  secret expiry: {n}\n")),
            (None, None) => {}
        }
        if let Some(missing) = &v.graph.missing_permissions {
            if missing.is_empty() {
                out.push_str("  delegated permissions: all that the NocoBase email manager needs are present\n");
            } else {
                out.push_str(&format!(
                    "  warning: the app registration lacks delegated Graph permissions the email manager needs: {} (API permissions > Add a permission > Microsoft Graph > Delegated)\n",
                    missing.join(", ")
                ));
            }
        }
    }
    for n in &v.notes {
        out.push_str(&format!("  note: {n}\n"));
    }
    if v.reason == Some(reason::THROTTLED)
        && let Some(r) = v.retry_after
    {
        out.push_str(&format!("  retry after: {}s\n", r.as_secs()));
    }
    if let (Some(t), Some(c)) = (&v.trace_id, &v.correlation_id) {
        out.push_str(&format!("  Microsoft trace ID {t}, correlation ID {c}\n"));
    }
    out
}
