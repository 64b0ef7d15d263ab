//! The named pure checks the decision core is built from, one by one: the records fold,
//! the acceptance answer and the delivery gate, each condition's check, the order of the
//! Ready chain, and the Events of transitions.

use jiff::Timestamp;
use nocobase_mail_operator::api::{
    LastUnavailable, LastValidation, MicrosoftMailIntegrationSpec,
    MicrosoftMailIntegrationStatus as Status, Outcome,
};
use nocobase_mail_operator::decide::conditions::{
    self, Cond, READY_CHAIN, ReadyInput, credentials_valid,
};
use nocobase_mail_operator::decide::events;
use nocobase_mail_operator::decide::{
    ConditionStatus, CredentialCheck, Delivery, InjectionReport, NocoBaseReport, Records,
    acceptance, delivery, fold_attempt,
};
use nocobase_mail_operator::expiry::Stage;
use nocobase_mail_operator::microsoft::{Verdict, reason};

fn spec(inject_unverified: bool) -> MicrosoftMailIntegrationSpec {
    serde_json::from_value(serde_json::json!({
        "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
        "clientId": "11111111-2222-4333-8444-555555555555",
        "clientSecretRef": {"name": "s"},
        "injectUnverified": inject_unverified,
    }))
    .unwrap()
}

fn now() -> Timestamp {
    "2027-01-01T00:00:00Z".parse().unwrap()
}

fn verdict_record(fp: &str, outcome: Outcome) -> LastValidation {
    LastValidation {
        time: "2026-12-31T00:00:00Z".into(),
        outcome,
        credentials_fingerprint: Some(fp.into()),
        ..Default::default()
    }
}

fn ready(fp: &str) -> CredentialCheck {
    CredentialCheck::Ready {
        fingerprint: fp.into(),
    }
}

#[test]
fn outcome_is_typed_in_rust_and_a_string_on_the_wire() {
    let l = verdict_record("fp", Outcome::Valid);
    let json = serde_json::to_value(&l).unwrap();
    assert_eq!(json["outcome"], "Valid");
    let back: LastValidation = serde_json::from_value(json).unwrap();
    assert_eq!(back.outcome, Outcome::Valid);
    // an edited status never fails the reconcile: anything unknown counts as not accepted
    let odd: LastValidation =
        serde_json::from_value(serde_json::json!({"time": "t", "outcome": "Maybe"})).unwrap();
    assert_eq!(odd.outcome, Outcome::Rejected);
}

#[test]
fn acceptance_answers_only_for_the_same_credentials() {
    let status = Status {
        last_validation: Some(verdict_record("a", Outcome::Valid)),
        ..Default::default()
    };
    let r = fold_attempt(&status, Some("a"), None, now());
    assert_eq!(acceptance(&r, "a"), Some(Outcome::Valid));
    assert_eq!(
        acceptance(&r, "b"),
        None,
        "other credentials are not judged yet"
    );
    // a fresh rejection replaces the old verdict; an Unavailable answer changes nothing
    let rejected = Verdict::new(Outcome::Rejected, Some(reason::INVALID_SECRET), "no");
    let r = fold_attempt(&status, Some("a"), Some(&rejected), now());
    assert_eq!(acceptance(&r, "a"), Some(Outcome::Rejected));
    assert!(r.unavailable.is_none());
    let down = Verdict::unavailable(reason::TIMEOUT, "slow");
    let r = fold_attempt(&status, Some("a"), Some(&down), now());
    assert_eq!(acceptance(&r, "a"), Some(Outcome::Valid));
    assert_eq!(r.pending(Some("a")).map(|u| u.failures), Some(1));
}

