//! The pure decision core with a fixed clock: every condition transition, each expiry
//! window, restarts, and idempotence (deciding again on its own output changes nothing).

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use nocobase_mail_operator::api::{
    ExpirySource, MicrosoftMailIntegrationSpec, MicrosoftMailIntegrationStatus,
};
use nocobase_mail_operator::decide::{
    CredentialCheck, Decision, InjectionReport, Inputs, decide, validation_due,
};
use nocobase_mail_operator::microsoft::{ExpiryInfo, GraphFindings, Outcome, Verdict, reason};
use proptest::prelude::*;

fn spec(expires_at: Option<&str>) -> MicrosoftMailIntegrationSpec {
    let mut v = serde_json::json!({
        "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
        "clientId": "11111111-2222-4333-8444-555555555555",
        "clientSecretRef": {"name": "s"},
    });
    if let Some(e) = expires_at {
        v["secretExpiry"] = serde_json::json!({"expiresAt": e});
    }
    serde_json::from_value(v).unwrap()
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn valid() -> Verdict {
    Verdict::new(
        Outcome::Valid,
        None,
        "Microsoft accepted the client ID and client secret for this tenant.",
    )
}

fn valid_with_graph(at: &str) -> Verdict {
    let mut v = valid();
    v.graph = GraphFindings {
        expiry: ExpiryInfo {
            expires_at: Some(ts(at)),
            source: Some(ExpirySource::Graph),
            note: None,
        },
        missing_permissions: Some(vec!["SMTP.Send".into()]),
        ..Default::default()
    };
    v
}

fn rejected(r: &'static str, code: i64) -> Verdict {
    let mut v = Verdict::new(
        Outcome::Rejected,
        Some(r),
        "Microsoft rejected the client secret.",
    )
    .with_hint("Copy the Value.");
    v.aadsts_code = Some(code);
    v
}

fn unavailable(secs: Option<u64>) -> Verdict {
    let mut v = Verdict::unavailable(
        reason::THROTTLED,
        "Microsoft is throttling token requests (HTTP 429).",
    );
    v.retry_after = secs.map(Duration::from_secs);
    v
}

fn ready(fp: &str) -> CredentialCheck {
    CredentialCheck::Ready {
        fingerprint: fp.into(),
    }
}

struct Run {
    spec: MicrosoftMailIntegrationSpec,
    status: MicrosoftMailIntegrationStatus,
}

impl Run {
    fn new(spec: MicrosoftMailIntegrationSpec) -> Self {
        Self {
            spec,
            status: Default::default(),
        }
    }

    fn step(&mut self, now: &str, creds: &CredentialCheck, attempt: Option<&Verdict>) -> Decision {
        let d = decide(&Inputs {
            spec: &self.spec,
            generation: Some(1),
            previous: &self.status,
            now: ts(now),
            credentials: creds,
            attempt,
            injection: &InjectionReport::no_targets(),
            nocobase: None,
            mail_settings: None,
        });
        // deciding again on its own output, at the same instant and later, changes nothing
        for later in [ts(now), ts(now) + SignedDuration::from_secs(1)] {
            if d.status
                .secret_expiry
                .as_ref()
                .and_then(|e| e.expires_at.as_deref())
                .is_some_and(|e| ts(e) <= later)
                && ts(now) < later
            {
                continue;
            }
            let again = decide(&Inputs {
                spec: &self.spec,
                generation: Some(1),
                previous: &d.status,
                now: later,
                credentials: creds,
                attempt: None,
                injection: &InjectionReport::no_targets(),
                nocobase: None,
                mail_settings: None,
            });
            assert_eq!(again.status, d.status, "not idempotent at {later}");
            assert!(
                again.events.is_empty(),
                "events on a no-op round: {:?}",
                again.events
            );
        }
        self.status = d.status.clone();
        d
    }

    fn cond(&self, t: &str) -> (String, String) {
        let c = self
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == t)
            .unwrap_or_else(|| panic!("no {t}"));
        (c.status.clone(), c.reason.clone())
    }

    fn ltt(&self, t: &str) -> Timestamp {
        self.status
            .conditions
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
            .last_transition_time
            .0
    }
}

fn reasons(d: &Decision) -> Vec<(bool, String)> {
    d.events
        .iter()
        .map(|e| (e.warning, e.reason.clone()))
        .collect()
}

