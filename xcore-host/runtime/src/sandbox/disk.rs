//! The disk quota of a sandboxed plugin: what it can write (its `data/` and its private
//! temporary folders) in allocated blocks, plus its key-value entries.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A folder that could not be measured: the quota treats it as over.
#[derive(Debug, thiserror::Error)]
#[error("cannot measure {}: {source}", .path.display())]
pub struct UsageError {
    /// What could not be read.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

fn measure(path: &Path, total: &mut u64) -> Result<(), UsageError> {
    let fail = |source| UsageError { path: path.to_path_buf(), source };
    // Not following symlinks: a link counts as itself, never as its target.
    let meta = std::fs::symlink_metadata(path).map_err(fail)?;
    // Blocks, not lengths: a sparse file takes what it allocated, a small file a block.
    *total = total.saturating_add(meta.blocks().saturating_mul(512));
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).map_err(fail)? {
            measure(&entry.map_err(fail)?.path(), total)?;
        }
    }
    Ok(())
}

/// Disk bytes allocated to everything under `dir` (`st_blocks * 512`, the folders
/// themselves included; symlinks are not followed). A missing folder uses nothing;
/// anything else that cannot be read is an error.
pub fn usage(dir: &Path) -> Result<u64, UsageError> {
    let mut total = 0;
    match measure(dir, &mut total) {
        Err(e) if e.path == dir && e.source.kind() == std::io::ErrorKind::NotFound => Ok(0),
        other => other.map(|()| total),
    }
}

/// The private temporary folders of `plugin`'s workers started by this host (see
/// `confine::private_tmp`: `<runtime>/tmp/<plugin>-<host pid>-<generation>`).
pub fn private_tmp_dirs(runtime_dir: &Path, plugin: &str) -> Vec<PathBuf> {
    let prefix = format!("{plugin}-{}-", std::process::id());
    let Ok(entries) = std::fs::read_dir(runtime_dir.join("tmp")) else { return Vec::new() };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name().to_str().and_then(|n| n.strip_prefix(&prefix)).is_some_and(|generation| {
                !generation.is_empty() && generation.bytes().all(|b| b.is_ascii_digit())
            })
        })
        .map(|e| e.path())
        .collect()
}

/// Disk bytes of everything `plugin` can write: `data_dir` and its private temporary
/// folders under `runtime_dir`.
pub fn plugin_usage(data_dir: &Path, runtime_dir: &Path, plugin: &str) -> Result<u64, UsageError> {
    let mut total = usage(data_dir)?;
    for dir in private_tmp_dirs(runtime_dir, plugin) {
        total = total.saturating_add(usage(&dir)?);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_allocated_blocks_of_nested_files() {
        let d = tempfile::tempdir().unwrap();
        let empty = usage(d.path()).unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("x"), vec![1u8; 100_000]).unwrap();
        std::fs::write(d.path().join("a/b/y"), vec![1u8; 50_000]).unwrap();
        let used = usage(d.path()).unwrap();
        assert!(used >= empty + 150_000, "{used}");
        // A sparse file counts what it allocated, not its length.
        let f = std::fs::File::create(d.path().join("sparse")).unwrap();
        f.set_len(1 << 30).unwrap();
        assert!(usage(d.path()).unwrap() < used + (1 << 20));
        assert_eq!(usage(&d.path().join("missing")).unwrap(), 0);
    }

    #[test]
    fn what_cannot_be_read_is_an_error() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), b"x").unwrap();
        // Root reads a folder whatever its mode, so the test uses what fails for
        // everybody: a path through a file.
        let e = usage(&d.path().join("f/below")).unwrap_err();
        assert!(e.to_string().contains("f/below"), "{e}");
        let e = plugin_usage(&d.path().join("f/below"), d.path(), "p").unwrap_err();
        assert_eq!(e.source.raw_os_error(), Some(libc::ENOTDIR));
    }

    #[test]
    fn finds_the_private_tmp_folders_of_this_host_only() {
        let d = tempfile::tempdir().unwrap();
        let pid = std::process::id();
        for name in
            [format!("p-{pid}-1"), format!("p-{pid}-2"), format!("p-x-{pid}-1"), format!("p-{pid}-1-x")]
        {
            std::fs::create_dir_all(d.path().join("tmp").join(name)).unwrap();
        }
        std::fs::write(d.path().join(format!("tmp/p-{pid}-2/f")), vec![1u8; 10_000]).unwrap();
        let mut found = private_tmp_dirs(d.path(), "p");
        found.sort();
        assert_eq!(found, [d.path().join(format!("tmp/p-{pid}-1")), d.path().join(format!("tmp/p-{pid}-2"))]);
        let data = d.path().join("data");
        assert!(plugin_usage(&data, d.path(), "p").unwrap() >= 10_000);
    }
}
