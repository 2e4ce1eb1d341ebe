//! Hot reload: watches the plugins folder (notify, with a debouncer) and brings each
//! touched plugin folder in line with the disk through
//! [`PluginRegistry::sync_folder`]: new folder -> load, changed `plugin.yaml` or
//! library -> reload with no downtime, removed folder -> unload. A content hash makes
//! a touch without a change do nothing. Every load, reload and unload it makes goes
//! through the registry's own checks (the signature policy included) and is written
//! to the audit log with actor `watcher`, failures too.
//!
//! In dev mode (`xcore serve --dev`) a change under a plugin's `src/` or to its
//! `Cargo.toml` first rebuilds the crate with cargo; the new library is renamed into
//! place, which is itself the change that triggers the reload. A build that fails is
//! logged and the old version keeps serving.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};

use crate::plugin_build;
use xcore_runtime::PluginRegistry;

/// Watcher settings.
#[derive(Clone)]
pub struct WatchOptions {
    /// How long events settle before acting.
    pub debounce: Duration,
    /// Rebuild crates whose sources change.
    pub dev: bool,
    /// Where the watcher's actions are audited (actor `watcher`); `None`: nowhere.
    pub audit: Option<xcore_db::store::Store>,
}

/// Keeps the watch alive; dropping it stops watching.
pub struct PluginWatcher {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
}

/// What changed inside one plugin folder.
#[derive(Debug, Default)]
struct Touched {
    sources: bool,
}

/// Maps event paths to the plugin folders they touch. Paths inside `data/` (the
/// plugin's own writes), `target/` and temporary build files are not changes of the
/// plugin.
fn classify(plugins_dir: &Path, paths: impl IntoIterator<Item = PathBuf>) -> Vec<(String, Touched)> {
    let mut folders: std::collections::BTreeMap<String, Touched> = Default::default();
    for path in paths {
        let Ok(rel) = path.strip_prefix(plugins_dir) else { continue };
        let parts: Vec<&str> = rel
            .components()
            .filter_map(|c| match c {
                Component::Normal(s) => s.to_str(),
                _ => None,
            })
            .collect();
        let Some(folder) = parts.first() else { continue };
        if folder.starts_with('_') || folder.starts_with('.') {
            continue;
        }
        let inner = &parts[1..];
        if matches!(inner.first(), Some(&"data") | Some(&"target") | Some(&".git"))
            || inner.last().is_some_and(|f| f.ends_with(".tmp-build") || f.ends_with(".tmp"))
        {
            continue;
        }
        let t = folders.entry(folder.to_string()).or_default();
        if matches!(inner.first(), Some(&"src")) || inner == ["Cargo.toml"] {
            t.sources = true;
        }
    }
    folders.into_iter().collect()
}

/// Starts watching `plugins_dir`.
pub fn start(
    registry: Arc<PluginRegistry>,
    plugins_dir: &Path,
    opts: WatchOptions,
) -> Result<PluginWatcher, notify::Error> {
    let plugins_dir = std::fs::canonicalize(plugins_dir).unwrap_or_else(|_| plugins_dir.to_path_buf());
    let (tx, rx) = std::sync::mpsc::channel::<DebounceEventResult>();
    let mut debouncer = new_debouncer(opts.debounce, None, tx)?;
    debouncer.watch(&plugins_dir, RecursiveMode::Recursive)?;
    let dir = plugins_dir.clone();
    let dev = opts.dev;
    std::thread::Builder::new()
        .name("plugin-watcher".into())
        .spawn(move || {
            for batch in rx {
                match batch {
                    Ok(events) => {
                        // Reads (the loader's copy, the content hash) are events too:
                        // acting on them would loop.
                        let paths = events
                            .into_iter()
                            .filter(|e| !matches!(e.event.kind, notify::EventKind::Access(_)))
                            .flat_map(|e| e.event.paths);
                        handle(&registry, &dir, classify(&dir, paths), &opts);
                    }
                    Err(errors) => {
                        for e in errors {
                            log::warn!(target: "xcore::watcher", "file watch error: {e}");
                        }
                    }
                }
            }
        })
        .map_err(|e| notify::Error::generic(&e.to_string()))?;
    log::info!(target: "xcore::watcher", "watching {} for plugin changes{}", plugins_dir.display(),
        if dev { " (dev: rebuilding changed crates)" } else { "" });
    Ok(PluginWatcher { _debouncer: debouncer })
}

fn handle(
    registry: &Arc<PluginRegistry>,
    plugins_dir: &Path,
    touched: Vec<(String, Touched)>,
    opts: &WatchOptions,
) {
    if touched.is_empty() {
        return;
    }
    let handle = registry.host_work();
    log::debug!(target: "xcore::watcher", "changes in {:?}", touched.iter().map(|(n, _)| n).collect::<Vec<_>>());
    for (name, t) in touched {
        let dir = plugins_dir.join(&name);
        if opts.dev && t.sources && dir.join("Cargo.toml").is_file() {
            log::info!(target: "xcore::watcher", "plugin '{name}': sources changed, rebuilding");
            // The host records what it built (its build record vouches for a library
            // built from sources the author signed); the renamed library and the record
            // arrive as their own events and reload the plugin.
            let built = plugin_build::build(&dir, false, false, |_| {})
                .and_then(|lib| plugin_build::record(&dir, &registry.options().runtime_dir).map(|_| lib));
            match built {
                Ok(lib) => log::info!(target: "xcore::watcher", "plugin '{name}': built {}", lib.display()),
                Err(e) => {
                    log::error!(target: "xcore::watcher", "plugin '{name}': build failed, the old version keeps serving: {e}")
                }
            }
            continue;
        }
        if let Some((action, result)) = handle.block_on(registry.sync_folder(&name)) {
            match &result {
                Ok(()) => {
                    log::info!(target: "xcore::watcher", "plugin '{name}': {action} after a file change")
                }
                Err(e) => {
                    log::warn!(target: "xcore::watcher", "plugin '{name}': {action} after a file change failed: {e}")
                }
            }
            audit(opts.audit.as_ref(), action, &name, result.err());
        }
    }
}

/// Records what the watcher did in the audit log (actor `watcher`), like an admin's
/// action. A failure to record is logged: the action already happened.
fn audit(store: Option<&xcore_db::store::Store>, action: &str, plugin: &str, error: Option<String>) {
    let Some(store) = store else { return };
    let outcome = if error.is_some() { "error" } else { "ok" };
    if let Err(e) = store.audit(AUDIT_ACTOR, action, plugin, outcome, error.as_deref()) {
        log::error!(target: "xcore::watcher", "audit log not written: {e}");
    }
}

/// The audit log's actor for the watcher's loads, reloads and unloads.
pub const AUDIT_ACTOR: &str = "watcher";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_map_to_plugin_folders() {
        let root = Path::new("/p");
        let got = classify(
            root,
            [
                "/p/echo/plugin.yaml",
                "/p/echo/libecho.so",
                "/p/notes/src/lib.rs",
                "/p/notes/data/notes.json",
                "/p/notes/target/debug/x",
                "/p/_disabled/plugin.yaml",
                "/p/echo/libecho.tmp-build",
                "/elsewhere/x",
            ]
            .map(PathBuf::from),
        );
        let names: Vec<_> = got.iter().map(|(n, t)| (n.as_str(), t.sources)).collect();
        assert_eq!(names, vec![("echo", false), ("notes", true)]);
    }
}
