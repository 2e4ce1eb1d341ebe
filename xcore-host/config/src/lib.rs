//! `xcore.yaml`: the host configuration.
//!
//! Resolution order: `.env` (never overriding the real environment) -> YAML parsed to a
//! value tree -> `${VAR}` / `${VAR:-default}` substituted inside string scalars only (a
//! variable cannot inject YAML structure) -> `XCORE__SECTION__KEY=value` overrides ->
//! typed deserialization (errors name file, key path and expected type; unknown keys are
//! warnings) -> validation.
//!
//! Scalar fields are lenient about strings: `port: "9000"` (what `${PORT}` yields) is read
//! as a number and `admin_token: 12345` as text, so substitution and overrides work for
//! every field without guessing types in the value tree.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_yaml_ng::{Mapping, Value};

use xcore_manifest::substitute_vars;
use xcore_security::RequireSignatures;

use crate::logging::LoggingConfig;
use xcore_manifest::lenient;

pub mod logging;
use xcore_runtime::sandbox::config::SandboxConfig;

/// File read by [`load`] when no path is given (relative to the current directory).
pub const DEFAULT_FILE: &str = "xcore.yaml";
/// Prefix of environment overrides: `XCORE__SERVER__PORT=9000` sets `server.port`.
pub const ENV_PREFIX: &str = "XCORE__";
/// Replacement text of secrets in [`Config::to_masked_yaml`].
pub const MASK: &str = "***";

/// The whole host configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// HTTP server.
    pub server: ServerConfig,
    /// Plugin folders.
    pub plugins: PluginsConfig,
    /// Log output.
    pub logging: LoggingConfig,
    /// Sandboxed workers.
    pub sandbox: SandboxConfig,
    /// Plugin signatures.
    pub security: SecurityConfig,
    /// The cache service.
    pub cache: xcore_services::cache::CacheConfig,
    /// Named databases; `default` is an SQLite file under `data/` unless configured.
    #[serde(default = "default_databases")]
    pub databases: std::collections::BTreeMap<String, xcore_db::DatabaseConfig>,
    /// Cron jobs.
    pub scheduler: xcore_services::scheduler::SchedulerConfig,
    /// Bounds of the event system (subscriptions, detached emits).
    pub events: xcore_services::events::EventsConfig,
    /// The plugins' key-value store (its quota).
    pub kv: xcore_db::store::kv::KvConfig,
    /// How long `job_runs` and `audit_log` rows are kept.
    pub retention: xcore_db::store::retention::RetentionConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig::default(),
            plugins: PluginsConfig::default(),
            logging: LoggingConfig::default(),
            sandbox: SandboxConfig::default(),
            security: SecurityConfig::default(),
            cache: xcore_services::cache::CacheConfig::default(),
            databases: default_databases(),
            scheduler: xcore_services::scheduler::SchedulerConfig::default(),
            events: xcore_services::events::EventsConfig::default(),
            kv: xcore_db::store::kv::KvConfig::default(),
            retention: xcore_db::store::retention::RetentionConfig::default(),
        }
    }
}

fn default_databases() -> std::collections::BTreeMap<String, xcore_db::DatabaseConfig> {
    [("default".to_string(), xcore_db::DatabaseConfig::default())].into()
}

impl Config {
    /// The databases in effect: `DATABASE_URL`, when set, replaces the `default` one's URL.
    pub fn effective_databases(&self) -> std::collections::BTreeMap<String, xcore_db::DatabaseConfig> {
        let mut dbs = self.databases.clone();
        if let Some(url) = std::env::var("DATABASE_URL").ok().filter(|u| !u.trim().is_empty()) {
            dbs.entry("default".into()).or_default().url = url;
        }
        dbs
    }
}

/// Plugin signature settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SecurityConfig {
    /// Public keys (PEM) whose signatures are trusted.
    pub trusted_keys: Vec<PathBuf>,
    /// A folder whose `*.pub` files are all trusted keys (default `keys/trusted`, where
    /// `xcore keys trust` puts them; a folder of its own, not beside the private keys
    /// `xcore keys generate` writes to `keys/`); a missing folder trusts nothing.
    #[serde(deserialize_with = "lenient::path")]
    pub trusted_keys_dir: PathBuf,
    /// `none`, `trusted` (default) or `all`.
    pub require_signatures: RequireSignatures,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            trusted_keys: Vec::new(),
            trusted_keys_dir: PathBuf::from("keys/trusted"),
            require_signatures: RequireSignatures::Trusted,
        }
    }
}

impl SecurityConfig {
    /// Every trusted key file: the listed ones, then the folder's `*.pub`, sorted.
    pub fn trusted_key_files(&self) -> Vec<PathBuf> {
        let mut files = self.trusted_keys.clone();
        if let Ok(entries) = std::fs::read_dir(&self.trusted_keys_dir) {
            let mut found: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "pub"))
                .collect();
            found.sort();
            files.extend(found);
        }
        files
    }
}

