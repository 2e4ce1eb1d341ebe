//! `xcore plugin add` (install from git) and `xcore plugin rm`.
//!
//! An install never leaves a half-installed plugin: the repository is cloned into a
//! staging folder under the plugins folder (its name starts with `.`, so neither discovery
//! nor the watcher sees it), and, unless `security.require_signatures` is `none`, its
//! **sources** must be signed by a trusted key (`plugin.sig`, [`signing`]) before anything
//! of it runs: no build script, no cargo. Then what no signature covers is removed (a
//! shipped `target/`, build leftovers), the crate is built with `--locked`, the sources are
//! checked again (a build must not change them), the host records the library it built
//! (`build.sig`, signed with the host key, and its hash in `plugin_state`), and the folder
//! is renamed into place in one step. Any failure removes the staging folder; `--stage`
//! keeps a refused checkout under `<runtime_dir>/staged/` for review.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use xcore_config::{self as config, Config};
use xcore_db::store::Store;
use xcore_db::{migrate, Database};
use xcore_manifest as manifest;
use xcore_reload::plugin_build;
use xcore_runtime::registry::SignaturePolicy;
use xcore_security::RequireSignatures;
use xcore_security::{build_record, host_key, keys, signing};

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
    /// Keep a refused checkout for review (under <plugins.runtime_dir>/staged/; the path is printed).
    #[arg(long)]
    stage: bool,
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

/// Refuses the install: the checkout is removed with the staging folder, or with `stage`
/// moved under `<runtime_dir>/staged/` for review.
fn refuse(cfg: &Config, checkout: &Path, name: &str, stage: bool, reason: String) -> anyhow::Error {
    if !stage {
        return anyhow::anyhow!(
            "{reason}\nnothing was built or installed (pass --stage to keep the checkout for review)"
        );
    }
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let staged = cfg.plugins.runtime_dir.join("staged").join(format!("{name}-{secs}-{}", std::process::id()));
    let kept = std::fs::create_dir_all(staged.parent().unwrap_or(Path::new(".")))
        .and_then(|()| std::fs::rename(checkout, &staged))
        .or_else(|_| copy_dir(checkout, &staged));
    match kept {
        Ok(()) => anyhow::anyhow!(
            "{reason}\nnothing was built or installed; the checkout is kept for review in {}",
            staged.display()
        ),
        Err(e) => anyhow::anyhow!(
            "{reason}\nnothing was built or installed; keeping the checkout in {} failed: {e}",
            staged.display()
        ),
    }
}

