//! The `switchboard` binary: `switchboard serve` runs the server; `switchboard user …`
//! administers accounts, through the running server when there is one.

mod admin;
mod config;
mod logging;
mod node;
mod serve;
mod user;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::Config;

/// A unified presence and instant-messaging server.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version)]
struct Cli {
    /// A TOML configuration file. SWITCHBOARD_* environment variables override its keys.
    #[arg(
        long,
        short = 'c',
        global = true,
        value_name = "FILE",
        env = "SWITCHBOARD_CONFIG"
    )]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the server (with no configuration: SQLite in ./switchboard-data, HTTP on
    /// 127.0.0.1:5280, realm localhost).
    Serve,
    /// Adds, lists and removes accounts, and sets passwords.
    #[command(subcommand)]
    User(user::UserCommand),
    /// Prints the effective configuration (defaults, file and environment merged) as TOML.
    Config,
}

/// The exit status of a refused configuration, as for other usage errors.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let (level, output) = match cli.command {
        Command::Serve => (config.log.level.clone(), logging::Output::Stdout),
        // A one-shot command reports its own outcome; only warnings are worth adding.
        Command::User(_) => ("warn".to_string(), logging::Output::Stderr),
        Command::Config => {
            print!("{}", config.to_toml());
            return ExitCode::SUCCESS;
        }
    };
    if let Err(e) = logging::init(&config.log, &level, output) {
        eprintln!("error: {e:#}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Serve => serve::run(config).await,
            Command::User(command) => user::run(&config, command).await,
            Command::Config => Ok(()),
        }
    });
    // Tasks that are still running (a connection a line did not close) are dropped here;
    // what they had submitted was committed or never acknowledged.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::debug!(error = ?e, "failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