/// HTTP server settings.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Listen address (default `127.0.0.1`).
    #[serde(deserialize_with = "lenient::string")]
    pub host: String,
    /// Listen port (default 8080; 0 picks a free port).
    #[serde(deserialize_with = "lenient::parse")]
    pub port: u16,
    /// Worker threads; 0 means one per CPU (resolved by the server).
    #[serde(deserialize_with = "lenient::parse")]
    pub workers: usize,
    /// Largest accepted request body in bytes (default 1 MiB).
    #[serde(deserialize_with = "lenient::parse")]
    pub body_limit_bytes: usize,
    /// Time allowed to receive a whole request body, from the first read, in ms
    /// (default 10 000). A body still arriving then is answered 408 `body_timeout`.
    #[serde(deserialize_with = "lenient::parse")]
    pub body_timeout_ms: u64,
    /// Bearer token of the control API. `None` (or empty) lets the server generate one.
    /// Secret: hidden from `Debug` and [`Config::to_masked_yaml`].
    #[serde(deserialize_with = "lenient::opt_string")]
    pub admin_token: Option<String>,
    /// Grace period for in-flight requests and plugin shutdown.
    #[serde(deserialize_with = "lenient::parse")]
    pub shutdown_timeout_seconds: u64,
    /// The header that names the client when the host sits behind a proxy (e.g.
    /// `x-forwarded-for`; its last comma-separated entry counts). `None`: the peer
    /// address. Used by the per-client rate limit (`resources.rate_limit.per_client`).
    #[serde(deserialize_with = "lenient::opt_string")]
    pub client_ip_header: Option<String>,
    /// Event streams (`GET /api/v1/stream`) open at once (default 32); one more is 503
    /// `too_many_streams`. 0 turns the stream off.
    #[serde(deserialize_with = "lenient::parse")]
    pub max_streams: usize,
    /// TLS for the control API: both `server.tls.cert` and `server.tls.key`, or neither
    /// (plain HTTP).
    pub tls: TlsConfig,
}

/// `server.tls`: PEM files for serving the control API over TLS (rustls: TLS 1.2 and
/// 1.3). The key is read once at start; it is never logged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain (PEM), leaf first.
    #[serde(deserialize_with = "lenient::opt_string")]
    pub cert: Option<String>,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[serde(deserialize_with = "lenient::opt_string")]
    pub key: Option<String>,
}

impl TlsConfig {
    /// The two files when TLS is on.
    pub fn files(&self) -> Option<(PathBuf, PathBuf)> {
        match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
            _ => None,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "127.0.0.1".to_string(),
            port: 8080,
            workers: 0,
            body_limit_bytes: 1024 * 1024,
            body_timeout_ms: 10_000,
            admin_token: None,
            shutdown_timeout_seconds: 10,
            client_ip_header: None,
            max_streams: 32,
            tls: TlsConfig::default(),
        }
    }
}

// By hand so that the admin token never reaches a log line through `{:?}`.
impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("workers", &self.workers)
            .field("body_limit_bytes", &self.body_limit_bytes)
            .field("body_timeout_ms", &self.body_timeout_ms)
            .field("admin_token", &self.admin_token.as_ref().map(|_| MASK))
            .field("shutdown_timeout_seconds", &self.shutdown_timeout_seconds)
            .field("client_ip_header", &self.client_ip_header)
            .field("max_streams", &self.max_streams)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Where plugins live and where the host keeps its run-time files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PluginsConfig {
    /// Folder scanned for plugin folders (default `plugins`).
    #[serde(deserialize_with = "lenient::path")]
    pub directory: PathBuf,
    /// Loaded library copies and the generated admin token (default `runtime`).
    #[serde(deserialize_with = "lenient::path")]
    pub runtime_dir: PathBuf,
    /// Watch the plugins folder and load, reload or unload plugins as their files change
    /// (default `true`).
    #[serde(deserialize_with = "lenient::parse")]
    pub watch: bool,
    /// How long file events settle before the watcher acts, in ms (default 200).
    #[serde(deserialize_with = "lenient::parse")]
    pub debounce_ms: u64,
    /// How long a call may wait for a free worker (trusted) or call slot (sandboxed)
    /// before it is answered 503 `overloaded`, in ms (default 1000); a manifest's
    /// `resources.queue_timeout_ms` overrides it. The call's `timeout_ms` starts after.
    #[serde(deserialize_with = "lenient::parse")]
    pub queue_timeout_ms: u64,
    /// Threads a trusted plugin may leave stuck in calls past their deadline and still
    /// be restarted in-process (default 3); past it the plugin is `failed`.
    #[serde(deserialize_with = "lenient::parse")]
    pub max_abandoned_threads: u64,
    /// Clients tracked per plugin by the per-client rate limit (default 10000); clients
    /// beyond it share one window.
    #[serde(deserialize_with = "lenient::parse")]
    pub rate_limit_max_clients: usize,
    /// Log lines per second (burst as many) one trusted plugin instance may write to the
    /// host's log (default 200, at least 1); the excess is dropped, counted and reported.
    /// Sandboxed workers have `sandbox.log_lines_per_second`.
    #[serde(deserialize_with = "lenient::parse")]
    pub log_lines_per_second: u32,
    /// Longest log line of a trusted plugin, in bytes (default 16384, at least 80); the
    /// rest is cut and the cut counted.
    #[serde(deserialize_with = "lenient::parse")]
    pub log_line_max_bytes: usize,
    /// What the operator allows each plugin (`plugins.grants.<name>: [kv, cache,
    /// "db:bookmarks"]`). An unsigned plugin's effective permissions are those its
    /// manifest asks for that are granted here; a plugin signed by a trusted key has the
    /// permissions of its signed manifest. Default: none.
    pub grants: std::collections::BTreeMap<String, Vec<String>>,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            directory: PathBuf::from("plugins"),
            runtime_dir: PathBuf::from("runtime"),
            watch: true,
            debounce_ms: 200,
            queue_timeout_ms: 1000,
            max_abandoned_threads: 3,
            rate_limit_max_clients: 10_000,
            log_lines_per_second: 200,
            log_line_max_bytes: 16 << 10,
            grants: Default::default(),
        }
    }
}

