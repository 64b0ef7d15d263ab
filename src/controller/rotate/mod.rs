//! Rotation I/O: carries out the one step [`crate::rotation::plan`] names (Graph writes,
//! the Secret named by clientSecretRef, a GET of each target Deployment) and reports what
//! happened to [`crate::rotation::record`]. Secret values live only in [`SecretString`]s
//! and in the Secret itself; logs carry key IDs and phases.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use secrecy::ExposeSecret;
use serde_json::json;
use tracing::info;

use crate::api::{MicrosoftMailIntegration, MicrosoftMailIntegrationStatus, annotation};
use crate::controller::index::Indexes;
use crate::fingerprint::{IntegrationKey, value_fingerprint};
use crate::inject::field_manager;
use crate::input::{self, Credentials, RawCredentials};
use crate::microsoft::MicrosoftClient;
use crate::microsoft::passwords::{AppGraph, GraphError};
use crate::rotation::consent::{self, Consent};
use crate::rotation::{self, Inputs, Report, Step, Transition, previous_key};

/// The spec with the expiry of the secret in use when the operator created it: a stated
/// `secretExpiry.expiresAt` describes the secret the user gave, not the operator's.
pub fn effective_spec(
    mmi: &MicrosoftMailIntegration,
    creds: Option<&Credentials>,
    key: &IntegrationKey,
) -> crate::api::MicrosoftMailIntegrationSpec {
    let mut spec = mmi.spec.clone();
    let rot = mmi.status.as_ref().and_then(|s| s.rotation.as_ref());
    let fp = creds
        .map(|c| value_fingerprint(key.as_bytes(), c.client_secret.expose_secret().as_bytes()));
    if let Some(at) = rotation::expiry_in_use(rot, fp.as_deref(), None) {
        spec.secret_expiry.expires_at = Some(at.to_string());
    }
    spec
}

struct Env<'a> {
    mmi: &'a MicrosoftMailIntegration,
    client: kube::Client,
    ms: &'a MicrosoftClient,
    ns: String,
    key: String,
    fp_key: IntegrationKey,
}

impl Env<'_> {
    pub(super) fn fp(&self, v: &[u8]) -> String {
        value_fingerprint(self.fp_key.as_bytes(), v)
    }

    pub(super) async fn secret(&self) -> Result<Option<Secret>, kube::Error> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.ns);
        api.get_opt(&self.mmi.spec.client_secret_ref.name).await
    }

    pub(super) async fn secret_data(
        &self,
    ) -> Result<Option<BTreeMap<String, ByteString>>, kube::Error> {
        Ok(self.secret().await?.map(|s| s.data.unwrap_or_default()))
    }

    /// Server-side applies the Secret's rotation keys as the integration's own field
    /// manager: `value` under the key and, when given, `previous` under `<key>.previous`.
    /// Without `previous`, that key is removed by name (a JSON merge patch), not by leaving
    /// it out of the apply: an apply removes only what its manager alone owns, and the
    /// Secret's other keys, labels and references are never this integration's to remove.
    pub(super) async fn write_secret(
        &self,
        value: &[u8],
        previous: Option<&[u8]>,
    ) -> Result<(), kube::Error> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.ns);
        let b64 = |v: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, v);
        let mut data = serde_json::Map::new();
        data.insert(self.key.clone(), json!(b64(value)));
        if let Some(p) = previous {
            data.insert(previous_key(&self.key), json!(b64(p)));
        }
        let name = &self.mmi.spec.client_secret_ref.name;
        let body = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "namespace": self.ns},
            "data": data});
        let manager = field_manager(&self.ns, &self.mmi.name_any());
        let written = api
            .patch(
                name,
                &PatchParams::apply(&manager).force(),
                &Patch::Apply(&body),
            )
            .await?;
        let prev = previous_key(&self.key);
        let has_prev = written.data.as_ref().is_some_and(|d| d.contains_key(&prev));
        if previous.is_none() && has_prev {
            let drop = json!({"data": {prev: null}});
            let pp = PatchParams {
                field_manager: Some(manager),
                ..Default::default()
            };
            api.patch(name, &pp, &Patch::Merge(&drop)).await?;
        }
        Ok(())
    }

    pub(super) fn creds(&self, value: &[u8]) -> Result<Credentials, GraphError> {
        input::check(&RawCredentials::from_spec(&self.mmi.spec, value)).map_err(|p| GraphError {
            reason: p.reason.into(),
            message: p.message,
            transient: false,
        })
    }

    pub(super) async fn graph(&self, value: &[u8]) -> Result<AppGraph<'_>, GraphError> {
        let creds = self.creds(value)?;
        AppGraph::connect(self.ms, &creds).await
    }
}

