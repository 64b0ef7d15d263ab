//! Command line: `run`, `check`, `render`, `crd`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::api::Cloud;

/// Keeps the Microsoft Entra credentials of NocoBase's email manager valid, known and
/// delivered: validates client ID and client secret against Microsoft, warns before the
/// secret expires, and injects only credentials Microsoft accepted into NocoBase.
#[derive(Parser, Debug)]
#[command(name = "nocobase-mail-operator", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller: watch MicrosoftMailIntegration resources and keep them honest.
    Run(RunArgs),
    /// Ask Microsoft whether a tenant, client ID and client secret work, without a cluster.
    ///
    /// Exit status: 0 valid, 1 rejected by Microsoft, 2 invalid input (nothing was sent),
    /// 3 Microsoft unavailable (could not decide), 4 valid but NocoBase refused
    /// (with --nocobase-url).
    Check(CheckArgs),
    /// Show, offline, what the operator would write into the targeted Deployments and the
    /// managed Secret (values redacted), from YAML files. Exit 1 when a target or
    /// container is missing or in conflict.
    Render(RenderArgs),
    /// Print the CustomResourceDefinition YAML (what `kubectl apply -f crds/` installs).
    Crd,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Watch only these namespaces (repeatable). Default: all namespaces.
    #[arg(long = "namespace", short = 'n', value_name = "NS")]
    pub namespaces: Vec<String>,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080", value_name = "ADDR:PORT")]
    pub listen: String,
    /// Run without leader election (local runs, a single replica).
    #[arg(long)]
    pub no_leader_election: bool,
    /// Namespace of the leader-election Lease (default: the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE", value_name = "NS")]
    pub leader_election_namespace: Option<String>,
    /// Identity in the Lease (default: the pod name, else the host name).
    #[arg(long, env = "POD_NAME", value_name = "NAME")]
    pub identity: Option<String>,
    /// Extra PEM CA bundle trusted for Microsoft's endpoints, besides the system roots.
    #[arg(long, value_name = "FILE", env = "NOCOBASE_MAIL_OPERATOR_CA_BUNDLE")]
    pub ca_bundle: Option<PathBuf>,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "LOG_FORMAT")]
    pub log_format: LogFormat,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Directory (tenant) ID GUID or verified domain.
    #[arg(long, value_name = "TENANT")]
    pub tenant_id: String,
    /// Application (client) ID GUID.
    #[arg(long, value_name = "GUID")]
    pub client_id: String,
    /// File holding the client secret Value (a trailing newline is removed).
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "secret_env",
        required_unless_present = "secret_env"
    )]
    pub secret_file: Option<PathBuf>,
    /// Environment variable holding the client secret Value.
    #[arg(long, value_name = "VAR")]
    pub secret_env: Option<String>,
    /// Microsoft cloud of the tenant.
    #[arg(long, value_enum, default_value_t = CloudArg::AzurePublic)]
    pub cloud: CloudArg,
    /// Override the login host (https, or http for localhost).
    #[arg(long, value_name = "URL")]
    pub authority_host: Option<String>,
    /// Override the Microsoft Graph host (https, or http for localhost).
    #[arg(long, value_name = "URL")]
    pub graph_host: Option<String>,
    /// Do not read the secret's expiry and permissions from Microsoft Graph.
    #[arg(long)]
    pub no_graph: bool,
    /// Extra PEM CA bundle to trust (e.g. a TLS-inspecting proxy), besides the system roots.
    #[arg(long, value_name = "FILE", env = "NOCOBASE_MAIL_OPERATOR_CA_BUNDLE")]
    pub ca_bundle: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// Also check NocoBase's Variables and secrets API at this URL with the API key below
    /// (reads only: lists the variables; exit status 4 when NocoBase refuses).
    #[arg(long, value_name = "URL", requires = "nocobase_api_key_file")]
    pub nocobase_url: Option<String>,
    /// File holding the NocoBase API key.
    #[arg(long, value_name = "FILE")]
    pub nocobase_api_key_file: Option<PathBuf>,
    /// App of a multi-app NocoBase (X-App header).
    #[arg(long, value_name = "APP")]
    pub nocobase_app: Option<String>,
}

#[derive(Args, Debug)]
pub struct RenderArgs {
    /// YAML files holding MicrosoftMailIntegrations, Secrets and Deployments (repeatable).
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Ask Microsoft first and render only credentials it accepts.
    #[arg(long)]
    pub validate: bool,
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

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Text,
    Json,
}

/// Runs a parsed command line and returns the process exit status.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Crd => {
            print!("{}", crate::crdgen::crd_yaml());
            ExitCode::SUCCESS
        }
        Command::Check(args) => {
            crate::telemetry::init_cli_logging();
            runtime().block_on(crate::check::run(args))
        }
        Command::Run(args) => {
            crate::telemetry::init_controller_logging(args.log_format == LogFormat::Json);
            let ca = match args.ca_bundle.as_ref().map(std::fs::read).transpose() {
                Ok(ca) => ca,
                Err(e) => {
                    eprintln!("cannot read the CA bundle: {e}");
                    return ExitCode::from(2);
                }
            };
            let settings = crate::controller::Settings {
                namespaces: args.namespaces,
                listen: args.listen,
                leader_election: !args.no_leader_election,
                lease_namespace: args.leader_election_namespace,
                identity: args.identity.unwrap_or_else(host_name),
                ca_bundle_pem: ca,
            };
            match runtime().block_on(crate::controller::run(settings)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "the controller stopped");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Render(args) => {
            crate::telemetry::init_cli_logging();
            runtime().block_on(crate::render::run(&args.files, args.validate))
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "nocobase-mail-operator".into())
}
