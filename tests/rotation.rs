//! The pure rotation core with a fixed clock: every phase, every failure, a restart in
//! every phase, the crash between addPassword and the Secret write, one attempt at a time,
//! and never removing a secret in use or one that cannot be identified.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use nocobase_mail_operator::api::{RotationPhase, RotationSettings, RotationStatus};
use nocobase_mail_operator::decide::{Cond, ConditionStatus, set_condition};
use nocobase_mail_operator::microsoft::graph::PasswordCredential;
use nocobase_mail_operator::rotation::*;

const T0: &str = "2026-11-25T12:00:00Z";
const EXPIRES: &str = "2027-01-01T00:00:00Z"; // 36 days after T0: within the default 45

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn on() -> RotationSettings {
    RotationSettings {
        enabled: true,
        ..Default::default()
    }
}

struct W {
    spec: Option<RotationSettings>,
    now: Timestamp,
    st: RotationStatus,
    expires: Option<Timestamp>,
    requested: Option<String>,
    approved: Option<String>,
}

impl W {
    fn new() -> Self {
        Self {
            spec: Some(on()),
            now: ts(T0),
            st: RotationStatus::default(),
            expires: Some(ts(EXPIRES)),
            requested: None,
            approved: None,
        }
    }
    fn inputs(&self) -> Inputs<'_> {
        Inputs {
            spec: self.spec.as_ref(),
            now: self.now,
            previous: &self.st,
            expires_at: self.expires,
            requested_at: self.requested.as_deref(),
            approved_at: self.approved.as_deref(),
        }
    }
    fn plan(&self) -> Step {
        plan(&self.inputs())
    }
    /// Plans, "does" the step with `report`, and keeps the recorded status, as the
    /// reconciler does; the status goes through JSON like a real status write.
    fn step(&mut self, report: Option<Report>) -> Transition {
        // as the controller does before planning: note when this approval was first seen
        let (approved, now) = (self.approved.clone(), self.now);
        observe_approval(&mut self.st, approved.as_deref(), now);
        let step = self.plan();
        let t = record(&self.inputs(), &step, report);
        let json = serde_json::to_value(&t.status).unwrap();
        self.st = serde_json::from_value::<Option<RotationStatus>>(json)
            .unwrap()
            .unwrap_or_default();
        t
    }
    fn advance(&mut self, d: SignedDuration) {
        self.now += d;
    }
}

fn created() -> Report {
    Report::Created {
        new_key_id: "new-key".into(),
        new_expires_at: "2027-05-24T12:00:00Z".into(),
        new_fingerprint: "fp-new".into(),
        old_key_id: Some("old-key".into()),
        old_note: None,
        orphans_removed: 0,
    }
}

fn all_delivered() -> Delivery {
    Delivery {
        new_in_use: true,
        nocobase_synced: Some(true),
        mail_settings: Some(true),
        ..Default::default()
    }
}

/// Drives a world to the start of `phase`.
fn at_phase(phase: RotationPhase) -> W {
    let mut w = W::new();
    assert_eq!(w.plan(), Step::Begin);
    w.step(Some(Report::Begun {
        attempt_id: "att-1".into(),
        old_fingerprint: "fp-old".into(),
    }));
    if phase == RotationPhase::Creating {
        return w;
    }
    w.step(Some(created()));
    if phase == RotationPhase::Validating {
        return w;
    }
    w.step(Some(Report::Accepted));
    if phase == RotationPhase::Delivering {
        return w;
    }
    w.step(Some(Report::Delivery(all_delivered())));
    assert_eq!(w.st.phase, RotationPhase::Retiring);
    w
}

#[test]
fn off_by_default_and_nothing_recorded() {
    let mut w = W::new();
    w.spec = None;
    assert_eq!(w.plan(), Step::Off);
    assert_eq!(w.step(None).status, None);
    w.spec = Some(RotationSettings::default());
    assert_eq!(w.plan(), Step::Off);
}

#[test]
fn unknown_expiry_blocks_and_says_so_once() {
    let mut w = W::new();
    w.expires = None;
    let t = w.step(None);
    assert_eq!(w.st.reason.as_deref(), Some("ExpiryUnknown"));
    assert_eq!(t.events.len(), 1);
    assert_eq!(condition_of(&w.st).0, "False");
    assert!(w.step(None).events.is_empty(), "the Event is not repeated");
    // a request does not override it: nothing is created without a known expiry
    w.requested = Some("2026-11-25T11:00:00Z".into());
    assert!(matches!(w.plan(), Step::Blocked("ExpiryUnknown", _)));
}