pub(super) fn hint(v: &[u8]) -> String {
    String::from_utf8_lossy(v).trim().chars().take(3).collect()
}

pub(super) fn create_failed(e: GraphError) -> Report {
    Report::CreateFailed {
        reason: e.reason,
        message: e.message,
        transient: e.transient,
    }
}

/// One rotation step for this reconcile; `status` is what the decision core just decided.
/// `others` answers which integrations (every watched namespace) use an app registration.
pub async fn run(
    mmi: &MicrosoftMailIntegration,
    client: &kube::Client,
    ms: &MicrosoftClient,
    others: &Indexes,
    fp_key: &IntegrationKey,
    status: &MicrosoftMailIntegrationStatus,
    now: Timestamp,
) -> Result<Transition, kube::Error> {
    let mut previous = status.rotation.clone().unwrap_or_default();
    let annotations = mmi.annotations();
    let approval = annotations.get(annotation::RETIRE_APPROVED_AT);
    rotation::observe_approval(&mut previous, approval.map(String::as_str), now);
    let inputs = Inputs {
        spec: mmi.spec.rotation.as_ref(),
        now,
        previous: &previous,
        expires_at: status
            .secret_expiry
            .as_ref()
            .and_then(|e| e.expires_at.as_deref())
            .and_then(|t| t.parse().ok()),
        requested_at: annotations
            .get(annotation::ROTATE_REQUESTED_AT)
            .map(String::as_str),
        approved_at: annotations
            .get(annotation::RETIRE_APPROVED_AT)
            .map(String::as_str),
    };
    let env = Env {
        mmi,
        client: client.clone(),
        ms,
        ns: mmi.namespace().unwrap_or_default(),
        key: mmi.spec.client_secret_ref.key.clone(),
        fp_key: fp_key.clone(),
    };
    let step = rotation::plan(&inputs);
    let (step, data) = match step {
        Step::Off | Step::Blocked(..) | Step::Wait(_) | Step::NotPermitted(_) => (step, None),
        _ => match env.secret().await? {
            None => (step, None),
            Some(s) => permitted(&env, others, step, &previous, s).await?,
        },
    };
    let report = match (&step, &data) {
        (Step::Off | Step::Blocked(..) | Step::Wait(_) | Step::NotPermitted(_), _) | (_, None) => {
            None
        }
        (Step::Begin, Some(d)) => d.get(&env.key).map(|v| Report::Begun {
            attempt_id: format!("{}-{:08x}", now.as_second(), rand::random::<u32>()),
            old_fingerprint: env.fp(&v.0),
        }),
        (Step::Create, Some(d)) => Some(create(&env, &previous, d, now).await),
        (Step::Validate, Some(d)) => Some(validate(&env, d).await),
        (Step::CheckDelivery, Some(_)) => {
            Some(Report::Delivery(delivery(&env, status, &previous).await?))
        }
        (Step::Retire, Some(d)) => Some(retire(&env, &previous, d).await),
        (Step::Abandon, Some(d)) => Some(abandon(&env, &previous, d).await),
    };
    if let Some(r) = &report {
        info!(step = ?step_name(&step), report = report_name(r), "rotation step");
    }
    Ok(rotation::record(&inputs, &step, report))
}

