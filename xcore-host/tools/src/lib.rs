//! XCore's tools: `xcore docgen` ([`docgen`]: the docs site from docs/*.md, the plugins'
//! manifests and crate docs, and the OpenAPI document it is handed), `xcore logs`
//! ([`logtools`]: reading the JSON-lines logs: tail, follow across rotations, stats,
//! health verdicts) and `xcore plugin new` ([`template`]: the embedded plugin template).
//!
//! They import nothing of the host: the command line hands them what they need.

pub mod docgen;
pub mod logtools;
pub mod template;
