//! The lifecycle: discovery, boot order, load (every check: manifest, signature,
//! permissions, migrations, the instance), reload, reset, unload, disable and enable,
//! rescan, folder syncs for the watcher, shutdown.

use super::*;

/// What a boot or rescan did.
#[derive(Debug, Default, Serialize)]
pub struct LoadReport {
    /// Plugins now ready.
    pub loaded: Vec<String>,
    /// Plugins that failed, with the reason.
    pub failed: Vec<(String, String)>,
    /// Plugins unloaded because their folder is gone.
    pub removed: Vec<String>,
}

impl PluginRegistry {
    /// The manifest of a plugin, if it has a valid one.
    pub fn manifest(&self, name: &str) -> Option<Arc<Manifest>> {
        self.slot(name).and_then(|s| s.manifest.load_full())
    }

    /// Discovers the plugins folder and loads everything in dependency order. A bad
    /// manifest, a missing dependency or a cycle fails only the plugins concerned.
    pub async fn load_all(self: &Arc<Self>) -> LoadReport {
        let _guard = self.ops.lock().await;
        self.load_new(&mut LoadReport::default()).await
    }

    /// Loads every discovered plugin that has no slot yet, or whose slot is only
    /// discovered; used by boot and rescan.
    pub(super) async fn load_new(self: &Arc<Self>, report: &mut LoadReport) -> LoadReport {
        let mut manifests = Vec::new();
        for (name, dir) in discover(&self.opts.plugins_dir) {
            if let Some(s) = self.slot(&name) {
                if s.state() != PluginState::Discovered {
                    continue;
                }
            }
            let slot = self.slot_or_create(&name, dir.clone());
            match manifest::load(&dir) {
                Ok(loaded) => {
                    for w in &loaded.warnings {
                        log::warn!(target: "xcore::manifest", "{w}");
                    }
                    let m = Arc::new(loaded.manifest);
                    slot.set_manifest(m.clone());
                    if self.is_disabled(&name) {
                        slot.set_state(PluginState::Disabled);
                        continue;
                    }
                    manifests.push(m);
                }
                Err(e) => {
                    slot.fail(e.to_string());
                    report.failed.push((name, e.to_string()));
                }
            }
        }
        let ready: Vec<(String, semver::Version)> = self
            .slots
            .read()
            .values()
            .filter(|s| s.state() == PluginState::Ready)
            .filter_map(|s| s.manifest.load_full().map(|m| (s.name.clone(), m.version.clone())))
            .collect();
        let refs: Vec<&Manifest> = manifests.iter().map(|m| m.as_ref()).collect();
        let plan = plugin_order::plan(&refs, &ready);
        for (name, reason) in plan.failed {
            if let Some(slot) = self.slot(&name) {
                slot.fail(reason.clone());
            }
            report.failed.push((name, reason));
        }
        for name in plan.order {
            let parsed = manifests.iter().find(|m| m.name == name).cloned();
            match self.load_slot(&name, parsed).await {
                Ok(()) => report.loaded.push(name),
                Err(e) => report.failed.push((name, e.to_string())),
            }
        }
        std::mem::take(report)
    }

