//! The registration as a sequence of small steps (application, service principal, client
//! secret, optional grants), each one reading what is there, asking the pure
//! [`super::plan`] what is missing, and sending only that. A refused optional grant ends
//! nothing: what was done stays done, and the refusal is reported in words.

use std::time::Duration;

use serde_json::{Value, json};

use super::directory::{Directory, GraphFailure};
use super::plan::{self, Desired};
use super::replication::{self, Refused};
use crate::microsoft::graph::GRAPH_APP_ID;
use crate::microsoft::passwords::{NewPassword, new_password};

/// What the run must do beyond the registration itself.
pub struct Options {
    pub desired: Desired,
    pub client_id: Option<String>,
    /// Create a client secret even though the application existed (`--new-secret`).
    pub new_secret: bool,
    /// Why no secret may be created in this run (none: it may).
    pub no_secret_because: Option<String>,
    pub secret_display_name: String,
    pub secret_end: jiff::Timestamp,
    /// How long a new application may take to accept its service principal.
    pub replication_budget: Duration,
}

/// What the run found and did.
pub struct Registered {
    pub object_id: String,
    pub client_id: String,
    pub sp_id: String,
    /// One line per step, in order, for the report.
    pub lines: Vec<String>,
    pub secret: Option<NewPassword>,
    /// Optional grants Graph refused, each with what to ask an administrator for.
    pub refused: Vec<String>,
    /// The application's `passwordCredentials` as read (to find an existing secret's expiry).
    pub passwords: Value,
}

/// A step that could not be done; what came before stays done.
#[derive(Debug)]
pub struct Failed {
    pub message: String,
    pub exit: u8,
}

fn failed(step: &str, f: &GraphFailure) -> Failed {
    let advice = if f.denied() {
        " The signed-in account may not do this: sign in as an Application Developer, Application Administrator or Cloud Application Administrator, and accept the consent prompt for Application.ReadWrite.All."
    } else {
        ""
    };
    Failed {
        message: format!("Could not {step}: {}.{advice}", f.describe()),
        exit: if f.transient() { 3 } else { 1 },
    }
}

fn text(v: &Value, key: &str, placeholder: &str) -> String {
    v[key].as_str().unwrap_or(placeholder).to_owned()
}

pub async fn register(dir: &mut Directory, o: &Options) -> Result<Registered, Failed> {
    let mut lines = vec![];
    let (app, created) = application(dir, o, &mut lines).await?;
    let object_id = text(&app, "id", "{application-object-id}");
    let client_id = text(&app, "appId", "{client-id}");
    let app_ref = AppRef {
        name: text(&app, "displayName", &o.desired.display_name),
        client_id: client_id.clone(),
        created,
    };
    let sp_id = service_principal(dir, o, &app_ref, &mut lines).await?;
    let secret = client_secret(dir, o, &object_id, created, &mut lines).await?;
    let mut refused = vec![];
    grants(dir, o, &object_id, &sp_id, &mut lines, &mut refused).await?;
    Ok(Registered {
        object_id,
        client_id,
        sp_id,
        lines,
        secret,
        refused,
        passwords: app["passwordCredentials"].clone(),
    })
}

/// Finds (by client ID or display name) and repairs, or creates, the application.
async fn application(
    dir: &mut Directory,
    o: &Options,
    lines: &mut Vec<String>,
) -> Result<(Value, bool), Failed> {
    let d = &o.desired;
    let Some(app) = find(dir, o).await? else {
        let answer = dir
            .write(&plan::create_application(d))
            .await
            .map_err(|f| failed("create the application", &f))?;
        let app = answer.unwrap_or_else(|| {
            json!({"id": "{application-object-id}", "appId": o.client_id.as_deref().unwrap_or("{client-id}"), "passwordCredentials": []})
        });
        done(
            lines,
            format!(
                "application '{}': created (client ID {})",
                d.display_name,
                text(&app, "appId", "?")
            ),
        );
        return Ok((app, true));
    };
    let name = text(&app, "displayName", &d.display_name);
    match plan::repair_application(d, &app) {
        None => done(
            lines,
            format!(
                "application '{name}': found (client ID {}), nothing missing",
                text(&app, "appId", "?")
            ),
        ),
        Some((req, missing)) => {
            dir.write(&req)
                .await
                .map_err(|f| failed("repair the application", &f))?;
            done(
                lines,
                format!(
                    "application '{name}': found (client ID {}), added {}",
                    text(&app, "appId", "?"),
                    missing.join("; ")
                ),
            );
        }
    }
    Ok((app, false))
}

