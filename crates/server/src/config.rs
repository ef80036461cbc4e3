//! The server's configuration: built-in defaults, overridden by a TOML file (`--config`),
//! overridden in turn by `SWITCHBOARD_*` environment variables.
//!
//! Every key has a default, so no configuration at all runs a working server. A key's
//! environment variable is `SWITCHBOARD_` followed by its dotted name upper-cased with the dot
//! as an underscore: `http.listen` is `SWITCHBOARD_HTTP_LISTEN`, `data_dir` is
//! `SWITCHBOARD_DATA_DIR`.
//!
//! A bad configuration is refused as a whole, with one line per problem naming the key (or the
//! environment variable) and what is wrong with it. To name the key, each key is checked on
//! its own first: it is deserialized into its section alone, so any error can only be about
//! that key. Only then is the whole configuration deserialized.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use switchboard_core::credentials::HashCost;
use switchboard_core::model::MessagePolicy;
use switchboard_core::{Address, HubConfig, Realm};
use switchboard_web::WebConfig;

/// The prefix of every environment variable the configuration reads.
pub const ENV_PREFIX: &str = "SWITCHBOARD_";

/// Environment variables with the prefix that are not configuration keys: the file to read
/// (taken by the command line parser) and the test suite's own settings.
fn is_reserved_env(name: &str) -> bool {
    name == "SWITCHBOARD_CONFIG" || name.starts_with("SWITCHBOARD_TEST_")
}

/// The whole configuration. Top-level keys first, then one table per section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the SQLite database, the admin socket and the lock file live. Relative paths are
    /// relative to the working directory.
    #[serde(deserialize_with = "de::path")]
    pub data_dir: PathBuf,
    /// This node's name, recorded with every session it holds (for a later cluster).
    #[serde(deserialize_with = "de::node_name")]
    pub node: String,
    /// The realms (domains) served; the first one is the default for bare user names.
    #[serde(deserialize_with = "de::realms")]
    pub realms: Vec<Realm>,
    pub store: StoreConfig,
    pub http: HttpConfig,
    pub sessions: SessionsConfig,
    pub limits: LimitsConfig,
    pub auth: AuthConfig,
    pub accounts: AccountsConfig,
    pub log: LogConfig,
    pub xmpp: XmppSection,
}

