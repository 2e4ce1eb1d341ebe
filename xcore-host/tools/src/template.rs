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
    ("tests/kit.rs", include_str!("../../../plugin-template/tests/kit.rs")),
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
    /// Where the SDK (and the test kit) come from.
    pub api: ApiSource,
}

/// Where a rendered plugin gets `xcore-plugin-sdk` and `xcore-plugin-testkit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiSource {
    /// The `xcore-plugin-api/` folder of an XCore checkout, relative to the rendered crate
    /// or absolute (inside the repository: `../../xcore-plugin-api`).
    Path(String),
    /// A git repository of XCore and the tag to build against (outside the repository).
    Git {
        /// The repository URL.
        url: String,
        /// The tag (a release of the SDK).
        tag: String,
    },
}

impl ApiSource {
    /// The body of the TOML inline table that locates crate `dir` (`sdk`, `testkit`).
    pub fn toml(&self, dir: &str) -> String {
        let quote = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        match self {
            ApiSource::Path(p) => format!("path = \"{}/{dir}\"", quote(p.trim_end_matches('/'))),
            ApiSource::Git { url, tag } => format!("git = \"{}\", tag = \"{}\"", quote(url), quote(tag)),
        }
    }
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
        ("{{sdk_source}}", &v.api.toml("sdk")),
        ("{{testkit_source}}", &v.api.toml("testkit")),
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
            api: ApiSource::Path("../api".into()),
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
    fn the_sdk_comes_from_a_path_or_from_git_and_a_tag() {
        let d = tempfile::tempdir().unwrap();
        let mut v = vars("by-git");
        v.api = ApiSource::Git { url: "https://example.org/xcore.git".into(), tag: "sdk-v0.2.0".into() };
        render(&d.path().join("by-git"), &v).unwrap();
        let toml = std::fs::read_to_string(d.path().join("by-git/Cargo.toml")).unwrap();
        assert!(
            toml.contains(
                r#"xcore-plugin-sdk = { git = "https://example.org/xcore.git", tag = "sdk-v0.2.0" }"#
            ),
            "{toml}"
        );
        render(&d.path().join("by-path"), &vars("by-path")).unwrap();
        let toml = std::fs::read_to_string(d.path().join("by-path/Cargo.toml")).unwrap();
        assert!(toml.contains(r#"xcore-plugin-sdk = { path = "../api/sdk" }"#), "{toml}");
        // A quote in a value cannot break out of the TOML string.
        let odd = ApiSource::Path(r#"a"b\c"#.into()).toml("sdk");
        assert_eq!(odd, r#"path = "a\"b\\c/sdk""#);
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
