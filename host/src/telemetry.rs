//! Logging setup.

use tracing_subscriber::EnvFilter;

use crate::config::LoggingConfig;

/// Targets kept at info level whatever the filter says (see `init`).
const QUIET_CONTENT_LOGGERS: &[&str] = &["html5ever", "markup5ever", "ammonia"];

/// Installs the global `tracing` subscriber. `RUST_LOG` overrides the
/// configured filter.
pub fn init(config: &LoggingConfig) {
    let mut filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.filter));
    // Libraries that log the content they handle at debug level: the HTML
    // parser behind the sanitizer logs every message body it parses. Even
    // a debug log must not hold users' messages.
    for quiet in QUIET_CONTENT_LOGGERS {
        if let Ok(directive) = format!("{quiet}=info").parse() {
            filter = filter.add_directive(directive);
        }
    }
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
