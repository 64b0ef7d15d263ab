//! Command line: `run`, `check`, `register`, `render`, `crd`, `rotate`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub mod microsoft;

pub use crate::check::{CheckArgs, OutputFormat};
pub use microsoft::{CloudArg, MicrosoftArgs};

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
    /// (with --nocobase-url), 5 valid but may not rotate its own secrets (with --can-rotate).
    Check(CheckArgs),
    /// Show, offline, what the operator would write into the targeted Deployments and the
    /// managed Secret (values redacted), from YAML files. Exit 1 when a target or
    /// container is missing or in conflict.
    Render(RenderArgs),
    /// Do the portal's app registration for the email manager through Microsoft Graph
    /// (sign-in with a device code): application, delegated permissions, redirect URI,
    /// service principal and client secret, then the Secret and the MicrosoftMailIntegration
    /// into the cluster (or as YAML). A re-run adds only what is missing.
    ///
    /// Exit status: 0 done, 1 refused or declined, 2 invalid input, 3 Microsoft unavailable
    /// or the new application or credentials not replicated in time, 4 done but an optional
    /// grant was refused, 5 the cluster could not store the result.
    Register(Box<crate::register::RegisterArgs>),
    /// Print the CustomResourceDefinition YAML (what `kubectl apply -f crds/` installs).
    Crd,
    /// Ask the operator to rotate an integration's client secret now (sets the annotation
    /// nocobase-mail-operator.dev/rotate-requested-at, like `cmctl renew`), or, with
    /// --approve-retire, approve removing the old secret once the new one is delivered.
    Rotate(RotateArgs),
}

#[derive(Args, Debug)]
pub struct RotateArgs {
    /// The MicrosoftMailIntegration.
    pub name: String,
    /// Its namespace (default: the kubeconfig's current namespace).
    #[arg(long, short = 'n', value_name = "NS")]
    pub namespace: Option<String>,
    /// Approve removing the old secret (annotation nocobase-mail-operator.dev/retire-approved-at):
    /// for when the operator cannot see whether the email manager already uses the new one.
    #[arg(long)]
    pub approve_retire: bool,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Watch only these namespaces (repeatable). Default: all namespaces.
    #[arg(long = "namespace", short = 'n', value_name = "NS")]
    pub namespaces: Vec<String>,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080", value_name = "ADDR:PORT")]
    pub listen: String,
    /// Serve /metrics on this address instead (e.g. 127.0.0.1:8081 behind an authenticating
    /// sidecar); /metrics names every integration's namespace and name.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<String>,
    /// Labels of each integration copied onto its per-integration series, so that alerts
    /// can be routed to whoever owns it: `KEY` or `KEY=PROMETHEUS_LABEL` (for keys that are
    /// not Prometheus label names), comma-separated, at most 8. Values are cut at 63
    /// characters; an integration without the label gets an empty (absent) value.
    #[arg(long, value_name = "KEYS", value_delimiter = ',')]
    pub metrics_integration_labels: Vec<String>,
    /// Run without leader election (local runs, a single replica).
    #[arg(long)]
    pub no_leader_election: bool,
    /// The operator's own namespace: its leader-election Lease and its fingerprint key
    /// Secret (default: the pod's namespace).
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
    /// Reconciles that run at once; more are queued. Bounds the memory of a cold start.
    #[arg(long, value_name = "N", default_value_t = crate::controller::DEFAULT_MAX_CONCURRENT_RECONCILES,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub max_concurrent_reconciles: u16,
    /// Milliseconds a burst of changes to one integration is merged before it is reconciled.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub reconcile_debounce_ms: u64,
    /// Seconds one reconcile may spend on external I/O (Microsoft, Graph, NocoBase) in
    /// total; what is not done by then is reported as a timeout and tried again later.
    #[arg(long, value_name = "SECONDS", default_value_t = crate::controller::limits::DEFAULT_IO_DEADLINE.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub reconcile_io_deadline: u64,
    /// Reconciles that may talk to one NocoBase endpoint at once (the Services of one
    /// namespace count as one endpoint); the others wait without holding a slot.
    #[arg(long, value_name = "N", default_value_t = crate::controller::limits::DEFAULT_PER_ENDPOINT,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_concurrent_reconciles_per_endpoint: usize,
    #[command(flatten)]
    pub allow: AllowArgs,
    /// NocoBase collections the email manager's settings (spec.nocobase.mailSettings) may
    /// be written into, comma-separated [default: mailSettings, the email manager's own].
    #[arg(long, value_name = "COLLECTIONS", value_delimiter = ',')]
    pub allowed_mail_collections: Vec<String>,
    /// Honour spec.injectUnverified: inject credentials Microsoft has not confirmed while it
    /// cannot be reached (off: such integrations wait for Microsoft, with reason
    /// InjectUnverifiedNotAllowed).
    #[arg(long)]
    pub allow_inject_unverified: bool,
}

impl RunArgs {
    /// Everything `run` enforces about where a value may go.
    pub fn allow_list(&self) -> Result<crate::allow::AllowList, String> {
        Ok(self
            .allow
            .to_allow_list()?
            .with_mail_collections(&self.allowed_mail_collections)?
            .with_inject_unverified(self.allow_inject_unverified))
    }
}

