//! `xcore plugin new`: renders `plugin-template/` (embedded at build time) without
//! cargo-generate. One template, two ways in: the files here are the ones
//! `cargo generate --path plugin-template` renders, with the same placeholders.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// The template's files: (path in the rendered crate, content with `{{placeholders}}`).
const FILES: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../../../plugin-template/Cargo.toml")),
    ("plugin.yaml", include_str!("../../../plugin-template/plugin.yaml")),
    ("README.md", include_str!("../../../plugin-template/README.md")),
    (".gitignore", include_str!("../../../plugin-template/.gitignore")),
    ("src/lib.rs", include_str!("../../../plugin-template/src/lib.rs")),
];

/// The placeholders' values.
#[derive(Debug, Clone)]
pub struct TemplateVars {
    /// The plugin's name (`[a-z0-9_-]+`).
    pub name: String,
    /// One line about it.
    pub description: String,
    /// Its author.
    pub author: String,
    /// `trusted` or `sandboxed`.
    pub execution_mode: String,
    /// Where the SDK crate (`xcore-plugin-api/sdk`) is, relative to the rendered crate or absolute.
    pub api_path: String,
}

/// Why a plugin could not be created.
#[derive(Debug, Error)]
pub enum TemplateError {
    /// Not a plugin name.
    #[error(
        "'{0}' is not a plugin name: use lowercase letters, digits, '-' and '_' (starting with a letter)"
    )]
    BadName(String),
    /// The destination exists.
    #[error("{0} exists already")]
    Exists(PathBuf),
    /// Writing failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Fills the placeholders of one file.
pub fn render_text(text: &str, v: &TemplateVars) -> String {
    [
        ("{{project-name}}", v.name.as_str()),
        ("{{crate_name}}", &v.name.replace('-', "_")),
        ("{{description}}", v.description.as_str()),
        ("{{author}}", v.author.as_str()),
        ("{{execution_mode}}", v.execution_mode.as_str()),
        ("{{api_path}}", v.api_path.as_str()),
    ]
    .iter()
    .fold(text.to_string(), |acc, (k, val)| acc.replace(k, val))
}

/// Renders the template into `dest` (which must not exist); returns the files written.
pub fn render(dest: &Path, v: &TemplateVars) -> Result<Vec<PathBuf>, TemplateError> {
    let ok = v.name.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && v.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !ok {
        return Err(TemplateError::BadName(v.name.clone()));
    }
    if dest.exists() {
        return Err(TemplateError::Exists(dest.to_path_buf()));
    }
    let mut written = Vec::new();
    for (rel, text) in FILES {
        let path = dest.join(rel);
        let io = |source| TemplateError::Io { path: path.clone(), source };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&path, render_text(text, v)).map_err(io)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> TemplateVars {
        TemplateVars {
            name: name.into(),
            description: "A test".into(),
            author: "me".into(),
            execution_mode: "sandboxed".into(),
            api_path: "../api".into(),
        }
    }

    #[test]
    fn renders_every_placeholder() {
        let d = tempfile::tempdir().unwrap();
        let files = render(&d.path().join("my-plugin"), &vars("my-plugin")).unwrap();
        assert_eq!(files.len(), FILES.len());
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            assert!(!text.contains("{{"), "{} keeps a placeholder", f.display());
        }
        let yaml = std::fs::read_to_string(d.path().join("my-plugin/plugin.yaml")).unwrap();
        assert!(yaml.contains("name: my-plugin") && yaml.contains("entry_point: libmy_plugin.so"));
        assert!(yaml.contains("execution_mode: sandboxed"));
    }

    #[test]
    fn refuses_bad_names_and_existing_folders() {
        let d = tempfile::tempdir().unwrap();
        for bad in ["../x", "X", "1abc", "a b", ""] {
            assert!(
                matches!(render(&d.path().join("x"), &vars(bad)), Err(TemplateError::BadName(_))),
                "{bad}"
            );
        }
        std::fs::create_dir(d.path().join("taken")).unwrap();
        assert!(matches!(render(&d.path().join("taken"), &vars("taken")), Err(TemplateError::Exists(_))));
    }
}
