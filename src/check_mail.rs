//! `check`'s lines about the email manager: the app registration (redirect URI, audience,
//! delegated permissions, from the Graph read the validation made) and, with
//! `--mail-settings`, whether the settings collection, its fields and the record are found.
//! Reads only; field names are printed, never values.

use serde_json::{Value, json};

use crate::api::{MailFields, MailSettings};
use crate::appreg;
use crate::mailsettings;
use crate::microsoft::{Outcome, Verdict};
use crate::nocobase::{Fields, NocoBaseClient};

/// The app registration report, when the validation read it (or tried to). `public_url`,
/// `app` and `path` give the redirect URI the email manager needs.
pub fn app_registration(
    v: &Verdict,
    public_url: Option<&str>,
    app: Option<&str>,
    path: Option<&str>,
) -> Option<Value> {
    if v.outcome != Outcome::Valid {
        return None;
    }
    let Some(reg) = &v.graph.registration else {
        return Some(
            json!({"ready": null, "reason": appreg::reason::REGISTRATION_UNREADABLE,
            "problems": [], "message": format!("the app registration could not be read from Microsoft Graph ({})",
                v.graph.expiry.note.as_deref().unwrap_or("no detail"))}),
        );
    };
    let nb: crate::api::NocoBaseSync = serde_json::from_value(json!({
        "url": "http://nocobase",
        "apiKeySecretRef": {"name": "unused"},
        "publicUrl": public_url,
        "app": app,
        "oauthCallbackPath": path,
    }))
    .ok()?;
    let missing = v.graph.missing_permissions.clone().unwrap_or_default();
    let audience = reg.sign_in_audience.as_deref();
    let problems = appreg::problems(&nb, &reg.web_redirect_uris, audience, &missing);
    let redirect = public_url.map(|p| appreg::required_redirect_uri(p, app, path));
    let found = appreg::registered_form(&nb, &reg.web_redirect_uris).and_then(Result::ok);
    Some(json!({
        "ready": problems.is_empty(),
        "reason": problems.first().map_or(appreg::reason::READY, |(r, _)| *r),
        "problems": problems.iter().map(|(r, m)| json!({"reason": r, "message": m})).collect::<Vec<_>>(),
        "signInAudience": reg.sign_in_audience,
        "serves": appreg::audience_words(audience),
        "webRedirectUris": reg.web_redirect_uris,
        "requiredRedirectUri": redirect,
        "registeredRedirectUri": found.as_ref().map(|(u, _)| u),
        "registeredForm": found.map(|(_, f)| f),
    }))
}

/// The text lines of [`app_registration`].
pub fn registration_text(r: &Value) -> String {
    if r["ready"].is_null() {
        return format!(
            "  app registration: {}\n",
            r["message"].as_str().unwrap_or_default()
        );
    }
    let mut out = format!(
        "  app registration: signInAudience {}: serves {}",
        r["signInAudience"].as_str().unwrap_or("not reported"),
        r["serves"].as_str().unwrap_or_default()
    );
    match (
        r["registeredRedirectUri"].as_str(),
        r["requiredRedirectUri"].as_str(),
    ) {
        (Some(u), _) => out.push_str(&format!(
            "; the Web redirect URI {u} is registered ({})\n",
            r["registeredForm"].as_str().unwrap_or_default()
        )),
        (None, Some(u)) => out.push_str(&format!("; needs the Web redirect URI {u}\n")),
        (None, None) => out.push_str("; redirect URI not checked (give --public-url)\n"),
    }
    for p in r["problems"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  warning ({}): {}\n",
            p["reason"].as_str().unwrap_or_default(),
            p["message"].as_str().unwrap_or_default()
        ));
    }
    if r["ready"] == true {
        out.push_str("  app registration: ready for the email manager\n");
    }
    out
}

/// The settings as given on the command line (`--mail-collection`, `--mail-match`,
/// `--mail-fields`).
pub fn settings_from_flags(
    collection: &str,
    matches: &[String],
    fields: &str,
) -> Result<MailSettings, String> {
    let mut s = MailSettings {
        enabled: true,
        collection: collection.to_owned(),
        ..Default::default()
    };
    if !matches.is_empty() {
        s.match_fields.clear();
        for m in matches {
            let (k, v) = m
                .split_once('=')
                .ok_or_else(|| format!("--mail-match {m:?} is not FIELD=VALUE"))?;
            s.match_fields.insert(k.to_owned(), v.to_owned());
        }
    }
    let (id, secret) = fields
        .split_once(',')
        .ok_or_else(|| format!("--mail-fields {fields:?} is not ID_FIELD,SECRET_FIELD"))?;
    s.fields = MailFields {
        client_id: id.trim().to_owned(),
        client_secret: secret.trim().to_owned(),
    };
    Ok(s)
}

/// Whether the collection, its fields and the one record are found (no write).
pub async fn mail_settings(
    client: &NocoBaseClient,
    settings: Result<MailSettings, String>,
) -> Value {
    let s = match settings {
        Ok(s) => s,
        Err(e) => {
            return json!({"ok": false, "reason": mailsettings::reason::INVALID, "message": e});
        }
    };
    match mailsettings::discover(client, &s).await {
        Ok(d) => {
            let source = match &d.fields {
                Fields::ApiDoc(_) => "from the API documentation".to_owned(),
                Fields::Unavailable(why) => format!("from the record's keys ({why})"),
            };
            let [id, secret] = &d.located.paths;
            let notes = match d.located.notes.is_empty() {
                true => String::new(),
                false => format!(" ({})", d.located.notes.join("; ")),
            };
            json!({"ok": true, "reason": null, "collection": s.collection, "record": d.located.key,
                "fields": d.located.fields, "paths": [id.to_string(), secret.to_string()],
                "message": format!("collection {} found; fields {id} and {secret} found ({source}){notes}; record {} matches {}",
                    s.collection, d.located.key,
                    mailsettings::match_text(&s.match_fields))})
        }
        Err((p, _)) => json!({"ok": false, "reason": p.reason, "message": p.message}),
    }
}