#[test]
fn first_valid_answer_makes_ready_with_one_normal_event() {
    let mut r = Run::new(spec(None));
    let d = r.step("2027-01-01T00:00:00Z", &ready("a"), Some(&valid()));
    assert_eq!(r.cond("Ready"), ("True".into(), "Ready".into()));
    assert_eq!(r.cond("CredentialsValid"), ("True".into(), "Valid".into()));
    assert_eq!(
        r.cond("SecretExpiring"),
        ("Unknown".into(), "ExpiryUnknown".into())
    );
    assert_eq!(r.cond("Injected"), ("True".into(), "NoTargets".into()));
    assert_eq!(reasons(&d), [(false, "CredentialsValid".into())]);
    assert_eq!(
        d.requeue_after,
        Duration::from_secs(6 * 3600),
        "next validation after the interval"
    );
    assert_eq!(r.status.observed_generation, Some(1));
}

#[test]
fn before_any_answer_ready_is_unknown() {
    let mut r = Run::new(spec(None));
    r.step("2027-01-01T00:00:00Z", &ready("a"), None);
    assert_eq!(
        r.cond("CredentialsValid"),
        ("Unknown".into(), "Validating".into())
    );
    assert_eq!(r.cond("Ready").0, "Unknown");
}

#[test]
fn rejection_then_recovery() {
    let mut r = Run::new(spec(None));
    let d = r.step(
        "2027-01-01T00:00:00Z",
        &ready("a"),
        Some(&rejected(reason::SECRET_ID_INSTEAD_OF_VALUE, 7000215)),
    );
    assert_eq!(
        r.cond("CredentialsValid"),
        ("False".into(), "SecretIdInsteadOfValue".into())
    );
    assert_eq!(
        r.cond("Ready"),
        ("False".into(), "SecretIdInsteadOfValue".into())
    );
    assert_eq!(reasons(&d), [(true, "SecretIdInsteadOfValue".into())]);
    let msg = &r
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .message;
    assert!(
        msg.contains("AADSTS7000215") && msg.contains("Copy the Value"),
        "{msg}"
    );
    assert_eq!(
        r.status.last_validation.as_ref().unwrap().aadsts_code,
        Some(7000215)
    );

    // the same rejection at the next interval: no new event
    let d = r.step(
        "2027-01-01T06:00:00Z",
        &ready("a"),
        Some(&rejected(reason::SECRET_ID_INSTEAD_OF_VALUE, 7000215)),
    );
    assert!(d.events.is_empty());
    // another reason is a new transition
    let d = r.step(
        "2027-01-01T12:00:00Z",
        &ready("a"),
        Some(&rejected(reason::SECRET_EXPIRED, 7000222)),
    );
    assert_eq!(reasons(&d), [(true, "SecretExpired".into())]);

    // rotated to a good secret
    let t0 = r.ltt("CredentialsValid");
    let d = r.step("2027-01-02T00:00:00Z", &ready("b"), Some(&valid()));
    assert_eq!(reasons(&d), [(false, "CredentialsRecovered".into())]);
    assert_eq!(r.cond("Ready"), ("True".into(), "Ready".into()));
    assert!(
        r.ltt("CredentialsValid") > t0,
        "lastTransitionTime moves on transition"
    );
}

#[test]
fn last_transition_time_only_moves_on_transition() {
    let mut r = Run::new(spec(None));
    r.step("2027-01-01T00:00:00Z", &ready("a"), Some(&valid()));
    let t0 = r.ltt("CredentialsValid");
    r.step("2027-01-01T06:00:00Z", &ready("a"), Some(&valid()));
    assert_eq!(r.ltt("CredentialsValid"), t0);
}

#[test]
fn unavailable_never_flips_a_verdict_and_is_announced_once() {
    let mut r = Run::new(spec(None));
    r.step("2027-01-01T00:00:00Z", &ready("a"), Some(&valid()));
    let d = r.step(
        "2027-01-01T06:00:00Z",
        &ready("a"),
        Some(&unavailable(Some(120))),
    );
    assert_eq!(r.cond("CredentialsValid"), ("True".into(), "Valid".into()));
    assert_eq!(r.cond("Ready").0, "True");
    assert_eq!(reasons(&d), [(true, "MicrosoftUnavailable".into())]);
    let u = r.status.last_unavailable.clone().unwrap();
    assert_eq!(
        (u.failures, u.retry_at.as_str()),
        (1, "2027-01-01T06:02:00Z"),
        "Retry-After honoured"
    );
    assert_eq!(d.requeue_after, Duration::from_secs(120));
    let msg = &r
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "CredentialsValid")
        .unwrap()
        .message;
    assert!(msg.contains("Throttled"), "{msg}");

    let d = r.step(
        "2027-01-01T06:02:00Z",
        &ready("a"),
        Some(&unavailable(None)),
    );
    assert!(d.events.is_empty());
    assert_eq!(r.status.last_unavailable.as_ref().unwrap().failures, 2);
    assert_eq!(d.requeue_after, Duration::from_secs(60), "backoff doubles");

    // a verdict clears the failure record
    r.step("2027-01-01T06:03:00Z", &ready("a"), Some(&valid()));
    assert!(r.status.last_unavailable.is_none());
}

