//! `xcore migrate [status|run|revert]`: the host's schema migrations.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};
use xcore_config as config;
use xcore_db::migrate::{self, Op};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Action {
    /// List applied and pending migrations.
    Status,
    /// Apply every pending migration.
    Run,
    /// Revert the last applied migration.
    Revert,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// What to do.
    #[arg(value_enum, default_value = "status")]
    action: Action,
    /// Only this database (default: `default`, where the host's tables live).
    #[arg(long)]
    database: Option<String>,
}

/// Applies (or reports, or reverts) the migrations of the selected databases.
pub fn run(config_path: Option<&Path>, args: MigrateArgs) -> Result<ExitCode> {
    let cfg = config::load(config_path).context("invalid configuration")?.config;
    let dbs = cfg.effective_databases();
    let selected: Vec<_> = match &args.database {
        Some(name) => match dbs.get(name) {
            Some(db) => vec![(name.clone(), db.clone())],
            None => bail!("no database named '{name}' in the configuration"),
        },
        // The host's tables live in `default`; other databases are the plugins'.
        None => dbs.into_iter().filter(|(n, _)| n == "default").collect(),
    };
    let op = match args.action {
        Action::Status => Op::Status,
        Action::Run => Op::Run,
        Action::Revert => Op::Revert,
    };
    for (name, db) in selected {
        // The harness blocks and may start a runtime of its own: a plain thread.
        let report = std::thread::spawn(move || migrate::migrate(&name, &db.url, op))
            .join()
            .expect("migration thread")?;
        println!("database '{}' ({:?})", report.database, report.backend);
        for v in &report.changed {
            println!("  {} {v}", if op == Op::Revert { "reverted" } else { "applied" });
        }
        println!(
            "  applied: {}",
            if report.applied.is_empty() { "none".into() } else { report.applied.join(", ") }
        );
        println!(
            "  pending: {}",
            if report.pending.is_empty() { "none".into() } else { report.pending.join(", ") }
        );
    }
    Ok(ExitCode::SUCCESS)
}
