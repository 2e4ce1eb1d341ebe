//! `plugin.yaml`: the schema of a plugin manifest, defaults per execution tier and
//! validation with errors that name the file, the key and the rule that was broken.
//!
//! Parsing goes YAML text -> `serde_yaml_ng::Value` (syntax errors with a line) ->
//! an all-`Option` raw struct (type errors with a key path, unknown keys as warnings)
//! -> [`Manifest`] (tier defaults filled in, semantic checks). Nothing here panics on
//! any input.

pub mod lenient;
pub mod permissions;
pub mod plugin_order;
pub mod routes;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

/// File name of the manifest inside a plugin folder.
pub const MANIFEST_FILE: &str = "plugin.yaml";

/// Where a plugin runs: in the host process or in a worker process of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionMode {
    /// Loaded into the host process (fast, no isolation).
    #[default]
    Trusted,
    /// Loaded by a separate worker process with OS limits.
    Sandboxed,
}

impl ExecutionMode {
    /// Every accepted spelling, for error messages.
    pub const ALLOWED: [&'static str; 2] = ["trusted", "sandboxed"];

    /// The YAML spelling of the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionMode::Trusted => "trusted",
            ExecutionMode::Sandboxed => "sandboxed",
        }
    }
}

impl fmt::Display for ExecutionMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Action names starting with this belong to the host (the plugin ABI's reserved actions,
/// `xcore_plugin_abi::describe::RESERVED_PREFIX`; a runtime test keeps the two equal):
/// no route or hook may name one.
pub const RESERVED_ACTION_PREFIX: &str = "__xcore";

/// A validated plugin manifest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Manifest {
    /// Plugin name; matches `^[a-z0-9_-]+$` and equals the folder name.
    pub name: String,
    /// The plugin's own version.
    pub version: semver::Version,
    /// The range of plugin API versions the plugin was built for.
    pub api_version: semver::VersionReq,
    /// Free text, default `""`.
    pub description: String,
    /// Default `"unknown"`.
    pub author: String,
    /// Default [`ExecutionMode::Trusted`].
    pub execution_mode: ExecutionMode,
    /// Library file, relative to [`Manifest::dir`], never absolute and without `..`.
    pub entry_point: PathBuf,
    /// Plugins that must be loaded before this one.
    pub requires: Vec<Requirement>,
    /// Limits, with tier defaults for keys the YAML leaves out.
    pub resources: Resources,
    /// Supervisor restart policy.
    pub restart: RestartPolicy,
    /// Liveness pings (sandboxed workers).
    pub health_check: HealthCheck,
    /// Event subscriptions of the plugin's actions.
    pub hooks: Vec<HookSpec>,
    /// Environment for the plugin, after `${VAR}` substitution.
    pub env: BTreeMap<String, String>,
    /// Free configuration map handed to the plugin (always a JSON object).
    pub config: serde_json::Value,
    /// HTTP routes the plugin declares under `/plugins/{name}/...`.
    pub routes: Vec<Route>,
    /// Permission names (checked by the Host API, not here).
    pub permissions: Vec<String>,
    /// The plugin folder (set by the loader, not read from YAML).
    pub dir: PathBuf,
    /// SHA-256 (hex) of the manifest text this was parsed from: a signature check compares
    /// it with the signed hash of `plugin.yaml`, so the manifest used is the one verified.
    #[serde(skip)]
    pub source_sha256: String,
}

impl Manifest {
    /// Absolute-or-relative path of the library to load: `dir/entry_point`.
    pub fn library_path(&self) -> PathBuf {
        self.dir.join(&self.entry_point)
    }

    /// Path of the manifest file this manifest came from.
    pub fn manifest_path(&self) -> PathBuf {
        self.dir.join(MANIFEST_FILE)
    }
}

/// A dependency on another plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Requirement {
    /// Name of the required plugin.
    pub name: String,
    /// Versions of it that are acceptable (default `*`).
    pub version: semver::VersionReq,
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

/// Resource limits of a plugin.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resources {
    /// Deadline of one call in milliseconds.
    pub timeout_ms: u64,
    /// Calls handled at the same time (at least 1).
    pub concurrency: u32,
    /// Address-space limit in MiB (sandboxed only); 0 means unlimited.
    pub max_memory_mb: u64,
    /// Quota of the plugin's `data/` folder in MiB; 0 means unlimited.
    pub max_disk_mb: u64,
    /// CPU time one call may use in milliseconds (sandboxed only; enforced with
    /// RLIMIT_CPU, so rounded up to whole seconds); 0 means unlimited. Defaults to
    /// `timeout_ms`.
    pub cpu_time_ms: u64,
    /// Open file descriptors of the worker process (sandboxed only); 0 means the
    /// system's limit.
    pub max_open_files: u64,
    /// Call rate limit.
    pub rate_limit: RateLimit,
    /// How long a call may wait for a free worker (trusted) or call slot (sandboxed),
    /// in milliseconds, before it is answered 503 `overloaded`; `timeout_ms` starts
    /// when the call starts. `None`: the host's `plugins.queue_timeout_ms`.
    pub queue_timeout_ms: Option<u64>,
}

/// One `hooks:` entry: an action of the plugin subscribed to the events matching
/// `event` (a pattern: `*` one segment, `**` any number).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HookSpec {
    /// Event pattern.
    pub event: String,
    /// The action called with `{"event": name, "payload": ...}`.
    pub action: String,
    /// Lower runs first (default 50).
    pub priority: i32,
    /// Unsubscribe after the first run.
    pub once: bool,
    /// Per-handler timeout in milliseconds (the action's own deadline applies too).
    pub timeout_ms: Option<u64>,
}

/// Liveness pings of a sandboxed worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthCheck {
    /// Milliseconds between pings; 0 disables them. Default: 30000 sandboxed, 0 trusted.
    pub interval_ms: u64,
    /// How long a ping may take before the worker is deemed hung (default 3000).
    pub timeout_ms: u64,
}