/// The names of the sections, as they appear in the file. A unit test checks that this list
/// and the tables of [`Config`] agree.
const SECTIONS: &[&str] = &[
    "store", "http", "sessions", "limits", "auth", "accounts", "log", "xmpp",
];

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// A `postgres://` URL; when set, PostgreSQL is used instead of SQLite.
    #[serde(
        deserialize_with = "de::optional_text",
        skip_serializing_if = "Option::is_none"
    )]
    pub postgres_url: Option<String>,
    /// A PostgreSQL schema to keep every table in (created if missing), so that several
    /// servers or test runs can share one database; unset, the login's default schema is used.
    #[serde(
        deserialize_with = "de::schema_name",
        skip_serializing_if = "Option::is_none"
    )]
    pub postgres_schema: Option<String>,
    /// Read connections to PostgreSQL (the journal writer has its own).
    #[serde(deserialize_with = "de::pool_size")]
    pub postgres_pool: usize,
    /// `normal` survives the process being killed; `full` also survives a power loss, at the
    /// price of a disk sync per commit.
    pub sqlite_synchronous: Synchronous,
    /// Read connections to SQLite (writes have their own thread).
    #[serde(deserialize_with = "de::pool_size")]
    pub sqlite_readers: usize,
    /// Most entries committed in one journal batch (group commit).
    #[serde(deserialize_with = "de::at_least_one")]
    pub journal_batch: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    Normal,
    Full,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// The address the HTTP listener binds.
    #[serde(deserialize_with = "de::socket_addr")]
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    #[serde(deserialize_with = "de::at_least_one")]
    pub max_body_bytes: usize,
    /// Most simultaneous connections from one client address (0 = unlimited).
    #[serde(deserialize_with = "de::count")]
    pub connections_per_ip: usize,
    /// How long a long-poll request waits for an event before it answers empty.
    #[serde(
        deserialize_with = "de::positive_duration",
        serialize_with = "de::seconds"
    )]
    pub long_poll_timeout: Duration,
    /// How often an idle WebSocket is pinged.
    #[serde(
        deserialize_with = "de::positive_duration",
        serialize_with = "de::seconds"
    )]
    pub ws_ping_interval: Duration,
    /// How long a stop waits for open HTTP requests to finish before it closes them.
    #[serde(deserialize_with = "de::duration", serialize_with = "de::seconds")]
    pub shutdown_grace: Duration,
    /// Whether login cookies get the `Secure` attribute (set it when a proxy serves HTTPS).
    #[serde(deserialize_with = "de::flag")]
    pub secure_cookies: bool,
    /// Whether the client address is taken from `X-Forwarded-For` (only behind a trusted
    /// reverse proxy).
    #[serde(deserialize_with = "de::flag")]
    pub trust_forwarded_for: bool,
    /// Origins, besides the server's own, allowed to use cookie-authenticated WebSocket and
    /// long-poll requests.
    #[serde(deserialize_with = "de::origins")]
    pub allowed_origins: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsConfig {
    /// How long a session waits for its client to come back after a dropped connection.
    #[serde(
        deserialize_with = "de::positive_duration",
        serialize_with = "de::seconds"
    )]
    pub timeout: Duration,
    /// Events queued for one attached session before it is cut off as too slow (it then
    /// resumes from the store).
    #[serde(deserialize_with = "de::at_least_one")]
    pub queue: usize,
    /// Most sessions one person may hold open at once.
    #[serde(deserialize_with = "de::at_least_one")]
    pub max_per_user: usize,
    /// Most durable events replayed to a session when it attaches.
    #[serde(deserialize_with = "de::at_least_one")]
    pub max_replay: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest message body, in bytes.
    #[serde(deserialize_with = "de::at_least_one")]
    pub max_message_bytes: usize,
    /// Messages per second per account (0 = unlimited).
    #[serde(deserialize_with = "de::rate")]
    pub messages_per_second: f64,
    /// How many messages an account may send at once before the rate applies.
    #[serde(deserialize_with = "de::rate")]
    pub message_burst: f64,
    /// Login attempts per minute, per account (and ten times that per client address);
    /// 0 = unlimited.
    #[serde(deserialize_with = "de::per_minute")]
    pub login_attempts_per_minute: u32,
    /// Contact requests per minute per account (0 = unlimited).
    #[serde(deserialize_with = "de::per_minute")]
    pub contact_requests_per_minute: u32,
    /// Most members a group conversation may have.
    #[serde(deserialize_with = "de::at_least_one")]
    pub max_group_members: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// PBKDF2 iterations of new SCRAM verifiers. 4096 is RFC 7677's minimum; tests lower it
    /// to run fast.
    #[serde(deserialize_with = "de::iterations")]
    pub scram_iterations: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountsConfig {
    /// Who may start a conversation with a new account: `contacts` or `anyone`.
    #[serde(deserialize_with = "de::message_policy")]
    pub default_message_policy: MessagePolicy,
    /// Whether people may create their own accounts (`POST /api/v1/register`). Off by
    /// default: accounts are made with `switchboard user add` or by an administrator.
    #[serde(deserialize_with = "de::flag")]
    pub open_registration: bool,
    /// Accounts (full addresses, `alice@realm`) allowed to use the administration API.
    #[serde(deserialize_with = "de::addresses")]
    pub admins: Vec<Address>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` for people, `json` for log collectors.
    pub format: LogFormat,
    /// A level (`info`) or a filter (`info,switchboard_web=debug`). `RUST_LOG`, when set,
    /// takes precedence.
    #[serde(deserialize_with = "de::log_filter")]
    pub level: String,
}

/// The XMPP line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XmppSection {
    /// Whether XMPP clients are served at all.
    #[serde(deserialize_with = "de::flag")]
    pub enabled: bool,
    /// The client-to-server port (STARTTLS; TLS is required before login).
    #[serde(deserialize_with = "de::socket_addr")]
    pub listen: SocketAddr,
    /// The direct TLS port (XEP-0368); empty turns it off.
    #[serde(
        deserialize_with = "de::optional_socket_addr",
        skip_serializing_if = "Option::is_none"
    )]
    pub tls_listen: Option<SocketAddr>,
    /// PEM certificate chain for XMPP TLS. Without it (and `xmpp.private_key`), a
    /// self-signed certificate for the realms is made once and kept in the data directory.
    #[serde(
        deserialize_with = "de::optional_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub certificate: Option<PathBuf>,
    /// PEM private key of `xmpp.certificate`.
    #[serde(
        deserialize_with = "de::optional_path",
        skip_serializing_if = "Option::is_none"
    )]
    pub private_key: Option<PathBuf>,
    /// Largest stanza accepted, in bytes; a bigger one ends the stream with
    /// `policy-violation`.
    #[serde(deserialize_with = "de::stanza_bytes")]
    pub max_stanza_bytes: usize,
    /// How long a session with stream management waits to be resumed after its connection
    /// drops; what it had not acknowledged then goes back to the message cache.
    #[serde(
        deserialize_with = "de::positive_duration",
        serialize_with = "de::seconds"
    )]
    pub resume_timeout: Duration,
    /// Most simultaneous XMPP connections from one client address (0 = unlimited).
    #[serde(deserialize_with = "de::count")]
    pub connections_per_ip: usize,
    /// Stanzas per second one XMPP connection may send (0 = unlimited); past it (after a
    /// burst of 10 seconds' worth) the connection is read more slowly, never cut.
    #[serde(deserialize_with = "de::rate")]
    pub stanzas_per_second: f64,
}

impl Default for XmppSection {
    fn default() -> Self {
        let xmpp = switchboard_xmpp::XmppConfig::default();
        XmppSection {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 5222)),
            tls_listen: Some(SocketAddr::from(([127, 0, 0, 1], 5223))),
            certificate: None,
            private_key: None,
            max_stanza_bytes: xmpp.max_stanza_bytes,
            resume_timeout: xmpp.resume_timeout,
            connections_per_ip: xmpp.connections_per_ip,
            stanzas_per_second: xmpp.stanzas_per_second,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        let hub = HubConfig::default();
        Config {
            data_dir: PathBuf::from("./switchboard-data"),
            node: hub.node.clone(),
            realms: hub.realms.clone(),
            store: StoreConfig::default(),
            http: HttpConfig::default(),
            sessions: SessionsConfig::default(),
            limits: LimitsConfig::default(),
            auth: AuthConfig::default(),
            accounts: AccountsConfig::default(),
            log: LogConfig::default(),
            xmpp: XmppSection::default(),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            postgres_url: None,
            postgres_schema: None,
            postgres_pool: 8,
            sqlite_synchronous: Synchronous::Normal,
            sqlite_readers: 4,
            journal_batch: HubConfig::default().journal_batch,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        let web = WebConfig::default();
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 5280)),
            max_body_bytes: web.max_body_bytes,
            connections_per_ip: web.connections_per_ip,
            long_poll_timeout: web.long_poll_timeout,
            ws_ping_interval: web.ws_ping_interval,
            shutdown_grace: Duration::from_secs(10),
            secure_cookies: web.secure_cookies,
            trust_forwarded_for: web.trust_forwarded_for,
            allowed_origins: web.allowed_origins,
        }
    }
}

impl Default for SessionsConfig {
    fn default() -> Self {
        let hub = HubConfig::default();
        SessionsConfig {
            timeout: hub.session_timeout,
            queue: hub.session_queue,
            max_per_user: hub.max_sessions_per_user,
            max_replay: hub.max_replay,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let hub = HubConfig::default();
        LimitsConfig {
            max_message_bytes: hub.max_message_bytes,
            messages_per_second: hub.messages_per_second,
            message_burst: hub.message_burst,
            login_attempts_per_minute: hub.login_attempts_per_minute,
            contact_requests_per_minute: hub.contact_requests_per_minute,
            max_group_members: hub.max_group_members,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            scram_iterations: HashCost::default().iterations,
        }
    }
}

impl Default for AccountsConfig {
    fn default() -> Self {
        AccountsConfig {
            default_message_policy: HubConfig::default().default_message_policy,
            open_registration: false,
            admins: Vec::new(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// A refused configuration: one line per problem.
#[derive(Debug)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "config error: {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn one(problem: String) -> ConfigError {
        ConfigError {
            problems: vec![problem],
        }
    }
}

/// Where a key's value came from, to name it in an error the way the operator wrote it.
#[derive(Debug, Clone)]
enum Source {
    File(PathBuf),
    Env(String),
}

impl Config {
    /// Reads the configuration: defaults, then `file` if given, then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let file = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::one(format!("cannot read {}: {e}", path.display()))
                })?;
                Some((path.to_path_buf(), text))
            }
            None => None,
        };
        let mut env = Vec::new();
        let mut problems = Vec::new();
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with(ENV_PREFIX) || is_reserved_env(name) {
                continue;
            }
            match value.into_string() {
                Ok(value) => env.push((name.to_string(), value)),
                Err(_) => problems.push(format!("{name}: the value is not valid UTF-8")),
            }
        }
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        Config::from_sources(file.as_ref().map(|(p, t)| (p.as_path(), t.as_str())), env)
    }

    /// Builds the configuration from a file's text and `SWITCHBOARD_*` variables (the caller
    /// has filtered them by prefix). Separate from [`Config::load`] so that tests need not
    /// touch the process environment.
    pub fn from_sources(
        file: Option<(&Path, &str)>,
        env: Vec<(String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut root = toml::Table::new();
        let mut sources: HashMap<String, Source> = HashMap::new();
        if let Some((path, text)) = file {
            root = toml::from_str::<toml::Table>(text).map_err(|e| {
                ConfigError::one(format!("{}: {}", path.display(), e.to_string().trim_end()))
            })?;
            for (key, value) in &root {
                if let (true, toml::Value::Table(table)) = (SECTIONS.contains(&key.as_str()), value)
                {
                    for field in table.keys() {
                        sources.insert(format!("{key}.{field}"), Source::File(path.into()));
                    }
                } else {
                    sources.insert(key.clone(), Source::File(path.into()));
                }
            }
        }

        let kinds = default_kinds();
        let mut env = env;
        env.sort();
        for (name, text) in env {
            let (section, field) = env_key(&name);
            let path = match section {
                Some(s) => format!("{s}.{field}"),
                None => field.clone(),
            };
            let value = env_value(&text, kinds.get(&path));
            let target = match section {
                Some(s) => {
                    let entry = root
                        .entry(s.to_string())
                        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                    match entry {
                        toml::Value::Table(t) => t,
                        // The file gave the section a plain value; that is reported below.
                        _ => continue,
                    }
                }
                None => &mut root,
            };
            target.insert(field, value);
            sources.insert(path, Source::Env(name));
        }

        let name_of = |path: &str| match sources.get(path) {
            Some(Source::Env(var)) => var.clone(),
            _ => path.to_string(),
        };
        let located = |path: &str, problem: &str| match sources.get(path) {
            Some(Source::Env(var)) => format!("{var}: {problem}"),
            Some(Source::File(file)) => format!("{path}: {problem} (in {})", file.display()),
            None => format!("{path}: {problem}"),
        };

        // Each key alone, so that every error names its key.
        let mut problems = Vec::new();
        for (key, value) in &root {
            match (SECTIONS.contains(&key.as_str()), value) {
                (true, toml::Value::Table(table)) => {
                    for (field, value) in table {
                        let path = format!("{key}.{field}");
                        if let Err(problem) = check_section_key(key, field, value) {
                            problems.push(located(&path, &problem));
                        }
                    }
                }
                (true, _) => problems.push(located(
                    key,
                    &format!("expected a table ([{key}] with its keys), not a single value"),
                )),
                (false, _) => {
                    if let Err(problem) = check_key::<Config>(key, value) {
                        problems.push(located(key, &problem));
                    }
                }
            }
        }
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }

        let config: Config = toml::Value::Table(root)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::one(e.message().to_string()))?;

        // Rules that involve more than one key.
        if config.http.max_body_bytes < config.limits.max_message_bytes {
            problems.push(format!(
                "{} ({}) is smaller than {} ({}): messages that large could never be sent",
                name_of("http.max_body_bytes"),
                config.http.max_body_bytes,
                name_of("limits.max_message_bytes"),
                config.limits.max_message_bytes,
            ));
        }
        if config.xmpp.certificate.is_some() != config.xmpp.private_key.is_some() {
            problems.push(format!(
                "{} and {} go together: give both or neither",
                name_of("xmpp.certificate"),
                name_of("xmpp.private_key"),
            ));
        }
        if !problems.is_empty() {
            return Err(ConfigError { problems });
        }
        Ok(config)
    }

    pub fn default_realm(&self) -> &Realm {
        &self.realms[0]
    }

    /// The SQLite database file.
    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join("switchboard.db")
    }

    /// The running server's admin socket.
    pub fn admin_socket(&self) -> PathBuf {
        self.data_dir.join(crate::admin::SOCKET_NAME)
    }

    pub fn hub_config(&self) -> HubConfig {
        // Fields the configuration does not expose yet keep the hub's defaults.
        #[allow(clippy::needless_update)]
        HubConfig {
            node: self.node.clone(),
            realms: self.realms.clone(),
            session_timeout: self.sessions.timeout,
            session_queue: self.sessions.queue,
            max_sessions_per_user: self.sessions.max_per_user,
            max_message_bytes: self.limits.max_message_bytes,
            messages_per_second: self.limits.messages_per_second,
            message_burst: self.limits.message_burst,
            login_attempts_per_minute: self.limits.login_attempts_per_minute,
            contact_requests_per_minute: self.limits.contact_requests_per_minute,
            hash_cost: HashCost {
                iterations: self.auth.scram_iterations,
            },
            default_message_policy: self.accounts.default_message_policy,
            open_registration: self.accounts.open_registration,
            admins: self.accounts.admins.clone(),
            max_group_members: self.limits.max_group_members,
            journal_batch: self.store.journal_batch,
            max_replay: self.sessions.max_replay,
            ..HubConfig::default()
        }
    }

    pub fn web_config(&self) -> WebConfig {
        // Fields the configuration does not expose yet keep the web line's defaults.
        #[allow(clippy::needless_update)]
        WebConfig {
            max_body_bytes: self.http.max_body_bytes,
            connections_per_ip: self.http.connections_per_ip,
            long_poll_timeout: self.http.long_poll_timeout,
            ws_ping_interval: self.http.ws_ping_interval,
            secure_cookies: self.http.secure_cookies,
            allowed_origins: self.http.allowed_origins.clone(),
            trust_forwarded_for: self.http.trust_forwarded_for,
            ..WebConfig::default()
        }
    }

    pub fn xmpp_config(&self) -> switchboard_xmpp::XmppConfig {
        switchboard_xmpp::XmppConfig {
            max_stanza_bytes: self.xmpp.max_stanza_bytes,
            resume_timeout: self.xmpp.resume_timeout,
            connections_per_ip: self.xmpp.connections_per_ip,
            http_secure: self.http.secure_cookies,
            stanzas_per_second: self.xmpp.stanzas_per_second,
            stanza_burst: (self.xmpp.stanzas_per_second * 10.0).max(100.0),
            ..switchboard_xmpp::XmppConfig::default()
        }
    }

    /// The effective configuration as a TOML file would give it, for `switchboard config`.
    /// A password in the PostgreSQL URL is masked.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        shown.store.postgres_url = shown.store.postgres_url.as_deref().map(mask_password);
        toml::to_string(&shown)
            .unwrap_or_else(|e| format!("# cannot show the configuration: {e}\n"))
    }

    /// Every key with its environment variable and default.
    #[cfg(test)]
    pub fn keys() -> Vec<(String, String, String)> {
        let defaults = toml::Value::try_from(Config::default()).expect("the defaults serialize");
        let mut out = Vec::new();
        let toml::Value::Table(root) = defaults else {
            unreachable!("a struct serializes to a table")
        };
        let mut push = |path: String, value: Option<&toml::Value>| {
            let env = env_name(&path);
            let shown = value
                .map(|v| v.to_string())
                .unwrap_or_else(|| "(unset)".into());
            out.push((path, env, shown));
        };
        for (key, value) in &root {
            if !SECTIONS.contains(&key.as_str()) {
                push(key.clone(), Some(value));
            }
        }
        for section in SECTIONS {
            if let Some(toml::Value::Table(table)) = root.get(*section) {
                for (field, value) in table {
                    push(format!("{section}.{field}"), Some(value));
                }
            }
            // Keys without a default value are not serialized; name them here.
            if *section == "store" {
                push("store.postgres_url".into(), None);
                push("store.postgres_schema".into(), None);
            }
            if *section == "xmpp" {
                push("xmpp.certificate".into(), None);
                push("xmpp.private_key".into(), None);
            }
        }
        out
    }
}

/// `postgres://user:secret@host/db` becomes `postgres://user:***@host/db`.
fn mask_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let Some(at) = url[scheme_end..].rfind('@').map(|i| i + scheme_end) else {
        return url.to_string();
    };
    match url[scheme_end..at].find(':').map(|i| i + scheme_end) {
        Some(colon) => format!("{}:***{}", &url[..colon], &url[at..]),
        None => url.to_string(),
    }
}