/// The step with the consent it needs checked ([`rotation::consent::guard`]), and the
/// Secret's data to carry it out. A Secret the operator manages for an integration is never
/// rotated.
async fn permitted(
    env: &Env<'_>,
    others: &Indexes,
    step: Step,
    p: &crate::api::RotationStatus,
    secret: Secret,
) -> Result<(Step, Option<BTreeMap<String, ByteString>>), kube::Error> {
    let name = env.mmi.name_any();
    let secret_name = &env.mmi.spec.client_secret_ref.name;
    if let Some(owner) = crate::inject::managed_by(&secret.metadata) {
        let m = format!(
            "Secret {}/{secret_name} is the Secret the operator manages for integration {}; it is never rotated. Reference the Secret that holds the client secret Value.",
            env.ns,
            crate::quote::name(&owner)
        );
        return Ok((Step::Blocked("ManagedSecretReferenced", m), None));
    }
    let data = secret.data.clone().unwrap_or_default();
    if !consent::needs_consent(&step) {
        return Ok((step, Some(data)));
    }
    fn allowed_for(s: &Secret) -> Option<&str> {
        s.annotations()
            .get(consent::ROTATION_ALLOWED_FOR)
            .map(String::as_str)
    }
    // the credential this rotation would remove: the value in use before it began
    let removed = match (&step, data.get(&env.key)) {
        (Step::Begin, Some(v)) => Some(env.fp(&v.0)),
        _ => p.old_secret_fingerprint.clone(),
    };
    let c = Consent {
        own: consent::names(allowed_for(&secret), &env.ns, &env.ns, &name),
        holders: holders(env, others, removed.as_deref(), &name).await?,
    };
    let step = consent::guard(step, &c, &env.ns, &name, secret_name);
    Ok((step, Some(data)))
}

/// The other integrations whose Secret holds the value with fingerprint `removed` (the
/// fingerprint is this integration's, computed here over their values), and whether each
/// Secret's owner consents to this integration's rotation.
async fn holders(
    env: &Env<'_>,
    others: &Indexes,
    removed: Option<&str>,
    name: &str,
) -> Result<Vec<consent::Holder>, kube::Error> {
    let Some(removed) = removed else {
        return Ok(vec![]);
    };
    let mut found = vec![];
    for u in others.for_client(&env.mmi.spec.client_id) {
        if u.namespace == env.ns && u.integration == name {
            continue;
        }
        let api: Api<Secret> = Api::namespaced(env.client.clone(), &u.namespace);
        let Some(s) = api.get_opt(&u.secret).await? else {
            continue;
        };
        let holds = s
            .data
            .as_ref()
            .and_then(|d| d.get(&u.key))
            .is_some_and(|v| env.fp(&v.0) == removed);
        if holds {
            let value = s.annotations().get(consent::ROTATION_ALLOWED_FOR);
            found.push(consent::Holder {
                consents: consent::names(value.map(String::as_str), &u.namespace, &env.ns, name),
                namespace: u.namespace,
                integration: u.integration,
                secret: u.secret,
            });
        }
    }
    Ok(found)
}

fn step_name(s: &Step) -> &'static str {
    match s {
        Step::NotPermitted(_) => "NotPermitted",
        Step::Off => "Off",
        Step::Blocked(..) => "Blocked",
        Step::Wait(_) => "Wait",
        Step::Begin => "Begin",
        Step::Create => "Create",
        Step::Validate => "Validate",
        Step::CheckDelivery => "CheckDelivery",
        Step::Retire => "Retire",
        Step::Abandon => "Abandon",
    }
}

fn report_name(r: &Report) -> &'static str {
    match r {
        Report::Begun { .. } => "Begun",
        Report::Created { .. } => "Created",
        Report::CreateFailed { .. } => "CreateFailed",
        Report::Accepted => "Accepted",
        Report::NotYetAccepted(_) => "NotYetAccepted",
        Report::Refused { .. } => "Refused",
        Report::Delivery(_) => "Delivery",
        Report::Retired { .. } => "Retired",
        Report::RetireFailed { .. } => "RetireFailed",
        Report::Abandoned => "Abandoned",
        Report::AbandonFailed(_) => "AbandonFailed",
    }
}

/// `rotate NAME [--approve-retire]`: sets the annotation, like `cmctl renew`.
pub async fn request(
    client: kube::Client,
    ns: &str,
    name: &str,
    approve_retire: bool,
    now: Timestamp,
) -> Result<String, kube::Error> {
    let api: Api<MicrosoftMailIntegration> = Api::namespaced(client, ns);
    let key = if approve_retire {
        annotation::RETIRE_APPROVED_AT
    } else {
        annotation::ROTATE_REQUESTED_AT
    };
    let patch = json!({"metadata": {"annotations": {key: now.to_string()}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(if approve_retire {
        format!("Approved removing the old client secret of {ns}/{name} (annotation {key}={now}).")
    } else {
        format!(
            "Requested a rotation of {ns}/{name} (annotation {key}={now}); watch it with: kubectl -n {ns} get mmi {name} -o jsonpath='{{.status.rotation}}'"
        )
    })
}

mod steps;
use steps::{abandon, create, delivery, retire, validate};
