//! The `data/` folder quota of a sandboxed plugin.

use std::path::Path;

/// Bytes used by the files under `dir` (recursively; symlinks are not followed). A
/// missing folder uses nothing.
pub fn usage(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => usage(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_nested_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("x"), [0u8; 100]).unwrap();
        std::fs::write(d.path().join("a/b/y"), [0u8; 50]).unwrap();
        assert_eq!(super::usage(d.path()), 150);
        assert_eq!(super::usage(&d.path().join("missing")), 0);
    }
}
