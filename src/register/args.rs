//! `register`'s command line and what is derived from it before anything is sent.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::cluster::{Names, SpecInput};
use super::plan::Desired;
use super::signin::DEFAULT_SIGN_IN_CLIENT;
use super::steps::Options;
use crate::allow::Endpoint;
use crate::api::Cloud;
use crate::cli::AllowArgs;
use crate::cli::microsoft::MicrosoftArgs;

/// Default wait for Microsoft to accept a new application and secret.
pub const DEFAULT_PROPAGATION_TIMEOUT: &str = "180s";

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManifestFormat {
    Yaml,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
#[value(rename_all = "verbatim")]
pub enum Audience {
    /// Work, school and personal Microsoft accounts (Outlook.com): the seed's choice.
    AzureADandPersonalMicrosoftAccount,
    /// Work and school accounts of any tenant.
    AzureADMultipleOrgs,
}

#[derive(Args, Debug)]
pub struct RegisterArgs {
    #[command(flatten)]
    pub microsoft: MicrosoftArgs,
    /// Display name of the app registration; a re-run finds it by this name.
    #[arg(long, value_name = "NAME", default_value = "NocoBase email manager")]
    pub display_name: String,
    /// Adopt this existing registration (Application (client) ID) instead of finding it by name.
    #[arg(long, value_name = "GUID")]
    pub client_id: Option<String>,
    /// The address users open NocoBase at: registers the Web redirect URI
    /// {URL}/admin/settings/mail/oauth2 (with --nocobase-app, the sub-application's).
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
    /// Sub-application of a multi-app NocoBase (redirect URI and spec.nocobase.app).
    #[arg(long, value_name = "APP")]
    pub nocobase_app: Option<String>,
    /// Supported account types (signInAudience).
    #[arg(long, value_enum, default_value_t = Audience::AzureADandPersonalMicrosoftAccount)]
    pub sign_in_audience: Audience,
    /// Lifetime of a new client secret (Go duration; 4320h = 180 days, the portal's advice).
    #[arg(long, value_name = "DURATION", default_value = "4320h")]
    pub secret_lifetime: String,
    /// Create a new client secret although the registration existed.
    #[arg(long)]
    pub new_secret: bool,
    /// Grant the application permission Application.Read.All (admin consent), so the
    /// operator reads the secret's expiry from Graph.
    #[arg(long)]
    pub with_expiry_discovery: bool,
    /// Grant Application.ReadWrite.OwnedBy (admin consent) and make the service principal
    /// an owner of its application, for zero-touch rotation (sets spec.rotation.enabled).
    #[arg(long)]
    pub with_rotation: bool,
    /// Public client used for the device code sign-in [default: Microsoft Graph Command
    /// Line Tools, 14d82eec-204b-4c2f-b7e8-296a70dab67e].
    #[arg(long, value_name = "GUID", default_value = DEFAULT_SIGN_IN_CLIENT, hide_default_value = true)]
    pub sign_in_client_id: String,
    /// Use this delegated Graph access token instead of signing in (a file, or - for
    /// standard input; e.g. `az account get-access-token --resource https://graph.microsoft.com`).
    #[arg(long, value_name = "FILE|-", conflicts_with = "sign_in_client_id")]
    pub access_token_file: Option<PathBuf>,
    /// Print each Graph request (method, path, body) instead of sending it; nothing is sent
    /// after the sign-in and nothing is written to the cluster.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the manifests instead of applying them (no cluster needed).
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub output: Option<ManifestFormat>,
    /// With --output yaml: create the client secret and print its Secret manifest (the
    /// Value in clear text). Without it, --output yaml creates no secret.
    #[arg(long, requires = "output")]
    pub include_secret: bool,
    /// Namespace of the Secret and the integration (default: the kubeconfig's).
    #[arg(long, short = 'n', value_name = "NS")]
    pub namespace: Option<String>,
    /// Name of the MicrosoftMailIntegration.
    #[arg(long, value_name = "NAME", default_value = "outlook")]
    pub name: String,
    /// Secret receiving the client secret Value.
    #[arg(long, value_name = "NAME", default_value = "nocobase-entra-app")]
    pub secret_name: String,
    /// Key of that Secret.
    #[arg(long, value_name = "KEY", default_value = "client-secret")]
    pub secret_key: String,
    /// NocoBase Deployment to inject into (spec.targets; repeatable).
    #[arg(long, value_name = "NAME")]
    pub target_deployment: Vec<String>,
    /// spec.nocobase.url (needs --nocobase-api-key-secret).
    #[arg(long, value_name = "URL", requires = "nocobase_api_key_secret")]
    pub nocobase_url: Option<String>,
    /// Secret holding the NocoBase API key (key api-key).
    #[arg(long, value_name = "NAME", requires = "nocobase_url")]
    pub nocobase_api_key_secret: Option<String>,
    /// How long to wait for Microsoft to accept the new credentials (Go duration); it also
    /// bounds the wait for a new application to take its service principal (at most 60s).
    #[arg(long, value_name = "DURATION", default_value = DEFAULT_PROPAGATION_TIMEOUT)]
    pub propagation_timeout: String,
    #[command(flatten)]
    pub allow: AllowArgs,
}

/// Everything checked and derived before the sign-in.
pub struct Env {
    pub tenant: String,
    pub cloud: Cloud,
    pub authority: String,
    pub graph: String,
    /// The resource scopes are prefixed with (the Graph host).
    pub graph_resource: String,
    pub http: reqwest::Client,
    pub names: Names,
    pub redirect_uri: Option<String>,
    pub secret_end: jiff::Timestamp,
}

impl RegisterArgs {
    /// Checks every input (nothing is sent when one is wrong).
    pub fn prepare(&self) -> Result<Env, String> {
        let problem = |p: crate::input::InputProblem| p.message;
        let m = &self.microsoft;
        let tenant = crate::input::check_tenant(&m.tenant_id).map_err(problem)?;
        if let Some(c) = &self.client_id {
            crate::input::check_client_id(c).map_err(problem)?;
        }
        let cloud: Cloud = m.cloud.into();
        let host = |given: &Option<String>, default, what| {
            crate::input::check_host(given.as_deref(), default, what).map_err(problem)
        };
        let authority = host(&m.authority_host, cloud.authority_host(), "authority host")?;
        let graph = host(&m.graph_host, cloud.graph_host(), "Graph host")?;
        let allow = self.allow.to_allow_list()?;
        allow
            .check(Endpoint::Authority, &authority)
            .map_err(problem)?;
        allow.check(Endpoint::Graph, &graph).map_err(problem)?;
        let redirect_uri = self.redirect_uri()?;
        let lifetime = crate::expiry::parse_duration(&self.secret_lifetime)
            .filter(|d| d.as_secs() >= 3600)
            .ok_or_else(|| {
                format!(
                    "--secret-lifetime {:?} is not a duration of an hour or more (e.g. 4320h)",
                    self.secret_lifetime
                )
            })?;
        self.propagation()?;
        let ca = m.ca_bundle_pem()?;
        let http = crate::http::default_client(ca.as_deref())?;
        let now = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
            .expect("the clock is in range");
        Ok(Env {
            tenant,
            cloud,
            graph_resource: graph.clone(),
            authority,
            graph,
            http,
            names: Names {
                namespace: self.namespace.clone().unwrap_or_else(|| "default".into()),
                integration: self.name.clone(),
                secret: self.secret_name.clone(),
                key: self.secret_key.clone(),
            },
            redirect_uri,
            secret_end: crate::expiry::add_saturating(now, lifetime),
        })
    }

    fn redirect_uri(&self) -> Result<Option<String>, String> {
        let Some(p) = &self.public_url else {
            return Ok(None);
        };
        let ok = url::Url::parse(p.trim())
            .is_ok_and(|u| matches!(u.scheme(), "https" | "http") && u.host().is_some());
        if !ok {
            return Err(format!(
                "--public-url {p:?} is not an http(s) URL (the address users open NocoBase at)"
            ));
        }
        Ok(Some(crate::appreg::required_redirect_uri(
            p,
            self.nocobase_app.as_deref(),
            None,
        )))
    }

    fn propagation(&self) -> Result<Duration, String> {
        crate::expiry::parse_duration(&self.propagation_timeout)
            .and_then(|d| Duration::try_from(d).ok())
            .ok_or_else(|| {
                format!(
                    "--propagation-timeout {:?} is not a duration (e.g. 180s)",
                    self.propagation_timeout
                )
            })
    }

    pub fn propagation_timeout(&self) -> Duration {
        self.propagation().unwrap_or(Duration::from_secs(180))
    }

    /// The delegated scopes of the sign-in: Application.ReadWrite.All, plus
    /// AppRoleAssignment.ReadWrite.All when an application permission is to be granted.
    pub fn scope(&self, graph: &str) -> String {
        let mut s = format!("{graph}/Application.ReadWrite.All");
        if self.with_expiry_discovery || self.with_rotation {
            s.push_str(&format!(" {graph}/AppRoleAssignment.ReadWrite.All"));
        }
        s
    }

    pub fn options(&self, env: &Env) -> Options {
        let audience = match self.sign_in_audience {
            Audience::AzureADandPersonalMicrosoftAccount => "AzureADandPersonalMicrosoftAccount",
            Audience::AzureADMultipleOrgs => "AzureADMultipleOrgs",
        };
        let no_secret_because = (self.output.is_some() && !self.include_secret).then(|| {
            "with --output yaml the Value is only printed with --include-secret; run with it, or against a cluster".to_owned()
        });
        Options {
            desired: Desired {
                display_name: self.display_name.trim().to_owned(),
                audience: audience.into(),
                redirect_uri: env.redirect_uri.clone(),
                expiry_discovery: self.with_expiry_discovery,
                rotation: self.with_rotation,
            },
            client_id: self.client_id.as_deref().map(|c| c.trim().to_owned()),
            new_secret: self.new_secret,
            no_secret_because,
            secret_display_name: format!(
                "nocobase-mail-operator (register, {})",
                jiff::Timestamp::now().strftime("%Y-%m-%d")
            ),
            secret_end: env.secret_end,
            replication_budget: self
                .propagation_timeout()
                .min(super::replication::SERVICE_PRINCIPAL_WAIT),
        }
    }

    pub fn spec(&self, env: &Env, client_id: &str, expires_at: Option<String>) -> SpecInput {
        SpecInput {
            tenant_id: env.tenant.clone(),
            client_id: client_id.to_owned(),
            cloud: Some(env.cloud),
            authority_host: self.microsoft.authority_host.clone(),
            graph_host: self.microsoft.graph_host.clone(),
            expires_at,
            rotation: self.with_rotation,
            expiry_discovery: self.with_expiry_discovery,
            nocobase: self.nocobase_url.clone().map(|u| {
                let key = self.nocobase_api_key_secret.clone().unwrap_or_default();
                (u, key, self.public_url.clone(), self.nocobase_app.clone())
            }),
            deployments: self.target_deployment.clone(),
        }
    }
}