/// The environment variable of a dotted key.
#[cfg(test)]
fn env_name(path: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        path.replace('.', "_").to_ascii_uppercase()
    )
}

/// Splits `SWITCHBOARD_HTTP_LISTEN` into (`Some("http")`, `"listen"`) and
/// `SWITCHBOARD_DATA_DIR` into (`None`, `"data_dir"`). No section name contains an
/// underscore, so the first word decides.
fn env_key(name: &str) -> (Option<&'static str>, String) {
    let rest = name[ENV_PREFIX.len()..].to_ascii_lowercase();
    for section in SECTIONS {
        if let Some(field) = rest.strip_prefix(&format!("{section}_")) {
            return (Some(section), field.to_string());
        }
    }
    (None, rest)
}

/// The TOML type of each key's default, so that an environment variable's text becomes the
/// same type a file would give (`64` a number, `true` a boolean, `a,b` a list).
fn default_kinds() -> HashMap<String, &'static str> {
    let mut kinds = HashMap::new();
    let Ok(toml::Value::Table(root)) = toml::Value::try_from(Config::default()) else {
        return kinds;
    };
    for (key, value) in root {
        match value {
            toml::Value::Table(table) if SECTIONS.contains(&key.as_str()) => {
                for (field, value) in table {
                    kinds.insert(format!("{key}.{field}"), value.type_str());
                }
            }
            other => {
                kinds.insert(key, other.type_str());
            }
        }
    }
    kinds
}

