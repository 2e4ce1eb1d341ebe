//! [`PluginResources`]: what the host keeps for a plugin outside its instance (its
//! recorded state, its databases and migrations, its jobs, its stored bytes), as the
//! registry's lifecycle needs it. The runtime names no database nor scheduler: the
//! composition root hands it an implementation (the host's is `xcore-services`'
//! `Services`, over `xcore-db` and the scheduler).

use xcore_manifest::Manifest;

use crate::metrics::Metrics;

/// Why the host could not do what a lifecycle step asked of its records or databases.
pub type ResourceError = Box<dyn std::error::Error + Send + Sync>;

/// The tier and version a plugin's recorded state carries.
#[derive(Debug, Clone, Copy)]
pub struct Recorded<'a> {
    /// Plugin name.
    pub name: &'a str,
    /// Its version.
    pub version: &'a str,
    /// `trusted` or `sandboxed` (empty when the plugin never loaded).
    pub mode: &'a str,
}

/// The host's per-plugin resources, for the registry's lifecycle. Methods marked
/// blocking may wait on a database: the registry calls them on the blocking pool.
pub trait PluginResources: Send + Sync + 'static {
    /// Blocking. Applies the plugin's own migrations on every database it may write,
    /// before its instance starts.
    fn migrate(&self, m: &Manifest) -> Result<(), ResourceError>;

    /// Blocking. Records that the plugin loaded (version, tier, signer).
    fn record_loaded(&self, plugin: Recorded<'_>, signed_by: Option<&str>) -> Result<(), ResourceError>;

    /// Blocking. Records that an operator enabled or disabled the plugin, so it stays so
    /// after the host restarts.
    fn record_enabled(&self, plugin: Recorded<'_>, enabled: bool) -> Result<(), ResourceError>;

    /// Blocking. The bytes of the plugin's durable entries (key-value), which count
    /// towards its disk quota.
    fn stored_bytes(&self, plugin: &str) -> Result<u64, ResourceError>;

    /// An instance is gone: what it owned in the host ends with it (its jobs).
    fn release_instance(&self, plugin: &str, generation: u64);

    /// The plugin is unloaded: its database pools close.
    fn release_plugin(&self, plugin: &str);

    /// Sets the gauges of these resources (pools, connections) in `metrics`.
    fn refresh_gauges(&self, metrics: &Metrics);
}
