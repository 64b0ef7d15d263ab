//! Waiting for Microsoft: a new application and secret are refused for seconds to minutes
//! after creation (AADSTS700016 "application not found", AADSTS7000215 "invalid secret",
//! AADSTS7000229 "no service principal") while they replicate. The new credentials are
//! checked with the operator's own client-credentials request ([`MicrosoftClient::validate`])
//! until Microsoft accepts them, for at most `--propagation-timeout` (default 180 s), with
//! a pause of 1 s doubling up to 10 s between attempts.

use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::args::Env;
use super::replication::{FIRST_PAUSE, MAX_PAUSE};
use crate::input::{RawCredentials, secret_hint};
use crate::microsoft::{ClientOptions, MicrosoftClient, Outcome, Verdict};

/// AADSTS codes that mean "not there yet" right after creation.
pub const PROPAGATING: &[i64] = &[700016, 7000215, 7000229];

/// Whether a refusal may only be replication lag (pure).
pub fn still_propagating(v: &Verdict) -> bool {
    v.outcome == Outcome::Unavailable || v.aadsts_code.is_some_and(|c| PROPAGATING.contains(&c))
}

/// Asks Microsoft until it accepts `secret` for `client_id`; `Ok(attempts)`, or why not
/// (in words) when the time is up or Microsoft refuses for another reason.
pub async fn wait(
    env: &Env,
    client_id: &str,
    secret: &SecretString,
    timeout: Duration,
) -> Result<u32, String> {
    let raw = RawCredentials {
        tenant_id: &env.tenant,
        client_id,
        client_secret: secret.expose_secret().as_bytes(),
        cloud: env.cloud,
        authority_host: Some(&env.authority),
        graph_host: Some(&env.graph),
    };
    let creds = crate::input::check(&raw).map_err(|p| p.message)?;
    let ms = MicrosoftClient::new(ClientOptions {
        http: Some(env.http.clone()),
        ..Default::default()
    })?;
    let started = Instant::now();
    let mut pause = FIRST_PAUSE;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let v = ms.validate(&creds, false).await;
        if v.outcome == Outcome::Valid {
            eprintln!("  - Microsoft accepts the new credentials (attempt {attempts})");
            return Ok(attempts);
        }
        let code = v
            .aadsts_code
            .map(|c| format!("AADSTS{c}"))
            .unwrap_or_else(|| v.reason.unwrap_or("?").to_owned());
        if !still_propagating(&v) {
            return Err(format!(
                "Microsoft refuses the new credentials ({code}): {}",
                v.message
            ));
        }
        if started.elapsed() + pause > timeout {
            return Err(format!(
                "Microsoft did not accept the new credentials within {}s (last answer {code}); they were stored anyway and the operator keeps checking them. Re-check later with `nocobase-mail-operator check`.",
                timeout.as_secs()
            ));
        }
        eprintln!(
            "  - Microsoft does not accept the new credentials yet ({code}, still replicating); asking again in {}s",
            pause.as_secs()
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// The expiry of the secret in use, from the registration's `passwordCredentials` and its
/// 3-character hint; `None` when no single credential matches.
pub fn expiry_of(passwords: &Value, secret: &SecretString) -> Option<String> {
    let app: crate::microsoft::graph::Application =
        serde_json::from_value(serde_json::json!({"passwordCredentials": passwords})).ok()?;
    let found = crate::microsoft::graph::findings(&app, &secret_hint(secret));
    found.expiry.expires_at.map(|t| t.to_string())
}