#[test]
fn unavailable_before_any_verdict_is_unknown() {
    let mut r = Run::new(spec(None));
    r.step(
        "2027-01-01T00:00:00Z",
        &ready("a"),
        Some(&unavailable(None)),
    );
    assert_eq!(
        r.cond("CredentialsValid"),
        ("Unknown".into(), "Throttled".into())
    );
    assert_eq!(r.cond("Ready"), ("Unknown".into(), "Throttled".into()));
}

#[test]
fn secret_problems_are_reasons_not_crashes() {
    let mut r = Run::new(spec(None));
    let missing = CredentialCheck::Problem {
        reason: "SecretNotFound".into(),
        message: "Secret s not found".into(),
    };
    let d = r.step("2027-01-01T00:00:00Z", &missing, None);
    assert_eq!(r.cond("Ready"), ("False".into(), "SecretNotFound".into()));
    assert_eq!(reasons(&d), [(true, "SecretNotFound".into())]);
    assert_eq!(
        d.requeue_after,
        Duration::from_secs(6 * 3600),
        "no hot loop; the Secret watch wakes us earlier"
    );
}

#[test]
fn expiry_windows_each_announced_once() {
    let mut r = Run::new(spec(Some("2027-05-31T00:00:00Z")));
    let d = r.step("2027-04-01T00:00:00Z", &ready("a"), Some(&valid()));
    assert_eq!(
        r.cond("SecretExpiring"),
        ("False".into(), "NotExpiringSoon".into())
    );
    assert_eq!(d.requeue_after, Duration::from_secs(6 * 3600));
    assert_eq!(
        r.status.secret_expiry.as_ref().unwrap().source,
        Some(ExpirySource::Spec)
    );

    // the next reconcile is scheduled at the window's opening when that comes first
    let d = r.step("2027-04-30T20:00:00Z", &ready("a"), Some(&valid()));
    assert_eq!(d.requeue_after, Duration::from_secs(4 * 3600));

    let d = r.step("2027-05-01T00:00:00Z", &ready("a"), Some(&valid()));
    assert_eq!(
        r.cond("SecretExpiring"),
        ("True".into(), "ExpiresWithin30Days".into())
    );
    assert_eq!(
        r.cond("Ready"),
        ("True".into(), "ExpiresWithin30Days".into())
    );
    assert_eq!(reasons(&d), [(true, "ExpiresWithin30Days".into())]);

    let d = r.step("2027-05-24T00:00:00Z", &ready("a"), Some(&valid()));
    assert_eq!(reasons(&d), [(true, "ExpiresWithin7Days".into())]);
    let d = r.step("2027-05-30T00:00:00Z", &ready("a"), Some(&valid()));
    assert_eq!(reasons(&d), [(true, "ExpiresWithin1Day".into())]);
    let d = r.step("2027-05-30T20:00:00Z", &ready("a"), Some(&valid()));
    assert_eq!(
        d.requeue_after,
        Duration::from_secs(4 * 3600),
        "woken at the expiry instant"
    );

    // expired: Ready False even though Microsoft has not said so yet
    let d = r.step("2027-05-31T00:00:00Z", &ready("a"), None);
    assert_eq!(r.cond("Ready"), ("False".into(), "SecretExpired".into()));
    assert_eq!(
        r.cond("SecretExpiring"),
        ("True".into(), "SecretExpired".into())
    );
    assert_eq!(reasons(&d), [(true, "SecretExpired".into())]);
    let d = r.step("2027-05-31T01:00:00Z", &ready("a"), None);
    assert!(d.events.is_empty());
}

#[test]
fn jumping_into_several_windows_announces_the_narrowest_once() {
    let mut r = Run::new(spec(Some("2027-05-31T00:00:00Z")));
    let d = r.step("2027-05-29T00:00:00Z", &ready("a"), Some(&valid()));
    assert_eq!(
        reasons(&d),
        [
            (false, "CredentialsValid".into()),
            (true, "ExpiresWithin7Days".into())
        ]
    );
    assert_eq!(
        r.status.secret_expiry.as_ref().unwrap().windows_announced,
        ["720h", "168h"]
    );
}