/// A configuration plus where it came from and the non-fatal findings.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The effective configuration.
    pub config: Config,
    /// Unknown keys and ignored overrides, each naming the file and key.
    pub warnings: Vec<String>,
    /// The YAML file read, or `None` when only defaults (and the environment) were used.
    pub source: Option<PathBuf>,
}

/// Why the configuration could not be loaded. Messages name the file and key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An explicitly given configuration file does not exist.
    #[error("{}: configuration file not found", .path.display())]
    NotFound {
        /// The missing file.
        path: PathBuf,
    },
    /// A file exists but could not be read.
    #[error("{}: cannot read: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `.env` is malformed.
    #[error("{}{}: {message}", .path.display(), .line.map(|l| format!(":{l}")).unwrap_or_default())]
    DotEnv {
        /// The `.env` file.
        path: PathBuf,
        /// 1-based line, when it could be located.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// The YAML text does not parse.
    #[error("{file}: YAML syntax error: {message}")]
    Syntax {
        /// The file (display form).
        file: String,
        /// Parser message, with line and column.
        message: String,
    },
    /// A key has the wrong type, an undefined variable, or breaks a rule.
    #[error("{file}: {key}: {message}")]
    Invalid {
        /// The file (display form), or `(defaults)` when no file was read.
        file: String,
        /// Dotted key path, e.g. `server.port`.
        key: String,
        /// What was expected (and which variable the value came from, if any).
        message: String,
    },
}

impl Config {
    /// The effective configuration as YAML, with every secret replaced by `"***"`:
    /// `admin_token`, any key containing `token`, `password` or `secret`, and the
    /// password part of `scheme://user:password@host` URLs.
    pub fn to_masked_yaml(&self) -> String {
        let mut value = match serde_yaml_ng::to_value(self) {
            Ok(v) => v,
            Err(e) => return format!("# cannot render the configuration: {e}\n"),
        };
        mask_secrets(&mut value);
        serde_yaml_ng::to_string(&value)
            .unwrap_or_else(|e| format!("# cannot render the configuration: {e}\n"))
    }
}

/// Loads the configuration: `.env` from the current directory first (if present), then
/// `path` or, when `None`, `./xcore.yaml` if it exists (else pure defaults), then the
/// process environment (`${VAR}` and `XCORE__*` overrides).
///
/// Call it before starting other threads (e.g. the tokio runtime): loading `.env` sets
/// process environment variables, which is not thread-safe with C code reading them.
pub fn load(path: Option<&Path>) -> Result<LoadedConfig, ConfigError> {
    load_dotenv(Path::new(".env"))?;
    let vars: BTreeMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    load_with_vars(path, Path::new(DEFAULT_FILE), &vars)
}

/// Loads `path` into the process environment without overriding variables already set.
/// Returns whether the file existed. A malformed file is an error naming file and line;
/// nothing is set in that case.
pub fn load_dotenv(path: &Path) -> Result<bool, ConfigError> {
    let content = match std::fs::read_to_string(path) {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => return Err(ConfigError::Io { path: path.to_path_buf(), source }),
    };
    let content = content.strip_prefix('\u{feff}').unwrap_or(&content);
    // Parse everything before setting anything, so a bad line leaves the env untouched.
    let mut pairs = Vec::new();
    for item in dotenvy::from_read_iter(content.as_bytes()) {
        match item {
            Ok(pair) => pairs.push(pair),
            Err(dotenvy::Error::LineParse(text, index)) => {
                let first = text.lines().next().unwrap_or("");
                let line = content.lines().position(|l| l == first).map(|i| i + 1);
                return Err(ConfigError::DotEnv {
                    path: path.to_path_buf(),
                    line,
                    message: format!("cannot parse {text:?} (at character {index})"),
                });
            }
            Err(e) => {
                return Err(ConfigError::DotEnv {
                    path: path.to_path_buf(),
                    line: None,
                    message: e.to_string(),
                })
            }
        }
    }
    for (key, value) in pairs {
        // First occurrence wins, and the real environment wins over the file.
        if std::env::var_os(&key).is_none() {
            std::env::set_var(&key, value);
        }
    }
    Ok(true)
}