    /// Loads (or, with `replace`, reloads) one plugin from its folder: reads the manifest
    /// again, checks its requirements, maps a fresh library copy and starts an instance.
    /// On a reload the old instance keeps serving until the new one is ready.
    pub(super) async fn load_slot(
        self: &Arc<Self>,
        name: &str,
        parsed: Option<Arc<Manifest>>,
    ) -> Result<(), RegistryError> {
        let dir = self.opts.plugins_dir.join(name);
        if !dir.is_dir() {
            return Err(RegistryError::UnknownPlugin(name.to_string()));
        }
        let slot = self.slot_or_create(name, dir.clone());
        if self.is_disabled(name) {
            slot.set_state(PluginState::Disabled);
            return Err(RegistryError::Conflict {
                name: name.into(),
                state: PluginState::Disabled,
                hint: "an operator disabled it; use enable",
            });
        }
        let replacing = slot.state() == PluginState::Ready;
        // The supervisor's restart task marks the slot before it loads.
        let restarting = slot.state() == PluginState::Restarting;
        if !replacing {
            slot.set_state(PluginState::Loading);
        }
        let fail = |slot: &PluginSlot, kind: LoadKind, msg: String| {
            let code = kind.code();
            if replacing {
                // The old instance keeps serving; the error is reported, not applied.
                log::error!(target: "xcore::runtime", "reload of '{}' failed ({code}), old version keeps serving: {msg}", slot.name);
                slot.inner.lock().last_error = Some(msg.clone());
                self.emit_host_event(
                    "plugin.reload_failed",
                    serde_json::json!({ "plugin": slot.name, "reason": msg, "code": code }),
                );
            } else {
                slot.fail(msg.clone());
                // A failed restart attempt is not final: the supervisor decides next.
                if !restarting {
                    self.emit_host_event(
                        "plugin.failed",
                        serde_json::json!({ "plugin": slot.name, "reason": msg, "code": code }),
                    );
                }
            }
            RegistryError::LoadFailed(LoadFailure::new(kind, msg))
        };
        let m = match parsed {
            Some(m) => m,
            None => match manifest::load(&dir) {
                Ok(loaded) => {
                    for w in &loaded.warnings {
                        log::warn!(target: "xcore::manifest", "{w}");
                    }
                    Arc::new(loaded.manifest)
                }
                Err(e) => return Err(fail(&slot, LoadKind::Manifest, e.to_string())),
            },
        };
        // Every load verifies again: reloads (hot ones included) and restarts.
        let signed_by = match self.opts.signatures.check(&m) {
            Ok(s) => s,
            Err(e) => return Err(fail(&slot, LoadKind::Signature, e)),
        };
        // What the manifest asks for and the operator allows: a trusted signature over the
        // manifest approves it whole; otherwise `plugins.grants.<name>` decides.
        let grants = xcore_manifest::permissions::effective(
            &m.permissions,
            signed_by.as_ref().is_some_and(|s| s.covers_manifest),
            self.opts.grants.get(name).map(Vec::as_slice).unwrap_or_default(),
        );
        let denied: Vec<&String> =
            grants.requested.iter().filter(|p| !grants.effective.contains(p)).collect();
        if !denied.is_empty() {
            log::warn!(target: "xcore::runtime",
                "plugin '{name}': permissions not granted: {denied:?}; grant them in xcore.yaml (plugins.grants.{name}) or sign the plugin with a trusted key");
        }
        let m = if grants.effective == m.permissions {
            m
        } else {
            Arc::new(Manifest { permissions: grants.effective.clone(), ..(*m).clone() })
        };
        for req in &m.requires {
            let ok = self.slot(&req.name).is_some_and(|s| {
                s.state() == PluginState::Ready
                    && s.manifest.load_full().is_some_and(|dm| req.version.matches(&dm.version))
            });
            if !ok {
                return Err(fail(
                    &slot,
                    LoadKind::Requirement,
                    format!("plugin '{name}' requires '{}' {}, which is not loaded", req.name, req.version),
                ));
            }
        }
        if let Err(e) = self.apply_plugin_migrations(&m).await {
            return Err(fail(&slot, LoadKind::Migration, e));
        }
        let generation = slot.inner.lock().generation + 1;
        let started = Instant::now();
        let instance = {
            let m = m.clone();
            let runtime_dir = self.opts.runtime_dir.clone();
            let gauges = slot.gauges.clone();
            let sandbox = self.opts.sandbox();
            let on_death = self.death_hook(&slot, generation);
            let data_dir = std::path::absolute(m.dir.join("data")).unwrap_or_else(|_| m.dir.join("data"));
            let services = HostServices::new(
                &m.name,
                generation,
                &m.permissions,
                self.host_calls.clone(),
                self.metrics.clone(),
            )
            .with_data_dir(data_dir);
            // A sandboxed worker's lines are gated where the host reads its socket.
            let services = match m.execution_mode {
                ExecutionMode::Trusted => services.with_log_gate(LogGate::new(
                    self.opts.log_lines_per_second,
                    self.opts.log_line_max_bytes,
                )),
                ExecutionMode::Sandboxed => services,
            };
            // The signed hash travels to the loader, which checks the very copy it maps.
            let expected = signed_by.as_ref().map(|s| s.library_sha256.clone());
            tokio::task::spawn_blocking(move || -> Result<Instance, LoadFailure> {
                let loading = |e: loader::LoadError| LoadFailure::new(e.kind(), e.to_string());
                match m.execution_mode {
                    ExecutionMode::Trusted => {
                        let lib = loader::load(&m, &runtime_dir, expected.as_deref()).map_err(loading)?;
                        TrustedInstance::start(
                            &m.name,
                            services,
                            &m.config,
                            lib,
                            m.resources.concurrency,
                            generation,
                            gauges,
                        )
                        .map(Instance::Trusted)
                        .map_err(|e| {
                            let kind = match e {
                                InstantiateError::Init { .. } => LoadKind::Constructor,
                                InstantiateError::Description(_) => LoadKind::Abi,
                                _ => LoadKind::Worker,
                            };
                            LoadFailure::new(kind, e.to_string())
                        })
                    }
                    ExecutionMode::Sandboxed => {
                        loader::check_manifest_api(&m).map_err(loading)?;
                        SandboxInstance::start(&m, services, &sandbox, generation, expected, on_death)
                            .map(Instance::Sandboxed)
                    }
                }
            })
            .await
            .unwrap_or_else(|e| {
                Err(LoadFailure::new(LoadKind::Worker, format!("plugin '{name}': loader task failed: {e}")))
            })
        };
        if let Ok(Instance::Sandboxed(i)) = &instance {
            if i.fs_isolation == "none" {
                static WARNED: std::sync::Once = std::sync::Once::new();
                WARNED.call_once(|| {
                    log::warn!(target: "xcore::sandbox", "this kernel has no landlock: sandboxed plugins run without filesystem isolation (fs_isolation: none)");
                });
            }
        }
        let instance = match instance {
            Ok(i) => Arc::new(i),
            Err(e) => {
                // Its constructor may have subscribed or scheduled before failing.
                self.release_instance(name, generation);
                return Err(fail(&slot, e.kind, e.message));
            }
        };
        // The manifest against the plugin's own action table, when it has one.
        let agreement = match instance.description().map(|d| contract::check(&m, d)) {
            None => contract::Agreement::default(),
            Some(Ok(agreement)) => agreement,
            Some(Err(msg)) => {
                // Dropping the instance shuts it down; what its constructor registered goes too.
                drop(instance);
                self.release_instance(name, generation);
                return Err(fail(&slot, LoadKind::Contract, msg));
            }
        };
        for w in &agreement.warnings {
            log::warn!(target: "xcore::manifest", "{w}");
        }
        let load_time = started.elapsed();
        let hash = content_hash(&dir, &m);
        let previous = {
            let mut inner = slot.inner.lock();
            let previous = inner.generation;
            inner.content_hash = hash;
            inner.signed_by = signed_by.map(|s| s.fingerprint);
            inner.grants = Some(grants);
            inner.generation = generation;
            inner.last_error = None;
            inner.ready_since = Some(Instant::now());
            inner.load_time = Some(load_time);
            previous
        };
        slot.set_manifest(m.clone());
        slot.counters.panics_in_a_row.store(0, Ordering::Relaxed);
        // The old instance (if any) is dropped here; its workers drain queued calls and
        // exit, and in-flight callers still hold it until they get their reply.
        slot.instance.store(Some(instance));
        slot.set_state(PluginState::Ready);
        self.subscribe_instance(&m, generation, &agreement.subscriptions);
        self.release_instance(name, previous);
        let record =
            (m.name.clone(), m.version.to_string(), mode_name(&m), slot.inner.lock().signed_by.clone());
        if let Err(e) = self
            .with_resources(move |r| {
                let plugin = Recorded { name: &record.0, version: &record.1, mode: record.2 };
                r.record_loaded(plugin, record.3.as_deref())
            })
            .await
        {
            log::warn!(target: "xcore::runtime", "plugin '{name}': its state was not recorded: {e}");
        }
        let (verb, event) = match (replacing, restarting) {
            (true, _) => ("reloaded", "plugin.reloaded"),
            (false, true) => ("restarted", "plugin.restarted"),
            (false, false) => ("loaded", "plugin.loaded"),
        };
        log::info!(target: "xcore::runtime", "plugin '{name}' {} {verb} (generation {generation}) in {:.2} ms",
            m.version, load_time.as_secs_f64() * 1e3);
        self.emit_host_event(
            event,
            serde_json::json!({ "plugin": name, "version": m.version.to_string(), "generation": generation }),
        );
        Ok(())
    }