/// Copies a folder (the checkout, when a rename across file systems fails); links are
/// not followed (they are recreated as links).
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let dest = to.join(entry.file_name());
        if kind.is_dir() {
            copy_dir(&entry.path(), &dest)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path())?, &dest)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
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

    pb.set_message(format!("checking {name}"));
    // Read, never run: the manifest says which library is the build output.
    let m = manifest::load(&build_dir)?.manifest;
    let entry = m.entry_point.to_string_lossy().replace('\\', "/");
    let policy = signature_policy(&cfg)?;
    // Before anything of the checkout runs (build scripts run as this user), its sources
    // must be signed by a trusted key; a sandboxed plugin too: its build is not sandboxed.
    let verified = match cfg.security.require_signatures {
        RequireSignatures::None => None,
        _ => {
            let v = policy.check_sources(&m).map_err(|e| {
                pb.finish_and_clear();
                refuse(&cfg, &build_dir, &name, args.stage, format!("{e}\n{}", refusal_hint(&e)))
            })?;
            if v.library.is_none() {
                pb.finish_and_clear();
                return Err(refuse(
                    &cfg,
                    &build_dir,
                    &name,
                    args.stage,
                    format!(
                        "plugin '{name}': {} covers the library {entry} itself, which a git install builds: \
                         the author must sign the sources (`xcore plugin sign` on the crate leaves the library out)",
                        signing::SIGNATURE_FILE
                    ),
                ));
            }
            Some(v)
        }
    };
    // What no signature covers never reaches the build: a target/ shipped in the
    // repository (cargo would take its artifacts as built), a library, leftovers.
    let removed = signing::remove_uncovered(&build_dir, Some(&entry))
        .with_context(|| format!("clearing {}", build_dir.display()))?;
    if !removed.is_empty() {
        pb.println(format!("not signed, removed before the build: {}", removed.join(", ")));
    }

    pb.set_message(format!("building {name}"));
    plugin_build::build(&build_dir, args.release, verified.is_some(), |line| {
        pb.set_message(format!("building {name}: {line}"))
    })
    .map_err(|e| anyhow::anyhow!("{e}\nnothing was installed"))?;
    pb.set_message(format!("recording the build of {name}"));
    let sources = match &verified {
        Some(v) => {
            // The build must have left the signed sources as they were.
            policy.check_sources(&manifest::load(&build_dir)?.manifest).map_err(|e| {
                anyhow::anyhow!("{e}\nthe build changed the signed sources; nothing was installed")
            })?;
            v.hashes.clone()
        }
        None => signing::hash_tree(&build_dir, Some(&entry))?,
    };
    let key = host_key::load_or_create(&cfg.plugins.runtime_dir).with_context(|| {
        format!("the host key {}", host_key::private_path(&cfg.plugins.runtime_dir).display())
    })?;
    let record = build_record::write(&build_dir, &name, &m.version.to_string(), &entry, &sources, &key)?;
    // What the server will check at every load, checked once here.
    let m = manifest::load(&build_dir)?.manifest;
    policy.check(&m).map_err(|e| anyhow::anyhow!("{e}\nnothing was installed"))?;

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
        dest.join(&entry).display()
    );
    match &verified {
        Some(v) => println!(
            "sources signed by {}; library built here (sha256 {}), recorded in {}",
            v.key_fingerprint,
            record.library_sha256,
            dest.join(signing::BUILD_RECORD_FILE).display()
        ),
        None => println!(
            "signatures not checked (security.require_signatures: none); library sha256 {}",
            record.library_sha256
        ),
    }
    let source = match (&args.git_ref, commit.is_empty()) {
        (Some(r), false) => format!("{repo} {r} ({commit})"),
        (None, false) => format!("{repo} ({commit})"),
        (Some(r), true) => format!("{repo} {r}"),
        (None, true) => repo.clone(),
    };
    record_source(&cfg, &m, &source, &record.library_sha256);
    tell_server(&cfg, &args.target, "rescan", None);
    Ok(ExitCode::SUCCESS)
}

/// Records where the plugin came from in the host's `plugin_state` (the `default`
/// database, migrated first). The plugin is installed either way: a database that
/// cannot be reached only costs the record, with a warning.
fn record_source(cfg: &Config, m: &manifest::Manifest, source: &str, library_sha256: &str) {
    let dbs = cfg.effective_databases();
    let Some(db) = dbs.get("default") else { return };
    let mode = match m.execution_mode {
        manifest::ExecutionMode::Trusted => "trusted",
        manifest::ExecutionMode::Sandboxed => "sandboxed",
    };
    let result = migrate::migrate("default", &db.url, migrate::Op::Run)
        .and_then(|_| Database::connect("default", db))
        .and_then(|db| {
            Store::new(Arc::new(db)).record_source(
                &m.name,
                &m.version.to_string(),
                mode,
                source,
                Some(library_sha256),
            )
        });
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
    Ok(SignaturePolicy {
        require: cfg.security.require_signatures,
        trusted: std::sync::Arc::new(trusted),
        host_key: host_key::HostPublicKey::at(&cfg.plugins.runtime_dir),
    })
}

/// What the operator can do about a refused signature.
fn refusal_hint(reason: &str) -> &'static str {
    if reason.contains("is not trusted") {
        "if you trust its author, trust their public key first: `xcore keys trust AUTHOR.pub`"
    } else if reason.contains("not signed") {
        "ask its author to sign its sources (`xcore plugin sign`) and commit plugin.sig, \
         or install it with security.require_signatures: none"
    } else {
        "the checkout is not what its author signed: review it (--stage keeps it) before trusting it"
    }
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
