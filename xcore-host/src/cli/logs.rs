//! `xcore logs tail|stats|health`: read the host's JSON log files (see
//! `xcore_tools::logtools`).

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::Subcommand;
use xcore_tools::logtools::{self, Filter, Follower, Health, Level, Stats, Thresholds, Timestamp};

/// Exit code of `logs health` when the logs cannot be read (as monitoring checks
/// expect: 0 ok, 1 warning, 2 critical, 3 unknown).
const HEALTH_UNKNOWN: u8 = 3;

#[derive(Debug, Subcommand)]
pub enum LogsCommand {
    /// Prints the last log entries, oldest first; --follow keeps printing new ones
    /// (across rotations) until interrupted.
    Tail {
        /// Only entries of this plugin (its MDC plugin or its target).
        #[arg(long, short)]
        plugin: Option<String>,
        /// Only entries at this level or above (error, warn, info, debug, trace).
        #[arg(long, short)]
        level: Option<Level>,
        /// Only entries at or after this time: RFC 3339, or an age such as 30s, 15m, 2h, 1d.
        #[arg(long)]
        since: Option<String>,
        /// How many entries to print.
        #[arg(long, short = 'n', default_value_t = 50)]
        lines: usize,
        /// Keep printing entries as they are written.
        #[arg(long, short)]
        follow: bool,
        /// The logging directory (the configuration's logging.directory).
        #[arg(long, default_value = "logs")]
        dir: PathBuf,
    },
    /// Counts the entries per level, plugin and target, and the files' sizes.
    Stats {
        /// The logging directory (the configuration's logging.directory).
        #[arg(long, default_value = "logs")]
        dir: PathBuf,
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
    /// Judges the errors and warnings of the last minutes; exits 0 healthy, 1 degraded,
    /// 2 critical, 3 when the logs cannot be read. A threshold of 0 is off.
    Health {
        /// The logging directory (the configuration's logging.directory).
        #[arg(long, default_value = "logs")]
        dir: PathBuf,
        /// The window, in minutes up to now.
        #[arg(long, short, default_value_t = logtools::DEFAULT_WINDOW_MINUTES)]
        minutes: u64,
        /// Prints JSON.
        #[arg(long)]
        json: bool,
        /// Degraded at this many errors.
        #[arg(long, default_value_t = Thresholds::default().warn_errors)]
        warn_errors: u64,
        /// Critical at this many errors.
        #[arg(long, default_value_t = Thresholds::default().critical_errors)]
        critical_errors: u64,
        /// Degraded at this many warnings.
        #[arg(long, default_value_t = Thresholds::default().warn_warnings)]
        warn_warnings: u64,
        /// Critical at this many warnings.
        #[arg(long, default_value_t = Thresholds::default().critical_warnings)]
        critical_warnings: u64,
    },
}

/// Runs a `logs` command.
pub fn run(cmd: LogsCommand) -> Result<ExitCode> {
    match cmd {
        LogsCommand::Tail { plugin, level, since, lines, follow, dir } => {
            let since = since.as_deref().map(parse_since).transpose()?;
            let filter = Filter { plugin, min_level: level, since };
            tail(&dir, &filter, lines, follow)
        }
        LogsCommand::Stats { dir, json } => {
            let stats = logtools::stats(&dir)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                print!("{}", render_stats(&dir, &stats));
            }
            Ok(ExitCode::SUCCESS)
        }
        LogsCommand::Health {
            dir,
            minutes,
            json,
            warn_errors,
            critical_errors,
            warn_warnings,
            critical_warnings,
        } => {
            let thresholds = Thresholds { warn_errors, critical_errors, warn_warnings, critical_warnings };
            let health = match logtools::health(&dir, minutes, &thresholds, &Timestamp::now()) {
                Ok(h) => h,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(HEALTH_UNKNOWN));
                }
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&health)?);
            } else {
                print!("{}", render_health(&health));
            }
            Ok(ExitCode::from(health.exit_code()))
        }
    }
}