/// At most `calls` calls per `period_seconds` (sliding window).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateLimit {
    /// Calls allowed per period; 0 means unlimited.
    pub calls: u32,
    /// Window length in seconds (> 0, finite).
    pub period_seconds: f64,
    /// Calls allowed per period to one client (by peer address, or by the header
    /// `server.client_ip_header` names); 0 (default) means no per-client limit.
    pub per_client: u32,
}

/// How the supervisor restarts a crashed plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestartPolicy {
    /// Restarts allowed within `within_seconds` before the plugin is marked failed.
    pub max_restarts: u32,
    /// Length of the restart-intensity window.
    pub within_seconds: u64,
    /// First backoff delay; doubled after each restart.
    pub backoff_initial_ms: u64,
    /// Upper bound of the backoff delay (>= `backoff_initial_ms`).
    pub backoff_max_ms: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy { max_restarts: 3, within_seconds: 60, backoff_initial_ms: 100, backoff_max_ms: 10_000 }
    }
}

/// An HTTP route declared by a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    /// Upper-case method: one of [`Route::METHODS`].
    pub method: String,
    /// Starts with `/`; a segment may be a `{param}`.
    pub path: String,
    /// The plugin action the route calls.
    pub action: String,
}

impl Route {
    /// Methods a plugin route may use.
    pub const METHODS: [&'static str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];
}

/// A manifest plus the non-fatal findings (unknown keys) made while reading it.
#[derive(Debug, Clone)]
pub struct LoadedManifest {
    /// The validated manifest.
    pub manifest: Manifest,
    /// Human-readable warnings, each naming the file and key.
    pub warnings: Vec<String>,
}

/// Why a manifest could not be used. Every message names the manifest file.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The plugin folder has no `plugin.yaml`.
    #[error("{}: not found (every plugin folder needs a {MANIFEST_FILE})", .path.display())]
    NotFound {
        /// Path that was looked for.
        path: PathBuf,
    },
    /// The file exists but could not be read.
    #[error("{}: cannot read: {source}", .path.display())]
    Io {
        /// The manifest file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid YAML.
    #[error("{}: YAML syntax error: {message}", .file.display())]
    Syntax {
        /// The manifest file.
        file: PathBuf,
        /// 1-based line of the error, when known.
        line: Option<usize>,
        /// Parser message (includes line and column when known).
        message: String,
    },
    /// A key has the wrong type or breaks a rule.
    #[error("{}: {key}: {message}", .file.display())]
    Invalid {
        /// The manifest file.
        file: PathBuf,
        /// Dotted key path, e.g. `resources.timeout_ms` or `routes[0].method`.
        key: String,
        /// What was expected.
        message: String,
    },
}

/// Reads and validates `plugin_dir/plugin.yaml`.
pub fn load(plugin_dir: &Path) -> Result<LoadedManifest, ManifestError> {
    let path = plugin_dir.join(MANIFEST_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ManifestError::NotFound { path }),
        Err(source) => return Err(ManifestError::Io { path, source }),
    };
    parse(plugin_dir, &text)
}

/// Validates manifest text as if it were `plugin_dir/plugin.yaml`; `${VAR}` in `env`
/// is resolved from the process environment.
pub fn parse(plugin_dir: &Path, yaml: &str) -> Result<LoadedManifest, ManifestError> {
    parse_with_env(plugin_dir, yaml, &|var| std::env::var(var).ok())
}

/// Like [`parse`] with a custom variable lookup (tests, or a plugin-specific environment).
pub fn parse_with_env(
    plugin_dir: &Path,
    yaml: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<LoadedManifest, ManifestError> {
    let file = plugin_dir.join(MANIFEST_FILE);
    let invalid = |key: &str, message: String| ManifestError::Invalid {
        file: file.clone(),
        key: key.to_string(),
        message,
    };

    let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).map_err(|e| ManifestError::Syntax {
        file: file.clone(),
        line: e.location().map(|l| l.line()),
        message: e.to_string(),
    })?;
    let value = match value {
        // An empty file is an empty mapping: the "missing name" error is clearer.
        serde_yaml_ng::Value::Null => serde_yaml_ng::Value::Mapping(Default::default()),
        v @ serde_yaml_ng::Value::Mapping(_) => v,
        other => {
            return Err(invalid(
                "(top level)",
                format!("expected a mapping of keys, found {}", value_kind(&other)),
            ))
        }
    };

    let mut unknown = Vec::new();
    let raw: RawManifest = {
        let mut on_ignored = |path: serde_ignored::Path<'_>| unknown.push(ignored_path(&path));
        let de = serde_ignored::Deserializer::new(value, &mut on_ignored);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            invalid(&key, e.into_inner().to_string())
        })?
    };
    let warnings =
        unknown.into_iter().map(|key| format!("{}: unknown key '{key}' ignored", file.display())).collect();

    let mut manifest = validate(plugin_dir, raw, lookup).map_err(|(key, message)| invalid(&key, message))?;
    manifest.source_sha256 = {
        use sha2::Digest as _;
        xcore_security::keys::hex(&sha2::Sha256::digest(yaml.as_bytes()))
    };
    Ok(LoadedManifest { manifest, warnings })
}

/// Formats a serde_ignored path like serde_path_to_error does (`a.b[0].c`); `xcore.yaml`'s
/// unknown-key warnings use it too.
pub fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => String::new(),
        P::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        P::Map { parent, key } => {
            let parent = ignored_path(parent);
            if parent.is_empty() {
                key.clone()
            } else {
                format!("{parent}.{key}")
            }
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            ignored_path(parent)
        }
    }
}

fn value_kind(v: &serde_yaml_ng::Value) -> &'static str {
    use serde_yaml_ng::Value as V;
    match v {
        V::Null => "null",
        V::Bool(_) => "a boolean",
        V::Number(_) => "a number",
        V::String(_) => "a string",
        V::Sequence(_) => "a list",
        V::Mapping(_) => "a mapping",
        V::Tagged(_) => "a tagged value",
    }
}