#[test]
fn invalid_settings_block() {
    let mut w = W::new();
    w.spec = Some(RotationSettings {
        enabled: true,
        lifetime: "100h".into(),
        ..Default::default()
    });
    assert!(matches!(
        w.plan(),
        Step::Blocked("InvalidRotationSettings", _)
    ));
    w.step(None);
    assert_eq!(condition_of(&w.st).0, "False");
}

#[test]
fn waits_until_rotate_before_then_begins() {
    let mut w = W::new();
    w.expires = Some(ts("2027-03-01T00:00:00Z"));
    let due = ts("2027-03-01T00:00:00Z") - SignedDuration::from_hours(1080);
    assert_eq!(w.plan(), Step::Wait(Some(due)));
    let t = w.step(None);
    assert_eq!(
        t.requeue.unwrap().as_secs() as i64,
        due.duration_since(w.now).as_secs()
    );
    w.now = due;
    assert_eq!(w.plan(), Step::Begin);
}

#[test]
fn a_newer_request_starts_one_an_older_does_not() {
    let mut w = W::new();
    w.expires = Some(ts("2028-01-01T00:00:00Z"));
    w.st.last_rotation_time = Some("2026-11-20T00:00:00Z".into());
    w.requested = Some("2026-11-19T00:00:00Z".into());
    assert!(matches!(w.plan(), Step::Wait(_)));
    w.requested = Some("not a time".into());
    assert!(matches!(w.plan(), Step::Wait(_)));
    w.requested = Some("2026-11-25T11:59:00Z".into());
    assert_eq!(w.plan(), Step::Begin);
    let t = w.step(Some(Report::Begun {
        attempt_id: "a".into(),
        old_fingerprint: "f".into(),
    }));
    assert!(t.events[0].note.contains("requested"));
    assert_eq!(
        w.st.handled_request.as_deref(),
        Some("2026-11-25T11:59:00Z")
    );
}

#[test]
fn attempt_id_is_recorded_before_anything_is_created() {
    let w = at_phase(RotationPhase::Creating);
    assert_eq!(w.st.phase, RotationPhase::Creating);
    assert_eq!(w.st.attempt_id.as_deref(), Some("att-1"));
    assert_eq!(w.st.new_key_id, None);
    assert_eq!(w.plan(), Step::Create);
}

#[test]
fn full_rotation_in_order() {
    let mut w = at_phase(RotationPhase::Creating);
    let t = w.step(Some(created()));
    assert_eq!(w.st.phase, RotationPhase::Validating);
    assert_eq!(t.events[0].reason, "NewSecretCreated");
    assert_eq!(w.plan(), Step::Validate);
    w.step(Some(Report::Accepted));
    assert_eq!(w.st.phase, RotationPhase::Delivering);
    assert_eq!(w.st.current_secret_fingerprint.as_deref(), Some("fp-new"));
    assert_eq!(w.plan(), Step::CheckDelivery);
    w.advance(SignedDuration::from_mins(3));
    let t = w.step(Some(Report::Delivery(all_delivered())));
    assert_eq!(w.st.phase, RotationPhase::Retiring);
    let retire_at = w.now + SignedDuration::from_hours(24);
    assert_eq!(w.st.retire_at, Some(retire_at.to_string()));
    assert_eq!(t.events[0].reason, "NewSecretDelivered");
    // not a second earlier
    w.advance(SignedDuration::from_hours(24) - SignedDuration::from_secs(1));
    assert_eq!(w.plan(), Step::Wait(Some(retire_at)));
    w.advance(SignedDuration::from_secs(1));
    assert_eq!(w.plan(), Step::Retire);
    let t = w.step(Some(Report::Retired {
        removed: Some("old-key".into()),
        note: None,
    }));
    assert_eq!(t.outcome, Some("Succeeded"));
    assert_eq!(w.st.phase, RotationPhase::Idle);
    assert_eq!(w.st.last_rotation_time, Some(w.now.to_string()));
    assert_eq!(condition_of(&w.st).0, "True");
    // the new secret's own expiry now counts, whatever the spec said
    assert_eq!(
        expiry_in_use(Some(&w.st), Some("fp-new"), Some(ts(EXPIRES))),
        Some(ts("2027-05-24T12:00:00Z"))
    );
    w.expires = expiry_in_use(Some(&w.st), Some("fp-new"), w.expires);
    assert!(
        matches!(w.plan(), Step::Wait(Some(_))),
        "no second rotation right away"
    );
}