/// Turns an environment variable's text into a TOML value of the type the key expects. Text
/// that does not fit that type stays a string, so the key's own check reports it.
fn env_value(text: &str, kind: Option<&&str>) -> toml::Value {
    let trimmed = text.trim();
    match kind.copied() {
        Some("integer") => {
            if let Ok(n) = trimmed.parse::<i64>() {
                return toml::Value::Integer(n);
            }
            if let Ok(x) = trimmed.parse::<f64>() {
                return toml::Value::Float(x);
            }
        }
        Some("float") => {
            if let Ok(x) = trimmed.parse::<f64>() {
                return toml::Value::Float(x);
            }
        }
        Some("boolean") => match trimmed.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => return toml::Value::Boolean(true),
            "false" | "0" | "no" | "off" => return toml::Value::Boolean(false),
            _ => {}
        },
        Some("array") => {
            return toml::Value::Array(
                text.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_string()))
                    .collect(),
            );
        }
        _ => {}
    }
    toml::Value::String(text.to_string())
}

/// Deserializes `T` from a table holding only `key`, so that an error is about that key.
fn check_key<T: DeserializeOwned>(key: &str, value: &toml::Value) -> Result<(), String> {
    let mut table = toml::Table::new();
    table.insert(key.to_string(), value.clone());
    toml::Value::Table(table)
        .try_into::<T>()
        .map(|_| ())
        .map_err(|e| tidy(e.message()))
}

