//! The Kubernetes API calls the operator makes, as RBAC rules. The Helm chart's roles are
//! checked against this list (tests/chart.rs), and the reconciler tests check that every
//! call the code makes against the fake API server is covered by it, so a rule can be
//! neither missing nor extra.

/// One RBAC rule and why the operator needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub api_group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
    /// Only these objects (`resourceNames`); empty: every object of the resource.
    pub resource_names: &'static [&'static str],
    pub why: &'static str,
}

/// The operator's leader-election Lease, in its own namespace.
pub const LEASE_NAME: &str = "nocobase-mail-operator-leader";

/// The Secret holding the operator's fingerprint key, in its own namespace
/// ([`crate::controller::fpkey`]).
pub const FINGERPRINT_KEY_SECRET: &str = "nocobase-mail-operator-fingerprint-key";

/// Rules in the operator's own namespace, always (with or without leader election): its
/// fingerprint key Secret only. As for the Lease, `create` is a rule of its own.
pub const OPERATOR_NAMESPACE_RULES: &[Rule] = &[
    Rule {
        api_group: "",
        resource: "secrets",
        verbs: &["get"],
        resource_names: &[FINGERPRINT_KEY_SECRET],
        why: "read the operator's fingerprint key at start-up",
    },
    Rule {
        api_group: "",
        resource: "secrets",
        verbs: &["create"],
        resource_names: &[],
        why: "create the fingerprint key on first start (create cannot be limited by name)",
    },
];

/// Rules cluster-wide when only some namespaces are watched (`--namespace`): deleting a
/// watched namespace deletes its Roles along with everything else, and the finalizer of an
/// integration in it must still be removable, or the namespace never goes. In all-namespace
/// installs the ClusterRole already covers the first.
pub const NAMESPACE_DELETION_RULES: &[Rule] = &[
    Rule {
        api_group: "nocobase-mail-operator.dev",
        resource: "microsoftmailintegrations",
        verbs: &["patch"],
        resource_names: &[],
        why: "remove the cleanup finalizer in a namespace being deleted, whose Roles are gone",
    },
    Rule {
        api_group: "",
        resource: "namespaces",
        verbs: &["get"],
        resource_names: &[],
        why: "tell a namespace being deleted from a missing permission",
    },
];

/// Rules in every watched namespace (a ClusterRole, or a Role per namespace).
pub const WATCHED_NAMESPACE_RULES: &[Rule] = &[
    Rule {
        api_group: "nocobase-mail-operator.dev",
        resource: "microsoftmailintegrations",
        verbs: &["get", "list", "watch", "patch"],
        resource_names: &[],
        why: "watch integrations; add and remove the cleanup finalizer",
    },
    Rule {
        api_group: "nocobase-mail-operator.dev",
        resource: "microsoftmailintegrations/status",
        verbs: &["patch"],
        resource_names: &[],
        why: "report conditions, expiry and injection in status",
    },
    Rule {
        api_group: "nocobase-mail-operator.dev",
        resource: "microsoftmailintegrations/finalizers",
        verbs: &["update"],
        resource_names: &[],
        why: "own the managed Secret with blockOwnerDeletion (OwnerReferencesPermissionEnforcement)",
    },
    Rule {
        api_group: "",
        resource: "secrets",
        verbs: &["get", "list", "watch", "create", "patch"],
        resource_names: &[],
        why: "watch referenced Secrets (metadata only), read one when reconciling, server-side apply the managed Secret",
    },
    Rule {
        api_group: "apps",
        resource: "deployments",
        verbs: &["get", "list", "watch", "patch"],
        resource_names: &[],
        why: "find target Deployments and server-side apply the operator's env entries and annotation",
    },
    Rule {
        api_group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
        resource_names: &[],
        why: "record Events on transitions",
    },
];

/// Rules in the operator's own namespace, for leader election: the operator's own Lease
/// only. `create` cannot be limited by name (the object does not exist yet), so it is a
/// rule of its own.
pub const LEADER_ELECTION_RULES: &[Rule] = &[
    Rule {
        api_group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "patch"],
        resource_names: &[LEASE_NAME],
        why: "leader election: read and renew the operator's own Lease",
    },
    Rule {
        api_group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["create"],
        resource_names: &[],
        why: "leader election: create the Lease on first start (create cannot be limited by name)",
    },
];
