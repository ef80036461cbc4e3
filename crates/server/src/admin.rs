//! The admin socket: how `switchboard user …` acts on a running server.
//!
//! A running server listens on `<data_dir>/admin.sock`, a Unix socket only its own user can
//! open (mode 0600). The protocol is one JSON object per line each way:
//!
//! ```text
//! → {"command":"user_add","user":"alice","password":"…"}
//! ← {"ok":true,"user":"alice@localhost"}
//! → {"command":"user_list","realm":"localhost"}
//! ← {"ok":true,"users":["alice@localhost"]}
//! → {"command":"user_remove","user":"bob"}
//! ← {"ok":false,"code":"not_found","error":"there is no user bob@localhost"}
//! ```
//!
//! Commands: `user_add` and `user_passwd` (`user`, `password`), `user_remove` (`user`) and
//! `user_list` (optional `realm`). Going through the running hub is what makes `remove` and
//! `passwd` take effect at once: the hub cuts the user's sessions and forgets their logins,
//! which a write to the store behind its back would not do.
//!
//! [`execute`] is the one implementation of the commands; the server runs it for socket
//! requests, and the CLI runs it on a hub of its own when no server is running.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use switchboard_core::{Hub, HubError, Realm};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The socket's file name inside the data directory.
pub const SOCKET_NAME: &str = "admin.sock";

/// The longest request line accepted. Passwords are at most 1 KiB, so this is generous.
const MAX_REQUEST_BYTES: u64 = 64 * 1024;

/// How long the client waits for an answer. Deriving verifiers with a high iteration count
/// takes a while, and a request may wait behind others.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(120);

/// A command. Not `Debug`: it carries passwords, which must not reach a log by accident.
///
/// The variants are named after the commands on the wire (`user_add` …); that they all start
/// with `User` today is because accounts are the only family of commands so far.
#[allow(clippy::enum_variant_names)]
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    UserAdd {
        user: String,
        password: String,
    },
    UserRemove {
        user: String,
    },
    UserPasswd {
        user: String,
        password: String,
    },
    UserList {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        realm: Option<String>,
    },
}

impl Request {
    /// What the request is about, for logs: the command and the user, never the password.
    pub fn describe(&self) -> String {
        match self {
            Request::UserAdd { user, .. } => format!("user_add {user}"),
            Request::UserRemove { user } => format!("user_remove {user}"),
            Request::UserPasswd { user, .. } => format!("user_passwd {user}"),
            Request::UserList { realm } => {
                format!("user_list {}", realm.as_deref().unwrap_or("(all realms)"))
            }
        }
    }
}

/// The answer to a command. Clients ignore fields they do not know, so answers can grow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    /// A stable code for the failure (the hub's error codes, or `bad_request`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// What went wrong, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The normalized address the command acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The accounts, for `user_list`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<Vec<String>>,
}

impl Response {
    fn user(user: impl ToString) -> Response {
        Response {
            ok: true,
            user: Some(user.to_string()),
            ..Response::default()
        }
    }

    fn failed(code: &str, error: impl ToString) -> Response {
        Response {
            ok: false,
            code: Some(code.to_string()),
            error: Some(error.to_string()),
            ..Response::default()
        }
    }

    fn from_hub(e: HubError) -> Response {
        Response::failed(e.code(), e)
    }
}

