//! `xcore plugin run DIR ACTION [JSON]`: calls one action of a built plugin without a
//! server. The library is the one `plugin.yaml`'s `entry_point` names, mapped by the
//! host's own loader (the same checks: api_version range, abi_stable layouts, the
//! contract version), and the plugin runs against the test kit's host
//! (`xcore-plugin-testkit`: the host's services on SQLite in a temporary folder, the
//! manifest's permissions enforced as on a host). No signature is checked: this runs the
//! folder of a plugin being written, in this process.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use xcore_plugin_abi::describe::PluginDescription;
use xcore_plugin_testkit::TestHost;
use xcore_runtime::trusted::loader;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The plugin's folder (its plugin.yaml, and the library its entry_point names).
    dir: PathBuf,
    /// The action to call.
    action: String,
    /// The payload, JSON (default `{}`).
    payload: Option<String>,
    /// An operator grant (repeatable): the permissions in effect are those plugin.yaml
    /// asks for and these grant. Without any, everything plugin.yaml asks for is granted.
    #[arg(long = "grant", value_name = "PERMISSION")]
    grants: Vec<String>,
    /// Grant nothing: every service that needs a permission refuses, as on a host whose
    /// operator approved none.
    #[arg(long, conflicts_with = "grants")]
    no_grants: bool,
    /// Keys of the plugin's config (a JSON object) over those of plugin.yaml. (`--config`
    /// is the host's xcore.yaml, which `plugin run` does not read.)
    #[arg(long, value_name = "JSON")]
    plugin_config: Option<String>,
}

/// A folder of this process for the loader's private copy of the library, removed when
/// the command ends.
struct RunDir(PathBuf);

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    let payload: serde_json::Value = match &args.payload {
        Some(text) => {
            serde_json::from_str(text).with_context(|| format!("the payload is not JSON: {text}"))?
        }
        None => serde_json::json!({}),
    };
    let mut kit = TestHost::from_dir(&args.dir).context("reading the plugin's manifest")?.echo_logs(true);
    if let Some(text) = &args.plugin_config {
        let config: serde_json::Value =
            serde_json::from_str(text).with_context(|| format!("--plugin-config is not JSON: {text}"))?;
        if !config.is_object() {
            bail!("--plugin-config must be a JSON object, not {config}");
        }
        kit = kit.config(config);
    }
    if args.no_grants {
        kit = kit.grants(Vec::<String>::new());
    } else if !args.grants.is_empty() {
        kit = kit.grants(args.grants.clone());
    }
    let manifest = kit.manifest().clone();
    let library = manifest.library_path();
    if !library.is_file() {
        bail!(
            "plugin '{}': its library {} (entry_point in {}) is missing: build it first with \
             `xcore plugin build --plugins-dir {} {}`",
            manifest.name,
            library.display(),
            manifest.manifest_path().display(),
            parent_or_dot(&manifest.dir).display(),
            manifest.name
        );
    }
    if manifest.execution_mode == xcore_manifest::ExecutionMode::Sandboxed {
        eprintln!(
            "note: plugin '{}' is sandboxed on a host; `plugin run` runs it in this process, unconfined",
            manifest.name
        );
    }
    let run_dir = RunDir(std::env::temp_dir().join(format!("xcore-plugin-run-{}", std::process::id())));
    let lib = loader::load(&manifest, &run_dir.0, None)?;
    let plugin = kit.start_with(|init| lib.module.instantiate()(init))?;
    match plugin.call_as("cli", &args.action, payload) {
        Ok(reply) => {
            println!("{}", serde_json::to_string_pretty(&reply)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(f) => {
            eprintln!(
                "error: plugin '{}' action '{}' failed: {} (status {}): {}",
                manifest.name, args.action, f.code, f.status, f.message
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The action tables of the built plugins of `plugins_dir`, by name, for docgen: each
/// library mapped by the host's loader and started against the test kit's host, as
/// `plugin run` does. Trusted-tier plugins only: a sandboxed plugin's code is never run
/// unconfined in this process (its page then has no action table, and the log says so).
/// A plugin that cannot be started is left out, with the reason in the log.
pub fn descriptions(plugins_dir: &Path) -> std::collections::BTreeMap<String, PluginDescription> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(plugins_dir) else { return out };
    let mut dirs: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    dirs.sort();
    let run_dir = RunDir(std::env::temp_dir().join(format!("xcore-docgen-{}", std::process::id())));
    for dir in dirs {
        let hidden = dir.file_name().and_then(|n| n.to_str()).is_none_or(|n| n.starts_with(['_', '.']));
        if hidden || !dir.join(xcore_manifest::MANIFEST_FILE).is_file() {
            continue;
        }
        let kit = match TestHost::from_dir(&dir) {
            Ok(kit) => kit,
            Err(e) => {
                log::warn!(target: "xcore::docgen", "{}: no action table: {e}", dir.display());
                continue;
            }
        };
        let manifest = kit.manifest().clone();
        if manifest.execution_mode == xcore_manifest::ExecutionMode::Sandboxed {
            log::info!(target: "xcore::docgen", "plugin '{}' is sandboxed: docgen does not run its code, so its page has no action table", manifest.name);
            continue;
        }
        if !manifest.library_path().is_file() {
            log::info!(target: "xcore::docgen", "plugin '{}' is not built: its page has no action table", manifest.name);
            continue;
        }
        let started = loader::load(&manifest, &run_dir.0, None)
            .map_err(|e| e.to_string())
            .and_then(|lib| kit.start_with(|init| lib.module.instantiate()(init)).map_err(|e| e.to_string()));
        match started {
            Ok(plugin) => {
                if let Some(d) = plugin.description() {
                    out.insert(manifest.name.clone(), d.clone());
                }
            }
            Err(e) => log::warn!(target: "xcore::docgen", "plugin '{}': no action table: {e}", manifest.name),
        }
    }
    out
}

fn parent_or_dot(dir: &Path) -> &Path {
    match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}