// ---------------------------------------------------------------------------
// Raw (as written) form. Everything optional so that defaults can depend on the tier
// and a missing key gets our own message instead of serde's.

#[derive(Deserialize)]
struct RawManifest {
    name: Option<String>,
    version: Option<VersionText>,
    api_version: Option<VersionText>,
    description: Option<String>,
    author: Option<String>,
    execution_mode: Option<String>,
    entry_point: Option<String>,
    requires: Option<Vec<RawRequirement>>,
    resources: Option<RawResources>,
    restart: Option<RawRestart>,
    health_check: Option<RawHealthCheck>,
    hooks: Option<Vec<RawHook>>,
    env: Option<BTreeMap<String, ScalarText>>,
    config: Option<serde_json::Value>,
    routes: Option<Vec<RawRoute>>,
    permissions: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct RawResources {
    timeout_ms: Option<u64>,
    concurrency: Option<u32>,
    max_memory_mb: Option<u64>,
    max_disk_mb: Option<u64>,
    cpu_time_ms: Option<u64>,
    max_open_files: Option<u64>,
    rate_limit: Option<RawRateLimit>,
    queue_timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
struct RawHook {
    event: Option<String>,
    action: Option<String>,
    priority: Option<i32>,
    once: Option<bool>,
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
struct RawHealthCheck {
    interval_ms: Option<u64>,
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
struct RawRateLimit {
    calls: Option<u32>,
    period_seconds: Option<f64>,
    per_client: Option<u32>,
}

#[derive(Deserialize)]
struct RawRestart {
    max_restarts: Option<u32>,
    within_seconds: Option<u64>,
    backoff_initial_ms: Option<u64>,
    backoff_max_ms: Option<u64>,
}

#[derive(Deserialize)]
struct RawRoute {
    method: Option<String>,
    path: Option<String>,
    action: Option<String>,
}

/// `"echo"`, `"echo@^0.1"` or `{name: echo, version: "^0.1"}`.
enum RawRequirement {
    Short(String),
    Long { name: Option<String>, version: Option<VersionText> },
}

#[derive(Deserialize)]
struct RawRequirementMap {
    name: Option<String>,
    version: Option<VersionText>,
}

impl<'de> Deserialize<'de> for RawRequirement {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawRequirement;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a plugin name (\"echo\" or \"echo@^0.1\") or a map {name, version}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawRequirement::Short(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                let m = RawRequirementMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawRequirement::Long { name: m.name, version: m.version })
            }
        }
        d.deserialize_any(V)
    }
}

/// A version or range written as a string. Numbers are refused with a hint because YAML
/// reads `0.1` as a float, which would silently become a different range.
struct VersionText(String);

impl<'de> Deserialize<'de> for VersionText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = VersionText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a quoted version string such as \"0.1.0\" or \"^0.1\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(VersionText(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// A scalar (string, number or bool) turned into its text.
struct ScalarText(String);

impl<'de> Deserialize<'de> for ScalarText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ScalarText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ScalarText(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(ScalarText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(ScalarText(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ScalarText(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(ScalarText(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------------------
// Validation: raw -> Manifest. Errors are (key path, message).

type Invalid = (String, String);

fn err<T>(key: impl Into<String>, message: impl Into<String>) -> Result<T, Invalid> {
    Err((key.into(), message.into()))
}

/// `^[a-z0-9_-]+$`: the rule of plugin names (and folder names), also applied by every
/// HTTP route that takes a plugin name.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn is_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn folder_name(dir: &Path) -> Option<String> {
    let name = match dir.file_name() {
        Some(n) => n.to_os_string(),
        // `.` or `plugins/x/..`: ask the file system what the folder really is.
        None => dir.canonicalize().ok()?.file_name()?.to_os_string(),
    };
    name.into_string().ok()
}

fn parse_version(key: &str, text: &str) -> Result<semver::Version, Invalid> {
    semver::Version::parse(text.trim())
        .or_else(|e| err(key, format!("invalid semver version {text:?}: {e} (expected e.g. \"1.2.3\")")))
}

fn parse_req(key: &str, text: &str) -> Result<semver::VersionReq, Invalid> {
    semver::VersionReq::parse(text.trim())
        .or_else(|e| err(key, format!("invalid semver range {text:?}: {e} (expected e.g. \"^0.1\")")))
}

fn validate(
    dir: &Path,
    raw: RawManifest,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Manifest, Invalid> {
    let name = match raw.name {
        Some(n) => n,
        None => return err("name", "missing required key (the plugin name, equal to its folder name)"),
    };
    if !is_valid_name(&name) {
        return err("name", format!("{name:?} is not a valid plugin name (allowed: a-z, 0-9, '_' and '-')"));
    }
    match folder_name(dir) {
        Some(folder) if folder == name => {}
        Some(folder) => {
            return err(
                "name",
                format!("plugin name {name:?} differs from its folder name {folder:?}; they must be equal"),
            )
        }
        None => return err("name", format!("cannot determine the folder name of {}", dir.display())),
    }

    let version = match raw.version {
        Some(v) => parse_version("version", &v.0)?,
        None => return err("version", "missing required key (the plugin version, e.g. \"0.1.0\")"),
    };
    let api_version = match raw.api_version {
        Some(v) => parse_req("api_version", &v.0)?,
        None => return err("api_version", "missing required key (the plugin API range, e.g. \"^0.1\")"),
    };

    let execution_mode = match raw.execution_mode.as_deref() {
        None => ExecutionMode::Trusted,
        Some("trusted") => ExecutionMode::Trusted,
        Some("sandboxed") => ExecutionMode::Sandboxed,
        Some(other) => {
            return err(
                "execution_mode",
                format!("unknown execution mode {other:?} (allowed: {})", ExecutionMode::ALLOWED.join(", ")),
            )
        }
    };

    let entry_point = match raw.entry_point {
        None => PathBuf::from(format!(
            "{}{}{}",
            std::env::consts::DLL_PREFIX,
            name.replace('-', "_"),
            std::env::consts::DLL_SUFFIX
        )),
        Some(text) => validate_entry_point(&text)?,
    };

    let requires = validate_requires(&name, raw.requires.unwrap_or_default())?;
    let resources = validate_resources(execution_mode, raw.resources)?;
    let restart = validate_restart(raw.restart)?;
    let health_check = {
        let h = raw.health_check.unwrap_or(RawHealthCheck { interval_ms: None, timeout_ms: None });
        let default_interval = if execution_mode == ExecutionMode::Sandboxed { 30_000 } else { 0 };
        let hc = HealthCheck {
            interval_ms: h.interval_ms.unwrap_or(default_interval),
            timeout_ms: h.timeout_ms.unwrap_or(3_000),
        };
        if hc.timeout_ms == 0 {
            return err("health_check.timeout_ms", "must be at least 1");
        }
        hc
    };
    let env = validate_env(raw.env.unwrap_or_default(), lookup)?;

    let config = match raw.config {
        None | Some(serde_json::Value::Null) => serde_json::Value::Object(Default::default()),
        Some(v @ serde_json::Value::Object(_)) => v,
        Some(other) => return err("config", format!("expected a mapping, found {}", json_kind(&other))),
    };

    let routes = validate_routes(raw.routes.unwrap_or_default())?;
    let mut hooks = Vec::new();
    for (i, h) in raw.hooks.unwrap_or_default().into_iter().enumerate() {
        let event = match h.event {
            Some(e) => e,
            None => return err(format!("hooks[{i}].event"), "missing; an event pattern such as 'orders.*'"),
        };
        if let Err(e) = xcore_hooks::Pattern::new(&event) {
            return err(format!("hooks[{i}].event"), e.to_string());
        }
        let action = match h.action {
            Some(a) if !a.trim().is_empty() => a,
            _ => return err(format!("hooks[{i}].action"), "missing; the action to call"),
        };
        if action.starts_with(RESERVED_ACTION_PREFIX) {
            return err(
                format!("hooks[{i}].action"),
                format!(
                    "'{action}': names starting with '{RESERVED_ACTION_PREFIX}' are reserved for the host"
                ),
            );
        }
        hooks.push(HookSpec {
            event,
            action,
            priority: h.priority.unwrap_or(xcore_hooks::DEFAULT_PRIORITY),
            once: h.once.unwrap_or(false),
            timeout_ms: h.timeout_ms,
        });
    }

    let mut permissions = Vec::new();
    for (i, p) in raw.permissions.unwrap_or_default().into_iter().enumerate() {
        let p = p.trim().to_string();
        if p.is_empty() {
            return err(format!("permissions[{i}]"), "a permission name must not be empty");
        }
        if !permissions.contains(&p) {
            permissions.push(p);
        }
    }

    Ok(Manifest {
        name,
        version,
        api_version,
        description: raw.description.unwrap_or_default(),
        author: raw.author.unwrap_or_else(|| "unknown".to_string()),
        execution_mode,
        entry_point,
        requires,
        health_check,
        hooks,
        resources,
        restart,
        env,
        config,
        routes,
        permissions,
        dir: dir.to_path_buf(),
        source_sha256: String::new(),
    })
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "a mapping",
    }
}

fn validate_entry_point(text: &str) -> Result<PathBuf, Invalid> {
    let path = PathBuf::from(text);
    if text.trim().is_empty() {
        return err("entry_point", "must not be empty");
    }
    // has_root catches `/x` on Windows too, where is_absolute needs a drive letter.
    if path.is_absolute() || path.has_root() {
        return err("entry_point", format!("{text:?} must be relative to the plugin folder"));
    }
    for c in path.components() {
        match c {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return err(
                    "entry_point",
                    format!("{text:?} must not contain '..' (stay inside the plugin folder)"),
                )
            }
            Component::RootDir | Component::Prefix(_) => {
                return err("entry_point", format!("{text:?} must be relative to the plugin folder"))
            }
        }
    }
    Ok(path)
}

fn validate_requires(own_name: &str, raw: Vec<RawRequirement>) -> Result<Vec<Requirement>, Invalid> {
    let mut out: Vec<Requirement> = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let key = format!("requires[{i}]");
        let (name, version) = match r {
            RawRequirement::Short(text) => match text.split_once('@') {
                Some((n, v)) => (n.trim().to_string(), parse_req(&key, v)?),
                None => (text.trim().to_string(), semver::VersionReq::STAR),
            },
            RawRequirement::Long { name, version } => {
                let Some(name) = name else {
                    return err(format!("{key}.name"), "missing required key (the required plugin's name)");
                };
                let version = match version {
                    Some(v) => parse_req(&format!("{key}.version"), &v.0)?,
                    None => semver::VersionReq::STAR,
                };
                (name.trim().to_string(), version)
            }
        };
        if !is_valid_name(&name) {
            return err(key, format!("{name:?} is not a valid plugin name (allowed: a-z, 0-9, '_' and '-')"));
        }
        if name == own_name {
            return err(key, format!("plugin {own_name:?} cannot require itself"));
        }
        if out.iter().any(|o| o.name == name) {
            return err(key, format!("{name:?} is listed more than once"));
        }
        out.push(Requirement { name, version });
    }
    Ok(out)
}

fn validate_resources(mode: ExecutionMode, raw: Option<RawResources>) -> Result<Resources, Invalid> {
    // Tier defaults from the Python original (seconds converted to milliseconds).
    let (timeout_ms, max_memory_mb, max_disk_mb, calls, max_open_files) = match mode {
        ExecutionMode::Trusted => (30_000, 0, 0, 1000, 0),
        ExecutionMode::Sandboxed => (10_000, 128, 50, 100, 256),
    };
    let raw = raw.unwrap_or(RawResources {
        timeout_ms: None,
        concurrency: None,
        max_memory_mb: None,
        max_disk_mb: None,
        cpu_time_ms: None,
        max_open_files: None,
        rate_limit: None,
        queue_timeout_ms: None,
    });
    let rl = raw.rate_limit.unwrap_or(RawRateLimit { calls: None, period_seconds: None, per_client: None });
    let timeout_ms = raw.timeout_ms.unwrap_or(timeout_ms);
    let res = Resources {
        timeout_ms,
        concurrency: raw.concurrency.unwrap_or(1),
        max_memory_mb: raw.max_memory_mb.unwrap_or(max_memory_mb),
        max_disk_mb: raw.max_disk_mb.unwrap_or(max_disk_mb),
        cpu_time_ms: raw.cpu_time_ms.unwrap_or(timeout_ms),
        max_open_files: raw.max_open_files.unwrap_or(max_open_files),
        rate_limit: RateLimit {
            calls: rl.calls.unwrap_or(calls),
            period_seconds: rl.period_seconds.unwrap_or(60.0),
            per_client: rl.per_client.unwrap_or(0),
        },
        queue_timeout_ms: raw.queue_timeout_ms,
    };
    if res.queue_timeout_ms == Some(0) {
        return err("resources.queue_timeout_ms", "must be at least 1 (omit it for the host's default)");
    }
    if res.concurrency == 0 {
        return err("resources.concurrency", "must be at least 1");
    }
    let p = res.rate_limit.period_seconds;
    if !(p > 0.0 && p.is_finite()) {
        return err(
            "resources.rate_limit.period_seconds",
            format!("must be a positive number of seconds, got {p}"),
        );
    }
    Ok(res)
}

fn validate_restart(raw: Option<RawRestart>) -> Result<RestartPolicy, Invalid> {
    let d = RestartPolicy::default();
    let Some(raw) = raw else { return Ok(d) };
    let policy = RestartPolicy {
        max_restarts: raw.max_restarts.unwrap_or(d.max_restarts),
        within_seconds: raw.within_seconds.unwrap_or(d.within_seconds),
        backoff_initial_ms: raw.backoff_initial_ms.unwrap_or(d.backoff_initial_ms),
        backoff_max_ms: raw.backoff_max_ms.unwrap_or(d.backoff_max_ms),
    };
    if policy.backoff_max_ms < policy.backoff_initial_ms {
        return err(
            "restart.backoff_max_ms",
            format!(
                "must be >= restart.backoff_initial_ms ({} < {})",
                policy.backoff_max_ms, policy.backoff_initial_ms
            ),
        );
    }
    Ok(policy)
}

fn validate_env(
    raw: BTreeMap<String, ScalarText>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>, Invalid> {
    let mut out = BTreeMap::new();
    for (k, v) in raw {
        let key = format!("env.{k}");
        if !is_identifier(&k) {
            return err(
                key,
                "not a valid environment variable name (letters, digits and '_', not starting with a digit)",
            );
        }
        let value = substitute_vars(&v.0, lookup).or_else(|e| err(&key, e.to_string()))?;
        if value.contains('\0') {
            return err(key, "value must not contain a NUL character");
        }
        out.insert(k, value);
    }
    Ok(out)
}

fn validate_routes(raw: Vec<RawRoute>) -> Result<Vec<Route>, Invalid> {
    let mut out: Vec<Route> = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, r) in raw.into_iter().enumerate() {
        let key = |field: &str| format!("routes[{i}].{field}");
        let Some(method) = r.method else {
            return err(key("method"), "missing required key");
        };
        let Some(path) = r.path else {
            return err(key("path"), "missing required key");
        };
        let Some(action) = r.action else {
            return err(key("action"), "missing required key");
        };

        let method_up = method.trim().to_ascii_uppercase();
        if !Route::METHODS.contains(&method_up.as_str()) {
            return err(
                key("method"),
                format!("unknown HTTP method {method:?} (allowed: {})", Route::METHODS.join(", ")),
            );
        }
        validate_route_path(&path).or_else(|m| err(key("path"), m))?;
        let action = action.trim().to_string();
        if action.is_empty() {
            return err(key("action"), "must not be empty");
        }
        if action.starts_with(RESERVED_ACTION_PREFIX) {
            return err(
                key("action"),
                format!(
                    "'{action}': names starting with '{RESERVED_ACTION_PREFIX}' are reserved for the host"
                ),
            );
        }
        if !seen.insert((method_up.clone(), path.clone())) {
            return err(format!("routes[{i}]"), format!("duplicate route {method_up} {path}"));
        }
        out.push(Route { method: method_up, path, action });
    }
    Ok(out)
}

fn validate_route_path(path: &str) -> Result<(), String> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!("{path:?} must start with '/'"));
    };
    let mut params = BTreeSet::new();
    for seg in rest.split('/') {
        if let Some(inner) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            if !is_identifier(inner) {
                return Err(format!("{path:?}: parameter {seg:?} must be {{name}} with a letter/_ first"));
            }
            if !params.insert(inner) {
                return Err(format!("{path:?}: parameter {seg:?} appears twice"));
            }
        } else if seg.contains(['{', '}']) {
            return Err(format!("{path:?}: a parameter must fill a whole segment, like /items/{{id}}"));
        } else if seg.chars().any(|c| c.is_whitespace() || c == '?' || c == '#') {
            return Err(format!("{path:?}: segment {seg:?} contains a space, '?' or '#'"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// ${VAR} substitution (shared with the host configuration).

/// Why a `${VAR}` substitution failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubstError {
    /// `${VAR}` names a variable that is not set and has no `:-default`.
    #[error(
        "environment variable {0} is not set (referenced as ${{{0}}}; use ${{{0}:-default}} for a default)"
    )]
    Missing(String),
    /// `${` without a closing `}`.
    #[error("unterminated '${{' (write '$$' for a literal dollar)")]
    Unterminated,
    /// `${...}` whose name is not `[A-Za-z_][A-Za-z0-9_]*`.
    #[error("invalid variable name {0:?} in '${{...}}'")]
    BadName(String),
}

/// Replaces every `${VAR}` (or `${VAR:-default}`, used when VAR is unset or empty) in
/// `input` with `lookup(VAR)`; `$$` is a literal `$`, any other `$` is kept as is.
pub fn substitute_vars(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, SubstError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or(SubstError::Unterminated)?;
            let inner = &body[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if !is_identifier(name) {
                return Err(SubstError::BadName(name.to_string()));
            }
            match (lookup(name), default) {
                (Some(v), Some(d)) if v.is_empty() => out.push_str(d),
                (Some(v), _) => out.push_str(&v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(SubstError::Missing(name.to_string())),
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str = "name: echo\nversion: 0.1.0\napi_version: \"^0.1\"\n";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse_in(dir: &str, yaml: &str) -> Result<LoadedManifest, ManifestError> {
        parse_with_env(Path::new(dir), yaml, &no_env)
    }

    fn error_of(yaml: &str) -> String {
        match parse_in("plugins/echo", yaml) {
            Ok(_) => panic!("expected an error for:\n{yaml}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn minimal_manifest_loads_with_trusted_defaults() {
        let loaded = parse_in("plugins/echo", MIN).unwrap();
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let m = loaded.manifest;
        assert_eq!(m.name, "echo");
        assert_eq!(m.version, semver::Version::new(0, 1, 0));
        assert!(m.api_version.matches(&semver::Version::new(0, 1, 5)));
        assert_eq!(m.description, "");
        assert_eq!(m.author, "unknown");
        assert_eq!(m.execution_mode, ExecutionMode::Trusted);
        let lib = format!("{}echo{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
        assert_eq!(m.entry_point, PathBuf::from(&lib));
        assert_eq!(m.library_path(), Path::new("plugins/echo").join(&lib));
        assert_eq!(m.config, serde_json::json!({}));
        assert!(m.requires.is_empty() && m.routes.is_empty() && m.env.is_empty());
        assert_eq!(m.restart, RestartPolicy::default());
        assert_eq!(
            m.resources,
            Resources {
                timeout_ms: 30_000,
                concurrency: 1,
                max_memory_mb: 0,
                max_disk_mb: 0,
                cpu_time_ms: 30_000,
                max_open_files: 0,
                rate_limit: RateLimit { calls: 1000, period_seconds: 60.0, per_client: 0 },
                queue_timeout_ms: None,
            }
        );
    }

    #[test]
    fn default_entry_point_replaces_dashes() {
        let m = parse_in("p/my-plugin", "name: my-plugin\nversion: 1.0.0\napi_version: '*'\n").unwrap();
        let lib = format!("{}my_plugin{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX);
        assert_eq!(m.manifest.entry_point, PathBuf::from(lib));
    }

    #[test]
    fn sandboxed_defaults_differ_and_explicit_keys_win() {
        let m = parse_in("plugins/echo", &format!("{MIN}execution_mode: sandboxed\n")).unwrap().manifest;
        assert_eq!(m.execution_mode, ExecutionMode::Sandboxed);
        assert_eq!(m.resources.timeout_ms, 10_000);
        assert_eq!(m.resources.max_memory_mb, 128);
        assert_eq!(m.resources.max_disk_mb, 50);
        assert_eq!(m.resources.rate_limit.calls, 100);
        assert_eq!(m.resources.rate_limit.period_seconds, 60.0);

        let yaml = format!(
            "{MIN}execution_mode: sandboxed\nresources:\n  max_memory_mb: 256\n  rate_limit:\n    period_seconds: 1.5\n"
        );
        let m = parse_in("plugins/echo", &yaml).unwrap().manifest;
        assert_eq!(m.resources.max_memory_mb, 256);
        assert_eq!(m.resources.max_disk_mb, 50);
        assert_eq!(m.resources.rate_limit.calls, 100);
        assert_eq!(m.resources.rate_limit.period_seconds, 1.5);
        assert_eq!(m.execution_mode.to_string(), "sandboxed");
    }

    #[test]
    fn every_numeric_field_with_a_wrong_type_names_file_and_key() {
        let cases = [
            ("resources:\n  timeout_ms: fast\n", "resources.timeout_ms", "u64"),
            ("resources:\n  concurrency: many\n", "resources.concurrency", "u32"),
            ("resources:\n  max_memory_mb: lots\n", "resources.max_memory_mb", "u64"),
            ("resources:\n  max_disk_mb: [1]\n", "resources.max_disk_mb", "u64"),
            ("resources:\n  rate_limit:\n    calls: -1\n", "resources.rate_limit.calls", "u32"),
            (
                "resources:\n  rate_limit:\n    period_seconds: often\n",
                "resources.rate_limit.period_seconds",
                "f64",
            ),
            ("restart:\n  max_restarts: x\n", "restart.max_restarts", "u32"),
            ("restart:\n  within_seconds: x\n", "restart.within_seconds", "u64"),
            ("restart:\n  backoff_initial_ms: 1.5\n", "restart.backoff_initial_ms", "u64"),
            ("restart:\n  backoff_max_ms: true\n", "restart.backoff_max_ms", "u64"),
        ];
        for (extra, key, ty) in cases {
            let msg = error_of(&format!("{MIN}{extra}"));
            let file = Path::new("plugins/echo").join(MANIFEST_FILE);
            assert!(msg.starts_with(&format!("{}: {key}: ", file.display())), "{msg}");
            assert!(msg.contains(ty), "{msg}");
        }
        let msg = error_of(&format!("{MIN}resources:\n  timeout_ms: fast\n"));
        assert_eq!(
            msg,
            format!(
                "{}: resources.timeout_ms: invalid type: string \"fast\", expected u64",
                Path::new("plugins/echo/plugin.yaml").display()
            )
        );
    }

    #[test]
    fn queue_timeout_and_per_client_limit_are_read() {
        let yaml = format!(
            "{MIN}resources:\n  queue_timeout_ms: 250\n  rate_limit:\n    calls: 10\n    per_client: 3\n"
        );
        let m = parse_in("plugins/echo", &yaml).unwrap().manifest;
        assert_eq!(m.resources.queue_timeout_ms, Some(250));
        assert_eq!((m.resources.rate_limit.calls, m.resources.rate_limit.per_client), (10, 3));
        let msg = error_of(&format!("{MIN}resources:\n  queue_timeout_ms: 0\n"));
        assert!(msg.contains("resources.queue_timeout_ms: must be at least 1"), "{msg}");
    }

    #[test]
    fn semantic_numeric_rules() {
        assert!(error_of(&format!("{MIN}resources:\n  concurrency: 0\n")).contains("resources.concurrency"));
        for p in ["0", "-1", ".nan", ".inf"] {
            let msg = error_of(&format!("{MIN}resources:\n  rate_limit:\n    period_seconds: {p}\n"));
            assert!(msg.contains("resources.rate_limit.period_seconds: must be a positive"), "{msg}");
        }
        let msg = error_of(&format!("{MIN}restart:\n  backoff_initial_ms: 500\n  backoff_max_ms: 100\n"));
        assert!(msg.contains("restart.backoff_max_ms"), "{msg}");
    }

    #[test]
    fn unknown_mode_lists_allowed_values() {
        let msg = error_of(&format!("{MIN}execution_mode: legacy\n"));
        assert!(msg.contains("execution_mode: unknown execution mode \"legacy\""), "{msg}");
        assert!(msg.contains("trusted, sandboxed"), "{msg}");
    }

    #[test]
    fn name_rules() {
        let msg = parse_in("plugins/other", MIN).unwrap_err().to_string();
        assert!(msg.contains("name:") && msg.contains("\"echo\"") && msg.contains("\"other\""), "{msg}");
        let msg = parse_in("plugins/Notes Manager", "name: Notes Manager\nversion: 1.0.0\napi_version: '*'")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("name: \"Notes Manager\" is not a valid plugin name"), "{msg}");
        let msg = error_of("version: 1.0.0\napi_version: '*'\n");
        assert!(msg.contains("name: missing required key"), "{msg}");
        let msg = error_of("name: echo\napi_version: '*'\n");
        assert!(msg.contains("version: missing required key"), "{msg}");
        let msg = error_of("name: echo\nversion: 1.0.0\n");
        assert!(msg.contains("api_version: missing required key"), "{msg}");
    }

    #[test]
    fn bad_semver_and_unquoted_numbers() {
        assert!(error_of("name: echo\nversion: one\napi_version: '*'\n").contains("version: invalid semver"));
        assert!(error_of("name: echo\nversion: 1.0.0\napi_version: '>>1'\n")
            .contains("api_version: invalid semver"));
        let msg = error_of("name: echo\nversion: 1.0.0\napi_version: 0.1\n");
        assert!(msg.contains("api_version: invalid type: floating point") && msg.contains("quoted"), "{msg}");
    }

    #[test]
    fn unknown_keys_warn_with_dotted_path_but_config_and_env_are_free() {
        let yaml = format!(
            "{MIN}frobnicate: 1\nresources:\n  timeout_seconds: 5\nroutes:\n  - method: get\n    path: /x\n    action: x\n    extra: 1\nconfig:\n  anything: {{ goes: here }}\nenv:\n  ANY_KEY: v\nrequires:\n  - {{name: db, version: '*', optional: true}}\n"
        );
        let loaded = parse_in("plugins/echo", &yaml).unwrap();
        let w = loaded.warnings.join("\n");
        assert_eq!(loaded.warnings.len(), 4, "{w}");
        for key in
            ["'frobnicate'", "'resources.timeout_seconds'", "'routes[0].extra'", "'requires[0].optional'"]
        {
            assert!(w.contains(key), "{key} missing in {w}");
        }
        assert!(w.contains("plugin.yaml: unknown key"), "{w}");
        assert_eq!(loaded.manifest.config["anything"]["goes"], "here");
    }

    #[test]
    fn requires_in_both_forms() {
        let yaml = format!(
            "{MIN}requires:\n  - db\n  - cache@^0.2\n  - {{name: auth, version: '>=1.0, <2'}}\n  - {{name: log}}\n"
        );
        let m = parse_in("plugins/echo", &yaml).unwrap().manifest;
        let got: Vec<String> = m.requires.iter().map(|r| r.to_string()).collect();
        assert_eq!(got, ["db@*", "cache@^0.2", "auth@>=1.0, <2", "log@*"]);

        assert!(error_of(&format!("{MIN}requires: [echo]\n"))
            .contains("requires[0]: plugin \"echo\" cannot require itself"));
        assert!(
            error_of(&format!("{MIN}requires: ['db@zzz']\n")).contains("requires[0]: invalid semver range")
        );
        assert!(
            error_of(&format!("{MIN}requires: [{{version: '1'}}]\n")).contains("requires[0].name: missing")
        );
        assert!(error_of(&format!("{MIN}requires: [{{name: db, version: 'nope'}}]\n"))
            .contains("requires[0].version"));
        assert!(error_of(&format!("{MIN}requires: [42]\n")).contains("requires[0]: invalid type"));
        assert!(error_of(&format!("{MIN}requires: [db, db]\n")).contains("requires[1]"));
    }

    #[test]
    fn routes_are_validated_and_normalized() {
        let yaml = format!("{MIN}routes:\n  - {{method: get, path: '/items/{{id}}', action: get_item}}\n");
        let m = parse_in("plugins/echo", &yaml).unwrap().manifest;
        assert_eq!(
            m.routes[0],
            Route { method: "GET".into(), path: "/items/{id}".into(), action: "get_item".into() }
        );

        let bad = [
            ("{method: FETCH, path: /x, action: a}", "routes[0].method: unknown HTTP method \"FETCH\""),
            ("{method: GET, path: x, action: a}", "routes[0].path: \"x\" must start with '/'"),
            ("{method: GET, path: '/x', action: ''}", "routes[0].action: must not be empty"),
            ("{method: GET, path: '/a{id}', action: a}", "routes[0].path"),
            ("{method: GET, path: '/{1d}', action: a}", "routes[0].path"),
            ("{path: /x, action: a}", "routes[0].method: missing"),
        ];
        for (route, expected) in bad {
            let msg = error_of(&format!("{MIN}routes:\n  - {route}\n"));
            assert!(msg.contains(expected), "{msg} lacks {expected}");
        }
        let dup = error_of(&format!("{MIN}routes:\n  - {{method: GET, path: /x, action: a}}\n  - {{method: get, path: /x, action: b}}\n"));
        assert!(dup.contains("routes[1]: duplicate route GET /x"), "{dup}");
    }

    #[test]
    fn entry_point_must_stay_inside_the_folder() {
        let m = parse_in("plugins/echo", &format!("{MIN}entry_point: target/libecho.so\n")).unwrap().manifest;
        assert_eq!(m.library_path(), Path::new("plugins/echo/target/libecho.so"));
        for bad in ["/etc/libx.so", "../other/libx.so", "lib/../../x.so", "''"] {
            let msg = error_of(&format!("{MIN}entry_point: {bad}\n"));
            assert!(msg.contains("entry_point:"), "{msg}");
        }
    }

    #[test]
    fn config_must_be_a_map() {
        assert!(
            error_of(&format!("{MIN}config: [1, 2]\n")).contains("config: expected a mapping, found a list")
        );
        assert!(error_of(&format!("{MIN}config: 3\n")).contains("config: expected a mapping"));
    }

    #[test]
    fn env_substitution() {
        let lookup = |v: &str| match v {
            "DB_HOST" => Some("db.local".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        let yaml = format!(
            "{MIN}env:\n  DB_URL: 'postgres://${{DB_HOST}}:5432/x'\n  PRICE: '$$5 and $HOME'\n  PORT: 8080\n  DEBUG: true\n  FALLBACK: '${{NOPE:-none}}${{EMPTY:-e}}'\n"
        );
        let m = parse_with_env(Path::new("plugins/echo"), &yaml, &lookup).unwrap().manifest;
        assert_eq!(m.env["DB_URL"], "postgres://db.local:5432/x");
        assert_eq!(m.env["PRICE"], "$5 and $HOME");
        assert_eq!(m.env["PORT"], "8080");
        assert_eq!(m.env["DEBUG"], "true");
        assert_eq!(m.env["FALLBACK"], "nonee");

        let msg = parse_with_env(
            Path::new("plugins/echo"),
            &format!("{MIN}env:\n  DB_URL: '${{XCORE_TEST_MISSING_VAR}}'\n"),
            &lookup,
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains("env.DB_URL:") && msg.contains("XCORE_TEST_MISSING_VAR"), "{msg}");
        assert!(error_of(&format!("{MIN}env:\n  A: '${{OPEN'\n")).contains("env.A: unterminated"));
        assert!(error_of(&format!("{MIN}env:\n  A: [1]\n")).contains("env.A: invalid type"));
        assert!(
            error_of(&format!("{MIN}env:\n  'A=B': x\n")).contains("not a valid environment variable name")
        );
    }

    #[test]
    fn env_uses_the_process_environment_by_default() {
        // PATH is set in any test environment; no set_var needed (tests run in parallel).
        let path = std::env::var("PATH").unwrap_or_default();
        if path.is_empty() {
            return;
        }
        let m = parse(Path::new("plugins/echo"), &format!("{MIN}env:\n  P: '${{PATH}}'\n")).unwrap().manifest;
        assert_eq!(m.env["P"], path);
    }

    #[test]
    fn syntax_errors_and_odd_documents_do_not_panic() {
        let e = parse_in("plugins/echo", "name: echo\n  version: [\n").unwrap_err();
        match &e {
            ManifestError::Syntax { line, .. } => assert!(line.is_some()),
            other => panic!("unexpected {other:?}"),
        }
        assert!(e.to_string().contains("plugin.yaml: YAML syntax error"), "{e}");
        for doc in ["", "~", "[]", "42", "name: [", "!tag {}", "name: echo\nname: echo\n", "a: &a [*a]"] {
            assert!(parse_in("plugins/echo", doc).is_err(), "{doc:?} should fail");
        }
        assert!(error_of("- a\n").contains("(top level): expected a mapping"));
    }

    #[test]
    fn load_reads_the_file_and_reports_a_missing_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("echo");
        std::fs::create_dir(&dir).unwrap();
        match load(&dir) {
            Err(ManifestError::NotFound { path }) => assert_eq!(path, dir.join(MANIFEST_FILE)),
            other => panic!("unexpected {other:?}"),
        }
        std::fs::write(dir.join(MANIFEST_FILE), MIN).unwrap();
        let m = load(&dir).unwrap().manifest;
        assert_eq!(m.dir, dir);
        assert_eq!(m.manifest_path(), dir.join(MANIFEST_FILE));
    }

    #[test]
    fn permissions_are_kept_as_strings() {
        let m =
            parse_in("plugins/echo", &format!("{MIN}permissions: [cache, 'kv', cache]\n")).unwrap().manifest;
        assert_eq!(m.permissions, ["cache", "kv"]);
        assert!(error_of(&format!("{MIN}permissions: ['']\n")).contains("permissions[0]"));
    }

    #[test]
    fn substitute_vars_edge_cases() {
        let l = |v: &str| (v == "A").then(|| "x".to_string());
        assert_eq!(substitute_vars("", &l).unwrap(), "");
        assert_eq!(substitute_vars("$", &l).unwrap(), "$");
        assert_eq!(substitute_vars("a$$b$${A}", &l).unwrap(), "a$b${A}");
        assert_eq!(substitute_vars("${A}${A}", &l).unwrap(), "xx");
        assert_eq!(substitute_vars("${B:-}", &l).unwrap(), "");
        assert_eq!(substitute_vars("é${A}é", &l).unwrap(), "éxé");
        assert_eq!(substitute_vars("${}", &l), Err(SubstError::BadName(String::new())));
        assert_eq!(substitute_vars("${B}", &l), Err(SubstError::Missing("B".into())));
    }
}