fn check_section_key(section: &str, key: &str, value: &toml::Value) -> Result<(), String> {
    match section {
        "store" => check_key::<StoreConfig>(key, value),
        "http" => check_key::<HttpConfig>(key, value),
        "sessions" => check_key::<SessionsConfig>(key, value),
        "limits" => check_key::<LimitsConfig>(key, value),
        "auth" => check_key::<AuthConfig>(key, value),
        "accounts" => check_key::<AccountsConfig>(key, value),
        "log" => check_key::<LogConfig>(key, value),
        "xmpp" => check_key::<XmppSection>(key, value),
        other => Err(format!("unknown section [{other}]")),
    }
}

/// serde's messages speak of fields and Rust types; the operator wrote keys and values.
fn tidy(message: &str) -> String {
    let message = message.trim_end();
    if let Some(rest) = message.strip_prefix("unknown field ") {
        return format!(
            "unknown key {}",
            rest.replace("expected one of", "the keys here are")
        );
    }
    message.to_string()
}

/// The deserializers of individual keys. Each checks its value's range as well as its type,
/// so that an out-of-range value is reported against its key like any other mistake.
mod de {
    use std::fmt;
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::time::Duration;

    use serde::Serializer;
    use serde::de::{self, Deserializer, SeqAccess, Visitor};
    use switchboard_core::Realm;
    use switchboard_core::model::MessagePolicy;

    /// A scalar as the file or the environment gave it.
    enum Raw {
        Int(i64),
        Float(f64),
        Bool(bool),
        Text(String),
    }

