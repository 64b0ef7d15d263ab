//! nocobase-mail-operator: checks Microsoft Entra client secrets for the NocoBase email
//! manager, tracks their expiry, and delivers them to NocoBase.
//!
//! Module map (Kubernetes I/O, Microsoft I/O and pure decisions are kept apart):
//! - [`api`]: the `MicrosoftMailIntegration` custom resource types.
//! - [`crdgen`]: renders the CRD YAML from those types.
//! - [`credentials`]: the one credential reader (Secret -> checked credentials).
//! - [`clock`]: the injected clock.
//! - [`decide`]: the pure decision core (status, Events, next reconcile).
//! - [`expiry`]: the pure expiry policy.
//! - [`fingerprint`]: keyed fingerprints of credentials.
//! - [`inject`]: the pure injection plan (Deployment + configuration -> apply patch).
//! - [`controller`]: Kubernetes I/O: the reconciler, watches, leader election, /metrics.
//! - [`http`]: the outbound HTTP client shared by the Microsoft and NocoBase clients.
//! - [`input`]: pure checks of tenant, client ID and secret, before anything is sent.
//! - [`microsoft`]: the token request and Graph read, and the pure reading of their answers.
//! - [`check`]: the `check` command's report.
//! - [`telemetry`]: logging and metrics.
//! - [`render`]: the `render` command.
//! - [`rotation`]: the pure decision core of client-secret rotation.
//! - [`cli`]: the command line.
//! - [`mailsettings`]: the email manager's own settings: pure plan and the write sequence.
//! - [`appreg`]: the pure check of the app registration for the email manager.
//! - [`quote`]: bounds on the names, lists and messages quoted into status and Events.

pub mod allow;
pub mod api;
pub mod appreg;
pub mod check;
pub mod check_mail;
pub mod cli;
pub mod clock;
pub mod controller;
pub mod crdgen;
pub mod credentials;
pub mod decide;
pub mod expiry;
pub mod fingerprint;
pub mod http;
pub mod inject;
pub mod input;
pub mod mailsettings;
pub mod microsoft;
pub mod nocobase;
pub mod quote;
pub mod rbac;
pub mod register;
pub mod render;
pub mod rotation;
pub mod telemetry;