#[test]
fn announcements_survive_a_restart_and_reset_for_a_new_expiry() {
    let mut r = Run::new(spec(Some("2027-05-31T00:00:00Z")));
    r.step("2027-05-25T00:00:00Z", &ready("a"), Some(&valid()));
    // A restarted operator only has the status it wrote: no duplicate event, no Microsoft call.
    let persisted: MicrosoftMailIntegrationStatus =
        serde_json::from_value(serde_json::to_value(&r.status).unwrap()).unwrap();
    let mut restarted = Run {
        spec: r.spec.clone(),
        status: persisted,
    };
    assert!(
        validation_due(
            &restarted.spec,
            &restarted.status,
            "a",
            ts("2027-05-25T01:00:00Z")
        )
        .is_some()
    );
    let d = restarted.step("2027-05-25T01:00:00Z", &ready("a"), None);
    assert!(d.events.is_empty());

    // a rotated secret with a new date starts over
    restarted.spec = spec(Some("2028-05-31T00:00:00Z"));
    let d = restarted.step("2027-05-25T02:00:00Z", &ready("b"), Some(&valid()));
    assert!(d.events.iter().all(|e| !e.reason.starts_with("Expires")));
    assert!(
        restarted
            .status
            .secret_expiry
            .as_ref()
            .unwrap()
            .windows_announced
            .is_empty()
    );
}

#[test]
fn graph_expiry_is_used_unless_spec_states_one() {
    let mut r = Run::new(spec(None));
    r.step(
        "2027-01-01T00:00:00Z",
        &ready("a"),
        Some(&valid_with_graph("2027-12-26T00:00:00Z")),
    );
    let e = r.status.secret_expiry.clone().unwrap();
    assert_eq!(
        (e.expires_at.as_deref(), e.source),
        (Some("2027-12-26T00:00:00Z"), Some(ExpirySource::Graph))
    );
    let ready_msg = &r
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap()
        .message;
    assert!(
        ready_msg.contains("SMTP.Send"),
        "missing permissions are a warning: {ready_msg}"
    );
    assert_eq!(r.cond("Ready").0, "True");

    let mut r = Run::new(spec(Some("2027-06-01T00:00:00Z")));
    r.step(
        "2027-01-01T00:00:00Z",
        &ready("a"),
        Some(&valid_with_graph("2027-12-26T00:00:00Z")),
    );
    let e = r.status.secret_expiry.clone().unwrap();
    assert_eq!(
        (e.expires_at.as_deref(), e.source),
        (Some("2027-06-01T00:00:00Z"), Some(ExpirySource::Spec))
    );
    let msg = &r
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "SecretExpiring")
        .unwrap()
        .message;
    assert!(
        msg.contains("spec.secretExpiry.expiresAt") && msg.contains("2027-12-26"),
        "{msg}"
    );
}

#[test]
fn validation_is_due_on_change_interval_or_retry() {
    let mut r = Run::new(spec(None));
    let t = "2027-01-01T00:00:00Z";
    assert_eq!(
        validation_due(&r.spec, &r.status, "a", ts(t)),
        None,
        "never validated"
    );
    r.step(t, &ready("a"), Some(&valid()));
    assert_eq!(
        validation_due(&r.spec, &r.status, "a", ts("2027-01-01T05:59:59Z")),
        Some(ts("2027-01-01T06:00:00Z"))
    );
    assert_eq!(
        validation_due(&r.spec, &r.status, "a", ts("2027-01-01T06:00:00Z")),
        None,
        "interval elapsed"
    );
    assert_eq!(
        validation_due(&r.spec, &r.status, "b", ts(t)),
        None,
        "credentials changed"
    );
    r.step(
        "2027-01-01T06:00:00Z",
        &ready("a"),
        Some(&unavailable(Some(300))),
    );
    assert_eq!(
        validation_due(&r.spec, &r.status, "a", ts("2027-01-01T06:01:00Z")),
        Some(ts("2027-01-01T06:05:00Z"))
    );
}

proptest! {
    /// Any sequence of rounds leaves a status that is a fixpoint (checked inside `step`),
    /// and requeues are always within [1 s, interval].
    #[test]
    fn any_sequence_is_idempotent(steps in proptest::collection::vec((0u8..6, 0u8..3, 0i64..2_000_000), 1..12)) {
        let mut r = Run::new(spec(Some("2027-02-01T00:00:00Z")));
        let mut now = ts("2027-01-01T00:00:00Z");
        for (kind, fp, dt) in steps {
            now += SignedDuration::from_secs(dt);
            let creds = if fp == 2 {
                CredentialCheck::Problem { reason: "SecretKeyNotFound".into(), message: "no key".into() }
            } else {
                ready(if fp == 0 { "a" } else { "b" })
            };
            let attempt = match kind {
                0 => Some(valid()),
                1 => Some(rejected(reason::INVALID_SECRET, 7000215)),
                2 => Some(unavailable(Some(5))),
                3 => Some(valid_with_graph("2027-01-20T00:00:00Z")),
                _ => None,
            };
            let d = r.step(&now.to_string(), &creds, attempt.as_ref());
            prop_assert!(d.requeue_after >= Duration::from_secs(1) && d.requeue_after <= Duration::from_secs(6 * 3600));
        }
    }
}