/// The existing application: by client ID (which must exist), or the one with the
/// display name (none, or an error when several share it).
async fn find(dir: &Directory, o: &Options) -> Result<Option<Value>, Failed> {
    let d = &o.desired;
    let found = dir
        .read(&plan::find_application(
            o.client_id.as_deref(),
            &d.display_name,
        ))
        .await
        .map_err(|f| failed("look the application up", &f))?;
    let existing = match (&o.client_id, found) {
        (Some(id), None) if !dir.dry_run => {
            return Err(Failed {
                message: format!(
                    "No application with client ID {id} exists in this tenant: check --client-id and --tenant-id, or leave --client-id out to create one named '{}'.",
                    d.display_name
                ),
                exit: 1,
            });
        }
        (Some(_), found) => found,
        (None, Some(list)) => match list["value"].as_array().map(Vec::as_slice) {
            None | Some([]) => None,
            Some([one]) => Some(one.clone()),
            Some(many) => {
                return Err(Failed {
                    message: format!(
                        "{} applications are named '{}' in this tenant: choose one with --client-id.",
                        many.len(),
                        d.display_name
                    ),
                    exit: 2,
                });
            }
        },
        (None, None) => None,
    };
    Ok(existing)
}

async fn service_principal(
    dir: &mut Directory,
    o: &Options,
    app: &AppRef,
    lines: &mut Vec<String>,
) -> Result<String, Failed> {
    let client_id = app.client_id.as_str();
    let found = dir
        .read(&plan::find_service_principal(client_id))
        .await
        .map_err(|f| failed("look the service principal up", &f))?;
    if let Some(sp) = found {
        done(lines, "service principal: found".into());
        return Ok(text(&sp, "id", "?"));
    }
    let sp = replication::create_service_principal(dir, client_id, o.replication_budget)
        .await
        .map_err(|r| match r {
            Refused::Graph(f) => failed("create the service principal", &f),
            Refused::NotReplicated {
                last,
                attempts,
                waited,
            } => not_replicated(app, &last, attempts, waited),
        })?;
    done(lines, "service principal: created".into());
    Ok(sp.map_or_else(|| "{service-principal-id}".into(), |v| text(&v, "id", "?")))
}

/// The application whose service principal is made.
struct AppRef {
    name: String,
    client_id: String,
    /// Created by this run (so it has no client secret yet).
    created: bool,
}

/// The application stays; the report says how a re-run finishes the job.
fn not_replicated(app: &AppRef, last: &GraphFailure, attempts: u32, waited: Duration) -> Failed {
    let named = format!(
        "The app registration '{}' (client ID {})",
        app.name, app.client_id
    );
    let rerun = if app.created {
        format!(
            "{named} stays in place, without a client secret yet: run the same command again with --new-secret in a minute or two; it adopts the registration and creates the service principal and a client secret"
        )
    } else {
        format!(
            "{named} is left as it is: run the same command again in a minute or two; it creates the service principal"
        )
    };
    Failed {
        message: format!(
            "Could not create the service principal: Microsoft Graph still did not know the application after {attempts} attempts over {}s (a new application replicates for seconds to minutes; last answer: {}). {rerun}.",
            waited.as_secs(),
            last.describe(),
        ),
        exit: 3,
    }
}