/// [`load`] without `.env` and with an explicit environment (tests, `config check`).
/// `default_file` is used when `path` is `None` and it exists.
pub fn load_with_vars(
    path: Option<&Path>,
    default_file: &Path,
    vars: &BTreeMap<String, String>,
) -> Result<LoadedConfig, ConfigError> {
    let (source, text) = match path {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => (Some(p.to_path_buf()), t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::NotFound { path: p.to_path_buf() })
            }
            Err(source) => return Err(ConfigError::Io { path: p.to_path_buf(), source }),
        },
        None => match std::fs::read_to_string(default_file) {
            Ok(t) => (Some(default_file.to_path_buf()), t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, String::new()),
            Err(source) => return Err(ConfigError::Io { path: default_file.to_path_buf(), source }),
        },
    };
    let label = source.as_ref().map_or_else(|| "(defaults)".to_string(), |p| p.display().to_string());
    let (config, warnings) = parse_with_vars(&label, &text, vars)?;
    Ok(LoadedConfig { config, warnings, source })
}

/// Parses configuration text; `file` is only used in messages.
pub fn parse_with_vars(
    file: &str,
    yaml: &str,
    vars: &BTreeMap<String, String>,
) -> Result<(Config, Vec<String>), ConfigError> {
    let invalid = |key: &str, message: String| ConfigError::Invalid {
        file: file.to_string(),
        key: key.to_string(),
        message,
    };
    let mut root: Value = serde_yaml_ng::from_str(yaml)
        .map_err(|e| ConfigError::Syntax { file: file.to_string(), message: e.to_string() })?;
    if root.is_null() {
        root = Value::Mapping(Mapping::new());
    }
    if !root.is_mapping() {
        return Err(invalid("(top level)", "expected a mapping of sections".to_string()));
    }

    // Where a value came from, by key path, to explain type errors.
    let mut origin: BTreeMap<String, String> = BTreeMap::new();
    let lookup = |name: &str| vars.get(name).cloned();
    substitute_strings(&mut root, &mut String::new(), &lookup, &mut origin)
        .map_err(|(key, message)| invalid(&key, message))?;

    let mut warnings = Vec::new();
    for (name, raw) in vars.iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)) {
        let segments: Vec<String> = name[ENV_PREFIX.len()..].split("__").map(str::to_lowercase).collect();
        if segments.iter().any(String::is_empty) {
            warnings.push(format!("{name}: ignored (empty key segment; use XCORE__SECTION__KEY)"));
            continue;
        }
        let key = segments.join(".");
        set_override(&mut root, &segments, scalar_from_env(raw))
            .map_err(|parent| invalid(&key, format!("cannot apply {name}: {parent} is not a mapping")))?;
        origin.insert(key, format!("set by {name}"));
    }

    let explain = |key: &str| {
        origin
            .iter()
            .find(|(k, _)| key == k.as_str() || key.starts_with(&format!("{k}.")))
            .map(|(_, o)| format!(" ({o})"))
            .unwrap_or_default()
    };

    let mut unknown = Vec::new();
    let config: Config = {
        let mut on_ignored =
            |path: serde_ignored::Path<'_>| unknown.push(xcore_manifest::ignored_path(&path));
        let de = serde_ignored::Deserializer::new(root, &mut on_ignored);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let message = format!("{}{}", e.inner(), explain(&key));
            invalid(&key, message)
        })?
    };
    warnings.extend(unknown.into_iter().map(|key| {
        let from = explain(&key);
        format!("{file}: unknown key '{key}' ignored{from}")
    }));

    let config = validate(config).map_err(|(key, message)| {
        let from = explain(key);
        invalid(key, format!("{message}{from}"))
    })?;
    Ok((config, warnings))
}

