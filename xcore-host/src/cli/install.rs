//! `xcore plugin add` (install from git) and `xcore plugin rm`.
//!
//! An install never leaves a half-installed plugin: the repository is cloned and built
//! in a staging folder under the plugins folder (its name starts with `.`, so neither
//! discovery nor the watcher sees it), its signature is checked as configured, and only
//! then is it renamed into place in one step. Any failure removes the staging folder.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use xcore_host::config::{self, Config};
use xcore_host::db::{migrate, Database};
use xcore_host::runtime::registry::SignaturePolicy;
use xcore_host::security::keys;
use xcore_host::store::Store;
use xcore_host::{manifest, plugin_build};

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The git repository (any URL git accepts: https://, file://, a path).
    repo: String,
    /// A branch, tag or commit to check out (default: the remote's HEAD).
    #[arg(long = "ref")]
    git_ref: Option<String>,
    /// The plugin's name (default: the name in its plugin.yaml).
    #[arg(long)]
    name: Option<String>,
    /// Replace an installed plugin of the same name.
    #[arg(long)]
    force: bool,
    /// Build with optimisations.
    #[arg(long)]
    release: bool,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, Args)]
pub struct RmArgs {
    /// The plugin's name.
    name: String,
    #[command(flatten)]
    target: Target,
}

/// Where plugins live and which server to tell.
#[derive(Debug, Args)]
pub struct Target {
    /// Plugins folder (default: plugins.directory from the configuration).
    #[arg(long)]
    plugins_dir: Option<PathBuf>,
    /// A running server to load or unload the plugin on (default: from the configuration).
    #[arg(long, env = "XCORE_URL")]
    url: Option<String>,
    /// Its admin token (default: server.admin_token, else runtime/admin.token).
    #[arg(long, env = "XCORE_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// Plugin names are folder names: `[a-z0-9_-]+`, so no traversal, no `..`, no `/`.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !ok {
        bail!("'{name}' is not a plugin name: use lowercase letters, digits, '-' and '_' only");
    }
    Ok(())
}

/// `repo` without the user information of a URL (`https://user:token@host/x` becomes
/// `https://host/x`), for everything shown or stored: a credential in the URL must
/// reach git and nothing else.
fn without_credentials(repo: &str) -> String {
    let Some((scheme, rest)) = repo.split_once("://") else { return repo.to_string() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => repo.to_string(),
    }
}

fn spinner(msg: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    pb.enable_steady_tick(Duration::from_millis(120));
    pb.set_message(msg.to_string());
    pb
}

fn git(args: &[&str], cwd: Option<&Path>) -> Result<()> {
    let mut cmd = Command::new("git");
    cmd.args(args);
    if let Some(d) = cwd {
        cmd.current_dir(d);
    }
    let out = cmd.output().context("running git (is it installed?)")?;
    if !out.status.success() {
        // git may echo the URL it was given, credentials included.
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let mut shown = Vec::with_capacity(args.len());
        for a in args {
            let clean = without_credentials(a);
            if clean != *a {
                stderr = stderr.replace(a, &clean);
            }
            shown.push(clean);
        }
        bail!("git {} failed: {stderr}", shown.join(" "));
    }
    Ok(())
}

struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn plugins_dir(cfg: &Config, t: &Target) -> PathBuf {
    t.plugins_dir.clone().unwrap_or_else(|| cfg.plugins.directory.clone())
}