/// Runs a command on a hub.
pub async fn execute(hub: &Hub, request: Request) -> Response {
    let address = |user: &str| {
        hub.parse_address(user).map_err(|e| {
            Response::failed(
                "invalid_address",
                format!("{:?} is not a valid user name: {e}", user.trim()),
            )
        })
    };
    let outcome = async {
        Ok(match request {
            Request::UserAdd { user, password } => {
                let address = address(&user)?;
                let account = hub
                    .add_user(&address, &password)
                    .await
                    .map_err(Response::from_hub)?;
                Response::user(account.address)
            }
            Request::UserRemove { user } => {
                let address = address(&user)?;
                hub.remove_user(&address)
                    .await
                    .map_err(Response::from_hub)?;
                Response::user(address)
            }
            Request::UserPasswd { user, password } => {
                let address = address(&user)?;
                hub.set_password(&address, &password)
                    .await
                    .map_err(Response::from_hub)?;
                Response::user(address)
            }
            Request::UserList { realm } => {
                let realm = match realm.as_deref().map(str::trim) {
                    None | Some("") => None,
                    Some(text) => {
                        let realm = Realm::parse(text).map_err(|e| {
                            Response::failed(
                                "invalid_input",
                                format!("{text:?} is not a valid realm: {e}"),
                            )
                        })?;
                        if !hub.config().serves(realm.as_str()) {
                            return Err(Response::failed(
                                "not_found",
                                format!("this server does not serve the realm {realm}"),
                            ));
                        }
                        Some(realm)
                    }
                };
                let mut users: Vec<String> = hub
                    .list_users(realm.as_ref())
                    .await
                    .map_err(Response::from_hub)?
                    .into_iter()
                    .map(|account| account.address.to_string())
                    .collect();
                users.sort();
                Response {
                    ok: true,
                    users: Some(users),
                    ..Response::default()
                }
            }
        })
    };
    outcome.await.unwrap_or_else(|failed: Response| failed)
}

/// The server side: accepts connections on the socket until stopped.
pub struct AdminServer {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// The socket file, removed when the server stops (or fails after binding it).
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl AdminServer {
    /// Binds the socket at `path` and starts serving `hub` on it. The caller holds the data
    /// directory's lock, so a socket file already there was left by a server that died: it is
    /// removed.
    pub fn start(path: &Path, hub: Hub) -> anyhow::Result<AdminServer> {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};

        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                std::fs::remove_file(path).with_context(|| {
                    format!("cannot remove the stale admin socket {}", path.display())
                })?;
                tracing::info!(path = %path.display(), "removed a stale admin socket");
            }
            Ok(_) => anyhow::bail!(
                "{} exists and is not a socket; move it away so the admin socket can be made",
                path.display()
            ),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", path.display())),
        }
        // Unix socket paths are limited to about 107 bytes; say so rather than fail obscurely.
        if path.as_os_str().len() > 107 {
            anyhow::bail!(
                "the admin socket path {} is longer than 107 bytes, the limit for Unix \
                 sockets; choose a shorter data_dir",
                path.display()
            );
        }
        let listener = UnixListener::bind(path)
            .with_context(|| format!("cannot create the admin socket {}", path.display()))?;
        let file = SocketFile(path.to_path_buf());
        // Anyone who can open the socket can create and remove accounts, so only the server's
        // own user may (the data directory is private too when the server creates it).
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("cannot restrict the admin socket {}", path.display()))?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, file, hub, stopped));
        tracing::debug!(path = %path.display(), "admin socket ready");
        Ok(AdminServer { stop, task })
    }

    /// Stops accepting and removes the socket at once, then waits for the requests being
    /// served to finish (their writes must reach the hub before it shuts down).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn accept_loop(
    listener: UnixListener,
    file: SocketFile,
    hub: Hub,
    mut stopped: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    // Each connection watches for the stop on a receiver of its own.
    let for_connections = stopped.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, hub.clone(), for_connections.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(error = %e, "admin socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            // Reap finished connections so the set does not grow with every command.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = stop_requested(&mut stopped) => break,
        }
    }
    // No new connections from here on, and the CLI no longer finds a socket to try.
    drop(listener);
    drop(file);
    while connections.join_next().await.is_some() {}
}

/// Resolves once a stop was requested (or the server that could request it is gone).
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

