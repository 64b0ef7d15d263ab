//! Who may rotate (pure): a rotation adds and removes credentials of an app registration
//! that other people may rely on, so it needs the consent of whoever owns the Secret, not
//! only of the integration's author. The Secret's owner gives it with an annotation on the
//! Secret naming the integrations allowed to rotate the credential it holds; every other
//! integration (in any watched namespace) whose Secret holds the credential the rotation
//! would remove must consent the same way on its own Secret. Without that, nothing is
//! added and nothing removed.

use super::Step;

/// Annotation on a Secret: the integrations allowed to rotate the client secret it holds,
/// comma- or space-separated; `name` for one in the Secret's namespace, `namespace/name`
/// for one elsewhere.
pub const ROTATION_ALLOWED_FOR: &str = "nocobase-mail-operator.dev/rotation-allowed-for";

/// Whether an annotation value (on a Secret in `secret_ns`) names integration `ns/name`.
pub fn names(annotation: Option<&str>, secret_ns: &str, ns: &str, name: &str) -> bool {
    annotation
        .into_iter()
        .flat_map(entries)
        .any(|e| match e.split_once('/') {
            Some((n, i)) => n == ns && i == name,
            None => secret_ns == ns && e == name,
        })
}

fn entries(v: &str) -> impl Iterator<Item = &str> {
    v.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|e| !e.is_empty())
}

/// Another integration whose Secret holds the credential a rotation would remove.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub namespace: String,
    pub integration: String,
    pub secret: String,
    /// Its Secret's annotation names the rotating integration.
    pub consents: bool,
}

/// What the rotating integration's consent check found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Consent {
    /// The integration's own Secret names it in [`ROTATION_ALLOWED_FOR`].
    pub own: bool,
    /// Other integrations validating against the credential to be removed.
    pub holders: Vec<Holder>,
}

/// Whether a step adds or removes a credential of the app registration, and so needs
/// consent (beginning counts: it leads to both). Validating, checking delivery and taking
/// back a never-delivered credential do not.
pub fn needs_consent(step: &Step) -> bool {
    matches!(step, Step::Begin | Step::Create | Step::Retire)
}

/// The step itself, or [`Step::NotPermitted`] with the exact annotations to add.
pub fn guard(step: Step, c: &Consent, ns: &str, name: &str, secret: &str) -> Step {
    if !needs_consent(&step) {
        return step;
    }
    if !c.own {
        return Step::NotPermitted(format!(
            "Rotation needs the consent of the owner of Secret {ns}/{secret}: annotate it with {ROTATION_ALLOWED_FOR}={name} (kubectl -n {ns} annotate secret {secret} {ROTATION_ALLOWED_FOR}={name}). Nothing was created or removed."
        ));
    }
    let refusing: Vec<&Holder> = c.holders.iter().filter(|h| !h.consents).collect();
    if refusing.is_empty() {
        return step;
    }
    let who: Vec<String> = refusing
        .iter()
        .map(|h| {
            format!(
                "{}/{} (Secret {}/{})",
                h.namespace, h.integration, h.namespace, h.secret
            )
        })
        .collect();
    Step::NotPermitted(format!(
        "Other integrations validate against the client secret this rotation would remove: {}. Removing it would stop their mail. Give them a client secret of their own, or have each Secret's owner consent with {ROTATION_ALLOWED_FOR}={ns}/{name} on it. Nothing was created or removed.",
        crate::quote::sentences(&who, ", ", crate::quote::MAX_LISTED)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_annotation_names_integrations_here_or_elsewhere() {
        let cases = [
            (None, "team", "team", "outlook", false),
            (Some("outlook"), "team", "team", "outlook", true),
            (Some("other, outlook"), "team", "team", "outlook", true),
            (Some("other outlook"), "team", "team", "outlook", true),
            (Some("team/outlook"), "team", "team", "outlook", true),
            // a bare name means the Secret's own namespace, never another one
            (Some("outlook"), "ops", "team", "outlook", false),
            (Some("team/outlook"), "ops", "team", "outlook", true),
            (Some("ops/outlook"), "ops", "team", "outlook", false),
            (Some("outlook2"), "team", "team", "outlook", false),
            (Some(""), "team", "team", "outlook", false),
        ];
        for (value, secret_ns, ns, name, want) in cases {
            assert_eq!(
                names(value, secret_ns, ns, name),
                want,
                "{value:?} on a Secret in {secret_ns}"
            );
        }
    }

    #[test]
    fn credential_changing_steps_need_every_holders_consent() {
        let holder = |consents| Holder {
            namespace: "ops".into(),
            integration: "mail".into(),
            secret: "entra-app".into(),
            consents,
        };
        let own = |own, holders| Consent { own, holders };
        let guarded = |step: Step, c: &Consent| guard(step, c, "team", "outlook", "entra-app");
        for step in [Step::Begin, Step::Create, Step::Retire] {
            let no = guarded(step.clone(), &own(false, vec![]));
            let Step::NotPermitted(m) = no else {
                panic!("{no:?}")
            };
            assert!(m.contains("kubectl -n team annotate secret entra-app nocobase-mail-operator.dev/rotation-allowed-for=outlook"), "{m}");
            let other = guarded(step.clone(), &own(true, vec![holder(false)]));
            let Step::NotPermitted(m) = other else {
                panic!("{other:?}")
            };
            assert!(
                m.contains("ops/mail (Secret ops/entra-app)")
                    && m.contains("rotation-allowed-for=team/outlook"),
                "{m}"
            );
            assert_eq!(guarded(step.clone(), &own(true, vec![holder(true)])), step);
            assert_eq!(guarded(step.clone(), &own(true, vec![])), step);
        }
        // steps that neither add nor remove a credential go on whatever the consent
        for step in [
            Step::Validate,
            Step::CheckDelivery,
            Step::Abandon,
            Step::Off,
            Step::Wait(None),
        ] {
            assert_eq!(
                guarded(step.clone(), &own(false, vec![holder(false)])),
                step
            );
        }
    }
}