    /// Loads a plugin that is not loaded.
    pub async fn load(self: &Arc<Self>, name: &str) -> Result<(), RegistryError> {
        let _guard = self.ops.lock().await;
        if let Some(slot) = self.slot(name) {
            let state = slot.state();
            if matches!(state, PluginState::Ready | PluginState::Restarting | PluginState::Loading) {
                return Err(RegistryError::Conflict {
                    name: name.into(),
                    state,
                    hint: "already loaded; use reload",
                });
            }
            if state == PluginState::Failed && slot.inner.lock().generation > 0 {
                return Err(RegistryError::Conflict {
                    name: name.into(),
                    state,
                    hint: "it failed after running; use reset",
                });
            }
        }
        self.load_slot(name, None).await
    }

    /// Loads a new instance beside the current one and switches to it; on failure the
    /// current one keeps serving.
    pub async fn reload(self: &Arc<Self>, name: &str) -> Result<(), RegistryError> {
        let _guard = self.ops.lock().await;
        let slot = self.slot(name).ok_or_else(|| RegistryError::UnknownPlugin(name.into()))?;
        match slot.state() {
            PluginState::Ready => self.load_slot(name, None).await,
            state => Err(RegistryError::Conflict {
                name: name.into(),
                state,
                hint: "not running; use load or reset",
            }),
        }
    }

