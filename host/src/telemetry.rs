//! Logging setup.

use tracing_subscriber::EnvFilter;

use crate::config::LoggingConfig;

/// Installs the global `tracing` subscriber. `RUST_LOG` overrides the
/// configured filter.
pub fn init(config: &LoggingConfig) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.filter));
    // Colours only for a person at a terminal, not in a log file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_target(true);
    let result = if config.json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    // A subscriber may already be set (tests start several hosts).
    drop(result);
}
