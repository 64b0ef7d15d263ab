//! The reconcile's pure core: what one reconcile does ([`plan`]) and what it means once done
//! ([`conclude`]), from gathered state and a fixed clock, without an API server; and the
//! decisions of a deletion ([`nocobase_cleanup_step`]).

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use nocobase_mail_operator::api::{MicrosoftMailIntegration, Outcome};
use nocobase_mail_operator::decide::actions::{
    Executed, Managed, Observed, Targets, conclude, plan, reads_deployments,
};
use nocobase_mail_operator::decide::cleanup::{
    CleanupAttempt, CleanupStep, CleanupWaiting, nocobase_cleanup_due, nocobase_cleanup_step,
};
use nocobase_mail_operator::decide::reports::{MailWork, NocoBaseWork};
use nocobase_mail_operator::decide::{ConditionStatus, CredentialCheck, Decision};
use nocobase_mail_operator::fingerprint::{IntegrationKey, OperatorKey};
use nocobase_mail_operator::input::{self, Credentials, RawCredentials};
use nocobase_mail_operator::microsoft::Verdict;
use nocobase_mail_operator::nocobase::{SyncError, SyncOutcome, SyncedState, reason};
use serde_json::{Value, json};

const SECRET: &str = "Abc8Q~0123456789abcdefghijklmnopqrstuvwx";

fn mmi(targets: Value, status: Value, nocobase: Value) -> MicrosoftMailIntegration {
    serde_json::from_value(json!({
        "apiVersion": "nocobase-mail-operator.dev/v1alpha1",
        "kind": "MicrosoftMailIntegration",
        "metadata": {"name": "outlook", "namespace": "nb", "uid": "u-1", "generation": 1},
        "spec": {
            "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
            "clientId": "11111111-2222-4333-8444-555555555555",
            "clientSecretRef": {"name": "entra"},
            "targets": targets,
            "nocobase": nocobase,
        },
        "status": status,
    }))
    .unwrap()
}

fn nocobase() -> Value {
    json!({"url": "http://nocobase:13000", "apiKeySecretRef": {"name": "k"},
           "mailSettings": {"enabled": true}})
}

fn deployment(name: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "nb"},
        "spec": {"selector": {}, "template": {"spec": {"containers": [{"name": "app", "image": "x"}]}}},
    }))
    .unwrap()
}

fn now() -> Timestamp {
    "2027-01-01T00:00:00Z".parse().unwrap()
}

fn valid() -> Verdict {
    Verdict::new(Outcome::Valid, None, "accepted")
}

struct Case {
    mmi: MicrosoftMailIntegration,
    check: CredentialCheck,
    creds: Credentials,
    deployments: Vec<Deployment>,
    /// `--allow-inject-unverified`
    unverified_allowed: bool,
    key: IntegrationKey,
}

impl Case {
    fn new(targets: Value, status: Value, nb: Value, deployments: Vec<Deployment>) -> Self {
        let mmi = mmi(targets, status, nb);
        let creds = input::check(&RawCredentials::from_spec(&mmi.spec, SECRET.as_bytes())).unwrap();
        Self {
            check: CredentialCheck::Ready {
                fingerprint: "fp".into(),
            },
            creds,
            mmi,
            deployments,
            unverified_allowed: false,
            key: OperatorKey::from_bytes(&[7; 32])
                .unwrap()
                .integration("uid"),
        }
    }

    fn observed<'a>(&'a self, attempt: Option<&'a Verdict>, managed: Managed<'a>) -> Observed<'a> {
        Observed {
            mmi: &self.mmi,
            key: &self.key,
            spec: &self.mmi.spec,
            now: now(),
            credentials: &self.check,
            creds: Some(&self.creds),
            attempt,
            managed,
            deployments: Some(&self.deployments),
            unverified_allowed: self.unverified_allowed,
        }
    }
}

#[test]
fn accepted_credentials_write_the_managed_secret_once_and_plan_each_target() {
    let c = Case::new(
        json!([{"deploymentName": "web"}]),
        json!({}),
        Value::Null,
        vec![deployment("web")],
    );
    let v = valid();
    let a = plan(&c.observed(Some(&v), Managed::Absent));
    let write = a
        .managed_secret
        .as_ref()
        .expect("written after a Valid verdict");
    assert_eq!(
        write.body["metadata"]["name"],
        "outlook-microsoft-credentials"
    );
    assert!(
        !write.force,
        "a Secret that is not there yet is never forced"
    );
    let Targets::Apply {
        plans,
        problems,
        fingerprint,
    } = &a.targets
    else {
        panic!("targets are planned")
    };
    assert_eq!(fingerprint, "fp");
    assert!(problems.is_empty());
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0].deployment, "web");
    // the operator's own Secret with other credentials is forced; with these, left alone
    let own = plan(&c.observed(Some(&v), Managed::Own(Some("old"))));
    assert!(own.managed_secret.as_ref().is_some_and(|w| w.force));
    let again = plan(&c.observed(Some(&v), Managed::Own(Some("fp"))));
    assert!(again.managed_secret.is_none());
    let d = conclude(
        &c.observed(Some(&v), Managed::Absent),
        &a,
        &Executed::default(),
    );
    let injected = d.status.injected.iter().map(|i| i.deployment.as_str());
    assert_eq!(injected.collect::<Vec<_>>(), ["web"]);
}