    /// Brings a failed plugin back: forgets its restart history and loads it.
    pub async fn reset(self: &Arc<Self>, name: &str) -> Result<(), RegistryError> {
        let _guard = self.ops.lock().await;
        let slot = self.slot(name).ok_or_else(|| RegistryError::UnknownPlugin(name.into()))?;
        match slot.state() {
            PluginState::Failed => {
                slot.inner.lock().tracker.reset_window();
                self.load_slot(name, None).await
            }
            state => Err(RegistryError::Conflict {
                name: name.into(),
                state,
                hint: "only a failed plugin can be reset",
            }),
        }
    }

    /// Stops routing calls to a plugin, lets in-flight calls finish (up to the drain
    /// timeout) and shuts its instance down. The library stays mapped.
    pub async fn unload(self: &Arc<Self>, name: &str) -> Result<(), RegistryError> {
        let _guard = self.ops.lock().await;
        let slot = self.slot(name).ok_or_else(|| RegistryError::UnknownPlugin(name.into()))?;
        let dependents = self.loaded_dependents(name);
        if !dependents.is_empty() {
            return Err(RegistryError::Required { name: name.into(), by: dependents });
        }
        self.unload_slot(&slot).await;
        Ok(())
    }

    /// Disables a plugin: records it (so it stays disabled after a restart), then
    /// unloads it. Nothing changes if the record cannot be written.
    pub async fn disable(self: &Arc<Self>, name: &str) -> Result<(), RegistryError> {
        let _guard = self.ops.lock().await;
        let slot = self.slot(name).ok_or_else(|| RegistryError::UnknownPlugin(name.into()))?;
        let dependents = self.loaded_dependents(name);
        if !dependents.is_empty() {
            return Err(RegistryError::Required { name: name.into(), by: dependents });
        }
        self.persist_enabled(name, false).await?;
        self.disabled.write().insert(name.to_string());
        if slot.instance.load().is_some() {
            self.unload_slot(&slot).await;
        }
        slot.set_state(PluginState::Disabled);
        log::info!(target: "xcore::runtime", "plugin '{name}' disabled");
        self.emit_host_event("plugin.disabled", serde_json::json!({ "plugin": name }));
        Ok(())
    }

