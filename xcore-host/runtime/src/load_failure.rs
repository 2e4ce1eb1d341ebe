//! Why a load failed, by kind: each kind has its own problem code, so a client (or the
//! dashboard) can tell a tampered plugin from a missing library or a constructor error
//! without reading prose. The message still says what and where.

use serde::{Deserialize, Serialize};

/// The step of a load that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadKind {
    /// `plugin.yaml` cannot be read or is invalid.
    Manifest,
    /// The signature policy refused it: unsigned, tampered, untrusted, or a library that
    /// is not the one signed or built.
    Signature,
    /// A plugin it requires is not loaded (or not in the version asked for).
    Requirement,
    /// One of its migrations failed.
    Migration,
    /// Its library is missing or cannot be read or mapped.
    Library,
    /// Its library was built against an incompatible contract (abi_stable's layout
    /// check, the API version it was compiled against, or `api_version` in plugin.yaml).
    Abi,
    /// Its manifest names an action the plugin does not have (its routes or hooks against
    /// the action table the plugin answers).
    Contract,
    /// Its constructor (`Plugin::new`) returned an error or panicked.
    Constructor,
    /// The sandbox worker could not be started, confined or greeted.
    Worker,
}

impl LoadKind {
    /// The problem code of the HTTP answer and of `plugin.failed` events.
    pub fn code(self) -> &'static str {
        match self {
            LoadKind::Manifest => "invalid_manifest",
            LoadKind::Signature => "signature_refused",
            LoadKind::Requirement => "requirement_missing",
            LoadKind::Migration => "migration_failed",
            LoadKind::Library => "library_unavailable",
            LoadKind::Abi => "abi_mismatch",
            LoadKind::Contract => "action_missing",
            LoadKind::Constructor => "init_failed",
            LoadKind::Worker => "worker_failed",
        }
    }

    /// The HTTP status: 409 when another plugin's state is the cause, 502 when the
    /// worker process failed, 422 (the plugin as it is cannot load) otherwise.
    pub fn status(self) -> u16 {
        match self {
            LoadKind::Requirement => 409,
            LoadKind::Worker => 502,
            _ => 422,
        }
    }
}

/// A failed load: its kind and the message naming what and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct LoadFailure {
    /// Which step failed.
    pub kind: LoadKind,
    /// What went wrong, naming the plugin and the file or setting.
    pub message: String,
}

impl LoadFailure {
    /// A failure of `kind`.
    pub fn new(kind: LoadKind, message: impl Into<String>) -> Self {
        LoadFailure { kind, message: message.into() }
    }
}

impl crate::trusted::loader::LoadError {
    /// The kind of load failure this loader error is.
    pub fn kind(&self) -> LoadKind {
        use crate::trusted::loader::LoadError;
        match self {
            LoadError::Missing { .. } | LoadError::Io { .. } => LoadKind::Library,
            LoadError::ManifestApiVersion { .. }
            | LoadError::Abi { .. }
            | LoadError::ApiVersion { .. }
            | LoadError::Description { .. } => LoadKind::Abi,
            LoadError::Changed { .. } => LoadKind::Signature,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_code() {
        let kinds = [
            LoadKind::Manifest,
            LoadKind::Signature,
            LoadKind::Requirement,
            LoadKind::Migration,
            LoadKind::Library,
            LoadKind::Abi,
            LoadKind::Constructor,
            LoadKind::Worker,
        ];
        let codes: std::collections::BTreeSet<_> = kinds.iter().map(|k| k.code()).collect();
        assert_eq!(codes.len(), kinds.len());
        assert!(!codes.contains("load_failed"));
    }
}
