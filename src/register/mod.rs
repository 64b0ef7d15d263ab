//! The `register` command: the seed's manual procedure (app registration, Graph
//! permissions, service principal, client secret, handing them to NocoBase) as one
//! command through Microsoft Graph, leaving the cluster ready for the operator.
//!
//! Order: inputs are checked and the cluster is read before the sign-in (a typo costs no
//! browser round-trip); after it, [`steps`] reads Graph and writes only what is missing;
//! a new application's service principal is asked again while it replicates
//! ([`replication`]); a new secret is proven with the operator's own client-credentials
//! check ([`propagation`]) and stored in the cluster (or printed as manifests). Exit
//! statuses: 0 done, 1 refused by Microsoft or declined, 2 invalid input, 3 Microsoft
//! unavailable or the new application or credentials not replicated in time, 4 done but
//! an optional grant was refused, 5 the cluster could not store the result (a new secret
//! is removed again).

pub mod args;
pub mod cluster;
pub mod directory;
pub mod plan;
pub mod propagation;
pub mod replication;
pub mod signin;
pub mod steps;

use std::process::ExitCode;

use secrecy::SecretString;

pub use args::RegisterArgs;
use cluster::{Cluster, SpecInput};
use directory::Directory;
use steps::{Failed, Registered};

/// Runs `register` and returns its exit status.
pub async fn run(args: RegisterArgs) -> ExitCode {
    match execute(&args).await {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.exit)
        }
    }
}

fn bad_input(message: String) -> Failed {
    Failed { message, exit: 2 }
}

async fn execute(args: &RegisterArgs) -> Result<u8, Failed> {
    let env = args.prepare().map_err(bad_input)?;
    let cluster = match (args.output.is_some() || args.dry_run, env.names.clone()) {
        (true, _) => None,
        (false, names) => Some(
            Cluster::connect(args.namespace.clone(), |ns| cluster::Names {
                namespace: ns,
                ..names
            })
            .await
            .map_err(bad_input)?,
        ),
    };
    let current = match &cluster {
        Some(c) => c.current_secret().await.map_err(bad_input)?,
        None => None,
    };
    let token = sign_in(args, &env).await?;
    eprintln!("Signed in. Registering in tenant {}:", env.tenant);
    let mut dir = Directory::new(env.http.clone(), env.graph.clone(), token, args.dry_run);
    let reg = steps::register(&mut dir, &args.options(&env)).await?;
    if args.dry_run {
        println!(
            "# dry run: nothing was sent to Microsoft Graph after the sign-in, and nothing to the cluster"
        );
        return Ok(0);
    }
    let accepted = match &reg.secret {
        Some(s) => {
            propagation::wait(&env, &reg.client_id, &s.secret, args.propagation_timeout()).await
        }
        None => Ok(0),
    };
    let expires_at = reg
        .secret
        .as_ref()
        .map(|s| s.end_date_time.clone())
        .or_else(|| {
            current
                .as_ref()
                .and_then(|c| propagation::expiry_of(&reg.passwords, c))
        });
    let spec = args.spec(&env, &reg.client_id, expires_at);
    deliver(args, &env, cluster.as_ref(), &mut dir, &reg, &spec).await?;
    Ok(summary(&reg, &accepted, dir.writes, args.output.is_some()))
}

async fn sign_in(args: &RegisterArgs, env: &args::Env) -> Result<SecretString, Failed> {
    let to_failed = |e: signin::SignInError| Failed {
        exit: e.exit_code(),
        message: e.message().to_owned(),
    };
    if let Some(path) = &args.access_token_file {
        return signin::read_access_token(path).map_err(to_failed);
    }
    signin::SignIn {
        http: &env.http,
        authority: &env.authority,
        tenant: &env.tenant,
        client_id: &args.sign_in_client_id,
        scope: args.scope(&env.graph_resource),
    }
    .device_code()
    .await
    .map_err(to_failed)
}