    /// Enables a disabled plugin (recorded first) and loads it.
    pub async fn enable(self: &Arc<Self>, name: &str) -> Result<(), RegistryError> {
        let _guard = self.ops.lock().await;
        let slot = self.slot(name).ok_or_else(|| RegistryError::UnknownPlugin(name.into()))?;
        if !self.is_disabled(name) {
            return Err(RegistryError::Conflict {
                name: name.into(),
                state: slot.state(),
                hint: "it is not disabled",
            });
        }
        self.persist_enabled(name, true).await?;
        self.disabled.write().remove(name);
        slot.set_state(PluginState::Unloaded);
        log::info!(target: "xcore::runtime", "plugin '{name}' enabled");
        self.emit_host_event("plugin.enabled", serde_json::json!({ "plugin": name }));
        self.load_slot(name, None).await
    }

    /// Applies the plugin's own migrations on every database it may write, before its
    /// instance starts.
    pub(super) async fn apply_plugin_migrations(&self, m: &Arc<Manifest>) -> Result<(), String> {
        if !m.dir.join("migrations").is_dir() {
            return Ok(());
        }
        let m = m.clone();
        self.with_resources(move |r| r.migrate(&m)).await.map_err(|e| e.to_string())
    }

    pub(super) async fn persist_enabled(&self, name: &str, enabled: bool) -> Result<(), RegistryError> {
        let m = self.manifest(name);
        let version = m.as_ref().map(|m| m.version.to_string()).unwrap_or_default();
        let mode = m.as_deref().map(mode_name).unwrap_or("");
        let n = name.to_string();
        self.with_resources(move |r| {
            r.record_enabled(Recorded { name: &n, version: &version, mode }, enabled)
        })
        .await
        .map_err(|e| {
            RegistryError::Store(format!(
                "plugin '{name}' was not {}: the host's database could not record it: {e}",
                if enabled { "enabled" } else { "disabled" }
            ))
        })
    }

    /// Loaded plugins whose manifest requires `name`.
    pub(super) fn loaded_dependents(&self, name: &str) -> Vec<String> {
        self.slots
            .read()
            .values()
            .filter(|s| s.instance.load().is_some())
            .filter(|s| s.manifest.load().as_ref().is_some_and(|m| m.requires.iter().any(|r| r.name == name)))
            .map(|s| s.name.clone())
            .collect()
    }