/// Where the operator may send credentials: host patterns matched against each URL's host
/// and port as written (no DNS), like NO_PROXY entries: `login.microsoftonline.com` (its
/// scheme's default port), `*.svc`, `host:port`, `host:*` (any port), `[::1]:8080`.
/// Comma-separated or repeated; a given list replaces the default. http:// is accepted only for listed in-cluster Service names and loopback.
#[derive(Args, Debug, Clone, Default)]
pub struct AllowArgs {
    /// Hosts allowed as authority (login) host [default: login.microsoftonline.com,
    /// login.microsoftonline.us, login.chinacloudapi.cn].
    #[arg(long, value_name = "HOSTS", value_delimiter = ',')]
    pub allowed_authority_hosts: Vec<String>,
    /// Hosts allowed as Microsoft Graph host [default: graph.microsoft.com,
    /// graph.microsoft.us, microsoftgraph.chinacloudapi.cn].
    #[arg(long, value_name = "HOSTS", value_delimiter = ',')]
    pub allowed_graph_hosts: Vec<String>,
    /// Hosts allowed in spec.nocobase.url; {namespace} stands for the integration's own
    /// namespace [default: *.{namespace}.svc:*, *.{namespace}.svc.cluster.local:*].
    #[arg(long, value_name = "HOSTS", value_delimiter = ',')]
    pub allowed_nocobase_urls: Vec<String>,
}

impl AllowArgs {
    pub fn to_allow_list(&self) -> Result<crate::allow::AllowList, String> {
        crate::allow::AllowList::new(
            &self.allowed_authority_hosts,
            &self.allowed_graph_hosts,
            &self.allowed_nocobase_urls,
        )
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct RenderArgs {
    /// YAML files holding MicrosoftMailIntegrations, Secrets and Deployments (repeatable).
    #[arg(short = 'f', long = "filename", value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Ask Microsoft first and render only credentials it accepts.
    #[arg(long)]
    pub validate: bool,
    /// With --validate, the integrations' hosts must be in these lists, as for `run`.
    #[command(flatten)]
    pub allow: AllowArgs,
    /// 32 random bytes (e.g. `head -c 32 /dev/urandom`) keying the configuration
    /// fingerprints, so that equal files render equal output; without it, a random key
    /// each run (a fingerprint keyed by anything readable would let a reader of the
    /// output test guesses of the secret). Keep the file as secret as the Secret.
    #[arg(long, value_name = "FILE")]
    pub fingerprint_key_file: Option<PathBuf>,
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
            let allow = match args.allow_list() {
                Ok(a) => a,
                Err(e) => return usage_error(&e),
            };
            let owner_labels =
                match crate::telemetry::owner::parse_owner_labels(&args.metrics_integration_labels)
                {
                    Ok(o) => o,
                    Err(e) => return usage_error(&e),
                };
            let settings = crate::controller::Settings {
                owner_labels,
                namespaces: args.namespaces,
                listen: args.listen,
                metrics_listen: args.metrics_listen,
                leader_election: !args.no_leader_election,
                lease_namespace: args.leader_election_namespace,
                identity: args.identity.unwrap_or_else(host_name),
                ca_bundle_pem: ca,
                allow,
                tuning: crate::controller::Tuning {
                    max_concurrent_reconciles: args.max_concurrent_reconciles,
                    debounce: std::time::Duration::from_millis(args.reconcile_debounce_ms),
                    io_deadline: std::time::Duration::from_secs(args.reconcile_io_deadline),
                    per_endpoint: args.max_concurrent_reconciles_per_endpoint,
                },
            };
            match runtime().block_on(crate::controller::run(settings)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "the controller stopped");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Register(args) => {
            crate::telemetry::init_cli_logging();
            runtime().block_on(crate::register::run(*args))
        }
        Command::Rotate(args) => {
            crate::telemetry::init_cli_logging();
            runtime().block_on(rotate(args))
        }
        Command::Render(args) => {
            crate::telemetry::init_cli_logging();
            let allow = match args.allow.to_allow_list() {
                Ok(a) => a,
                Err(e) => return usage_error(&e),
            };
            let validate = args.validate.then_some(allow);
            let key = match render_key(args.fingerprint_key_file.as_deref()) {
                Ok(k) => k,
                Err(e) => return usage_error(&format!("--fingerprint-key-file: {e}")),
            };
            runtime().block_on(crate::render::run(&args.files, validate, &key))
        }
    }
}

/// `render`'s fingerprint key: from the file given, else random.
fn render_key(file: Option<&std::path::Path>) -> Result<crate::fingerprint::OperatorKey, String> {
    match file {
        None => Ok(crate::fingerprint::OperatorKey::random()),
        Some(f) => std::fs::read(f)
            .map_err(|e| e.to_string())
            .and_then(|b| crate::fingerprint::OperatorKey::from_bytes(&b)),
    }
}

fn usage_error(e: &str) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

async fn rotate(args: RotateArgs) -> ExitCode {
    let client = match kube::Client::try_default().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot reach the cluster: {e}");
            return ExitCode::from(2);
        }
    };
    let ns = args
        .namespace
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let now = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second())
        .expect("the clock is in range");
    match crate::controller::rotate::request(client, &ns, &args.name, args.approve_retire, now)
        .await
    {
        Ok(msg) => {
            println!("{msg}");
            ExitCode::SUCCESS
        }
        Err(kube::Error::Api(s)) if s.code == 404 => {
            eprintln!("MicrosoftMailIntegration {ns}/{} not found", args.name);
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("could not annotate {ns}/{}: {e}", args.name);
            ExitCode::from(1)
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