async fn client_secret(
    dir: &mut Directory,
    o: &Options,
    object_id: &str,
    app_created: bool,
    lines: &mut Vec<String>,
) -> Result<Option<NewPassword>, Failed> {
    if !(app_created || o.new_secret) {
        done(
            lines,
            "client secret: none created (the application existed; --new-secret creates one)"
                .into(),
        );
        return Ok(None);
    }
    if let Some(why) = &o.no_secret_because {
        done(lines, format!("client secret: none created ({why})"));
        return Ok(None);
    }
    let req = plan::add_password(object_id, &o.secret_display_name, o.secret_end);
    let Some(answer) = dir
        .write(&req)
        .await
        .map_err(|f| failed("create the client secret", &f))?
    else {
        return Ok(None);
    };
    // the answer holds the Value: it goes into a SecretString, the rest is dropped unprinted
    let bytes = serde_json::to_vec(&answer).unwrap_or_default();
    let added = new_password(&bytes, &o.secret_end.to_string()).map_err(|e| Failed {
        message: e.message,
        exit: 3,
    })?;
    done(
        lines,
        format!(
            "client secret '{}': created (Secret ID {}, expires {})",
            o.secret_display_name, added.key_id, added.end_date_time
        ),
    );
    Ok(Some(added))
}

/// The optional application permissions (app role assignments) and ownership.
async fn grants(
    dir: &mut Directory,
    o: &Options,
    object_id: &str,
    sp_id: &str,
    lines: &mut Vec<String>,
    refused: &mut Vec<String>,
) -> Result<(), Failed> {
    let d = &o.desired;
    if !d.roles().is_empty() {
        let graph_sp = dir
            .read(&plan::find_service_principal(GRAPH_APP_ID))
            .await
            .map_err(|f| failed("find Microsoft Graph's service principal", &f))?;
        let graph_sp_id = graph_sp.map_or_else(
            || "{graph-service-principal-id}".into(),
            |v| text(&v, "id", "?"),
        );
        let assigned = dir
            .read(&plan::list_app_role_assignments(sp_id))
            .await
            .map_err(|f| failed("list the granted application permissions", &f))?
            .map(|v| v["value"].clone())
            .unwrap_or(Value::Null);
        let missing = plan::missing_role_assignments(d, sp_id, &graph_sp_id, &assigned);
        for (name, _) in d
            .roles()
            .iter()
            .filter(|(n, _)| !missing.iter().any(|(m, _)| m == n))
        {
            done(
                lines,
                format!("application permission {name}: already granted"),
            );
        }
        for (name, req) in missing {
            match dir.write(&req).await {
                Ok(_) => done(
                    lines,
                    format!("application permission {name}: granted (admin consent)"),
                ),
                Err(f) if f.denied() => refused.push(consent_refused(name, &d.display_name, &f)),
                Err(f) => return Err(failed(&format!("grant {name}"), &f)),
            }
        }
    }
    if d.rotation {
        owner(dir, object_id, sp_id, lines, refused).await?;
    }
    Ok(())
}

async fn owner(
    dir: &mut Directory,
    object_id: &str,
    sp_id: &str,
    lines: &mut Vec<String>,
    refused: &mut Vec<String>,
) -> Result<(), Failed> {
    let owners = dir
        .read(&plan::list_owners(object_id))
        .await
        .map_err(|f| failed("list the application's owners", &f))?
        .map(|v| v["value"].clone())
        .unwrap_or(Value::Null);
    let Some(req) = plan::add_owner(&dir.graph_host, object_id, sp_id, &owners) else {
        done(
            lines,
            "owner: the service principal already owns its application".into(),
        );
        return Ok(());
    };
    match dir.write(&req).await {
        Ok(_) => done(lines, "owner: the service principal now owns its application".into()),
        Err(f) if f.denied() => refused.push(format!(
            "Microsoft Graph refused to make the service principal an owner of its application ({}). Ask an Application Administrator or Cloud Application Administrator to add it (documentation: Zero-touch rotation > One-time set-up, step 3), or to re-run this command with --with-rotation.",
            f.describe()
        )),
        Err(f) => return Err(failed("add the owner", &f)),
    }
    Ok(())
}

fn consent_refused(name: &str, app: &str, f: &GraphFailure) -> String {
    format!(
        "Microsoft Graph refused to grant the application permission {name} ({}). Granting an application permission of Microsoft Graph is admin consent: ask a Privileged Role Administrator or Global Administrator to open App registrations > {app} > API permissions, where {name} is already listed, and choose \"Grant admin consent\", or to re-run this command with the same options.",
        f.describe()
    )
}

/// Records a finished step and shows it at once, so that a later failure leaves the
/// administrator knowing what was already done.
fn done(lines: &mut Vec<String>, line: String) {
    eprintln!("  - {line}");
    lines.push(line);
}