#[test]
fn failures_count_up_for_the_same_credentials_only() {
    let status = Status {
        last_unavailable: Some(LastUnavailable {
            failures: 3,
            credentials_fingerprint: Some("a".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let down = Verdict::unavailable(reason::TIMEOUT, "slow");
    let same = fold_attempt(&status, Some("a"), Some(&down), now());
    assert_eq!(same.unavailable.unwrap().failures, 4);
    let other = fold_attempt(&status, Some("b"), Some(&down), now());
    assert_eq!(other.unavailable.unwrap().failures, 1);
    // without usable credentials nothing is folded
    assert_eq!(
        fold_attempt(&status, None, Some(&down), now()).unavailable,
        status.last_unavailable
    );
}

#[test]
fn delivery_never_lets_rejected_credentials_through() {
    for allowed in [false, true] {
        for (opt_in, accepted, want) in [
            (false, Some(Outcome::Valid), Delivery::Validated),
            (true, Some(Outcome::Valid), Delivery::Validated),
            (false, None, Delivery::Withheld),
            (true, None, Delivery::Unverified),
            (false, Some(Outcome::Rejected), Delivery::Withheld),
            (true, Some(Outcome::Rejected), Delivery::Withheld),
        ] {
            // the spec's opt-in counts only where the operator allows it
            let want = if want == Delivery::Unverified && !allowed {
                Delivery::Withheld
            } else {
                want
            };
            assert_eq!(
                delivery(&spec(opt_in), accepted, allowed),
                want,
                "{opt_in} {accepted:?} {allowed}"
            );
        }
    }
}

#[test]
fn credentials_valid_takes_problem_then_verdict_then_pending() {
    let problem = CredentialCheck::Problem {
        reason: "SecretNotFound".into(),
        message: "gone".into(),
    };
    let c = credentials_valid(&problem, &Records::default());
    assert_eq!(
        (c.status, c.reason.as_str()),
        (ConditionStatus::False, "SecretNotFound")
    );
    let c = credentials_valid(&ready("a"), &Records::default());
    assert_eq!(
        (c.status, c.reason.as_str()),
        (ConditionStatus::Unknown, "Validating")
    );
    let records = Records {
        last: Some(verdict_record("a", Outcome::Valid)),
        unavailable: Some(LastUnavailable {
            reason: "Timeout".into(),
            credentials_fingerprint: Some("a".into()),
            ..Default::default()
        }),
    };
    let c = credentials_valid(&ready("a"), &records);
    assert_eq!(
        (c.status, c.reason.as_str()),
        (ConditionStatus::True, "Valid")
    );
    assert!(
        c.message.contains("reached no verdict (Timeout"),
        "{}",
        c.message
    );
    let c = credentials_valid(&ready("b"), &records);
    assert_eq!(
        (c.status, c.reason.as_str()),
        (ConditionStatus::Unknown, "Validating")
    );
}

fn inj(status: ConditionStatus, reason: &str) -> InjectionReport {
    InjectionReport {
        status,
        reason: reason.into(),
        message: format!("{reason}."),
        injected: vec![],
        disappeared: vec![],
    }
}

#[test]
fn the_ready_chain_is_ordered_and_the_first_failure_wins() {
    let names: Vec<&str> = READY_CHAIN.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "CredentialsRefused",
            "SecretExpired",
            "NoVerdictYet",
            "InjectionIncomplete",
            "NocoBaseNotSynced",
            "MailSettingsNotSynced"
        ]
    );
    let refused = Cond::new(ConditionStatus::False, "InvalidSecret", "rejected");
    let valid = Cond::new(ConditionStatus::True, "Valid", "ok");
    let unknown = Cond::new(ConditionStatus::Unknown, "Validating", "wait");
    let expired = Cond::new(ConditionStatus::True, "SecretExpired", "expired at t");
    let fine = Cond::new(ConditionStatus::False, "NotExpiringSoon", "later");
    let nb = NocoBaseReport {
        status: ConditionStatus::False,
        reason: "ApiKeyRejected".into(),
        message: "key".into(),
        state: Default::default(),
        writes: 0,
        retry_after: None,
    };
    let bad_inj = inj(ConditionStatus::False, "TargetNotFound");
    let good_inj = inj(ConditionStatus::True, "Injected");
    let case =
        |cv: &Cond, se: &Cond, stage: Stage, i: &InjectionReport, n: Option<&NocoBaseReport>| {
            conditions::ready(&ReadyInput {
                credentials: cv,
                expiry: se,
                stage: &stage,
                injection: i,
                nocobase: n,
                mail_settings: None,
                app_registration: None,
                missing_permissions: &[],
            })
        };
    let r = case(&refused, &expired, Stage::Expired, &bad_inj, Some(&nb));
    assert_eq!(
        (r.status, r.reason.as_str()),
        (ConditionStatus::False, "InvalidSecret")
    );
    let r = case(&unknown, &expired, Stage::Expired, &bad_inj, Some(&nb));
    assert_eq!(
        (r.status, r.reason.as_str(), r.message.as_str()),
        (ConditionStatus::False, "SecretExpired", "expired at t")
    );
    let r = case(&unknown, &fine, Stage::Fine, &bad_inj, Some(&nb));
    assert_eq!(
        (r.status, r.reason.as_str()),
        (ConditionStatus::Unknown, "Validating")
    );
    let r = case(&valid, &fine, Stage::Fine, &bad_inj, Some(&nb));
    assert_eq!(
        (r.status, r.reason.as_str()),
        (ConditionStatus::False, "TargetNotFound")
    );
    let r = case(&valid, &fine, Stage::Fine, &good_inj, Some(&nb));
    assert_eq!(
        (r.status, r.reason.as_str()),
        (ConditionStatus::False, "ApiKeyRejected")
    );
    let r = case(&valid, &fine, Stage::Fine, &good_inj, None);
    assert_eq!(
        (r.status, r.reason.as_str()),
        (ConditionStatus::True, "Ready")
    );
    assert_eq!(r.message, "Microsoft accepts the credentials. Injected.");
}

#[test]
fn failure_events_come_once_per_reason() {
    let mut previous = Status::default();
    let cv = Cond::new(ConditionStatus::False, "InvalidSecret", "rejected");
    let first = events::credentials_event(&previous, &cv).unwrap();
    assert!(first.warning);
    assert_eq!(first.reason, "InvalidSecret");
    conditions::set_condition(
        &mut previous.conditions,
        "CredentialsValid",
        &cv,
        now(),
        None,
    );
    assert_eq!(
        events::credentials_event(&previous, &cv),
        None,
        "same reason: no repeat"
    );
    let recovered =
        events::credentials_event(&previous, &Cond::new(ConditionStatus::True, "Valid", "ok"))
            .unwrap();
    assert_eq!(
        (recovered.warning, recovered.reason.as_str()),
        (false, "CredentialsRecovered")
    );
    let nb = NocoBaseReport {
        status: ConditionStatus::True,
        reason: "Synced".into(),
        message: "ok".into(),
        state: Default::default(),
        writes: 2,
        retry_after: None,
    };
    let evs = events::nocobase_events(&previous, &nb);
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].reason, "NocoBaseUpdated");
}