#[test]
fn not_owner_and_policy_fail_without_creating_and_back_off() {
    for reason in ["NotOwner", "PolicyRefused"] {
        let mut w = at_phase(RotationPhase::Creating);
        let t = w.step(Some(Report::CreateFailed {
            reason: reason.into(),
            message: "m".into(),
            transient: false,
        }));
        assert_eq!(t.outcome, Some("Failed"));
        assert_eq!(w.st.phase, RotationPhase::Failed);
        assert_eq!(
            condition_of(&w.st),
            ("False", reason.to_owned(), w.st.message.clone().unwrap())
        );
        assert!(
            w.st.message
                .as_deref()
                .unwrap()
                .contains("old client secret stays")
        );
        assert!(t.events[0].warning);
        // the attempt's possible orphans are cleaned before anything else
        assert_eq!(w.plan(), Step::Abandon);
        w.step(Some(Report::Abandoned));
        assert_eq!(w.st.attempt_id, None);
        if reason == "PolicyRefused" {
            // see a_policy_refusal_waits_for_another_lifetime_not_a_timer
            assert_eq!(w.plan(), Step::Wait(None));
            continue;
        }
        let retry = ts(w.st.retry_at.as_deref().unwrap());
        assert_eq!(retry, w.now + SignedDuration::from_mins(5));
        assert_eq!(w.plan(), Step::Wait(Some(retry)));
        w.now = retry;
        assert_eq!(w.plan(), Step::Begin);
        w.step(Some(Report::Begun {
            attempt_id: "att-2".into(),
            old_fingerprint: "fp-old".into(),
        }));
        w.step(Some(Report::CreateFailed {
            reason: reason.into(),
            message: "m".into(),
            transient: false,
        }));
        assert_eq!(w.st.failures, 2);
        assert_eq!(
            ts(w.st.retry_at.as_deref().unwrap()),
            w.now + SignedDuration::from_mins(10)
        );
        assert!(w.st.failing_since.is_some());
    }
}

#[test]
fn backoff_is_capped() {
    assert_eq!(backoff(1), SignedDuration::from_mins(5));
    assert_eq!(backoff(4), SignedDuration::from_mins(40));
    assert_eq!(backoff(30), SignedDuration::from_hours(6));
}

#[test]
fn a_request_overrides_backoff() {
    let mut w = at_phase(RotationPhase::Creating);
    w.step(Some(Report::CreateFailed {
        reason: "NotOwner".into(),
        message: "m".into(),
        transient: false,
    }));
    w.step(Some(Report::Abandoned));
    assert!(matches!(w.plan(), Step::Wait(_)));
    w.requested = Some(w.now.to_string());
    w.advance(SignedDuration::from_secs(1));
    assert_eq!(w.plan(), Step::Begin);
}

#[test]
fn transient_create_failures_retry_in_place() {
    let mut w = at_phase(RotationPhase::Creating);
    let t = w.step(Some(Report::CreateFailed {
        reason: "GraphUnavailable".into(),
        message: "Microsoft Graph is unavailable".into(),
        transient: true,
    }));
    assert_eq!(w.st.phase, RotationPhase::Creating);
    assert_eq!(t.requeue.unwrap().as_secs(), 30);
    assert_eq!(t.outcome, None);
    assert_eq!(w.plan(), Step::Create);
}