fn validate(mut c: Config) -> Result<Config, (&'static str, String)> {
    if c.server.host.trim().is_empty() {
        return Err(("server.host", "must not be empty".into()));
    }
    if c.server.body_limit_bytes == 0 {
        return Err(("server.body_limit_bytes", "must be at least 1".into()));
    }
    if c.server.body_timeout_ms == 0 {
        return Err(("server.body_timeout_ms", "must be at least 1".into()));
    }
    for side in [&mut c.server.tls.cert, &mut c.server.tls.key] {
        if side.as_deref().is_some_and(|p| p.trim().is_empty()) {
            *side = None;
        }
    }
    match (&c.server.tls.cert, &c.server.tls.key) {
        (Some(_), None) => {
            return Err(("server.tls.key", "server.tls.cert is set: the key file must be set too".into()))
        }
        (None, Some(_)) => {
            return Err((
                "server.tls.cert",
                "server.tls.key is set: the certificate file must be set too".into(),
            ))
        }
        _ => {}
    }
    if c.server.admin_token.as_deref().is_some_and(|t| t.trim().is_empty()) {
        // An empty token would make an empty bearer valid; treat it as "generate one".
        c.server.admin_token = None;
    }
    if c.plugins.directory.as_os_str().is_empty() {
        return Err(("plugins.directory", "must not be empty".into()));
    }
    if c.plugins.runtime_dir.as_os_str().is_empty() {
        return Err(("plugins.runtime_dir", "must not be empty".into()));
    }
    let level = c.logging.level.trim().to_ascii_lowercase();
    if !LoggingConfig::LEVELS.contains(&level.as_str()) {
        return Err((
            "logging.level",
            format!("unknown level {:?} (allowed: {})", c.logging.level, LoggingConfig::LEVELS.join(", ")),
        ));
    }
    c.logging.level = level;
    if c.logging.directory.as_os_str().is_empty() {
        return Err(("logging.directory", "must not be empty".into()));
    }
    if c.logging.max_file_mb == 0 {
        return Err(("logging.max_file_mb", "must be at least 1".into()));
    }
    if c.logging.max_files == 0 {
        return Err(("logging.max_files", "must be at least 1".into()));
    }
    if c.sandbox.max_frame_bytes < 4096 {
        return Err(("sandbox.max_frame_bytes", "must be at least 4096".into()));
    }
    if c.sandbox.startup_timeout_ms == 0 {
        return Err(("sandbox.startup_timeout_ms", "must be at least 1".into()));
    }
    for (key, v) in [
        ("cache.max_bytes", c.cache.max_bytes),
        ("cache.max_value_bytes", c.cache.max_value_bytes),
        ("cache.max_entries", c.cache.max_entries),
        ("retention.interval_seconds", c.retention.interval_seconds),
    ] {
        if v == 0 {
            return Err((key, "must be at least 1".into()));
        }
    }
    if c.cache.max_value_bytes > c.cache.max_bytes {
        return Err((
            "cache.max_value_bytes",
            format!("must not be larger than cache.max_bytes ({})", c.cache.max_bytes),
        ));
    }
    if c.plugins.queue_timeout_ms == 0 {
        return Err(("plugins.queue_timeout_ms", "must be at least 1".into()));
    }
    if c.plugins.rate_limit_max_clients == 0 {
        return Err(("plugins.rate_limit_max_clients", "must be at least 1".into()));
    }
    for perms in c.plugins.grants.values() {
        if let Some(p) = perms.iter().find(|p| p.trim().is_empty() || p.trim() != p.as_str()) {
            return Err(("plugins.grants", format!("permission {p:?} is empty or has surrounding spaces")));
        }
    }
    if let Some(h) = c.server.client_ip_header.take() {
        let h = h.trim().to_ascii_lowercase();
        if !h.is_empty() {
            if !h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(("server.client_ip_header", format!("{h:?} is not a header name")));
            }
            c.server.client_ip_header = Some(h);
        }
    }
    if c.sandbox.max_host_calls_in_flight == 0 {
        return Err(("sandbox.max_host_calls_in_flight", "must be at least 1".into()));
    }
    if c.sandbox.log_line_max_bytes < 80 {
        return Err(("sandbox.log_line_max_bytes", "must be at least 80".into()));
    }
    if c.sandbox.log_lines_per_second == 0 {
        return Err(("sandbox.log_lines_per_second", "must be at least 1".into()));
    }
    if c.sandbox.write_timeout_ms == 0 {
        return Err(("sandbox.write_timeout_ms", "must be at least 1".into()));
    }
    Ok(c)
}

fn key_text(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => "?".to_string(),
    }
}

/// Substitutes `${VAR}` in every string scalar (not in keys). `path` is the dotted key
/// path of `value`, in the format serde_path_to_error prints.
fn substitute_strings(
    value: &mut Value,
    path: &mut String,
    lookup: &dyn Fn(&str) -> Option<String>,
    origin: &mut BTreeMap<String, String>,
) -> Result<(), (String, String)> {
    match value {
        Value::String(s) if s.contains('$') => {
            let new = substitute_vars(s, lookup).map_err(|e| (path.clone(), e.to_string()))?;
            if new != *s {
                origin.insert(path.clone(), format!("after substituting {s:?}"));
                *s = new;
            }
        }
        Value::Sequence(seq) => {
            for (i, item) in seq.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                substitute_strings(item, path, lookup, origin)?;
                path.truncate(len);
            }
        }
        Value::Mapping(map) => {
            for (k, item) in map.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(&key_text(k));
                substitute_strings(item, path, lookup, origin)?;
                path.truncate(len);
            }
        }
        Value::Tagged(t) => substitute_strings(&mut t.value, path, lookup, origin)?,
        _ => {}
    }
    Ok(())
}

