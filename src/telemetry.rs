//! Logging through `tracing`.

use tracing_subscriber::EnvFilter;

/// Logs for one-shot commands: warnings and errors on stderr, `RUST_LOG` overrides.
pub fn init_cli_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