async fn serve_connection(stream: UnixStream, hub: Hub, mut stopped: watch::Receiver<bool>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(MAX_REQUEST_BYTES));
    let mut line = Vec::new();
    loop {
        line.clear();
        reader.get_mut().set_limit(MAX_REQUEST_BYTES);
        // A stop ends a connection only while it waits for its next request; a request being
        // served is finished.
        let read = tokio::select! {
            read = reader.read_until(b'\n', &mut line) => read,
            () = stop_requested(&mut stopped) => return,
        };
        let response = match read {
            Ok(0) | Err(_) => return,
            Ok(_) if !line.ends_with(b"\n") && reader.get_ref().limit() == 0 => {
                Response::failed("bad_request", "the request is too long")
            }
            Ok(_) => match serde_json::from_slice::<Request>(&line) {
                Ok(request) => {
                    let what = request.describe();
                    let response = execute(&hub, request).await;
                    match &response.error {
                        None => tracing::info!(request = %what, "admin request done"),
                        Some(error) => {
                            tracing::info!(request = %what, %error, "admin request refused")
                        }
                    }
                    response
                }
                Err(e) => Response::failed("bad_request", format!("not a valid request: {e}")),
            },
        };
        let mut text = serde_json::to_vec(&response).expect("a response serializes");
        text.push(b'\n');
        if write.write_all(&text).await.is_err() {
            return;
        }
        if response.code.as_deref() == Some("bad_request") && !line.ends_with(b"\n") {
            // The rest of an overlong line cannot be told from the next request.
            return;
        }
    }
}

/// The client side: one connection to a running server.
pub struct AdminClient {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
}

impl AdminClient {
    /// Connects to the server's socket. `Ok(None)` means no server is listening: there is no
    /// socket, or it is a stale one nobody accepts on.
    pub async fn connect(path: &Path) -> anyhow::Result<Option<AdminClient>> {
        match UnixStream::connect(path).await {
            Ok(stream) => {
                let (read, writer) = stream.into_split();
                Ok(Some(AdminClient {
                    reader: BufReader::new(read),
                    writer,
                }))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) =>
            {
                Ok(None)
            }
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Err(anyhow::anyhow!(
                "cannot open the running server's admin socket {}: {e} (run this command \
                 as the user that runs the server)",
                path.display()
            )),
            Err(e) => Err(e)
                .with_context(|| format!("cannot connect to the admin socket {}", path.display())),
        }
    }

    /// Sends one request and reads its answer.
    pub async fn call(&mut self, request: &Request) -> anyhow::Result<Response> {
        let exchange = async {
            let mut text = serde_json::to_vec(request)?;
            text.push(b'\n');
            self.writer.write_all(&text).await?;
            let mut line = String::new();
            if self.reader.read_line(&mut line).await? == 0 {
                anyhow::bail!("the server closed the admin connection without an answer");
            }
            serde_json::from_str::<Response>(&line)
                .with_context(|| format!("the server's answer is not valid: {}", line.trim()))
        };
        tokio::time::timeout(ANSWER_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow::anyhow!("the server did not answer in time"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_read_as_documented() {
        let r: Request = serde_json::from_value(
            json!({"command": "user_add", "user": "alice", "password": "p"}),
        )
        .unwrap();
        assert!(matches!(r, Request::UserAdd { ref user, .. } if user == "alice"));
        assert_eq!(
            r.describe(),
            "user_add alice",
            "no password in the description"
        );
        let r: Request = serde_json::from_value(json!({"command": "user_list"})).unwrap();
        assert!(matches!(r, Request::UserList { realm: None }));
        assert!(
            serde_json::from_value::<Request>(json!({"command": "user_drop", "user": "a"}))
                .is_err()
        );
        assert!(
            serde_json::from_value::<Request>(
                json!({"command": "user_remove", "user": "a", "x": 1})
            )
            .is_err()
        );
    }

    #[test]
    fn responses_carry_only_what_applies() {
        let ok = serde_json::to_value(Response::user("alice@localhost")).unwrap();
        assert_eq!(ok, json!({"ok": true, "user": "alice@localhost"}));
        let failed = serde_json::to_value(Response::failed("conflict", "exists")).unwrap();
        assert_eq!(
            failed,
            json!({"ok": false, "code": "conflict", "error": "exists"})
        );
        let later: Response =
            serde_json::from_value(json!({"ok": true, "users": [], "new_field": 1})).unwrap();
        assert_eq!(later.users, Some(vec![]));
    }
}