/// An override value read as a YAML scalar (`9000` -> number, `true` -> bool); anything
/// that would be structure (`[a]`, `a: b`) or does not parse stays a plain string.
fn scalar_from_env(raw: &str) -> Value {
    match serde_yaml_ng::from_str::<Value>(raw) {
        Ok(v @ (Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_))) => v,
        _ => Value::String(raw.to_string()),
    }
}

/// Sets `root.a.b.c = value`, creating mappings on the way. Err: the dotted path of an
/// existing non-mapping value in the way.
fn set_override(root: &mut Value, segments: &[String], value: Value) -> Result<(), String> {
    let mut node = root;
    for (i, seg) in segments.iter().enumerate() {
        if node.is_null() {
            *node = Value::Mapping(Mapping::new());
        }
        let Value::Mapping(map) = node else {
            return Err(if i == 0 { "(top level)".to_string() } else { segments[..i].join(".") });
        };
        let key = Value::String(seg.clone());
        if i + 1 == segments.len() {
            map.insert(key, value);
            return Ok(());
        }
        node = map.entry(key).or_insert(Value::Null);
    }
    Ok(())
}

fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["token", "password", "secret"].iter().any(|s| k.contains(s))
}

fn mask_secrets(value: &mut Value) {
    match value {
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                if is_secret_key(&key_text(k)) && !v.is_null() {
                    *v = Value::String(MASK.to_string());
                } else {
                    mask_secrets(v);
                }
            }
        }
        Value::Sequence(seq) => seq.iter_mut().for_each(mask_secrets),
        Value::Tagged(t) => mask_secrets(&mut t.value),
        Value::String(s) => {
            if let Some(masked) = mask_url_password(s) {
                *s = masked;
            }
        }
        _ => {}
    }
}

