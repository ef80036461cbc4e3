//! Structured logs through `tracing`: text for people, JSON for log collectors.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Where log lines go.
pub enum Output {
    /// The server logs to standard output, as services under a supervisor usually do.
    Stdout,
    /// CLI commands keep standard output for their results.
    Stderr,
}

/// Installs the global subscriber. `RUST_LOG`, when set, takes precedence over
/// `fallback_level`, the familiar way to look closer at one module without editing the
/// configuration.
pub fn init(config: &LogConfig, fallback_level: &str, output: Output) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::builder()
            .parse(directives.trim())
            .map_err(|e| anyhow::anyhow!("RUST_LOG: {directives:?} is not a log filter: {e}"))?,
        _ => EnvFilter::builder()
            .parse(fallback_level)
            .map_err(|e| anyhow::anyhow!("log.level: {fallback_level:?}: {e}"))?,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let installed = match (config.format, output) {
        (LogFormat::Text, Output::Stdout) => builder.with_writer(std::io::stdout).try_init(),
        (LogFormat::Text, Output::Stderr) => builder.with_writer(std::io::stderr).try_init(),
        (LogFormat::Json, Output::Stdout) => builder.json().with_writer(std::io::stdout).try_init(),
        (LogFormat::Json, Output::Stderr) => builder.json().with_writer(std::io::stderr).try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot start logging: {e}"))
}
