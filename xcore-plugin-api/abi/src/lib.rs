//! The ABI of XCore plugins: what crosses the dynamic-library boundary, and nothing else.
//!
//! Plugin authors write against the SDK (`xcore-plugin-sdk`), which wraps this crate; the
//! host depends on this crate alone. Keeping it apart (as wasmtime keeps its ABI crate
//! apart from its runtime) lets the SDK grow in its own releases while the host keeps
//! loading every plugin built on a compatible ABI.
//!
//! - [`ffi`]: the `#[repr(C)]` + [`abi_stable::StableAbi`] types: the root module a
//!   plugin exports, the plugin object the host calls, the host object the plugin calls
//!   back. The host checks the layout of every one of them when it loads a library.
//! - [`describe`]: the JSON a plugin answers about itself (SDK version, actions, routes,
//!   subscriptions, schemas) to the reserved action [`describe::DESCRIBE_ACTION`]. JSON
//!   through the existing vtable, not a layout: it grows without an ABI change.
//! - [`codes`]: the stable error codes shared by plugins, the host and HTTP clients.
//!
//! abi_stable is confined here: no plugin crate needs to name it, and the SDK exposes
//! none of its types, so it could be replaced behind this crate.
//!
//! # Versioning
//!
//! [`ABI_VERSION`] is this crate's version. A plugin reports the version it was built on
//! through its root module, its manifest declares a range in `api_version`, and
//! abi_stable checks every layout; the host refuses a plugin when any of the three
//! disagree. Rules for evolving the ABI:
//! - Never add a method to a `#[sabi_trait]`, nor a field to the root module: abi_stable
//!   lets a host load a library whose prefix type has more fields than its own, never
//!   fewer, so either change makes every older plugin unloadable (the `legacy_abi`
//!   fixture, built on a frozen copy of 0.1.0 in `xcore-plugin-api/abi-0.1.0-frozen`,
//!   fails the moment one is made). Such a change is a new minor version (0.2), and the
//!   host then refuses 0.1 plugins by design.
//! - Route new host services through [`ffi::HostObject::call_host`] and new questions to
//!   the plugin through reserved actions ([`describe::RESERVED_PREFIX`]): JSON, no
//!   layout change, released as a patch version. 0.1.1 added [`describe::DESCRIBE_ACTION`].

#![warn(missing_docs)]

pub mod codes;
pub mod describe;
pub mod ffi;

#[doc(hidden)]
pub use abi_stable;

/// The version of the ABI, the one a plugin reports and the host checks.
pub const ABI_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The symbol every plugin library exports: abi_stable's root-module loader name
/// (`abi_stable::library::ROOT_MODULE_LOADER_NAME`). [`export_root_module!`] spells it
/// out because a `macro_rules!` cannot build an identifier; a test keeps the two equal.
#[doc(hidden)]
pub const ROOT_MODULE_SYMBOL: &str = "_1as_0lib_1header_0root_bmodule_bloader";

/// Whether a plugin built on ABI `plugin` can be loaded by a host built on ABI `host`,
/// by Cargo's compatibility rule: same major, and for 0.x the same minor.
pub fn api_compatible(host: &str, plugin: &str) -> bool {
    fn parts(v: &str) -> Option<(u64, u64)> {
        let mut it = v.split('.');
        let major = it.next()?.parse().ok()?;
        let minor = it.next()?.parse().ok()?;
        Some((major, minor))
    }
    match (parts(host), parts(plugin)) {
        (Some((0, hmin)), Some((0, pmin))) => hmin == pmin,
        (Some((hmaj, _)), Some((pmaj, _))) => hmaj == pmaj,
        _ => false,
    }
}

/// Exports `$module` (an expression building a [`ffi::PluginModule`]) as the library's
/// root module. The SDK's `export_plugin!` calls it; it is what abi_stable's
/// `#[export_root_module]` attribute expands to (abi_stable_derive 0.11,
/// `export_root_module_impl.rs`), written with `$crate` paths so that a plugin crate needs
/// no direct abi_stable dependency (the attribute names `::abi_stable`).
#[doc(hidden)]
#[macro_export]
macro_rules! export_root_module {
    ($module:expr) => {
        fn __xcore_root_module() -> $crate::ffi::PluginModuleRef {
            use $crate::abi_stable::prefix_type::PrefixTypeTrait;
            $module.leak_into_prefix()
        }

        /// The header the host's loader looks up by name.
        #[no_mangle]
        #[allow(non_upper_case_globals)]
        pub static _1as_0lib_1header_0root_bmodule_bloader: $crate::abi_stable::library::LibHeader = {
            extern "C" fn erased_module() -> $crate::abi_stable::library::RootModuleResult {
                $crate::abi_stable::library::__call_root_module_loader(__xcore_root_module)
            }
            // SAFETY: the same call abi_stable's `#[export_root_module]` makes: the header
            // is built from the constructor of the very module type it names
            // (`PluginModuleRef`), and the layout check stays on (`CheckTypeLayout::Yes`), so
            // the host verifies every type before it touches the module.
            unsafe {
                $crate::abi_stable::library::LibHeader::from_constructor::<$crate::ffi::PluginModuleRef>(
                    erased_module,
                    $crate::abi_stable::library::CheckTypeLayout::Yes,
                )
            }
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compatibility_follows_cargo_rules() {
        assert!(api_compatible("0.1.0", "0.1.7"));
        assert!(!api_compatible("0.1.0", "0.2.0"));
        assert!(api_compatible("1.2.0", "1.0.3"));
        assert!(!api_compatible("1.0.0", "2.0.0"));
        assert!(!api_compatible("1.0.0", "garbage"));
    }

    #[test]
    fn the_exported_symbol_is_the_one_abi_stable_looks_up() {
        assert_eq!(ROOT_MODULE_SYMBOL, abi_stable::library::ROOT_MODULE_LOADER_NAME);
    }
}