#[test]
fn nothing_is_delivered_before_a_verdict_unless_opted_in() {
    let c = Case::new(
        json!([{"deploymentName": "web"}]),
        json!({}),
        nocobase(),
        vec![deployment("web")],
    );
    let a = plan(&c.observed(None, Managed::Absent));
    assert!(a.managed_secret.is_none());
    assert_eq!(
        a.targets,
        Targets::Awaiting {
            unverified_refused: false
        }
    );
    let Some(NocoBaseWork::Skip(nb)) = &a.nocobase else {
        panic!("NocoBase gets nothing before a verdict")
    };
    assert_eq!(nb.status, ConditionStatus::Unknown);
    assert!(matches!(a.mail_settings, Some(MailWork::Skip(_))));
    let d = conclude(&c.observed(None, Managed::Absent), &a, &Executed::default());
    let injected = condition(&d, "Injected");
    assert_eq!(injected.reason, "AwaitingValidCredentials");

    // the spec opts in, the operator does not allow it: nothing is written, and Injected
    // says why
    let mut opted = Case::new(
        json!([{"deploymentName": "web"}]),
        json!({}),
        Value::Null,
        vec![deployment("web")],
    );
    opted.mmi.spec.inject_unverified = true;
    let a = plan(&opted.observed(None, Managed::Absent));
    assert!(a.managed_secret.is_none(), "not allowed: nothing written");
    assert_eq!(
        a.targets,
        Targets::Awaiting {
            unverified_refused: true
        }
    );
    let d = conclude(
        &opted.observed(None, Managed::Absent),
        &a,
        &Executed::default(),
    );
    let injected = condition(&d, "Injected");
    assert_eq!(injected.reason, "InjectUnverifiedNotAllowed");
    assert!(injected.message.contains("--allow-inject-unverified"));
    // the operator allows it: unverified is written
    opted.unverified_allowed = true;
    let a = plan(&opted.observed(None, Managed::Absent));
    assert!(
        a.managed_secret.is_some(),
        "opted in and allowed: unverified is written"
    );
    assert!(a.note.contains("injectUnverified"));
}

#[test]
fn somebody_elses_secret_under_the_managed_name_stops_every_injection() {
    let c = Case::new(
        json!([{"deploymentName": "web"}]),
        json!({"injected": [{"deployment": "web", "containers": ["app"], "fingerprint": "fp", "rollout": "OnChange"}]}),
        Value::Null,
        vec![deployment("web")],
    );
    assert!(!reads_deployments(&c.mmi, Managed::Foreign));
    assert!(reads_deployments(&c.mmi, Managed::Absent));
    let v = valid();
    let o = c.observed(Some(&v), Managed::Foreign);
    let a = plan(&o);
    assert!(a.managed_secret.is_none());
    assert!(a.releases.is_empty());
    assert_eq!(a.targets, Targets::SecretConflict);
    let d = conclude(&o, &a, &Executed::default());
    let injected = condition(&d, "Injected");
    assert_eq!(injected.reason, "ManagedSecretConflict");
    assert_eq!(
        d.status.injected.len(),
        1,
        "what was injected is still recorded"
    );
}

#[test]
fn a_409_becomes_env_conflict_and_missing_or_dropped_targets_show_up() {
    let c = Case::new(
        json!([{"deploymentName": "web"}, {"deploymentName": "absent"}]),
        json!({"injected": [
            {"deployment": "old", "containers": ["app"], "fingerprint": "fp", "rollout": "OnChange"},
            {"deployment": "gone", "containers": ["app"], "fingerprint": "fp", "rollout": "OnChange"}]}),
        Value::Null,
        vec![deployment("web"), deployment("old")],
    );
    let v = valid();
    let o = c.observed(Some(&v), Managed::Own(Some("fp")));
    let a = plan(&o);
    assert_eq!(a.releases, ["old"]);
    assert_eq!(a.disappeared, ["gone"]);
    let done = Executed {
        conflicts: vec![(0, "env MICROSOFT_CLIENT_ID".into())],
        ..Default::default()
    };
    let d = conclude(&o, &a, &done);
    let injected = condition(&d, "Injected");
    assert_eq!(injected.status, "False");
    assert_eq!(injected.reason, "TargetNotFound");
    assert!(
        injected
            .message
            .contains("targets[1]: Deployment absent does not exist")
    );
    assert!(
        injected
            .message
            .contains("Deployment web: another field manager owns")
    );
    assert!(
        injected
            .message
            .contains("gone received the configuration before")
    );
    assert!(d.status.injected.is_empty());
}

