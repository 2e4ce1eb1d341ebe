//! Logging: log4rs with a console appender and a rolling file of JSON lines.
//!
//! Each JSON line carries the time, level, target, message and, through log4rs's MDC,
//! the `plugin` and `request_id` of the call that wrote it. Worker threads set `plugin`
//! once; the call path sets `request_id` around each call.

use std::path::{Path, PathBuf};

use log::LevelFilter;
use log4rs::append::console::{ConsoleAppender, Target};
use log4rs::append::rolling_file::policy::compound::roll::fixed_window::FixedWindowRoller;
use log4rs::append::rolling_file::policy::compound::trigger::size::SizeTrigger;
use log4rs::append::rolling_file::policy::compound::CompoundPolicy;
use log4rs::append::rolling_file::RollingFileAppender;
use log4rs::config::{Appender, Config, Logger, Root};
use log4rs::encode::json::JsonEncoder;
use log4rs::encode::pattern::PatternEncoder;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use xcore_manifest::lenient;

/// Log output settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoggingConfig {
    /// One of [`LoggingConfig::LEVELS`] (lowercased on load).
    #[serde(deserialize_with = "lenient::string")]
    pub level: String,
    /// Folder of the log files (default `logs`).
    #[serde(deserialize_with = "lenient::path")]
    pub directory: PathBuf,
    /// Log to the console.
    #[serde(deserialize_with = "lenient::parse")]
    pub console: bool,
    /// Log to rotating files in `directory`.
    #[serde(deserialize_with = "lenient::parse")]
    pub file: bool,
    /// Size at which a log file is rotated, in MiB (>= 1).
    #[serde(deserialize_with = "lenient::parse")]
    pub max_file_mb: u64,
    /// Rotated files kept (>= 1).
    #[serde(deserialize_with = "lenient::parse")]
    pub max_files: u32,
}

impl LoggingConfig {
    /// Accepted values of `level`.
    pub const LEVELS: [&'static str; 5] = ["error", "warn", "info", "debug", "trace"];
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: "info".to_string(),
            directory: PathBuf::from("logs"),
            console: true,
            file: true,
            max_file_mb: 10,
            max_files: 5,
        }
    }
}

/// The log file's name inside the logging directory.
pub const LOG_FILE: &str = "xcore.log";

/// Logging could not be set up.
#[derive(Debug, Error)]
#[error("logging: {0}")]
pub struct LoggingError(String);

/// Parses a level name from the configuration.
pub fn parse_level(level: &str) -> Result<LevelFilter, LoggingError> {
    level
        .parse::<LevelFilter>()
        .map_err(|_| LoggingError(format!("unknown level '{level}' (error, warn, info, debug, trace)")))
}

/// Installs the global logger from the configuration.
pub fn init(cfg: &LoggingConfig, base_dir: &Path) -> Result<(), LoggingError> {
    init_with_tap(cfg, base_dir, None)
}

/// [`init`], plus `tap`: an appender that gets every line at `warn` and above (the
/// control API's event stream).
pub fn init_with_tap(
    cfg: &LoggingConfig,
    base_dir: &Path,
    tap: Option<Box<dyn log4rs::append::Append>>,
) -> Result<(), LoggingError> {
    let level = parse_level(&cfg.level)?;
    let mut builder = Config::builder();
    let mut root = Root::builder();
    if let Some(tap) = tap {
        let warn = Box::new(log4rs::filter::threshold::ThresholdFilter::new(LevelFilter::Warn));
        builder = builder.appender(Appender::builder().filter(warn).build("tap", tap));
        root = root.appender("tap");
    }
    if cfg.console {
        let console = ConsoleAppender::builder()
            .target(Target::Stderr)
            .encoder(Box::new(PatternEncoder::new("{d(%Y-%m-%dT%H:%M:%S%.3f)} {h({l:<5})} [{t}] {m}{n}")))
            .build();
        builder = builder.appender(Appender::builder().build("console", Box::new(console)));
        root = root.appender("console");
    }
    if cfg.file {
        let dir = base_dir.join(&cfg.directory);
        std::fs::create_dir_all(&dir)
            .map_err(|e| LoggingError(format!("creating {}: {e}", dir.display())))?;
        let pattern = dir.join("xcore.{}.log");
        let roller = FixedWindowRoller::builder()
            .build(&pattern.to_string_lossy(), cfg.max_files.max(1))
            .map_err(|e| LoggingError(e.to_string()))?;
        let trigger = SizeTrigger::new(cfg.max_file_mb.max(1) * 1024 * 1024);
        let file = RollingFileAppender::builder()
            .encoder(Box::new(JsonEncoder::new()))
            .build(dir.join(LOG_FILE), Box::new(CompoundPolicy::new(Box::new(trigger), Box::new(roller))))
            .map_err(|e| LoggingError(format!("opening {}: {e}", dir.join(LOG_FILE).display())))?;
        builder = builder.appender(Appender::builder().build("file", Box::new(file)));
        root = root.appender("file");
    }
    // actix's per-connection chatter is noise at info.
    let config = builder
        .logger(Logger::builder().build("actix_server", LevelFilter::Warn.min(level)))
        .build(root.build(level))
        .map_err(|e| LoggingError(e.to_string()))?;
    log4rs::init_config(config).map_err(|e| LoggingError(e.to_string()))?;
    Ok(())
}

/// Installs a console-only logger for short CLI commands.
pub fn init_cli(level: LevelFilter) {
    let console = ConsoleAppender::builder()
        .target(Target::Stderr)
        .encoder(Box::new(PatternEncoder::new("{h({l})}: {m}{n}")))
        .build();
    if let Ok(config) = Config::builder()
        .appender(Appender::builder().build("console", Box::new(console)))
        .build(Root::builder().appender("console").build(level))
    {
        let _ = log4rs::init_config(config);
    }
}