fn tail(dir: &Path, filter: &Filter, lines: usize, follow: bool) -> Result<ExitCode> {
    // Fails early on a missing directory (the follower alone would wait for it).
    logtools::log_files(dir)?;
    let (entries, follower) = if follow {
        let (entries, f) = Follower::with_tail(dir, filter, lines)?;
        (entries, Some(f))
    } else {
        (logtools::tail(dir, filter, lines)?, None)
    };
    let mut out = io::stdout().lock();
    for e in &entries {
        if !write_line(&mut out, e)? {
            return Ok(ExitCode::SUCCESS);
        }
    }
    drop(out);
    if let Some(mut f) = follower {
        // Runs until interrupted, or until stdout is closed (`| head`).
        let stop = AtomicBool::new(false);
        f.run(
            filter,
            |e| {
                if !matches!(write_line(&mut io::stdout().lock(), e), Ok(true)) {
                    stop.store(true, Ordering::Relaxed);
                }
            },
            &stop,
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes one entry; `false` when stdout is closed.
fn write_line(out: &mut impl Write, e: &logtools::LogEntry) -> Result<bool> {
    match writeln!(out, "{e}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(err) => Err(err).context("writing to stdout"),
    }
}

/// RFC 3339, or an age: a number with s, m, h or d.
fn parse_since(s: &str) -> Result<Timestamp> {
    if let Ok(t) = Timestamp::from_str(s) {
        return Ok(t);
    }
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("--since {s:?}: expected an RFC 3339 time or an age such as 30s, 15m, 2h, 1d"),
    };
    let n: u64 = num.parse().with_context(|| format!("--since {s:?}: no number"))?;
    Ok(Timestamp::now().minus(Duration::from_secs(n.saturating_mul(secs))))
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

fn render_stats(dir: &Path, s: &Stats) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let none = || "-".to_string();
    let _ = writeln!(out, "directory  {}", dir.display());
    let _ = writeln!(out, "files      {} ({})", s.files, human_bytes(s.total_bytes));
    let _ = writeln!(out, "entries    {}", s.entries);
    let _ = writeln!(out, "malformed  {}", s.malformed);
    for m in &s.malformed_samples {
        let _ = writeln!(out, "  {m}");
    }
    let _ = writeln!(out, "first      {}", s.first.as_ref().map_or_else(none, Timestamp::to_string));
    let _ = writeln!(out, "last       {}", s.last.as_ref().map_or_else(none, Timestamp::to_string));
    // Levels from ERROR down.
    let levels: Vec<(String, u64)> = s.by_level.iter().rev().map(|(l, n)| (l.to_string(), *n)).collect();
    section(&mut out, "by level", &levels);
    let plugins: Vec<(String, u64)> = s.by_plugin.iter().map(|(k, n)| (k.clone(), *n)).collect();
    section(&mut out, "by plugin", &plugins);
    let targets: Vec<(String, u64)> = s.by_target.iter().map(|(k, n)| (k.clone(), *n)).collect();
    section(&mut out, "by target", &targets);
    out
}

fn section(out: &mut String, title: &str, rows: &[(String, u64)]) {
    use std::fmt::Write as _;
    let _ = writeln!(out, "\n{title}");
    if rows.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let num_width = rows.iter().map(|(_, n)| n.to_string().len()).max().unwrap_or(0);
    for (k, n) in rows {
        let _ = writeln!(out, "  {k:<width$}  {n:>num_width$}");
    }
}

fn render_health(h: &Health) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {} error(s), {} warning(s) in the last {} minute(s) ({} .. {})",
        h.status.as_str().to_uppercase(),
        h.errors,
        h.warnings,
        h.window.minutes,
        h.window.from,
        h.window.to
    );
    let mut rows: Vec<(String, u64, u64)> =
        h.per_plugin.iter().map(|(p, c)| (p.clone(), c.errors, c.warnings)).collect();
    let (pe, pw) = rows.iter().fold((0, 0), |(e, w), r| (e + r.1, w + r.2));
    if h.errors > pe || h.warnings > pw {
        rows.push(("(no plugin)".into(), h.errors - pe, h.warnings - pw));
    }
    if rows.is_empty() {
        return out;
    }
    let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max("PLUGIN".len());
    let _ = writeln!(out, "\n{:<width$}  {:>8}  {:>8}", "PLUGIN", "ERRORS", "WARNINGS");
    for (p, e, w) in rows {
        let _ = writeln!(out, "{p:<width$}  {e:>8}  {w:>8}");
    }
    out
}
