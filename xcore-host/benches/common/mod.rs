//! Shared by the benchmarks: where the workspace build put the `xcore` binary and the
//! plugin libraries (`make bench` builds them in the bench's profile first).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The target profile dir: a bench binary lives in `<target>/<profile>/deps/`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf()
}

/// The built library of a workspace plugin crate (`xcore-plugin-echo`).
pub fn built_library(crate_name: &str) -> PathBuf {
    let lib = profile_dir().join(format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        crate_name.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    ));
    assert!(
        lib.is_file(),
        "{} is missing: build the workspace in this profile first (make bench)",
        lib.display()
    );
    lib
}
