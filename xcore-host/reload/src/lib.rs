//! Hot reload: the [`watcher`] of the plugins folder, which loads, reloads and unloads
//! plugins as their folders change (under `--dev` it rebuilds their crates first), and
//! [`plugin_build`], the cargo build and build record of a plugin crate.

pub mod plugin_build;
pub mod watcher;