#[test]
fn propagation_is_waited_for_up_to_ten_minutes() {
    let mut w = at_phase(RotationPhase::Validating);
    for _ in 0..3 {
        let t = w.step(Some(Report::NotYetAccepted("AADSTS7000215".into())));
        assert_eq!(w.st.phase, RotationPhase::Validating);
        assert_eq!(t.requeue.unwrap().as_secs(), 15);
        w.advance(SignedDuration::from_mins(3));
    }
    w.advance(SignedDuration::from_mins(1)); // 10 minutes after creation
    let t = w.step(Some(Report::NotYetAccepted("AADSTS7000215".into())));
    assert_eq!(w.st.phase, RotationPhase::Failed);
    assert_eq!(w.st.reason.as_deref(), Some("NewSecretNotAccepted"));
    assert_eq!(t.outcome, Some("Failed"));
    // the new credential was never delivered: it is taken back
    assert_eq!(w.st.new_key_id.as_deref(), Some("new-key"));
    assert_eq!(w.plan(), Step::Abandon);
    w.step(Some(Report::AbandonFailed("Graph unavailable".into())));
    assert_eq!(w.plan(), Step::Abandon, "cleanup is retried until done");
    w.step(Some(Report::Abandoned));
    assert_eq!(w.st.new_key_id, None);
    assert_eq!(w.st.new_secret_fingerprint, None);
    assert!(matches!(w.plan(), Step::Wait(Some(_))));
}

#[test]
fn refused_new_secret_fails_at_once() {
    let mut w = at_phase(RotationPhase::Validating);
    w.step(Some(Report::Refused {
        reason: "ApplicationDisabled".into(),
        message: "m".into(),
    }));
    assert_eq!(w.st.phase, RotationPhase::Failed);
    assert_eq!(w.plan(), Step::Abandon);
    // a failed attempt never becomes the secret in use
    assert_eq!(w.st.current_secret_fingerprint, None);
}

#[test]
fn delivery_waits_for_rollouts_and_reports_them_stuck() {
    let mut w = at_phase(RotationPhase::Delivering);
    let pending = Delivery {
        rollouts_pending: vec!["Deployment nocobase: 1 of 2 replicas updated".into()],
        ..all_delivered()
    };
    let t = w.step(Some(Report::Delivery(pending.clone())));
    assert_eq!(w.st.phase, RotationPhase::Delivering);
    assert_eq!(w.st.reason.as_deref(), Some("AwaitingRollout"));
    assert_eq!(t.events.len(), 1);
    assert!(!t.events[0].warning);
    assert!(w.st.message.as_deref().unwrap().contains("1 of 2 replicas"));
    w.advance(ROLLOUT_DEADLINE);
    let t = w.step(Some(Report::Delivery(pending.clone())));
    assert_eq!(condition_of(&w.st).0, "False");
    assert_eq!(w.st.reason.as_deref(), Some("RolloutStuck"));
    assert!(t.events[0].warning);
    assert!(w.step(Some(Report::Delivery(pending))).events.is_empty());
    assert_eq!(
        w.st.phase,
        RotationPhase::Delivering,
        "the old secret is kept"
    );
    w.step(Some(Report::Delivery(all_delivered())));
    assert_eq!(w.st.phase, RotationPhase::Retiring);
}

#[test]
fn waits_for_nocobase_and_the_new_value_in_use() {
    let mut w = at_phase(RotationPhase::Delivering);
    w.step(Some(Report::Delivery(Delivery {
        nocobase_synced: Some(false),
        ..all_delivered()
    })));
    assert_eq!(w.st.reason.as_deref(), Some("AwaitingNocoBase"));
    w.step(Some(Report::Delivery(Delivery {
        new_in_use: false,
        ..all_delivered()
    })));
    assert_eq!(w.st.phase, RotationPhase::Delivering);
    w.step(Some(Report::Delivery(Delivery {
        nocobase_synced: None,
        ..all_delivered()
    })));
    assert_eq!(
        w.st.phase,
        RotationPhase::Retiring,
        "no spec.nocobase: nothing to wait for"
    );
}

#[test]
fn without_operator_written_mail_settings_retirement_needs_approval() {
    let mut w = at_phase(RotationPhase::Delivering);
    let d = Delivery {
        mail_settings: None,
        ..all_delivered()
    };
    let since = w.now;
    let t = w.step(Some(Report::Delivery(d.clone())));
    assert_eq!(w.st.reason.as_deref(), Some("AwaitingRetireApproval"));
    assert!(t.events[0].note.contains("--approve-retire"));
    // an approval given before delivery does not count
    w.approved = Some((since - SignedDuration::from_secs(1)).to_string());
    w.step(Some(Report::Delivery(d.clone())));
    assert_eq!(w.st.phase, RotationPhase::Delivering);
    w.approved = Some(since.to_string());
    w.step(Some(Report::Delivery(d)));
    assert_eq!(w.st.phase, RotationPhase::Retiring);
}

