//! The slot of one plugin: what outlives its instances (state, manifest, counters,
//! rate limiters, restart history, the current instance).

use super::*;

#[derive(Default)]
pub(super) struct Counters {
    pub(super) calls: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) panics: AtomicU64,
    pub(super) timeouts: AtomicU64,
    pub(super) rate_limited: AtomicU64,
    /// Of `rate_limited`, those refused by the per-client limit.
    pub(super) rate_limited_per_client: AtomicU64,
    /// Calls answered 503 `overloaded` (no worker or call slot in time).
    pub(super) overloaded: AtomicU64,
    pub(super) panics_in_a_row: AtomicU32,
    /// Calls inside the instance now (for the re-entrancy check).
    pub(super) in_flight: AtomicU32,
}

#[derive(Default)]
pub(super) struct SlotInner {
    pub(super) last_error: Option<String>,
    pub(super) tracker: RestartTracker,
    pub(super) generation: u64,
    pub(super) ready_since: Option<Instant>,
    pub(super) load_time: Option<Duration>,
    /// How the last sandbox worker ended (signal name or exit code).
    pub(super) last_exit: Option<String>,
    /// SHA-256 of the manifest and library last loaded: a touch that changes neither
    /// reloads nothing.
    pub(super) content_hash: Option<String>,
    /// Fingerprint of the key that signed the loaded version.
    pub(super) signed_by: Option<String>,
    /// The loaded version's permissions: requested, granted, effective.
    pub(super) grants: Option<xcore_manifest::permissions::Grants>,
}

/// Everything the host keeps about one plugin across its instances.
pub struct PluginSlot {
    pub(super) name: String,
    pub(super) dir: PathBuf,
    pub(super) state: AtomicU8,
    pub(super) manifest: ArcSwapOption<Manifest>,
    pub(super) instance: ArcSwapOption<Instance>,
    pub(super) inner: Mutex<SlotInner>,
    pub(super) limiter: Mutex<RateLimiter>,
    pub(super) client_limiter: Mutex<ClientLimiter>,
    /// The size bound of `client_limiter`'s table.
    pub(super) max_clients: usize,
    pub(super) gauges: Arc<InstanceGauges>,
    pub(super) counters: Counters,
    pub(super) metrics: PluginMetrics,
}

impl PluginSlot {
    pub(super) fn new(name: &str, dir: PathBuf, metrics: PluginMetrics, max_clients: usize) -> Self {
        PluginSlot {
            name: name.to_string(),
            dir,
            state: AtomicU8::new(PluginState::Discovered as u8),
            manifest: ArcSwapOption::empty(),
            instance: ArcSwapOption::empty(),
            inner: Mutex::new(SlotInner::default()),
            limiter: Mutex::new(RateLimiter::new(0, Duration::from_secs(1))),
            client_limiter: Mutex::new(ClientLimiter::new(0, Duration::from_secs(1), max_clients)),
            max_clients,
            gauges: Arc::new(InstanceGauges {
                shed_metric: Some(metrics.shed.clone()),
                ..InstanceGauges::default()
            }),
            counters: Counters::default(),
            metrics,
        }
    }

    /// The plugin's current state.
    pub fn state(&self) -> PluginState {
        PluginState::from_u8(self.state.load(Ordering::Acquire))
    }

    pub(super) fn set_state(&self, s: PluginState) {
        self.state.store(s as u8, Ordering::Release);
    }

    pub(super) fn fail(&self, reason: String) {
        log::error!(target: "xcore::runtime", "plugin '{}' failed: {reason}", self.name);
        self.inner.lock().last_error = Some(reason);
        self.set_state(PluginState::Failed);
    }

    pub(super) fn set_manifest(&self, m: Arc<Manifest>) {
        let rl = &m.resources.rate_limit;
        let period = Duration::from_secs_f64(rl.period_seconds.max(0.001));
        *self.limiter.lock() = RateLimiter::new(rl.calls, period);
        *self.client_limiter.lock() = ClientLimiter::new(rl.per_client, period, self.max_clients);
        self.manifest.store(Some(m));
    }
}