    pub(super) async fn unload_slot(&self, slot: &PluginSlot) {
        slot.set_state(PluginState::Unloaded);
        slot.inner.lock().ready_since = None;
        let generation = slot.inner.lock().generation;
        let Some(instance) = slot.instance.swap(None) else {
            self.release_instance(&slot.name, generation);
            self.emit_host_event("plugin.unloaded", serde_json::json!({ "plugin": slot.name }));
            return;
        };
        let deadline = Instant::now() + self.opts.drain_timeout;
        // Callers still waiting on a reply hold the instance; let them finish first.
        while Arc::strong_count(&instance) > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Dropping the last handle retires the instance: trusted workers drain their
        // queue and the last one out calls shutdown(); a sandbox worker is told to shut
        // down and is killed past the drain timeout.
        let finished = instance.finished_probe();
        drop(instance);
        while !finished() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if !finished() {
            log::warn!(target: "xcore::runtime", "plugin '{}': calls still running after the drain timeout of {:?}", slot.name, self.opts.drain_timeout);
        }
        self.release_instance(&slot.name, generation);
        self.resources.release_plugin(&slot.name);
        log::info!(target: "xcore::runtime", "plugin '{}' unloaded", slot.name);
        self.emit_host_event("plugin.unloaded", serde_json::json!({ "plugin": slot.name }));
    }

    /// Brings one plugin folder in line with the disk, for the file watcher: a removed
    /// folder unloads the plugin, a new one loads it, a changed manifest or library
    /// reloads it (the old version keeps serving if the new one fails). Content that
    /// did not change does nothing; a plugin an operator unloaded stays unloaded.
    /// Loads and reloads go through the same [`Self::load_slot`] checks as every
    /// other load (the signature policy included). Returns what was done (`load`,
    /// `reload` or `unload`) and the error when it failed.
    pub async fn sync_folder(self: &Arc<Self>, name: &str) -> Option<(&'static str, Result<(), String>)> {
        let _guard = self.ops.lock().await;
        let dir = self.opts.plugins_dir.join(name);
        let slot = self.slot(name);
        if !dir.join(manifest::MANIFEST_FILE).is_file() {
            let slot = slot?;
            if dir.exists() {
                // A folder being written or emptied: wait for its manifest.
                return None;
            }
            self.unload_slot(&slot).await;
            self.slots.write().remove(name);
            self.metrics.forget_plugin(name);
            return Some(("unload", Ok(())));
        }
        if let Some(slot) = &slot {
            if matches!(slot.state(), PluginState::Unloaded | PluginState::Disabled) {
                return None;
            }
            let new_hash = manifest::load(&dir).ok().and_then(|l| content_hash(&dir, &l.manifest));
            if new_hash.is_some() && new_hash == slot.inner.lock().content_hash {
                return None;
            }
        }
        let verb =
            if slot.as_ref().is_some_and(|s| s.state() == PluginState::Ready) { "reload" } else { "load" };
        Some((verb, self.load_slot(name, None).await.map_err(|e| e.to_string())))
    }

    /// Loads plugin folders that appeared and unloads those whose folder is gone.
    pub async fn rescan(self: &Arc<Self>) -> LoadReport {
        let _guard = self.ops.lock().await;
        let present: Vec<String> = discover(&self.opts.plugins_dir).into_iter().map(|(n, _)| n).collect();
        let gone: Vec<Arc<PluginSlot>> =
            self.slots.read().values().filter(|s| !present.contains(&s.name)).cloned().collect();
        let mut report = LoadReport::default();
        for slot in gone {
            self.unload_slot(&slot).await;
            self.slots.write().remove(&slot.name);
            self.metrics.forget_plugin(&slot.name);
            report.removed.push(slot.name.clone());
        }
        self.load_new(&mut report).await
    }

    /// Unloads every plugin, dependents before what they require.
    pub async fn shutdown(self: &Arc<Self>) {
        let _guard = self.ops.lock().await;
        loop {
            let running: Vec<Arc<PluginSlot>> =
                self.slots.read().values().filter(|s| s.instance.load().is_some()).cloned().collect();
            if running.is_empty() {
                break;
            }
            // Plugins nothing running depends on go first; a cycle cannot be loaded, so
            // there is always one, but fall back to all of them rather than spin.
            let leaves: Vec<_> =
                running.iter().filter(|s| self.loaded_dependents(&s.name).is_empty()).cloned().collect();
            for slot in if leaves.is_empty() { running } else { leaves } {
                self.unload_slot(&slot).await;
            }
        }
    }
}