/// The secret written into a field hidden from reads: delivered only as far as NocoBase's
/// answer says, so retirement waits for the user's approval, naming the field.
#[test]
fn an_unconfirmable_mail_settings_field_waits_for_approval() {
    let mut w = at_phase(RotationPhase::Delivering);
    let d = Delivery {
        mail_unconfirmed: vec!["clientSecret".into()],
        ..all_delivered()
    };
    w.step(Some(Report::Delivery(d.clone())));
    assert_eq!(w.st.phase, RotationPhase::Delivering);
    assert_eq!(w.st.reason.as_deref(), Some("AwaitingRetireApproval"));
    let m = w.st.message.clone().unwrap();
    assert!(m.contains("clientSecret cannot be read back"), "{m}");
    w.approved = Some(w.now.to_string());
    w.step(Some(Report::Delivery(d)));
    assert_eq!(w.st.phase, RotationPhase::Retiring);
}

/// `retire-approved-at` counts only when its time has come, it is not older than the
/// delivery, and the operator saw that value only after delivery began: a table over the
/// approval's time and when it was set, with the clock fixed.
#[test]
fn an_approval_counts_only_when_seen_after_delivery_and_not_in_the_future() {
    let d = Delivery {
        mail_settings: None,
        ..all_delivered()
    };
    let year = SignedDuration::from_hours(24 * 365);
    let minute = SignedDuration::from_mins(1);
    // (set before delivery began?, approval time relative to delivery start, expected phase)
    let cases = [
        (false, SignedDuration::ZERO, RotationPhase::Retiring),
        (false, minute, RotationPhase::Delivering), // ahead of the clock
        (false, year, RotationPhase::Delivering),   // a year ahead, as in the report
        (false, -minute, RotationPhase::Delivering), // older than the delivery
        (true, SignedDuration::ZERO, RotationPhase::Delivering), // set in advance
        (true, year, RotationPhase::Delivering),
    ];
    for (in_advance, offset, want) in cases {
        let mut w = at_phase(RotationPhase::Validating);
        let since = w.now + minute;
        if in_advance {
            w.approved = Some((since + offset).to_string());
            w.step(None); // a reconcile while validating sees it
        }
        w.advance(minute);
        w.step(Some(Report::Accepted));
        assert_eq!(w.st.phase, RotationPhase::Delivering);
        w.step(Some(Report::Delivery(d.clone())));
        if !in_advance {
            w.approved = Some((since + offset).to_string());
        }
        w.step(Some(Report::Delivery(d.clone())));
        assert_eq!(w.st.phase, want, "in advance {in_advance}, offset {offset}");
    }
}

/// A rotation request dated ahead starts nothing until its time; then it does.
#[test]
fn a_request_in_the_future_waits_for_its_time() {
    let mut w = W::new();
    w.expires = Some(w.now + SignedDuration::from_hours(24 * 300));
    w.step(None);
    let ahead = w.now + SignedDuration::from_hours(1);
    w.requested = Some(ahead.to_string());
    assert_eq!(w.plan(), Step::Wait(Some(ahead)));
    w.advance(SignedDuration::from_hours(1));
    assert_eq!(w.plan(), Step::Begin);
}

#[test]
fn manual_targets_wait_for_the_user() {
    let mut w = at_phase(RotationPhase::Delivering);
    let d = Delivery {
        manual_pending: vec!["nocobase-worker".into()],
        ..all_delivered()
    };
    w.step(Some(Report::Delivery(d.clone())));
    assert_eq!(w.st.reason.as_deref(), Some("AwaitingManualRollout"));
    assert!(
        w.st.message
            .as_deref()
            .unwrap()
            .contains("kubectl rollout restart deployment nocobase-worker")
    );
    w.approved = Some(w.now.to_string());
    w.step(Some(Report::Delivery(d)));
    assert_eq!(w.st.phase, RotationPhase::Retiring);
}

