//! The Microsoft-side flags `check` and `register` share: declared once, so that both
//! commands take the same names, defaults, environment variable and help text.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::api::Cloud;

/// Which tenant, which cloud's hosts (or overrides of them) and which extra CAs.
#[derive(Args, Debug, Clone)]
pub struct MicrosoftArgs {
    /// Directory (tenant) ID GUID or verified domain (`register` signs in to it and
    /// registers there).
    #[arg(long, value_name = "TENANT")]
    pub tenant_id: String,
    /// Microsoft cloud of the tenant.
    #[arg(long, value_enum, default_value_t = CloudArg::AzurePublic)]
    pub cloud: CloudArg,
    /// Override the login host (https, or http for localhost); `register` also requires it
    /// to be allowed (--allowed-authority-hosts).
    #[arg(long, value_name = "URL")]
    pub authority_host: Option<String>,
    /// Override the Microsoft Graph host (https, or http for localhost); `register` also
    /// requires it to be allowed (--allowed-graph-hosts).
    #[arg(long, value_name = "URL")]
    pub graph_host: Option<String>,
    /// Extra PEM CA bundle to trust (e.g. a TLS-inspecting proxy), besides the system roots.
    #[arg(long, value_name = "FILE", env = "NOCOBASE_MAIL_OPERATOR_CA_BUNDLE")]
    pub ca_bundle: Option<PathBuf>,
}

impl MicrosoftArgs {
    /// The CA bundle's PEM bytes, if one was given.
    pub fn ca_bundle_pem(&self) -> Result<Option<Vec<u8>>, String> {
        self.ca_bundle
            .as_ref()
            .map(|p| {
                std::fs::read(p)
                    .map_err(|e| format!("cannot read the CA bundle {}: {e}", p.display()))
            })
            .transpose()
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
#[value(rename_all = "verbatim")]
pub enum CloudArg {
    AzurePublic,
    AzureUSGovernment,
    AzureChina,
}

impl From<CloudArg> for Cloud {
    fn from(c: CloudArg) -> Self {
        match c {
            CloudArg::AzurePublic => Cloud::AzurePublic,
            CloudArg::AzureUSGovernment => Cloud::AzureUSGovernment,
            CloudArg::AzureChina => Cloud::AzureChina,
        }
    }
}