/// `postgres://user:pw@host/db` -> `postgres://user:***@host/db`.
fn mask_url_password(s: &str) -> Option<String> {
    let scheme_end = s.find("://")? + 3;
    let rest = &s[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    let colon = rest[..at].find(':')?;
    Some(format!("{}{}:{MASK}{}", &s[..scheme_end], &rest[..colon], &rest[at..]))
}

/// Field deserializers that accept a scalar written as a string and vice versa.
#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn parse(yaml: &str, env: &[(&str, &str)]) -> Result<(Config, Vec<String>), ConfigError> {
        parse_with_vars("xcore.yaml", yaml, &vars(env))
    }

    #[test]
    fn defaults_without_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let loaded = load_with_vars(None, &tmp.path().join("xcore.yaml"), &BTreeMap::new()).unwrap();
        assert_eq!(loaded.source, None);
        assert!(loaded.warnings.is_empty());
        let c = loaded.config;
        assert_eq!(c, Config::default());
        assert_eq!((c.server.host.as_str(), c.server.port, c.server.workers), ("127.0.0.1", 8080, 0));
        assert_eq!(c.server.body_limit_bytes, 1_048_576);
        assert_eq!(c.server.admin_token, None);
        assert_eq!(c.server.shutdown_timeout_seconds, 10);
        assert_eq!(c.plugins.directory, PathBuf::from("plugins"));
        assert_eq!(c.plugins.runtime_dir, PathBuf::from("runtime"));
        assert_eq!(c.logging.level, "info");
        assert_eq!(c.logging.directory, PathBuf::from("logs"));
        assert!(c.logging.console && c.logging.file);
        assert_eq!((c.logging.max_file_mb, c.logging.max_files), (10, 5));
    }

    #[test]
    fn explicit_missing_file_is_an_error_and_existing_file_is_read() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("custom.yaml");
        let e = load_with_vars(Some(&p), Path::new("unused"), &BTreeMap::new()).unwrap_err();
        assert!(matches!(e, ConfigError::NotFound { .. }), "{e}");
        assert!(e.to_string().contains("custom.yaml"));

        std::fs::write(&p, "server:\n  port: 9001\n").unwrap();
        let loaded = load_with_vars(Some(&p), Path::new("unused"), &BTreeMap::new()).unwrap();
        assert_eq!(loaded.config.server.port, 9001);
        assert_eq!(loaded.source.as_deref(), Some(p.as_path()));
    }

    #[test]
    fn variables_and_defaults_are_substituted_in_strings() {
        let yaml = "server:\n  host: '${HOST}'\n  port: ${PORT}\n  admin_token: '${TOKEN:-fallback}'\nlogging:\n  directory: '${LOGS:-/var/log/xcore}'\n";
        let (c, _) = parse(yaml, &[("HOST", "0.0.0.0"), ("PORT", "9000")]).unwrap();
        assert_eq!(c.server.host, "0.0.0.0");
        assert_eq!(c.server.port, 9000);
        assert_eq!(c.server.admin_token.as_deref(), Some("fallback"));
        assert_eq!(c.logging.directory, PathBuf::from("/var/log/xcore"));

        let e = parse("server:\n  host: '${XCORE_TEST_UNSET}'\n", &[]).unwrap_err().to_string();
        assert!(e.starts_with("xcore.yaml: server.host: ") && e.contains("XCORE_TEST_UNSET"), "{e}");
    }

    #[test]
    fn plugin_grants() {
        assert!(Config::default().plugins.grants.is_empty(), "nothing is granted by default");
        let yaml = "plugins:\n  grants:\n    bookmarks: [kv, cache, \"db:bookmarks\"]\n    notes: [\"events.subscribe:notes.**\"]\n";
        let (c, w) = parse(yaml, &[]).unwrap();
        assert!(w.is_empty(), "plugin names are not unknown keys: {w:?}");
        assert_eq!(c.plugins.grants["bookmarks"], ["kv", "cache", "db:bookmarks"]);
        assert_eq!(c.plugins.grants["notes"], ["events.subscribe:notes.**"]);
        let e = parse("plugins:\n  grants:\n    x: ['']\n", &[]).unwrap_err().to_string();
        assert!(e.contains("plugins.grants"), "{e}");
    }

    #[test]
    fn load_shedding_and_client_settings() {
        let d = Config::default();
        assert_eq!((d.plugins.queue_timeout_ms, d.plugins.max_abandoned_threads), (1000, 3));
        assert_eq!((d.plugins.rate_limit_max_clients, d.server.client_ip_header.as_deref()), (10_000, None));
        let yaml = "server:\n  client_ip_header: X-Forwarded-For\nplugins:\n  queue_timeout_ms: '250'\n";
        let (c, w) = parse(yaml, &[]).unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.server.client_ip_header.as_deref(), Some("x-forwarded-for"));
        assert_eq!(c.plugins.queue_timeout_ms, 250);
        let (c, _) = parse("server:\n  client_ip_header: ''\n", &[]).unwrap();
        assert_eq!(c.server.client_ip_header, None, "empty means the peer address");
        for (yaml, key) in [
            ("plugins:\n  queue_timeout_ms: 0\n", "plugins.queue_timeout_ms"),
            ("plugins:\n  rate_limit_max_clients: 0\n", "plugins.rate_limit_max_clients"),
            ("server:\n  client_ip_header: 'x forwarded'\n", "server.client_ip_header"),
        ] {
            let e = parse(yaml, &[]).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
    }

    #[test]
    fn a_variable_cannot_inject_structure() {
        let (c, w) =
            parse("server:\n  host: '${EVIL}'\n", &[("EVIL", "x\nport: 1\nadmin_token: t")]).unwrap();
        assert_eq!(c.server.host, "x\nport: 1\nadmin_token: t");
        assert_eq!(c.server.port, 8080);
        assert!(w.is_empty());
    }

    #[test]
    fn env_overrides_parse_scalars_and_beat_the_file() {
        let env = [
            ("XCORE__SERVER__PORT", "9000"),
            ("XCORE__LOGGING__CONSOLE", "false"),
            ("XCORE__LOGGING__LEVEL", "DEBUG"),
            ("XCORE__SERVER__ADMIN_TOKEN", "12345"),
            ("OTHER__SERVER__PORT", "1"),
        ];
        let (c, w) = parse("server:\n  port: 8000\nlogging:\n", &env).unwrap();
        assert_eq!(c.server.port, 9000);
        assert!(!c.logging.console);
        assert_eq!(c.logging.level, "debug");
        assert_eq!(c.server.admin_token.as_deref(), Some("12345"));
        assert!(w.is_empty(), "{w:?}");

        let e = parse("", &[("XCORE__SERVER__PORT", "abc")]).unwrap_err().to_string();
        assert_eq!(
            e,
            "xcore.yaml: server.port: invalid type: string \"abc\", expected u16 (set by XCORE__SERVER__PORT)"
        );
        let e = parse("server: 5\n", &[("XCORE__SERVER__PORT", "1")]).unwrap_err().to_string();
        assert!(e.contains("server.port: cannot apply XCORE__SERVER__PORT: server is not a mapping"), "{e}");
        let (_, w) = parse("", &[("XCORE__NOPE__X", "1"), ("XCORE____X", "1")]).unwrap();
        assert!(w.iter().any(|w| w.contains("unknown key 'nope' ignored")), "{w:?}");
        assert!(w.iter().any(|w| w.starts_with("XCORE____X: ignored")), "{w:?}");
    }

    #[test]
    fn wrong_types_name_file_path_and_type() {
        let e = parse("server:\n  port: abc\n", &[]).unwrap_err().to_string();
        assert_eq!(e, "xcore.yaml: server.port: invalid type: string \"abc\", expected u16");
        let e = parse("server:\n  port: 70000\n", &[]).unwrap_err().to_string();
        assert!(e.starts_with("xcore.yaml: server.port: invalid value"), "{e}");
        let e = parse("logging:\n  max_files: [1]\n", &[]).unwrap_err().to_string();
        assert!(e.starts_with("xcore.yaml: logging.max_files: invalid type: sequence"), "{e}");
        let e = parse("logging:\n  console: maybe\n", &[]).unwrap_err().to_string();
        assert!(
            e.starts_with("xcore.yaml: logging.console: invalid type: string \"maybe\", expected bool"),
            "{e}"
        );
        let e = parse("server: [1]\n", &[]).unwrap_err().to_string();
        assert!(e.starts_with("xcore.yaml: server: invalid type: sequence"), "{e}");
        let e = parse("server:\n  port: ${P}\n", &[("P", "x")]).unwrap_err().to_string();
        assert!(e.contains("server.port") && e.contains("after substituting \"${P}\""), "{e}");
        let e = parse("logging:\n  level: loud\n", &[]).unwrap_err().to_string();
        assert!(e.contains("logging.level: unknown level \"loud\" (allowed: error, warn"), "{e}");
        let e = parse("server:\n  port: [\n", &[]).unwrap_err().to_string();
        assert!(e.starts_with("xcore.yaml: YAML syntax error") && e.contains("line"), "{e}");
        assert!(parse("- 1\n", &[]).unwrap_err().to_string().contains("(top level)"));
    }

    #[test]
    fn unknown_keys_and_future_sections_warn() {
        let yaml = "server:\n  prot: 1\nscheduler: {tick: 1}\nhooks: []\n";
        let (c, w) = parse(yaml, &[]).unwrap();
        assert_eq!(c, Config::default());
        let all = w.join("\n");
        for key in ["'server.prot'", "'scheduler.tick'", "'hooks'"] {
            assert!(all.contains(key), "{key} not in {all}");
        }
        assert!(all.starts_with("xcore.yaml: unknown key"), "{all}");
    }

    #[test]
    fn secrets_are_masked_in_yaml_and_debug() {
        let (mut c, _) =
            parse("server:\n  admin_token: s3cr3t-value\n  host: 'postgres://u:pw@h/db'\n", &[]).unwrap();
        let yaml = c.to_masked_yaml();
        assert!(!yaml.contains("s3cr3t-value") && yaml.contains("admin_token: '***'"), "{yaml}");
        assert!(yaml.contains("postgres://u:***@h/db") && !yaml.contains(":pw@"), "{yaml}");
        assert!(yaml.contains("port: 8080"), "{yaml}");
        let debug = format!("{c:?}");
        assert!(!debug.contains("s3cr3t-value") && debug.contains("***"), "{debug}");

        c.server.admin_token = None;
        c.server.host = "0.0.0.0".into();
        assert!(c.to_masked_yaml().contains("admin_token: null"));
        // Round trip: the masked YAML is itself a valid configuration.
        let (again, w) = parse(&c.to_masked_yaml(), &[]).unwrap();
        assert!(w.is_empty());
        assert_eq!(again, c);

        let mut v: Value =
            serde_yaml_ng::from_str("db: {password: x, api_secret: y, url: 'redis://:p@h'}").unwrap();
        mask_secrets(&mut v);
        let s = serde_yaml_ng::to_string(&v).unwrap();
        assert!(!s.contains(" x\n") && !s.contains(" y\n") && s.contains("redis://:***@h"), "{s}");
    }

    #[test]
    fn empty_admin_token_means_generate() {
        let (c, _) = parse("server:\n  admin_token: '${T:-}'\n", &[]).unwrap();
        assert_eq!(c.server.admin_token, None);
    }

    #[test]
    fn dotenv_does_not_override_the_real_environment() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(".env");
        assert!(!load_dotenv(&path).unwrap());

        let real = "XCORE_CFG_TEST_7F3A_REAL";
        let fresh = "XCORE_CFG_TEST_7F3A_FRESH";
        std::env::set_var(real, "from-process");
        std::fs::write(&path, format!("\u{feff}{real}=from-file\n{fresh}=from-file\n# comment\n")).unwrap();
        assert!(load_dotenv(&path).unwrap());
        assert_eq!(std::env::var(real).unwrap(), "from-process");
        assert_eq!(std::env::var(fresh).unwrap(), "from-file");

        let bad = tmp.path().join("bad.env");
        let never = "XCORE_CFG_TEST_7F3A_NEVER";
        std::fs::write(&bad, format!("{never}=1\nOK=1\nthis is not valid\n")).unwrap();
        let e = load_dotenv(&bad).unwrap_err();
        assert!(matches!(e, ConfigError::DotEnv { line: Some(3), .. }), "{e:?}");
        assert!(e.to_string().contains("bad.env:3:"), "{e}");
        assert!(std::env::var(never).is_err(), "nothing is set from a malformed file");
    }

    #[test]
    fn url_password_masking() {
        assert_eq!(mask_url_password("mysql://a:b@c:3306/d?x=@"), Some("mysql://a:***@c:3306/d?x=@".into()));
        assert_eq!(mask_url_password("http://host/a:b@c"), None);
        assert_eq!(mask_url_password("plain"), None);
        assert_eq!(mask_url_password("redis://user@h"), None);
    }
}
