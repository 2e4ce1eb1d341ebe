//! The ABI-stable types that cross the library boundary.
//!
//! Plugin authors do not use these directly: the SDK (`xcore-plugin-sdk`) wraps them. The host uses
//! them to load a library and to implement [`HostObject`].
//!
//! Evolution rules (abi_stable checks them at load time):
//! - [`PluginModule`] is a prefix type, but a host can only load libraries with at least
//!   its fields: adding one refuses every older plugin (see the crate docs).
//! - [`PluginObject`] and [`HostObject`] keep few, coarse methods with byte payloads:
//!   adding a method to a `#[sabi_trait]` makes a newer host refuse older plugins.
// The sabi_trait expansion defines impls inside functions.
#![allow(non_local_definitions)]

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, RResult, RSlice, RStr, RString, RVec},
    StableAbi,
};

/// Per-call metadata handed to the plugin.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct CallMeta<'a> {
    /// Who asked: `http`, `cli`, `plugin:<name>`, `scheduler`...
    pub caller: RStr<'a>,
    /// The request id, also attached to every log line of the call.
    pub request_id: RStr<'a>,
    /// Deadline of the call in milliseconds since the Unix epoch; 0 when there is none.
    pub deadline_unix_ms: u64,
}

/// One call of a plugin action.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct CallRequest<'a> {
    /// The action name.
    pub action: RStr<'a>,
    /// The payload, JSON by convention.
    pub payload: RSlice<'a, u8>,
    /// Call metadata.
    pub meta: CallMeta<'a>,
}

/// A structured error returned across the boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// A stable, machine-readable code (see [`crate::codes`]).
    pub code: RString,
    /// A human-readable message.
    pub message: RString,
    /// The HTTP status the host should answer with.
    pub status: u16,
}

/// The result of a call: the reply bytes (JSON by convention) or an error.
pub type CallResult = RResult<RVec<u8>, CallError>;

/// The object a plugin hands to the host; the host calls it from its worker threads.
#[sabi_trait]
pub trait PluginObject: Send + Sync {
    /// Runs one action.
    fn call(&self, request: CallRequest<'_>) -> CallResult;

    /// Delivers an event the plugin subscribed to; the reply is the handler's result.
    fn on_event(&self, event: RStr<'_>, payload: RSlice<'_, u8>) -> CallResult;

    /// Called once before the host lets go of the instance.
    #[sabi(last_prefix_field)]
    fn shutdown(&self);
}

/// An owned, type-erased plugin object.
pub type PluginBox = PluginObject_TO<'static, RBox<()>>;

/// Log levels as they cross the boundary (`log::Level` is not ABI-stable).
pub mod level {
    /// Error.
    pub const ERROR: u8 = 1;
    /// Warning.
    pub const WARN: u8 = 2;
    /// Information.
    pub const INFO: u8 = 3;
    /// Debug.
    pub const DEBUG: u8 = 4;
    /// Trace.
    pub const TRACE: u8 = 5;
}

/// The object the host hands to a plugin: every host service goes through it.
#[sabi_trait]
pub trait HostObject: Send + Sync {
    /// Writes a log line under the plugin's name (`level` is one of [`level`]).
    fn log(&self, level: u8, request_id: RStr<'_>, message: RStr<'_>);

    /// A generic entry point for host services (`service` names it, `payload` is JSON).
    /// New services are added here without touching the vtable. `request_id` is the
    /// call the plugin is serving (empty outside a call): the host uses it to follow
    /// event chains across plugins.
    #[sabi(last_prefix_field)]
    fn call_host(&self, service: RStr<'_>, request_id: RStr<'_>, payload: RSlice<'_, u8>) -> CallResult;
}

/// An owned, type-erased host object.
pub type HostBox = HostObject_TO<'static, RBox<()>>;

/// What the host passes to a plugin's constructor.
#[repr(C)]
#[derive(StableAbi)]
pub struct InitArgs {
    /// The plugin's name, from its manifest.
    pub plugin_name: RString,
    /// The manifest's `config` map, as JSON.
    pub config_json: RString,
    /// The host's services.
    pub host: HostBox,
}

/// The root module every plugin library exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
#[sabi(missing_field(panic))]
pub struct PluginModule {
    /// The ABI version the plugin was compiled against ([`crate::ABI_VERSION`]; before
    /// the SDK got a crate of its own, the two versions were one).
    pub api_version: extern "C" fn() -> RStr<'static>,
    /// Builds a plugin instance. Called again for every restart.
    #[sabi(last_prefix_field)]
    pub instantiate: extern "C" fn(InitArgs) -> RResult<PluginBox, CallError>,
}

impl RootModule for PluginModuleRef {
    declare_root_module_statics! {PluginModuleRef}
    const BASE_NAME: &'static str = "xcore_plugin";
    const NAME: &'static str = "xcore_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}
