//! Routes that plugins declare in their manifest, served under `/plugins/{name}/...`.
//!
//! The matcher lives with the manifest's routes (`xcore_manifest::routes`), so that the
//! test kit (`xcore-plugin-testkit`) matches a route exactly as this API does; it is
//! re-exported here, where the handlers, the fuzz target and the parser tests name it.

pub use xcore_manifest::routes::{match_route, RouteError, RouteMatch};