fn condition(d: &Decision, type_: &str) -> Condition {
    let found = d.status.conditions.iter().find(|c| c.type_ == type_);
    found.cloned().expect("the condition is set")
}

fn outcome(ok: bool, reason: Option<&'static str>, transient: bool) -> SyncOutcome {
    SyncOutcome {
        ok,
        reason,
        message: "NocoBase said so".into(),
        transient,
        state: SyncedState::default(),
        writes: 0,
        created: vec![],
        updated: vec![],
        refreshed: false,
    }
}

#[test]
fn nocobase_answers_are_read_by_the_core_and_retried_soon() {
    let c = Case::new(json!([]), json!({}), nocobase(), vec![]);
    let v = valid();
    let o = c.observed(Some(&v), Managed::Absent);
    let a = plan(&o);
    let Some(NocoBaseWork::Sync(vars)) = &a.nocobase else {
        panic!("accepted credentials are written")
    };
    assert_eq!(vars.len(), 3);
    let synced = |d: &Decision| condition(d, "NocoBaseSynced");
    let done = Executed {
        nocobase: Some(Ok(outcome(true, None, false))),
        ..Default::default()
    };
    assert_eq!(synced(&conclude(&o, &a, &done)).reason, "Synced");
    let down = Executed {
        nocobase: Some(Ok(outcome(false, Some(reason::NOCOBASE_UNREACHABLE), true))),
        ..Default::default()
    };
    let d = conclude(&o, &a, &down);
    assert_eq!(synced(&d).reason, reason::NOCOBASE_UNREACHABLE);
    assert!(d.requeue_after <= Duration::from_secs(30));
    let restarting = Executed {
        nocobase: Some(Ok(outcome(false, Some(reason::NOCOBASE_RESTARTING), true))),
        ..Default::default()
    };
    let d = conclude(&o, &a, &restarting);
    assert_eq!(synced(&d).status, "Unknown", "a restart is no news");
    assert!(d.requeue_after <= Duration::from_secs(5));
    let no_key = Executed {
        nocobase: Some(Err(("ApiKeySecretNotFound".into(), "no key".into()))),
        mail_settings: Some(Err(("ApiKeySecretNotFound".into(), "no key".into()))),
        ..Default::default()
    };
    let d = conclude(&o, &a, &no_key);
    assert_eq!(synced(&d).reason, "ApiKeySecretNotFound");
}

#[test]
fn a_deletion_waits_for_nocobase_within_the_timeout_then_gives_up() {
    let mut nb = nocobase();
    nb["deleteOnCleanup"] = json!(true);
    let status = json!({"nocobase": {"owned": ["MICROSOFT_CLIENT_ID"]}});
    let c = Case::new(json!([]), status, nb, vec![]);
    assert!(
        nocobase_cleanup_due(&c.mmi, false).is_none(),
        "not being deleted"
    );
    let due = nocobase_cleanup_due(&c.mmi, true).expect("opted in, with a variable");
    assert_eq!(due.left.len(), 1);
    let ran = |vars| CleanupAttempt::Ran {
        vars: Some(vars),
        mail: None,
    };
    let down = || Err(SyncError::new(reason::NOCOBASE_UNREACHABLE, "down"));
    assert_eq!(
        nocobase_cleanup_step(&due, ran(Ok(())), None, now()),
        CleanupStep::default()
    );
    let first = nocobase_cleanup_step(&due, ran(down()), None, now());
    let Some(CleanupWaiting::Start { since, note, .. }) = first.waiting else {
        panic!("the first transient failure starts the wait")
    };
    assert_eq!(since, now());
    assert!(note.contains("MICROSOFT_CLIENT_ID"));
    let t0 = now().to_string();
    let later = now() + jiff::SignedDuration::from_secs(60);
    let step = nocobase_cleanup_step(&due, ran(down()), Some(&t0), later);
    assert!(matches!(step.waiting, Some(CleanupWaiting::Retry(_))));
    let much_later = now() + jiff::SignedDuration::from_hours(24);
    let step = nocobase_cleanup_step(&due, ran(down()), Some(&t0), much_later);
    assert!(step.waiting.is_none());
    assert_eq!(step.give_ups.len(), 1, "gives up after cleanupTimeout");
    let rejected = Err(SyncError::new(reason::API_KEY_REJECTED, "no"));
    let step = nocobase_cleanup_step(&due, ran(rejected), None, now());
    assert!(step.waiting.is_none());
    let (reason, note) = &step.give_ups[0];
    assert_eq!(reason, "ApiKeyRejected");
    assert!(note.contains("does not change by waiting"));
    let refused = CleanupAttempt::Refused(("HostNotAllowed".into(), "not allowed".into()));
    let step = nocobase_cleanup_step(&due, refused, None, now());
    assert!(
        step.give_ups[0]
            .1
            .contains("cannot clean up its NocoBase variables")
    );
}