    impl fmt::Display for Raw {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Raw::Int(n) => write!(f, "{n}"),
                Raw::Float(x) => write!(f, "{x}"),
                Raw::Bool(b) => write!(f, "{b}"),
                Raw::Text(s) => write!(f, "{s:?}"),
            }
        }
    }

    struct RawVisitor;

    impl<'de> Visitor<'de> for RawVisitor {
        type Value = Raw;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a number, a boolean or a string")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw, E> {
            Ok(Raw::Int(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
            i64::try_from(v)
                .map(Raw::Int)
                .map_err(|_| E::custom(format!("{v} is too large")))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw, E> {
            Ok(Raw::Float(v))
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Raw, E> {
            Ok(Raw::Bool(v))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
            Ok(Raw::Text(v.to_string()))
        }
    }

    fn raw<'de, D: Deserializer<'de>>(d: D) -> Result<Raw, D::Error> {
        d.deserialize_any(RawVisitor)
    }

    /// A string, or a list of strings (a single string counts as a list of one).
    struct TextListVisitor;

    impl<'de> Visitor<'de> for TextListVisitor {
        type Value = Vec<String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of strings")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<String>, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<String>, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element::<String>()? {
                out.push(item);
            }
            Ok(out)
        }
    }

    fn whole<'de, D: Deserializer<'de>>(d: D, min: i64, max: i64) -> Result<i64, D::Error> {
        match raw(d)? {
            Raw::Int(n) if (min..=max).contains(&n) => Ok(n),
            Raw::Int(n) => Err(de::Error::custom(format!(
                "{n} is out of range (expected a whole number from {min} to {max})"
            ))),
            other => Err(de::Error::custom(format!(
                "{other} is not a whole number (expected {min} to {max})"
            ))),
        }
    }

    /// Values that count something and can be zero (meaning unlimited where documented).
    pub fn count<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        whole(d, 0, u32::MAX as i64).map(|n| n as usize)
    }

    pub fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        whole(d, 1, u32::MAX as i64).map(|n| n as usize)
    }

    pub fn pool_size<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        whole(d, 1, 256).map(|n| n as usize)
    }

    pub fn per_minute<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        whole(d, 0, u32::MAX as i64).map(|n| n as u32)
    }

    pub fn iterations<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        whole(d, 1, 10_000_000).map(|n| n as u32)
    }

    /// A rate or a burst: a number of zero or more, whole or not.
    pub fn rate<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        let x = match raw(d)? {
            Raw::Int(n) => n as f64,
            Raw::Float(x) => x,
            other => {
                return Err(de::Error::custom(format!("{other} is not a number")));
            }
        };
        if x.is_finite() && x >= 0.0 {
            Ok(x)
        } else {
            Err(de::Error::custom(format!(
                "{x} is out of range (expected zero or more)"
            )))
        }
    }

    pub fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        match raw(d)? {
            Raw::Bool(b) => Ok(b),
            other => Err(de::Error::custom(format!("{other} is not true or false"))),
        }
    }

    const DURATION_HELP: &str =
        "give whole seconds, e.g. 300, or a number with a unit: 500ms, 30s, 5m, 1h";

    fn parse_duration(text: &str) -> Option<Duration> {
        let text = text.trim();
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: f64 = number.parse().ok()?;
        let seconds = match unit.trim() {
            "" | "s" => number,
            "ms" => number / 1000.0,
            "m" | "min" => number * 60.0,
            "h" => number * 3600.0,
            _ => return None,
        };
        Duration::try_from_secs_f64(seconds).ok()
    }

    pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let value = raw(d)?;
        let parsed = match &value {
            Raw::Int(n) if *n >= 0 => Some(Duration::from_secs(*n as u64)),
            Raw::Float(x) => Duration::try_from_secs_f64(*x).ok(),
            Raw::Text(s) => parse_duration(s),
            _ => None,
        };
        parsed.ok_or_else(|| {
            de::Error::custom(format!("{value} is not a duration ({DURATION_HELP})"))
        })
    }

    pub fn positive_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let value = duration(d)?;
        if value.is_zero() {
            return Err(de::Error::custom("must be longer than zero"));
        }
        Ok(value)
    }

    /// Durations are written back as whole seconds, the form the file takes.
    pub fn seconds<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(value.as_secs())
    }

    pub fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        match raw(d)? {
            Raw::Text(s) => s.trim().parse().map_err(|_| {
                de::Error::custom(format!(
                    "{s:?} is not a socket address (expected an IP address and a port, \
                     e.g. 127.0.0.1:5280 or [::1]:5280)"
                ))
            }),
            other => Err(de::Error::custom(format!(
                "{other} is not a socket address (expected a string such as \"127.0.0.1:5280\")"
            ))),
        }
    }

    /// A socket address where an empty string turns the listener off.
    pub fn optional_socket_addr<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SocketAddr>, D::Error> {
        match raw(d)? {
            Raw::Text(s) if s.trim().is_empty() => Ok(None),
            Raw::Text(s) => s.trim().parse().map(Some).map_err(|_| {
                de::Error::custom(format!(
                    "{s:?} is not a socket address (expected an IP address and a port, \
                     e.g. 127.0.0.1:5223, or an empty string to turn it off)"
                ))
            }),
            other => Err(de::Error::custom(format!(
                "{other} is not a socket address"
            ))),
        }
    }

    /// A path where an empty string means "not set".
    pub fn optional_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        match raw(d)? {
            Raw::Text(s) if s.trim().is_empty() => Ok(None),
            Raw::Text(s) => Ok(Some(PathBuf::from(s.trim()))),
            other => Err(de::Error::custom(format!("{other} is not a path"))),
        }
    }

    /// Largest stanza: at least 4 KiB (smaller would refuse ordinary stream negotiation).
    pub fn stanza_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
        let n = count(d)?;
        if n < 4096 {
            return Err(de::Error::custom(format!(
                "{n} is too small for a stanza limit (the least is 4096 bytes)"
            )));
        }
        Ok(n)
    }

    pub fn path<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        match raw(d)? {
            Raw::Text(s) if !s.trim().is_empty() => Ok(PathBuf::from(s)),
            Raw::Text(_) => Err(de::Error::custom("the path is empty")),
            other => Err(de::Error::custom(format!("{other} is not a path"))),
        }
    }

    /// A string where an empty one means "not set" (so that an environment variable can
    /// unset what the file set).
    pub fn optional_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        match raw(d)? {
            Raw::Text(s) if s.trim().is_empty() => Ok(None),
            Raw::Text(s) => Ok(Some(s.trim().to_string())),
            other => Err(de::Error::custom(format!("{other} is not a string"))),
        }
    }

    pub fn schema_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        match raw(d)? {
            Raw::Text(s) if s.trim().is_empty() => Ok(None),
            Raw::Text(s)
                if s.len() <= 63
                    && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                    && s.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') =>
            {
                Ok(Some(s))
            }
            other => Err(de::Error::custom(format!(
                "{other} is not a schema name (up to 63 lower-case letters, digits and '_', \
                 not starting with a digit)"
            ))),
        }
    }

    pub fn node_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        match raw(d)? {
            Raw::Text(s)
                if !s.is_empty()
                    && s.len() <= 64
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) =>
            {
                Ok(s)
            }
            other => Err(de::Error::custom(format!(
                "{other} is not a node name (1 to 64 letters, digits, '-', '_' or '.')"
            ))),
        }
    }

    pub fn realms<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Realm>, D::Error> {
        let texts = d.deserialize_any(TextListVisitor)?;
        if texts.is_empty() {
            return Err(de::Error::custom(
                "at least one realm is needed (the first is the default)",
            ));
        }
        let mut realms: Vec<Realm> = Vec::new();
        for text in texts {
            let realm = Realm::parse(text.trim())
                .map_err(|e| de::Error::custom(format!("{text:?} is not a valid realm: {e}")))?;
            if realms.contains(&realm) {
                return Err(de::Error::custom(format!(
                    "the realm {realm} is listed twice"
                )));
            }
            realms.push(realm);
        }
        Ok(realms)
    }

    pub fn origins<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        let texts = d.deserialize_any(TextListVisitor)?;
        let mut out = Vec::new();
        for text in texts {
            let origin = text.trim().trim_end_matches('/');
            let host = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            match host {
                Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', ' ']) => {
                    out.push(origin.to_ascii_lowercase())
                }
                _ => {
                    return Err(de::Error::custom(format!(
                        "{text:?} is not an origin (expected a scheme and a host, \
                         e.g. https://chat.example.org)"
                    )));
                }
            }
        }
        Ok(out)
    }

    pub fn message_policy<'de, D: Deserializer<'de>>(d: D) -> Result<MessagePolicy, D::Error> {
        match raw(d)? {
            Raw::Text(s) => MessagePolicy::parse(s.trim()).ok_or_else(|| {
                de::Error::custom(format!(
                    "{s:?} is not a message policy (expected \"contacts\" or \"anyone\")"
                ))
            }),
            other => Err(de::Error::custom(format!(
                "{other} is not a message policy (expected \"contacts\" or \"anyone\")"
            ))),
        }
    }

    /// Full addresses (`alice@example.org`): a bare name would depend on the realm order.
    pub fn addresses<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<super::Address>, D::Error> {
        let texts = d.deserialize_any(TextListVisitor)?;
        texts
            .iter()
            .filter(|t| !t.trim().is_empty())
            .map(|text| {
                super::Address::parse_full(text.trim()).map_err(|e| {
                    de::Error::custom(format!(
                        "{text:?} is not a full address such as \"alice@example.org\": {e}"
                    ))
                })
            })
            .collect()
    }

    pub fn log_filter<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        match raw(d)? {
            Raw::Text(s) => match tracing_subscriber::EnvFilter::builder().parse(s.trim()) {
                Ok(_) => Ok(s.trim().to_string()),
                Err(e) => Err(de::Error::custom(format!(
                    "{s:?} is not a log level or filter ({e}); \
                     expected e.g. \"info\" or \"info,switchboard_web=debug\""
                ))),
            },
            other => Err(de::Error::custom(format!(
                "{other} is not a log level (expected e.g. \"info\")"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(file: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let file = (!file.is_empty()).then_some((Path::new("switchboard.toml"), file));
        Config::from_sources(file, env)
    }

    fn refused(file: &str, env: &[(&str, &str)]) -> String {
        match from(file, env) {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn nothing_configured_gives_the_documented_defaults() {
        let c = from("", &[]).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("./switchboard-data"));
        assert_eq!(
            c.sqlite_path(),
            PathBuf::from("./switchboard-data/switchboard.db")
        );
        assert_eq!(c.store.postgres_url, None);
        assert_eq!(c.http.listen, "127.0.0.1:5280".parse().unwrap());
        assert_eq!(c.default_realm().as_str(), "localhost");
        assert_eq!(c.sessions.timeout, Duration::from_secs(300));
        assert_eq!(c.limits.max_message_bytes, 64 * 1024);
        assert_eq!(c.auth.scram_iterations, 4096);
        assert_eq!(c.accounts.default_message_policy, MessagePolicy::Contacts);
        assert!(!c.accounts.open_registration);
        assert_eq!(c.store.sqlite_synchronous, Synchronous::Normal);
        assert_eq!(c.log.format, LogFormat::Text);
    }

    #[test]
    fn the_file_overrides_defaults_and_the_environment_overrides_the_file() {
        let file = r#"
            data_dir = "/srv/sb"
            realms = ["example.org", "Example.NET"]
            [http]
            listen = "0.0.0.0:8080"
            long_poll_timeout = "1m"
            [limits]
            messages_per_second = 5
        "#;
        let c = from(
            file,
            &[
                ("SWITCHBOARD_HTTP_LISTEN", "127.0.0.1:6000"),
                ("SWITCHBOARD_LIMITS_MESSAGE_BURST", "7.5"),
                ("SWITCHBOARD_AUTH_SCRAM_ITERATIONS", "64"),
                (
                    "SWITCHBOARD_STORE_POSTGRES_URL",
                    "postgres://postgres@127.0.0.1/test",
                ),
                ("SWITCHBOARD_HTTP_SECURE_COOKIES", "yes"),
                ("SWITCHBOARD_LOG_FORMAT", "json"),
            ],
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/srv/sb"));
        let realms: Vec<_> = c.realms.iter().map(|r| r.as_str()).collect();
        assert_eq!(realms, ["example.org", "example.net"]);
        assert_eq!(c.http.listen, "127.0.0.1:6000".parse().unwrap());
        assert_eq!(c.http.long_poll_timeout, Duration::from_secs(60));
        assert_eq!(c.limits.messages_per_second, 5.0);
        assert_eq!(c.limits.message_burst, 7.5);
        assert_eq!(c.auth.scram_iterations, 64);
        assert_eq!(c.hub_config().hash_cost.iterations, 64);
        assert!(c.web_config().secure_cookies);
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(
            c.store.postgres_url.as_deref(),
            Some("postgres://postgres@127.0.0.1/test")
        );
    }

    #[test]
    fn lists_and_durations_from_the_environment() {
        let c = from(
            "",
            &[
                ("SWITCHBOARD_REALMS", "example.org, localhost"),
                ("SWITCHBOARD_SESSIONS_TIMEOUT", "90"),
                ("SWITCHBOARD_HTTP_WS_PING_INTERVAL", "500ms"),
                (
                    "SWITCHBOARD_HTTP_ALLOWED_ORIGINS",
                    "https://a.example,http://b.example:8080",
                ),
            ],
        )
        .unwrap();
        assert_eq!(c.default_realm().as_str(), "example.org");
        assert_eq!(c.realms.len(), 2);
        assert_eq!(c.sessions.timeout, Duration::from_secs(90));
        assert_eq!(c.http.ws_ping_interval, Duration::from_millis(500));
        assert_eq!(c.http.allowed_origins.len(), 2);
    }

    #[test]
    fn an_empty_postgres_url_in_the_environment_unsets_the_file_s() {
        let c = from(
            "[store]\npostgres_url = \"postgres://x@y/z\"\n",
            &[("SWITCHBOARD_STORE_POSTGRES_URL", "")],
        )
        .unwrap();
        assert_eq!(c.store.postgres_url, None);
    }

    #[test]
    fn a_bad_value_is_refused_naming_the_key() {
        let e = refused("[http]\nlisten = \"abc\"\n", &[]);
        assert!(
            e.starts_with("config error: http.listen: \"abc\" is not a socket address"),
            "{e}"
        );
        assert!(e.contains("switchboard.toml"), "{e}");
    }

    #[test]
    fn an_unknown_key_is_refused_naming_it() {
        let e = refused("[http]\nlisen = \"127.0.0.1:1\"\n", &[]);
        assert!(e.contains("http.lisen: unknown key `lisen`"), "{e}");
        assert!(e.contains("`listen`"), "the known keys are listed: {e}");
        let e = refused("colour = \"blue\"\n", &[]);
        assert!(e.contains("colour: unknown key"), "{e}");
        let e = refused("[htp]\nlisten = 1\n", &[]);
        assert!(e.contains("htp: unknown key"), "{e}");
    }

    #[test]
    fn a_bad_environment_variable_is_refused_naming_it() {
        let e = refused("", &[("SWITCHBOARD_HTTP_LISTEN", "abc")]);
        assert!(
            e.starts_with("config error: SWITCHBOARD_HTTP_LISTEN: \"abc\" is not a socket address"),
            "{e}"
        );
        let e = refused("", &[("SWITCHBOARD_AUTH_SCRAM_ITERATIONS", "many")]);
        assert!(
            e.contains("SWITCHBOARD_AUTH_SCRAM_ITERATIONS: \"many\" is not a whole number"),
            "{e}"
        );
        let e = refused("", &[("SWITCHBOARD_HTTP_LISN", "127.0.0.1:1")]);
        assert!(
            e.contains("SWITCHBOARD_HTTP_LISN: unknown key `lisn`"),
            "{e}"
        );
        let e = refused("", &[("SWITCHBOARD_LIMITS_MESSAGES_PER_SECOND", "-1")]);
        assert!(
            e.contains("SWITCHBOARD_LIMITS_MESSAGES_PER_SECOND: -1 is out of range"),
            "{e}"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let e = refused(
            "[http]\nlisten = 5\n[sessions]\ntimeout = \"soon\"\n",
            &[("SWITCHBOARD_REALMS", "")],
        );
        assert_eq!(e.lines().count(), 3, "{e}");
        assert!(e.contains("http.listen"), "{e}");
        assert!(
            e.contains("sessions.timeout: \"soon\" is not a duration"),
            "{e}"
        );
        assert!(e.contains("SWITCHBOARD_REALMS: at least one realm"), "{e}");
    }

    #[test]
    fn ranges_and_rules_are_checked() {
        for (file, key) in [
            ("realms = [\"not a realm\"]", "realms"),
            ("realms = [\"a.org\", \"A.org\"]", "realms"),
            ("node = \"\"", "node"),
            ("data_dir = \"\"", "data_dir"),
            (
                "[store]\nsqlite_synchronous = \"fast\"",
                "store.sqlite_synchronous",
            ),
            ("[store]\npostgres_pool = 0", "store.postgres_pool"),
            (
                "[store]\npostgres_schema = \"Bad-Name\"",
                "store.postgres_schema",
            ),
            ("[sessions]\ntimeout = 0", "sessions.timeout"),
            ("[sessions]\nqueue = 0", "sessions.queue"),
            ("[auth]\nscram_iterations = 0", "auth.scram_iterations"),
            (
                "[accounts]\ndefault_message_policy = \"friends\"",
                "accounts.default_message_policy",
            ),
            (
                "[accounts]\nopen_registration = \"maybe\"",
                "accounts.open_registration",
            ),
            ("[accounts]\nadmins = [\"root\"]", "accounts.admins"),
            (
                "[http]\nallowed_origins = [\"example.org\"]",
                "http.allowed_origins",
            ),
            ("[http]\nsecure_cookies = \"maybe\"", "http.secure_cookies"),
            ("[log]\nformat = \"xml\"", "log.format"),
            ("[log]\nlevel = \"switchboard=loud\"", "log.level"),
            ("http = 5", "http"),
        ] {
            let e = refused(file, &[]);
            assert!(
                e.starts_with(&format!("config error: {key}: ")),
                "{file} gave {e}"
            );
        }
        let e = refused("[http]\nmax_body_bytes = 1000\n", &[]);
        assert!(
            e.contains("http.max_body_bytes (1000) is smaller than limits.max_message_bytes"),
            "{e}"
        );
    }

    #[test]
    fn a_syntax_error_names_the_file_and_line() {
        let e = refused("[http\nlisten = 1\n", &[]);
        assert!(
            e.starts_with("config error: switchboard.toml: TOML parse error at line 1"),
            "{e}"
        );
    }

    #[test]
    fn the_shown_configuration_reads_back_and_hides_the_password() {
        let c = from(
            "realms = [\"example.org\"]\n[store]\npostgres_url = \"postgres://u:secret@h/db\"\n",
            &[],
        )
        .unwrap();
        let shown = c.to_toml();
        assert!(shown.contains("postgres://u:***@h/db"), "{shown}");
        assert!(!shown.contains("secret"), "{shown}");
        let again = from(&shown, &[]).unwrap();
        assert_eq!(again.default_realm().as_str(), "example.org");
        assert_eq!(mask_password("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(mask_password("host=h user=u"), "host=h user=u");
    }

    #[test]
    fn reserved_variables_are_not_keys() {
        assert!(is_reserved_env("SWITCHBOARD_CONFIG"));
        assert!(is_reserved_env("SWITCHBOARD_TEST_POSTGRES_URL"));
        assert!(!is_reserved_env("SWITCHBOARD_HTTP_LISTEN"));
    }

    /// Every section of the struct is in SECTIONS, and every key can be set through its
    /// environment variable with its default's text.
    #[test]
    fn every_key_has_a_working_environment_variable() {
        let keys = Config::keys();
        assert!(keys.len() > 25, "{keys:?}");
        let Ok(toml::Value::Table(root)) = toml::Value::try_from(Config::default()) else {
            panic!("the defaults serialize to a table");
        };
        for (key, value) in &root {
            assert_eq!(
                value.is_table(),
                SECTIONS.contains(&key.as_str()),
                "{key} and SECTIONS disagree"
            );
        }
        for (path, env, default) in keys {
            assert_eq!(env, env_name(&path));
            let text = match default.as_str() {
                "(unset)" => String::new(),
                d => d.trim_matches('"').replace(['[', ']', '"'], ""),
            };
            from("", &[(&env, &text)]).unwrap_or_else(|e| panic!("{env}={text}: {e}"));
        }
    }
}
