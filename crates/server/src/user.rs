//! `switchboard user add|list|remove|passwd`: account administration from the shell.
//!
//! When a server runs on the data directory, the command goes to it through the admin socket,
//! so that removing an account or changing a password ends that user's sessions and logins at
//! once. When none runs, the command starts a hub of its own on the store, runs the very same
//! code ([`admin::execute`]) and stops the hub cleanly.

use std::io::{BufRead, IsTerminal};
use std::time::{Duration, Instant};

use anyhow::Context;
use switchboard_core::bus::InProcessBus;
use switchboard_core::{Address, Hub, Realm};

use crate::admin::{self, AdminClient, Request, Response};
use crate::config::Config;
use crate::node::{DataDirLock, open_store, stop_hub};

/// How long to wait for a server that holds the data directory but has no admin socket yet
/// (it is starting) or any more (it is stopping).
const SERVER_SETTLE_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, clap::Subcommand)]
pub enum UserCommand {
    /// Creates an account; the password is prompted, or read as one line from standard input.
    Add {
        /// `alice` (in the default realm) or `alice@realm`.
        name: String,
    },
    /// Lists the accounts, one address per line.
    List {
        /// Only the accounts of this realm.
        realm: Option<String>,
    },
    /// Removes an account with its history; its sessions end and its logins stop working.
    #[command(visible_alias = "rm")]
    Remove {
        /// `alice` (in the default realm) or `alice@realm`.
        name: String,
    },
    /// Sets a new password; every login of the account is revoked and its sessions end.
    #[command(visible_alias = "password")]
    Passwd {
        /// `alice` (in the default realm) or `alice@realm`.
        name: String,
    },
}

pub async fn run(config: &Config, command: UserCommand) -> anyhow::Result<()> {
    let request = match command {
        UserCommand::Add { name } => {
            let shown = check_name(config, &name)?;
            Request::UserAdd {
                password: read_password(&shown)?,
                user: name,
            }
        }
        UserCommand::Passwd { name } => {
            let shown = check_name(config, &name)?;
            Request::UserPasswd {
                password: read_password(&shown)?,
                user: name,
            }
        }
        UserCommand::Remove { name } => {
            check_name(config, &name)?;
            Request::UserRemove { user: name }
        }
        UserCommand::List { realm } => {
            if let Some(text) = &realm {
                Realm::parse(text.trim())
                    .map_err(|e| anyhow::anyhow!("{text:?} is not a valid realm: {e}"))?;
            }
            Request::UserList { realm }
        }
    };
    let response = send(config, &request).await?;
    if !response.ok {
        anyhow::bail!(
            "{}",
            response
                .error
                .unwrap_or_else(|| "the server refused the command".into())
        );
    }
    let user = response.user.unwrap_or_default();
    match request {
        Request::UserAdd { .. } => println!("added {user}"),
        Request::UserRemove { .. } => println!("removed {user}"),
        Request::UserPasswd { .. } => {
            println!("changed the password of {user}; its logins were revoked")
        }
        Request::UserList { .. } => {
            for address in response.users.unwrap_or_default() {
                println!("{address}");
            }
        }
    }
    Ok(())
}

/// Checks the name's form before a password is asked for. The realm is resolved again by
/// whoever executes the command (a running server may serve other realms than this
/// configuration names), so this only returns the address to show in the prompt.
fn check_name(config: &Config, name: &str) -> anyhow::Result<Address> {
    Address::parse(name.trim(), config.default_realm())
        .map_err(|e| anyhow::anyhow!("{:?} is not a valid user name: {e}", name.trim()))
}

/// The password: prompted twice on a terminal, otherwise one line of standard input (so
/// that `echo secret | switchboard user add alice` works in scripts).
fn read_password(address: &Address) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let first = rpassword::prompt_password(format!("Password for {address}: "))
            .context("cannot read the password from the terminal")?;
        let second = rpassword::prompt_password("The same password again: ")
            .context("cannot read the password from the terminal")?;
        if first != second {
            anyhow::bail!("the two passwords differ; nothing was changed");
        }
        return Ok(first);
    }
    let mut line = String::new();
    let read = stdin
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    if read == 0 {
        anyhow::bail!("no password on standard input (give it as one line)");
    }
    // Only the line ending goes: spaces may be part of a passphrase.
    let password = line
        .strip_suffix('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .unwrap_or(&line);
    Ok(password.to_string())
}

/// Sends the request to the running server, or executes it here when none runs.
async fn send(config: &Config, request: &Request) -> anyhow::Result<Response> {
    let socket = config.admin_socket();
    let started = Instant::now();
    loop {
        if let Some(mut client) = AdminClient::connect(&socket).await? {
            tracing::debug!(socket = %socket.display(), "using the running server");
            return client.call(request).await;
        }
        if let Some(lock) = DataDirLock::try_acquire(&config.data_dir)? {
            return execute_here(config, lock, request.clone()).await;
        }
        if started.elapsed() > SERVER_SETTLE_TIMEOUT {
            anyhow::bail!(
                "a switchboard process holds the data directory {} but does not answer on {}; \
                 if a server is starting or stopping, try again in a moment",
                config.data_dir.display(),
                socket.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the command on a hub started for it, then stops that hub so that everything it wrote
/// is committed before the process exits.
async fn execute_here(
    config: &Config,
    _lock: DataDirLock,
    request: Request,
) -> anyhow::Result<Response> {
    let store = open_store(config).await?;
    let (hub, tasks) = Hub::start(
        config.hub_config(),
        store,
        InProcessBus::new(config.node.clone()),
    );
    let response = admin::execute(&hub, request).await;
    stop_hub(hub, tasks).await;
    Ok(response)
}