#[test]
fn set_condition_keeps_the_transition_time_while_the_status_holds() {
    let mut conds = vec![];
    let t0 = now();
    let t1: Timestamp = "2027-01-02T00:00:00Z".parse().unwrap();
    let a = Cond::new(ConditionStatus::False, "A", "a");
    conditions::set_condition(&mut conds, "X", &a, t0, Some(1));
    conditions::set_condition(
        &mut conds,
        "X",
        &Cond::new(ConditionStatus::False, "B", "b"),
        t1,
        Some(2),
    );
    assert_eq!(conds[0].last_transition_time.0, t0);
    assert_eq!(
        (conds[0].reason.as_str(), conds[0].observed_generation),
        ("B", Some(2))
    );
    conditions::set_condition(
        &mut conds,
        "X",
        &Cond::new(ConditionStatus::True, "C", "c"),
        t1,
        Some(2),
    );
    assert_eq!(
        (conds[0].status.as_str(), conds[0].last_transition_time.0),
        ("True", t1)
    );
}

#[test]
fn a_restart_keeps_each_condition_as_it_was() {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    let cond = |t: &str, status: &str, reason: &str| Condition {
        type_: t.into(),
        status: status.into(),
        reason: reason.into(),
        message: "before".into(),
        last_transition_time: Time(now()),
        observed_generation: None,
    };
    let previous = [
        cond("NocoBaseSynced", "True", "Synced"),
        cond("MailSettingsSynced", "False", "MailSettingsFieldUnknown"),
    ];
    let restarting = |t: &str| conditions::while_restarting(&previous, t, "NocoBase restarts");
    let c = restarting("NocoBaseSynced");
    assert_eq!(
        (c.status, c.reason.as_str()),
        (ConditionStatus::True, "NocoBaseRestarting")
    );
    assert_eq!(c.message, "NocoBase restarts. Before the restart: before");
    // a False condition keeps the reason that names what is wrong
    let c = restarting("MailSettingsSynced");
    assert_eq!(
        (c.status, c.reason.as_str()),
        (ConditionStatus::False, "MailSettingsFieldUnknown")
    );
    // never set before: Unknown, and nothing to recall
    let c = restarting("AppRegistrationReady");
    assert_eq!(
        (c.status, c.reason.as_str(), c.message.as_str()),
        (
            ConditionStatus::Unknown,
            "NocoBaseRestarting",
            "NocoBase restarts."
        )
    );
}
