{{/*
Chart name, truncated to 63 characters (a DNS label).
*/}}
{{- define "nocobase-mail-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: release name and chart name, or the release name alone when it already contains
the chart name; fullnameOverride wins.
*/}}
{{- define "nocobase-mail-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "nocobase-mail-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "nocobase-mail-operator.labels" -}}
helm.sh/chart: {{ include "nocobase-mail-operator.chart" . }}
{{ include "nocobase-mail-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: nocobase-mail-operator
{{- end }}

{{/*
Selector labels: stable across upgrades (Deployment selectors are immutable).
*/}}
{{- define "nocobase-mail-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nocobase-mail-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Name of the ServiceAccount the operator runs as.
*/}}
{{- define "nocobase-mail-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "nocobase-mail-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Name of the metrics Service.
*/}}
{{- define "nocobase-mail-operator.serviceName" -}}
{{- printf "%s-metrics" (include "nocobase-mail-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
RBAC rules in every watched namespace: exactly nocobase_mail_operator::rbac::WATCHED_NAMESPACE_RULES
(src/rbac.rs), one rule per API group and resource, verbs in the same order, no wildcards.
tests/chart.rs fails when the two differ.
*/}}
{{- define "nocobase-mail-operator.watchedNamespaceRules" -}}
# watch integrations; add and remove the cleanup finalizer
- apiGroups: ["nocobase-mail-operator.dev"]
  resources: ["microsoftmailintegrations"]
  verbs: ["get", "list", "watch", "patch"]
# report conditions, expiry and injection in status
- apiGroups: ["nocobase-mail-operator.dev"]
  resources: ["microsoftmailintegrations/status"]
  verbs: ["patch"]
# own the managed Secret with blockOwnerDeletion (OwnerReferencesPermissionEnforcement)
- apiGroups: ["nocobase-mail-operator.dev"]
  resources: ["microsoftmailintegrations/finalizers"]
  verbs: ["update"]
# watch referenced Secrets (metadata only), read one when reconciling, server-side apply the managed Secret
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch"]
# find target Deployments and server-side apply the operator's env entries and annotation
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "patch"]
# record Events on transitions
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/*
RBAC rules in the release namespace for leader election: exactly
nocobase_mail_operator::rbac::LEADER_ELECTION_RULES.
*/}}
{{- define "nocobase-mail-operator.leaderElectionRules" -}}
# leader election: read and renew the operator's own Lease
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: ["nocobase-mail-operator-leader"]
  verbs: ["get", "patch"]
# leader election: create the Lease on first start (create cannot be limited by name)
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create"]
{{- end }}

{{/*
Cluster-wide RBAC rules with watchNamespaces: exactly
nocobase_mail_operator::rbac::NAMESPACE_DELETION_RULES.
*/}}
{{- define "nocobase-mail-operator.namespaceDeletionRules" -}}
# remove the cleanup finalizer in a namespace being deleted, whose Roles are gone
- apiGroups: ["nocobase-mail-operator.dev"]
  resources: ["microsoftmailintegrations"]
  verbs: ["patch"]
# tell a namespace being deleted from a missing permission
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get"]
{{- end }}

{{/*
RBAC rules in the release namespace, always: exactly
nocobase_mail_operator::rbac::OPERATOR_NAMESPACE_RULES.
*/}}
{{- define "nocobase-mail-operator.operatorNamespaceRules" -}}
# read the operator's fingerprint key at start-up
- apiGroups: [""]
  resources: ["secrets"]
  resourceNames: ["nocobase-mail-operator-fingerprint-key"]
  verbs: ["get"]
# create the fingerprint key on first start (create cannot be limited by name)
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create"]
{{- end }}

{{/*
Hardened container securityContext, shared by the operator and the test pod.
*/}}
{{- define "nocobase-mail-operator.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end }}

{{/*
Hardened pod securityContext: the distroless "nonroot" user.
*/}}
{{- define "nocobase-mail-operator.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}