#[test]
fn a_retry_after_beyond_the_calendar_is_no_panic() {
    // `Retry-After: 999999999999` (31,000 years) used to overflow `now + delay` and panic
    // every reconcile of the integration
    let mut r = Run::new(spec(None));
    let d = r.step(
        "2027-01-01T00:00:00Z",
        &ready("a"),
        Some(&unavailable(Some(999_999_999_999))),
    );
    let retry_at = ts(&d.status.last_unavailable.unwrap().retry_at);
    assert!(retry_at <= ts("2027-01-01T01:00:00Z"), "{retry_at}");
    let mut r = Run::new(spec(None));
    let d = r.step(
        "2027-01-01T00:00:00Z",
        &ready("a"),
        Some(&unavailable(Some(u64::MAX))),
    );
    assert!(d.requeue_after <= Duration::from_secs(3600));
}

/// Any instant jiff can represent, the ends of time included.
fn any_instant() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        Just(Timestamp::MIN),
        Just(Timestamp::MAX),
        (Timestamp::MIN.as_second()..=Timestamp::MAX.as_second())
            .prop_map(|s| Timestamp::from_second(s).unwrap()),
        (1_700_000_000i64..1_900_000_000).prop_map(|s| Timestamp::from_second(s).unwrap()),
    ]
}

/// Durations as a spec may hold them: ordinary, huge, or not durations at all.
fn any_duration_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,25}(h|m|s|ms)",
        "[0-9]{1,6}h[0-9]{1,6}m",
        Just("2562047788015215h".to_owned()),
        ".{0,12}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// No answer from Microsoft (any status, `Retry-After` header and body), no duration in
    /// the spec and no time in the previous status can make `decide` panic, and the requeue
    /// stays within [1 s, interval].
    #[test]
    fn no_input_panics_decide(
        status in 100u16..600,
        header in prop_oneof!["[0-9]{1,25}", ".{0,40}", Just("18446744073709551615".to_owned())],
        body in proptest::collection::vec(any::<u8>(), 0..256),
        interval in any_duration_text(),
        warn in proptest::collection::vec(any_duration_text(), 0..4),
        expires in proptest::option::of(any_instant()),
        (now, last_time, retry_at) in (any_instant(), any_instant(), any_instant()),
        failures in any::<i32>(),
    ) {
        let retry_after = nocobase_mail_operator::microsoft::classify::parse_retry_after(
            &header, std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        prop_assert!(retry_after.is_none_or(|d| d <= Duration::from_secs(3600)));
        let attempt = nocobase_mail_operator::microsoft::classify::classify_failure(status, retry_after, &body, false);
        let spec: MicrosoftMailIntegrationSpec = serde_json::from_value(serde_json::json!({
            "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
            "clientId": "11111111-2222-4333-8444-555555555555",
            "clientSecretRef": {"name": "s"},
            "validation": {"interval": interval},
            "secretExpiry": {"warnBefore": warn, "expiresAt": expires.map(|t| t.to_string())},
        })).unwrap();
        let previous: MicrosoftMailIntegrationStatus = serde_json::from_value(serde_json::json!({
            "lastValidation": {"time": last_time.to_string(), "outcome": "Valid", "credentialsFingerprint": "a"},
            "lastUnavailable": {"time": last_time.to_string(), "reason": "Throttled", "message": "m",
                "failures": failures, "retryAt": retry_at.to_string(), "credentialsFingerprint": "a"},
        })).unwrap();
        for attempt in [Some(&attempt), Some(&unavailable(Some(u64::MAX))), None] {
            let d = decide(&Inputs {
                spec: &spec,
                generation: Some(1),
                previous: &previous,
                now,
                credentials: &ready("a"),
                attempt,
                injection: &InjectionReport::no_targets(),
                nocobase: None,
                mail_settings: None,
            });
            prop_assert!(d.requeue_after >= Duration::from_secs(1));
            let _ = validation_due(&spec, &d.status, "a", now);
        }
    }
}