pub fn add(config_path: Option<&Path>, args: AddArgs) -> Result<ExitCode> {
    let cfg = config::load(config_path).context("invalid configuration")?.config;
    let dir = plugins_dir(&cfg, &args.target);
    if let Some(n) = &args.name {
        check_name(n)?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let staging = Staging(dir.join(format!(".staging-{}", std::process::id())));
    std::fs::create_dir_all(&staging.0)?;
    let clone = staging.0.join("clone");
    let repo = without_credentials(&args.repo);

    let pb = spinner(&format!("cloning {repo}"));
    git(&["clone", "--quiet", &args.repo, &clone.to_string_lossy()], None)?;
    if let Some(r) = &args.git_ref {
        git(&["checkout", "--quiet", r], Some(&clone))?;
    }
    // The manifest says what the plugin is called; the folder must carry that name.
    let yaml = std::fs::read_to_string(clone.join(manifest::MANIFEST_FILE))
        .with_context(|| format!("{repo} has no {} at its root", manifest::MANIFEST_FILE))?;
    let declared: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml).context("reading its plugin.yaml")?;
    let name = match (&args.name, declared.get("name").and_then(|v| v.as_str())) {
        (Some(n), Some(d)) if n != d => bail!("--name {n} differs from the name '{d}' in its plugin.yaml"),
        (_, Some(d)) => d.to_string(),
        (Some(n), None) => n.clone(),
        (None, None) => bail!("its plugin.yaml has no name"),
    };
    check_name(&name)?;
    let dest = dir.join(&name);
    if dest.exists() && !args.force {
        bail!("{} exists: pass --force to replace it", dest.display());
    }
    let commit = git_output(&["rev-parse", "HEAD"], &clone).unwrap_or_default();
    let build_dir = staging.0.join(&name);
    std::fs::rename(&clone, &build_dir)?;
    let _ = std::fs::remove_dir_all(build_dir.join(".git"));

    pb.set_message(format!("building {name}"));
    let lib = plugin_build::build(&build_dir, args.release, |line| {
        pb.set_message(format!("building {name}: {line}"))
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    pb.set_message(format!("checking {name}"));
    let m = manifest::load(&build_dir)?.manifest;
    let policy = signature_policy(&cfg)?;
    policy.check(&m).map_err(|e| {
        anyhow::anyhow!(
            "{e}\nnothing was installed; review the plugin, then sign it with `xcore plugin sign` \
             (or install it with security.require_signatures: none)"
        )
    })?;

    // The swap: an existing version moves aside, the new one moves in, in one rename each.
    if dest.exists() {
        let old = staging.0.join(format!("{name}.old"));
        std::fs::rename(&dest, &old).with_context(|| format!("moving {} aside", dest.display()))?;
    }
    std::fs::rename(&build_dir, &dest).with_context(|| format!("moving into {}", dest.display()))?;
    pb.finish_and_clear();
    println!(
        "installed {name} {} from {}{} -> {}",
        m.version,
        repo,
        args.git_ref.as_deref().map(|r| format!(" ({r})")).unwrap_or_default(),
        lib.display()
    );
    let source = match (&args.git_ref, commit.is_empty()) {
        (Some(r), false) => format!("{repo} {r} ({commit})"),
        (None, false) => format!("{repo} ({commit})"),
        (Some(r), true) => format!("{repo} {r}"),
        (None, true) => repo.clone(),
    };
    record_source(&cfg, &m, &source);
    tell_server(&cfg, &args.target, "rescan", None);
    Ok(ExitCode::SUCCESS)
}

/// Records where the plugin came from in the host's `plugin_state` (the `default`
/// database, migrated first). The plugin is installed either way: a database that
/// cannot be reached only costs the record, with a warning.
fn record_source(cfg: &Config, m: &manifest::Manifest, source: &str) {
    let dbs = cfg.effective_databases();
    let Some(db) = dbs.get("default") else { return };
    let mode = match m.execution_mode {
        manifest::ExecutionMode::Trusted => "trusted",
        manifest::ExecutionMode::Sandboxed => "sandboxed",
    };
    let result = migrate::migrate("default", &db.url, migrate::Op::Run)
        .and_then(|_| Database::connect("default", db))
        .and_then(|db| Store::new(Arc::new(db)).record_source(&m.name, &m.version.to_string(), mode, source));
    if let Err(e) = result {
        eprintln!("warning: installed, but its source was not recorded in plugin_state: {e}");
    }
}

fn git_output(args: &[&str], cwd: &Path) -> Option<String> {
    let out = Command::new("git").args(args).current_dir(cwd).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn rm(config_path: Option<&Path>, args: RmArgs) -> Result<ExitCode> {
    let cfg = config::load(config_path).context("invalid configuration")?.config;
    check_name(&args.name)?;
    let dest = plugins_dir(&cfg, &args.target).join(&args.name);
    if !dest.is_dir() {
        bail!("no plugin folder {}", dest.display());
    }
    tell_server(&cfg, &args.target, "unload", Some(&args.name));
    std::fs::remove_dir_all(&dest).with_context(|| format!("removing {}", dest.display()))?;
    println!("removed {}", args.name);
    tell_server(&cfg, &args.target, "rescan", None);
    Ok(ExitCode::SUCCESS)
}

fn signature_policy(cfg: &Config) -> Result<SignaturePolicy> {
    let trusted = cfg
        .security
        .trusted_key_files()
        .iter()
        .map(|f| keys::load_public(f).with_context(|| format!("trusted key {}", f.display())))
        .collect::<Result<Vec<_>>>()?;
    Ok(SignaturePolicy { require: cfg.security.require_signatures, trusted: std::sync::Arc::new(trusted) })
}

/// Asks a running server to rescan (or unload a plugin); says what to do when none runs.
fn tell_server(cfg: &Config, t: &Target, op: &str, name: Option<&str>) {
    let base = t.url.clone().unwrap_or_else(|| super::client::server_url(cfg));
    let token = t
        .token
        .clone()
        .or_else(|| cfg.server.admin_token.clone())
        .or_else(|| std::fs::read_to_string(cfg.plugins.runtime_dir.join("admin.token")).ok());
    let path = match name {
        Some(n) => format!("/api/v1/plugins/{n}/{op}"),
        None => format!("/api/v1/plugins/{op}"),
    };
    let agent = match super::client::agent_for(cfg, Some(Duration::from_secs(30))) {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "cannot reach the server at {base}: {e:#}; the plugin is picked up when `xcore serve` starts"
            );
            return;
        }
    };
    let mut req = agent.post(format!("{base}{path}"));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {}", t.trim()));
    }
    match req.send_empty() {
        Ok(mut r) if r.status().is_success() => {
            if op == "rescan" {
                println!("server at {base}: {}", r.body_mut().read_to_string().unwrap_or_default());
            }
        }
        Ok(mut r) => eprintln!(
            "server at {base} answered {} to {op}: {}",
            r.status(),
            r.body_mut().read_to_string().unwrap_or_default()
        ),
        Err(_) => println!(
            "no server answers at {base}: the plugin is picked up when `xcore serve` starts (make run)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::{check_name, without_credentials};

    #[test]
    fn credentials_never_leave_the_url_given_to_git() {
        for (given, shown) in [
            ("https://user:s3cret@example.com/org/repo.git", "https://example.com/org/repo.git"),
            ("https://token@example.com/repo", "https://example.com/repo"),
            ("https://a@b:c@example.com:8443/x?y=z@w", "https://example.com:8443/x?y=z@w"),
            ("https://example.com/repo@v1", "https://example.com/repo@v1"),
            ("file:///tmp/plugin", "file:///tmp/plugin"),
            ("git@example.com:org/repo.git", "git@example.com:org/repo.git"),
            ("/srv/plugins/echo", "/srv/plugins/echo"),
            ("ssh://git:pw@example.com", "ssh://example.com"),
        ] {
            assert_eq!(without_credentials(given), shown, "{given}");
        }
    }

    #[test]
    fn names_cannot_escape_the_plugins_folder() {
        for bad in ["../evil", "/abs", "a/b", "..", "", "Upper", "a b", "a.b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        for good in ["echo", "my-plugin", "p_2"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
    }
}