#[test]
fn retire_failures_keep_both_secrets_and_retry() {
    let mut w = at_phase(RotationPhase::Retiring);
    w.advance(SignedDuration::from_hours(25));
    let t = w.step(Some(Report::RetireFailed {
        reason: "NotOwner".into(),
        message: "m".into(),
    }));
    assert_eq!(w.st.phase, RotationPhase::Retiring);
    assert_eq!(t.outcome, None);
    assert!(t.events[0].warning);
    assert_eq!(w.plan(), Step::Retire);
    let t = w.step(Some(Report::Retired {
        removed: None,
        note: Some("3 credentials share the old secret's hint".into()),
    }));
    assert_eq!(t.outcome, Some("Succeeded"));
    assert!(
        w.st.message
            .as_deref()
            .unwrap()
            .contains("was not removed (3 credentials share")
    );
}

#[test]
fn a_restart_in_every_phase_resumes_the_same_step() {
    for phase in [
        RotationPhase::Creating,
        RotationPhase::Validating,
        RotationPhase::Delivering,
        RotationPhase::Retiring,
    ] {
        let w = at_phase(phase);
        let before = w.plan();
        // a new process: only what was written to the API server survives
        let json = serde_json::to_string(&w.st).unwrap();
        let mut w2 = W::new();
        w2.now = w.now;
        w2.st = serde_json::from_str(&json).unwrap();
        assert_eq!(w2.plan(), before, "{phase:?}");
    }
}

#[test]
fn never_more_than_one_attempt_in_flight() {
    for phase in [
        RotationPhase::Creating,
        RotationPhase::Validating,
        RotationPhase::Delivering,
        RotationPhase::Retiring,
    ] {
        let mut w = at_phase(phase);
        w.requested = Some(w.now.to_string());
        w.advance(SignedDuration::from_hours(400 * 24));
        assert_ne!(w.plan(), Step::Begin, "{phase:?}");
    }
}

#[test]
fn switched_off_mid_way_takes_back_what_was_never_delivered() {
    for phase in [RotationPhase::Creating, RotationPhase::Validating] {
        let mut w = at_phase(phase);
        w.spec.as_mut().unwrap().enabled = false;
        assert_eq!(w.plan(), Step::Abandon);
        w.step(Some(Report::Abandoned));
        assert_eq!(w.st.phase, RotationPhase::Idle);
        assert_eq!(w.plan(), Step::Off);
    }
    // once delivered, switching off leaves both secrets working: nothing is removed
    let mut w = at_phase(RotationPhase::Delivering);
    w.spec.as_mut().unwrap().enabled = false;
    assert_eq!(w.plan(), Step::Off);
}

fn cred(key: &str, hint: &str, name: Option<&str>) -> PasswordCredential {
    PasswordCredential {
        key_id: Some(key.into()),
        display_name: name.map(str::to_owned),
        hint: Some(hint.into()),
        end_date_time: Some("2027-01-01T00:00:00Z".into()),
    }
}

#[test]
fn crash_between_add_password_and_secret_write_removes_the_orphan() {
    let name = display_name("att-1");
    let creds = [
        cred("old", "Abc", Some("portal")),
        cred("orphan", "Xyz", Some(&name)),
        cred("other-attempt", "Pqr", Some(&display_name("att-0"))),
    ];
    // the Secret still holds the old value: the orphan is removed, nothing else
    let seen = SecretSeen {
        current_fingerprint: "fp-old",
        current_hint: "Abc",
        previous_fingerprint: None,
    };
    assert_eq!(
        orphans(&creds, "att-1", Some("fp-old"), &seen),
        Orphans::Remove(vec!["orphan".into()])
    );
    // the crash came after the write: the credential is the new secret, kept and adopted
    let seen = SecretSeen {
        current_fingerprint: "fp-x",
        current_hint: "Xyz",
        previous_fingerprint: Some("fp-old"),
    };
    assert_eq!(
        orphans(&creds, "att-1", Some("fp-old"), &seen),
        Orphans::Adopt("orphan".into())
    );
    // a credential with the hint of the value in use is never removed
    let seen = SecretSeen {
        current_fingerprint: "fp-y",
        current_hint: "Xyz",
        previous_fingerprint: None,
    };
    assert_eq!(
        orphans(&creds, "att-1", Some("fp-old"), &seen),
        Orphans::Remove(vec![])
    );
}