/// Stores the result: Secret and integration into the cluster, or the manifests on
/// stdout. A new secret whose Value cannot be stored is removed from the registration.
async fn deliver(
    args: &RegisterArgs,
    env: &args::Env,
    cluster: Option<&Cluster>,
    dir: &mut Directory,
    reg: &Registered,
    spec: &SpecInput,
) -> Result<(), Failed> {
    let manifest = cluster::integration_manifest(&env.names, spec);
    let Some(c) = cluster else {
        print_manifests(args, env, reg, &manifest);
        return Ok(());
    };
    let stored = match &reg.secret {
        Some(s) => c.apply_secret(&s.secret).await,
        None => Ok(()),
    };
    if let Err(e) = stored {
        let s = reg.secret.as_ref().expect("only a new secret is written");
        let undo = dir
            .write(&plan::remove_password(&reg.object_id, &s.key_id))
            .await;
        let undone = match undo {
            Ok(_) => "the new client secret was removed from the registration again".to_owned(),
            Err(f) => format!(
                "removing the new client secret failed too ({}): remove Secret ID {} in Certificates & secrets",
                f.describe(),
                s.key_id
            ),
        };
        return Err(Failed {
            message: format!(
                "{e}; {undone}. Fix access and run the command again with --new-secret."
            ),
            exit: 5,
        });
    }
    if let Some(s) = &reg.secret {
        eprintln!(
            "  - Secret {}/{}: key {} written (the Value is not shown)",
            c.names.namespace, c.names.secret, c.names.key
        );
        let _ = s;
    }
    deliver_integration(c, spec, &manifest).await
}

/// The integration applied, unless that would change nothing (a re-run) or its expiry
/// would be lost.
async fn deliver_integration(
    c: &Cluster,
    spec: &SpecInput,
    manifest: &serde_json::Value,
) -> Result<(), Failed> {
    let to_failed = |message| Failed { message, exit: 5 };
    let said = |what: &str| {
        eprintln!(
            "  - MicrosoftMailIntegration {}/{}: {what}",
            c.names.namespace, c.names.integration
        )
    };
    if spec.expires_at.is_none() && c.integration_exists().await.map_err(to_failed)? {
        said(
            "left as it is (the secret in use was not found in the registration, so its expiry is unknown)",
        );
        return Ok(());
    }
    if c.integration_unchanged(manifest).await {
        said("unchanged, nothing applied");
        return Ok(());
    }
    c.apply_integration(manifest).await.map_err(to_failed)?;
    said("applied");
    Ok(())
}

fn print_manifests(
    args: &RegisterArgs,
    env: &args::Env,
    reg: &Registered,
    manifest: &serde_json::Value,
) {
    if let (Some(s), true) = (&reg.secret, args.include_secret) {
        eprintln!(
            "WARNING: the output holds the client secret Value in clear text (the Secret manifest). Do not commit it: seal or encrypt it first (Sealed Secrets, SOPS), or apply it and delete the file."
        );
        let secret = cluster::secret_manifest(&env.names, &s.secret, true);
        println!(
            "{}---",
            serde_saphyr::to_string(&secret).expect("YAML serializes")
        );
    }
    print!(
        "{}",
        serde_saphyr::to_string(manifest).expect("YAML serializes")
    );
}

/// The closing report and the exit status; on stderr when stdout holds the manifests.
fn summary(reg: &Registered, accepted: &Result<u32, String>, writes: u32, yaml: bool) -> u8 {
    let mut lines = vec![format!("Client ID: {}", reg.client_id)];
    match accepted {
        Ok(_) if reg.secret.is_some() => {
            lines.push("Microsoft accepts the new client secret (client-credentials check).".into())
        }
        Ok(_) => {}
        Err(m) => lines.push(format!("warning: {m}")),
    }
    if writes == 0 {
        lines.push("Nothing was missing: no change was sent to Microsoft Graph.".into());
    }
    lines.extend(reg.refused.iter().map(|r| format!("refused: {r}")));
    for l in lines {
        if yaml {
            eprintln!("{l}");
        } else {
            println!("{l}");
        }
    }
    match (accepted, reg.refused.is_empty()) {
        (Err(_), _) => 3,
        (Ok(_), false) => 4,
        (Ok(_), true) => 0,
    }
}