#[test]
fn the_old_credential_is_identified_or_left() {
    let creds = [
        cred("old", "Abc", None),
        cred("new", "Wd4", Some(&display_name("att-1"))),
    ];
    assert_eq!(
        old_credential(&creds, Some("Abc"), None, Some("new"), "Wd4"),
        OldCredential::Remove("old".into())
    );
    assert_eq!(
        old_credential(&creds, Some("Abc"), Some("old"), Some("new"), "Wd4"),
        OldCredential::Remove("old".into())
    );
    // several with the same hint: no guess
    let twins = [
        cred("a", "Abc", None),
        cred("b", "Abc", None),
        cred("new", "Wd4", None),
    ];
    assert!(matches!(
        old_credential(&twins, Some("Abc"), None, Some("new"), "Wd4"),
        OldCredential::Ambiguous(m) if m.contains("2 credentials share")
    ));
    // unless the keyId was identified when the rotation began
    assert_eq!(
        old_credential(&twins, Some("Abc"), Some("b"), Some("new"), "Wd4"),
        OldCredential::Remove("b".into())
    );
    // gone already
    assert_eq!(
        old_credential(&creds[1..], Some("Abc"), None, Some("new"), "Wd4"),
        OldCredential::Gone
    );
    // never the new key, never one with the hint of the value in use
    assert_eq!(
        old_credential(&creds, Some("Wd4"), Some("new"), Some("new"), "Wd4"),
        OldCredential::Gone
    );
    let same_hint = [cred("old", "Wd4", None), cred("new", "Wd4", None)];
    assert_eq!(
        old_credential(&same_hint, Some("Wd4"), None, Some("new"), "Wd4"),
        OldCredential::Gone
    );
    // nothing to identify it by
    assert!(matches!(
        old_credential(&creds, None, None, Some("new"), "Wd4"),
        OldCredential::Ambiguous(_)
    ));
    assert_eq!(identify(&creds, "Abc"), Ok("old".into()));
    assert!(identify(&twins, "Abc").is_err());
}

#[test]
fn a_failing_rotation_reaches_ready_only_when_the_secret_is_at_risk() {
    let now = ts(T0);
    let mut st = RotationStatus {
        phase: RotationPhase::Failed,
        reason: Some("NotOwner".into()),
        message: Some("Graph refused".into()),
        ..Default::default()
    };
    let mut conds: Vec<Condition> = vec![];
    let c = |s, r: &str| Cond::new(s, r, "x");
    set_condition(
        &mut conds,
        "Ready",
        &c(ConditionStatus::True, "Ready"),
        now,
        Some(1),
    );
    set_condition(
        &mut conds,
        "SecretExpiring",
        &c(ConditionStatus::False, "NotExpiringSoon"),
        now,
        Some(1),
    );
    set_conditions(&mut conds, Some(&st), now, Some(1));
    let get = |c: &[Condition], t: &str| c.iter().find(|c| c.type_ == t).unwrap().clone();
    assert_eq!(get(&conds, "Rotated").status, "False");
    assert_eq!(get(&conds, "Ready").reason, "Ready");
    set_condition(
        &mut conds,
        "SecretExpiring",
        &c(ConditionStatus::True, "ExpiresWithin30Days"),
        now,
        Some(1),
    );
    set_conditions(&mut conds, Some(&st), now, Some(1));
    let ready = get(&conds, "Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "NotOwner")
    );
    st.phase = RotationPhase::Idle;
    st.reason = Some("Rotated".into());
    st.last_rotation_time = Some(T0.into());
    set_conditions(&mut conds, Some(&st), now, Some(1));
    assert_eq!(get(&conds, "Rotated").status, "True");
    set_conditions(&mut conds, None, now, Some(1));
    assert!(conds.iter().all(|c| c.type_ != "Rotated"));
}

#[test]
fn a_policy_refusal_waits_for_another_lifetime_not_a_timer() {
    let mut w = at_phase(RotationPhase::Creating);
    w.step(Some(Report::CreateFailed {
        reason: "PolicyRefused".into(),
        message: "Credential lifetime exceeds the max value allowed".into(),
        transient: false,
    }));
    w.step(Some(Report::Abandoned));
    w.advance(SignedDuration::from_hours(48));
    assert_eq!(w.plan(), Step::Wait(None), "not retried blindly");
    w.spec.as_mut().unwrap().lifetime = "2000h".into();
    assert_eq!(w.plan(), Step::Begin);
    w.spec.as_mut().unwrap().lifetime = "4320h".into();
    w.requested = Some(w.now.to_string());
    assert_eq!(w.plan(), Step::Begin, "or when asked explicitly");
}
