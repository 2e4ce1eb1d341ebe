//! Reading the host's own log files: `xcore logs tail|stats|health`.
//!
//! The host writes JSON lines (log4rs's `JsonEncoder`, see the engine's `logging`) to
//! `xcore.log` in the logging directory; the `FixedWindowRoller` renames a full file to
//! `xcore.0.log`, the previous `xcore.0.log` to `xcore.1.log`, and so on, so a higher
//! number is an older file. A line that is not such a JSON object is skipped and counted,
//! never fatal. Times are RFC 3339 with the writer's UTC offset; [`Timestamp`] compares
//! them as instants, so lines written under different offsets still order correctly.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize, Serializer};
use thiserror::Error;

/// The current log file's name inside the logging directory (as in `logging::LOG_FILE`).
pub const LOG_FILE: &str = "xcore.log";
/// How often [`follow`] looks for new lines.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// The default window of [`health`], in minutes.
pub const DEFAULT_WINDOW_MINUTES: u64 = 15;

const NANOS_PER_SEC: i128 = 1_000_000_000;

/// A log directory or file could not be read, or one line of it could not be parsed.
#[derive(Debug, Error)]
pub enum LogError {
    /// Reading a file or directory failed.
    #[error("{}: {error}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error (in the message, so not also a `source()`, which would
        /// print it twice in an error chain).
        error: io::Error,
    },
    /// A line is not a log entry (reported to the visitor of [`read_log_file`]; the other
    /// functions skip and count such lines).
    #[error("{}:{line}: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong with it.
        reason: ParseError,
    },
}

impl LogError {
    fn io(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
        move |error| LogError::Io { path: path.to_path_buf(), error }
    }
}

/// Why one line, level or time could not be parsed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The line is not valid UTF-8.
    #[error("not UTF-8")]
    Utf8,
    /// The line is not a JSON object with `time`, `level` and `message`.
    #[error("not a log entry: {0}")]
    Json(String),
    /// The time is not RFC 3339.
    #[error("invalid time {0:?} (expected RFC 3339, e.g. 2026-11-26T13:54:54.289+00:00)")]
    Time(String),
    /// The level is not one of ERROR, WARN, INFO, DEBUG, TRACE.
    #[error("unknown level {0:?} (error, warn, info, debug, trace)")]
    Level(String),
}

// ---------------------------------------------------------------------------------------
// Time

/// An RFC 3339 instant: ordered and compared by the instant, shown as it was written.
#[derive(Clone, Debug)]
pub struct Timestamp {
    nanos: i128,
    text: String,
}

impl Timestamp {
    /// The instant `nanos` nanoseconds after the Unix epoch, written in UTC
    /// (`2026-11-26T13:54:54.289000000+00:00`). An instant beyond chrono's range (about
    /// 262,000 years either side of year 0) is clamped to its end, in the text and the
    /// instant alike; every time of a log line (years 0000 to 9999) is far inside.
    pub fn from_unix_nanos(nanos: i128) -> Self {
        let min = unix_nanos_of(&DateTime::<Utc>::MIN_UTC);
        let max = unix_nanos_of(&DateTime::<Utc>::MAX_UTC);
        let nanos = nanos.clamp(min, max);
        let secs = i64::try_from(nanos.div_euclid(NANOS_PER_SEC)).ok();
        // Within [min, max] both are in range; the fallback is never taken.
        let frac = u32::try_from(nanos.rem_euclid(NANOS_PER_SEC)).unwrap_or(0);
        let utc =
            secs.and_then(|s| DateTime::<Utc>::from_timestamp(s, frac)).unwrap_or(DateTime::<Utc>::MIN_UTC);
        Timestamp { nanos, text: utc.format("%Y-%m-%dT%H:%M:%S%.9f+00:00").to_string() }
    }

    /// The system clock's current time.
    pub fn now() -> Self {
        Self::from_system_time(SystemTime::now())
    }

    /// A `SystemTime` as a timestamp (UTC).
    pub fn from_system_time(t: SystemTime) -> Self {
        let nanos = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i128,
            Err(e) => -(e.duration().as_nanos() as i128),
        };
        Self::from_unix_nanos(nanos)
    }

    /// Nanoseconds since the Unix epoch.
    pub fn unix_nanos(&self) -> i128 {
        self.nanos
    }

    /// The time as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// This instant minus `d` (written in UTC).
    pub fn minus(&self, d: Duration) -> Self {
        Self::from_unix_nanos(self.nanos - d.as_nanos() as i128)
    }
}

impl PartialEq for Timestamp {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}
impl Eq for Timestamp {}
impl PartialOrd for Timestamp {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timestamp {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl FromStr for Timestamp {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        match parse_rfc3339(s) {
            Some(nanos) => Ok(Timestamp { nanos, text: s.to_string() }),
            None => Err(ParseError::Time(s.to_string())),
        }
    }
}

/// `YYYY-MM-DD(T|t| )HH:MM:SS[.fraction](Z|z|±HH:MM)` to nanoseconds since the epoch
/// (chrono's RFC 3339 parser: days checked against the month and leap year, hours 00-23,
/// offsets up to ±23:59, digits past the ninth of a fraction ignored, a leap second `:60`
/// counted as the following second).
fn parse_rfc3339(s: &str) -> Option<i128> {
    // chrono also takes U+2212 MINUS SIGN for the offset's sign; the log writer never
    // writes it, and this parser never took anything but ASCII.
    if !s.is_ascii() {
        return None;
    }
    DateTime::parse_from_rfc3339(s).ok().map(|t| unix_nanos_of(&t))
}

/// Nanoseconds since the epoch of a chrono time. chrono keeps a leap second as second 59
/// with a nanosecond field of 1,000,000,000 or more, so `:60.5` lands on the following
/// second's `.5`. (Not `timestamp_nanos_opt`: its `i64` ends in 2262.)
fn unix_nanos_of<Tz: TimeZone>(t: &DateTime<Tz>) -> i128 {
    i128::from(t.timestamp()) * NANOS_PER_SEC + i128::from(t.timestamp_subsec_nanos())
}

// ---------------------------------------------------------------------------------------
// Entries

/// A log level; `Error` is the highest (`Level::Warn < Level::Error`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    /// TRACE
    Trace,
    /// DEBUG
    Debug,
    /// INFO
    Info,
    /// WARN
    Warn,
    /// ERROR
    Error,
}

impl Level {
    /// The name as log4rs writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "TRACE",
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Level {
    type Err = ParseError;

    /// Case-insensitive; `warning` is accepted for `warn`.
    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s.to_ascii_lowercase().as_str() {
            "trace" => Ok(Level::Trace),
            "debug" => Ok(Level::Debug),
            "info" => Ok(Level::Info),
            "warn" | "warning" => Ok(Level::Warn),
            "error" => Ok(Level::Error),
            _ => Err(ParseError::Level(s.to_string())),
        }
    }
}

/// One line of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LogEntry {
    /// When it was written.
    pub time: Timestamp,
    /// Its level.
    pub level: Level,
    /// The message.
    pub message: String,
    /// The log target: a host module (`xcore::runtime`) or, for a plugin's own lines, the
    /// plugin's name.
    pub target: String,
    /// The plugin the writing thread worked for (MDC `plugin`).
    pub plugin: Option<String>,
    /// The request being served (MDC `request_id`).
    pub request_id: Option<String>,
}

#[derive(Deserialize)]
struct RawEntry {
    time: String,
    level: String,
    message: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    mdc: RawMdc,
}

#[derive(Default, Deserialize)]
struct RawMdc {
    plugin: Option<String>,
    request_id: Option<String>,
}

impl LogEntry {
    /// Parses one JSON line.
    pub fn parse(line: &str) -> Result<Self, ParseError> {
        let raw: RawEntry = serde_json::from_str(line).map_err(|e| ParseError::Json(e.to_string()))?;
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        Ok(LogEntry {
            time: raw.time.parse()?,
            level: raw.level.parse()?,
            message: raw.message,
            target: raw.target,
            plugin: non_empty(raw.mdc.plugin),
            request_id: non_empty(raw.mdc.request_id),
        })
    }

    /// Parses one line as read from a file: `None` for a blank line.
    fn parse_bytes(line: &[u8]) -> Option<Result<Self, ParseError>> {
        let text = match std::str::from_utf8(line) {
            Ok(t) => t.trim(),
            Err(_) => return Some(Err(ParseError::Utf8)),
        };
        (!text.is_empty()).then(|| Self::parse(text))
    }
}

/// `TIME LEVEL [target] (plugin rid) message`; the parentheses only when there is a
/// plugin or request id (`-` stands for a missing plugin).
impl fmt::Display for LogEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:<5} [{}]", self.time, self.level, self.target)?;
        match (&self.plugin, &self.request_id) {
            (Some(p), Some(r)) => write!(f, " ({p} {r})")?,
            (Some(p), None) => write!(f, " ({p})")?,
            (None, Some(r)) => write!(f, " (- {r})")?,
            (None, None) => {}
        }
        write!(f, " {}", self.message)
    }
}

/// Which entries to keep; every field that is set must match.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// The MDC `plugin` or the target equals this.
    pub plugin: Option<String>,
    /// At least this level (`Warn` keeps WARN and ERROR).
    pub min_level: Option<Level>,
    /// Written at or after this instant.
    pub since: Option<Timestamp>,
}

impl Filter {
    /// Whether `e` passes.
    pub fn matches(&self, e: &LogEntry) -> bool {
        if let Some(p) = &self.plugin {
            if e.plugin.as_deref() != Some(p.as_str()) && e.target != *p {
                return false;
            }
        }
        self.min_level.is_none_or(|l| e.level >= l) && self.since.as_ref().is_none_or(|s| e.time >= *s)
    }
}

// ---------------------------------------------------------------------------------------
// Files

/// The log files in `dir`, oldest first: `xcore.N.log` from the highest N down, then
/// `xcore.log`. Other files are ignored.
pub fn log_files(dir: &Path) -> Result<Vec<PathBuf>, LogError> {
    let mut rotated = Vec::new();
    let mut current = None;
    for ent in fs::read_dir(dir).map_err(LogError::io(dir))? {
        let ent = ent.map_err(LogError::io(dir))?;
        let path = ent.path();
        let Some(name) = ent.file_name().to_str().map(str::to_string) else { continue };
        if !path.is_file() {
            continue;
        }
        if name == LOG_FILE {
            current = Some(path);
        } else if let Some(n) = rotated_index(&name) {
            rotated.push((n, path));
        }
    }
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    Ok(rotated.into_iter().map(|(_, p)| p).chain(current).collect())
}

/// `N` of `xcore.N.log`.
fn rotated_index(name: &str) -> Option<u64> {
    let n = name.strip_prefix("xcore.")?.strip_suffix(".log")?;
    if n.is_empty() || !n.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// Opens `path`; `None` when it is gone (rotated away since it was listed).
fn open_existing(path: &Path) -> Result<Option<File>, LogError> {
    match File::open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(LogError::Io { path: path.to_path_buf(), error }),
    }
}

/// Calls `visit` for each line of `reader`: the entry, or a [`LogError::Malformed`].
fn scan(
    mut reader: impl BufRead,
    path: &Path,
    visit: &mut dyn FnMut(Result<LogEntry, LogError>),
) -> Result<(), LogError> {
    let mut buf = Vec::new();
    let mut line = 0u64;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(LogError::io(path))? == 0 {
            return Ok(());
        }
        line += 1;
        match LogEntry::parse_bytes(&buf) {
            None => {}
            Some(Ok(e)) => visit(Ok(e)),
            Some(Err(reason)) => visit(Err(LogError::Malformed { path: path.to_path_buf(), line, reason })),
        }
    }
}

/// Reads one log file, calling `visit` with each entry or malformed line (blank lines are
/// skipped). A missing file reads as empty.
pub fn read_log_file(path: &Path, mut visit: impl FnMut(Result<LogEntry, LogError>)) -> Result<(), LogError> {
    match open_existing(path)? {
        Some(f) => scan(BufReader::new(f), path, &mut visit),
        None => Ok(()),
    }
}

/// The last `n` entries matching `filter`, oldest first, across the current and rotated
/// files. Malformed lines are skipped.
pub fn tail(dir: &Path, filter: &Filter, n: usize) -> Result<Vec<LogEntry>, LogError> {
    tail_inner(dir, filter, n, None)
}

/// `tail`, reading the current file through `held` (up to its position) instead of by
/// name, and skipping a rotated file that is `held` renamed.
fn tail_inner(
    dir: &Path,
    filter: &Filter,
    n: usize,
    held: Option<&mut OpenLog>,
) -> Result<Vec<LogEntry>, LogError> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let files = log_files(dir)?;
    // Newest first; each chunk holds the last matching entries of one file.
    let mut chunks: Vec<VecDeque<LogEntry>> = Vec::new();
    let mut found = 0;
    // Some(id) while the current file is read through `held`.
    let mut held_id = None;
    if let Some(h) = held {
        held_id = Some(h.id);
        let path = dir.join(LOG_FILE);
        (&h.file).seek(SeekFrom::Start(0)).map_err(LogError::io(&path))?;
        let chunk = last_matching(BufReader::new((&h.file).take(h.pos)), &path, filter, n)?;
        (&h.file).seek(SeekFrom::Start(h.pos)).map_err(LogError::io(&path))?;
        found += chunk.len();
        chunks.push(chunk);
    }
    for path in files.iter().rev() {
        if found >= n {
            break;
        }
        let Some(file) = open_existing(path)? else { continue };
        if let Some(held_id) = held_id {
            let id = file.metadata().ok().and_then(|m| file_id(&m));
            if path.file_name().is_some_and(|f| f == LOG_FILE) || (id.is_some() && id == held_id) {
                continue;
            }
        }
        let chunk = last_matching(BufReader::new(file), path, filter, n - found)?;
        found += chunk.len();
        chunks.push(chunk);
    }
    Ok(chunks.into_iter().rev().flatten().collect())
}

/// The last `keep` entries of `reader` matching `filter`.
fn last_matching(
    reader: impl BufRead,
    path: &Path,
    filter: &Filter,
    keep: usize,
) -> Result<VecDeque<LogEntry>, LogError> {
    let mut chunk = VecDeque::new();
    scan(reader, path, &mut |r| {
        if let Ok(e) = r {
            if filter.matches(&e) {
                chunk.push_back(e);
                if chunk.len() > keep {
                    chunk.pop_front();
                }
            }
        }
    })?;
    Ok(chunk)
}

// ---------------------------------------------------------------------------------------
// Follow

type FileId = (u64, u64);

#[cfg(unix)]
fn file_id(m: &fs::Metadata) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    Some((m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_id(_: &fs::Metadata) -> Option<FileId> {
    None
}

/// The current log file as [`Follower`] holds it open.
struct OpenLog {
    file: File,
    id: Option<FileId>,
    /// Bytes consumed so far (complete lines plus `partial`).
    pos: u64,
    /// The start of a line whose newline has not been written yet.
    partial: Vec<u8>,
}

impl OpenLog {
    fn open(path: &Path) -> Result<Option<Self>, LogError> {
        let Some(file) = open_existing(path)? else { return Ok(None) };
        let meta = file.metadata().map_err(LogError::io(path))?;
        Ok(Some(OpenLog { file, id: file_id(&meta), pos: 0, partial: Vec::new() }))
    }

    /// Positions the handle after the last complete line (so that a line being written
    /// is read whole later, not as a fragment).
    fn seek_to_last_line_end(&mut self, path: &Path) -> Result<(), LogError> {
        let len = self.file.metadata().map_err(LogError::io(path))?.len();
        let look = len.min(64 * 1024);
        self.file.seek(SeekFrom::Start(len - look)).map_err(LogError::io(path))?;
        let mut tail = Vec::with_capacity(look as usize);
        (&self.file).take(look).read_to_end(&mut tail).map_err(LogError::io(path))?;
        let end = match tail.iter().rposition(|&b| b == b'\n') {
            Some(i) => len - look + i as u64 + 1,
            // No newline in the last 64 KiB: a runaway line; start after it.
            None if look == 64 * 1024 => len,
            None => 0,
        };
        self.file.seek(SeekFrom::Start(end)).map_err(LogError::io(path))?;
        self.pos = end;
        Ok(())
    }

    /// Reads what was appended; calls `emit` for each complete line. With `eof`, a last
    /// unterminated line counts too (the file is done).
    fn drain(
        &mut self,
        path: &Path,
        eof: bool,
        emit: &mut dyn FnMut(Result<LogEntry, ParseError>),
    ) -> Result<(), LogError> {
        let read = self.file.read_to_end(&mut self.partial).map_err(LogError::io(path))?;
        self.pos += read as u64;
        let mut start = 0;
        while let Some(i) = self.partial[start..].iter().position(|&b| b == b'\n') {
            if let Some(r) = LogEntry::parse_bytes(&self.partial[start..start + i]) {
                emit(r);
            }
            start += i + 1;
        }
        self.partial.drain(..start);
        if eof && !self.partial.is_empty() {
            if let Some(r) = LogEntry::parse_bytes(&self.partial) {
                emit(r);
            }
            self.partial.clear();
        }
        Ok(())
    }
}

/// Follows `xcore.log` across rotations: [`Follower::poll`] reports the entries appended
/// since the last poll. When the file is renamed away (its inode changes) the rest of the
/// old file is read first, then the new one from its start; when it shrinks (truncated),
/// it is read again from the start.
pub struct Follower {
    path: PathBuf,
    open: Option<OpenLog>,
    malformed: u64,
}

impl Follower {
    /// Starts at the end of the current file (or at the start of one created later).
    pub fn at_end(dir: &Path) -> Result<Self, LogError> {
        let path = dir.join(LOG_FILE);
        let mut open = OpenLog::open(&path)?;
        if let Some(o) = &mut open {
            o.seek_to_last_line_end(&path)?;
        }
        Ok(Follower { path, open, malformed: 0 })
    }

    /// The last `n` entries matching `filter` and a follower that continues exactly after
    /// them: no line is lost or repeated between the two.
    pub fn with_tail(dir: &Path, filter: &Filter, n: usize) -> Result<(Vec<LogEntry>, Self), LogError> {
        let mut f = Self::at_end(dir)?;
        let entries = tail_inner(dir, filter, n, f.open.as_mut())?;
        Ok((entries, f))
    }

    /// Lines skipped as malformed so far.
    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// Reads what was appended since the last poll and calls `on_entry` for each entry
    /// matching `filter`, in order. Returns how many matched.
    pub fn poll(&mut self, filter: &Filter, on_entry: &mut dyn FnMut(&LogEntry)) -> Result<usize, LogError> {
        let mut matched = 0;
        let malformed = &mut self.malformed;
        let mut emit = |r: Result<LogEntry, ParseError>| match r {
            Ok(e) if filter.matches(&e) => {
                matched += 1;
                on_entry(&e);
            }
            Ok(_) => {}
            Err(_) => *malformed += 1,
        };
        if let Some(o) = &mut self.open {
            o.drain(&self.path, false, &mut emit)?;
        }
        let meta = match fs::metadata(&self.path) {
            Ok(m) => Some(m),
            // Renamed away and not yet recreated: keep reading the old handle.
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(error) => return Err(LogError::Io { path: self.path.clone(), error }),
        };
        let Some(meta) = meta else { return Ok(matched) };
        let replaced = match &self.open {
            Some(o) => file_id(&meta) != o.id || meta.len() < o.pos,
            None => true,
        };
        if replaced {
            if let Some(mut old) = self.open.take() {
                // Lines written between the drain above and the rename.
                old.drain(&self.path, true, &mut emit)?;
            }
            self.open = OpenLog::open(&self.path)?;
            if let Some(o) = &mut self.open {
                o.drain(&self.path, false, &mut emit)?;
            }
        }
        Ok(matched)
    }

    /// Polls every [`POLL_INTERVAL`] until `stop` is set.
    pub fn run(
        &mut self,
        filter: &Filter,
        mut on_entry: impl FnMut(&LogEntry),
        stop: &AtomicBool,
    ) -> Result<(), LogError> {
        loop {
            self.poll(filter, &mut on_entry)?;
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

/// Calls `on_entry` for each entry matching `filter` appended to the log after the call,
/// following rotations (see [`Follower`]), until `stop` is set.
pub fn follow(
    dir: &Path,
    filter: &Filter,
    on_entry: impl FnMut(&LogEntry),
    stop: &AtomicBool,
) -> Result<(), LogError> {
    Follower::at_end(dir)?.run(filter, on_entry, stop)
}

// ---------------------------------------------------------------------------------------
// Stats

/// How many malformed lines [`Stats`] names.
pub const MALFORMED_SAMPLES: usize = 5;

/// What the log directory holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Number of log files.
    pub files: usize,
    /// Their total size.
    pub total_bytes: u64,
    /// Entries parsed.
    pub entries: u64,
    /// Lines skipped as malformed.
    pub malformed: u64,
    /// The first malformed lines, as `file:line: reason`.
    pub malformed_samples: Vec<String>,
    /// Entries per level.
    pub by_level: BTreeMap<Level, u64>,
    /// Entries per MDC plugin (entries without one are not counted here).
    pub by_plugin: BTreeMap<String, u64>,
    /// Entries per target.
    pub by_target: BTreeMap<String, u64>,
    /// The earliest entry's time.
    pub first: Option<Timestamp>,
    /// The latest entry's time.
    pub last: Option<Timestamp>,
}

/// Counts the entries of every log file in `dir`.
pub fn stats(dir: &Path) -> Result<Stats, LogError> {
    let mut s = Stats::default();
    for path in log_files(dir)? {
        let Some(file) = open_existing(&path)? else { continue };
        s.files += 1;
        s.total_bytes += file.metadata().map_err(LogError::io(&path))?.len();
        scan(BufReader::new(file), &path, &mut |r| match r {
            Ok(e) => {
                s.entries += 1;
                *s.by_level.entry(e.level).or_default() += 1;
                if let Some(p) = &e.plugin {
                    *s.by_plugin.entry(p.clone()).or_default() += 1;
                }
                *s.by_target.entry(e.target.clone()).or_default() += 1;
                if s.first.as_ref().is_none_or(|f| e.time < *f) {
                    s.first = Some(e.time.clone());
                }
                if s.last.as_ref().is_none_or(|l| e.time > *l) {
                    s.last = Some(e.time);
                }
            }
            Err(err) => {
                s.malformed += 1;
                if s.malformed_samples.len() < MALFORMED_SAMPLES {
                    s.malformed_samples.push(err.to_string());
                }
            }
        })?;
    }
    Ok(s)
}

// ---------------------------------------------------------------------------------------
// Health

/// When [`health`] reports degraded or critical; a threshold of 0 is off.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Degraded at this many errors (default 1).
    pub warn_errors: u64,
    /// Critical at this many errors (default 10).
    pub critical_errors: u64,
    /// Degraded at this many warnings (default 20).
    pub warn_warnings: u64,
    /// Critical at this many warnings (default 0: off).
    pub critical_warnings: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { warn_errors: 1, critical_errors: 10, warn_warnings: 20, critical_warnings: 0 }
    }
}

impl Thresholds {
    /// The status for these counts.
    pub fn status(&self, errors: u64, warnings: u64) -> Status {
        let reached = |count: u64, threshold: u64| threshold > 0 && count >= threshold;
        if reached(errors, self.critical_errors) || reached(warnings, self.critical_warnings) {
            Status::Critical
        } else if reached(errors, self.warn_errors) || reached(warnings, self.warn_warnings) {
            Status::Degraded
        } else {
            Status::Healthy
        }
    }
}

/// The verdict of [`health`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Under every threshold.
    Healthy,
    /// At a warning threshold.
    Degraded,
    /// At a critical threshold.
    Critical,
}

impl Status {
    /// 0 healthy, 1 degraded, 2 critical (as monitoring checks expect).
    pub fn exit_code(self) -> u8 {
        match self {
            Status::Healthy => 0,
            Status::Degraded => 1,
            Status::Critical => 2,
        }
    }

    /// `healthy`, `degraded` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Degraded => "degraded",
            Status::Critical => "critical",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Errors and warnings of one plugin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// ERROR entries.
    pub errors: u64,
    /// WARN entries.
    pub warnings: u64,
}

/// The time range [`health`] looked at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Window {
    /// Its length.
    pub minutes: u64,
    /// Its start (inclusive).
    pub from: Timestamp,
    /// Its end (`now`, inclusive).
    pub to: Timestamp,
}

/// Errors and warnings in a recent window, and what they amount to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Health {
    /// The verdict.
    pub status: Status,
    /// ERROR entries in the window.
    pub errors: u64,
    /// WARN entries in the window.
    pub warnings: u64,
    /// Per MDC plugin, every plugin with an entry in the window (entries without a plugin
    /// count only in the totals).
    pub per_plugin: BTreeMap<String, Counts>,
    /// The window.
    pub window: Window,
    /// The thresholds applied.
    pub thresholds: Thresholds,
}

impl Health {
    /// 0 healthy, 1 degraded, 2 critical.
    pub fn exit_code(&self) -> u8 {
        self.status.exit_code()
    }
}

/// Counts the errors and warnings written in the `window_minutes` up to `now` and
/// judges them by `thresholds`.
pub fn health(
    dir: &Path,
    window_minutes: u64,
    thresholds: &Thresholds,
    now: &Timestamp,
) -> Result<Health, LogError> {
    let from = now.minus(Duration::from_secs(window_minutes.saturating_mul(60)));
    let (mut errors, mut warnings) = (0, 0);
    let mut per_plugin: BTreeMap<String, Counts> = BTreeMap::new();
    for path in log_files(dir)? {
        let Some(file) = open_existing(&path)? else { continue };
        // A file last written before the window holds nothing in it.
        let modified = file.metadata().and_then(|m| m.modified()).ok();
        if modified.is_some_and(|m| Timestamp::from_system_time(m) < from) {
            continue;
        }
        scan(BufReader::new(file), &path, &mut |r| {
            let Ok(e) = r else { return };
            if e.time < from || e.time > *now {
                return;
            }
            let counts = e.plugin.map(|p| per_plugin.entry(p).or_default());
            match e.level {
                Level::Error => {
                    errors += 1;
                    if let Some(c) = counts {
                        c.errors += 1;
                    }
                }
                Level::Warn => {
                    warnings += 1;
                    if let Some(c) = counts {
                        c.warnings += 1;
                    }
                }
                _ => {}
            }
        })?;
    }
    Ok(Health {
        status: thresholds.status(errors, warnings),
        errors,
        warnings,
        per_plugin,
        window: Window { minutes: window_minutes, from, to: now.clone() },
        thresholds: *thresholds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    fn line(time: &str, level: &str, target: &str, plugin: Option<&str>, msg: &str) -> String {
        let mdc = match plugin {
            Some(p) => format!(r#"{{"plugin":"{p}","request_id":"r-{msg}"}}"#),
            None => "{}".to_string(),
        };
        format!(
            r#"{{"time":"{time}","level":"{level}","message":"{msg}","module_path":"m","file":"f.rs","line":1,"target":"{target}","thread":"main","thread_id":1,"mdc":{mdc}}}"#
        )
    }

    /// `time` at minute `m`, second `s` of 2020-01-10 12:xx UTC (in the past: `health` skips
    /// files last modified before its window).
    fn t(m: u32, s: u32) -> String {
        format!("2020-01-10T12:{m:02}:{s:02}.000000000+00:00")
    }

    fn write(path: &Path, lines: &[String]) {
        let mut f = File::create(path).unwrap();
        for l in lines {
            writeln!(f, "{l}").unwrap();
        }
    }

    fn append(path: &Path, text: &str) {
        let mut f = fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn messages(entries: &[LogEntry]) -> Vec<&str> {
        entries.iter().map(|e| e.message.as_str()).collect()
    }

    #[test]
    fn parses_a_line_with_mdc() {
        let l = r#"{"time":"2026-11-26T13:54:54.289180567+00:00","level":"INFO","message":"plugin 'notes' unloaded","module_path":"xcore_host::runtime::registry","file":"xcore-host/src/runtime/registry.rs","line":465,"target":"xcore::runtime","thread":"main","thread_id":140564265013120,"mdc":{"plugin":"notes","request_id":"ab12"}}"#;
        let e = LogEntry::parse(l).unwrap();
        assert_eq!(e.time.as_str(), "2026-11-26T13:54:54.289180567+00:00");
        assert_eq!(e.level, Level::Info);
        assert_eq!(e.message, "plugin 'notes' unloaded");
        assert_eq!(e.target, "xcore::runtime");
        assert_eq!(e.plugin.as_deref(), Some("notes"));
        assert_eq!(e.request_id.as_deref(), Some("ab12"));
        assert_eq!(
            e.to_string(),
            "2026-11-26T13:54:54.289180567+00:00 INFO  [xcore::runtime] (notes ab12) plugin 'notes' unloaded"
        );
    }

    #[test]
    fn parses_a_line_without_mdc() {
        let e = LogEntry::parse(&line(&t(0, 0), "WARN", "xcore", None, "hi")).unwrap();
        assert_eq!((e.level, e.plugin, e.request_id), (Level::Warn, None, None));
        let no_mdc_key = r#"{"time":"2026-01-10T12:00:00Z","level":"ERROR","message":"m","target":"x"}"#;
        let e = LogEntry::parse(no_mdc_key).unwrap();
        assert_eq!(e.plugin, None);
        assert_eq!(e.to_string(), "2026-01-10T12:00:00Z ERROR [x] m");
    }

    #[test]
    fn malformed_lines_are_errors_not_panics() {
        for bad in [
            "not json",
            "{}",
            "[1,2]",
            r#"{"time":"yesterday","level":"INFO","message":"m","target":"x"}"#,
            r#"{"time":"2026-02-30T00:00:00Z","level":"INFO","message":"m","target":"x"}"#,
            r#"{"time":"2026-01-10T12:00:00Z","level":"LOUD","message":"m","target":"x"}"#,
            r#"{"time":"2026-01-10T12:00:00Z","level":"INFO","message":"m","target":"x","mdc":{"plugin":3}}"#,
            r#"{"time":"2026-01-10T12:00:00Z","level":"INFO","message":"m","#,
        ] {
            assert!(LogEntry::parse(bad).is_err(), "{bad}");
        }
        assert!(matches!(LogEntry::parse_bytes(b"\xff\xfe"), Some(Err(ParseError::Utf8))));
        assert!(LogEntry::parse_bytes(b"  \r").is_none());
    }

    #[test]
    fn malformed_lines_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        write(&path, &[line(&t(0, 0), "INFO", "x", None, "a"), String::new(), "garbage".into()]);
        let mut errors = Vec::new();
        read_log_file(&path, |r| {
            if let Err(e) = r {
                errors.push(e.to_string());
            }
        })
        .unwrap();
        assert_eq!(errors.len(), 1);
        assert!(errors[0].starts_with(&format!("{}:3: not a log entry", path.display())), "{}", errors[0]);
    }

    #[test]
    fn timestamps_compare_as_instants() {
        let a: Timestamp = "2026-01-10T12:00:00.5+01:00".parse().unwrap();
        let b: Timestamp = "2026-01-10T11:00:00.500000000Z".parse().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "2026-01-10T12:00:00.5+01:00");
        let c: Timestamp = "2026-01-10T10:59:59.999999999-00:00".parse().unwrap();
        assert!(c < b);
        let epoch: Timestamp = "1970-01-01T00:00:00Z".parse().unwrap();
        assert_eq!(epoch.unix_nanos(), 0);
        let x: Timestamp = "2024-02-29T23:59:59.123456789+00:00".parse().unwrap();
        let round = Timestamp::from_unix_nanos(x.unix_nanos());
        assert_eq!(round.as_str(), "2024-02-29T23:59:59.123456789+00:00");
        assert_eq!(x.minus(Duration::from_secs(60)).as_str(), "2024-02-29T23:58:59.123456789+00:00");
        for bad in [
            "2026-01-10",
            "2026-13-01T00:00:00Z",
            "2026-01-10T24:00:00Z",
            "2026-01-10T12:00:00",
            "2026-01-10T12:00:00.Z",
            "2026-01-10T12:00:00+1:00",
            "2026-01-10T12:00:00Zjunk",
        ] {
            assert!(bad.parse::<Timestamp>().is_err(), "{bad}");
        }
        let now = Timestamp::now();
        assert_eq!(now.as_str().parse::<Timestamp>().unwrap(), now);
    }

    fn nanos(s: &str) -> i128 {
        s.parse::<Timestamp>().unwrap_or_else(|e| panic!("{s}: {e}")).unix_nanos()
    }

    const SEC: i128 = NANOS_PER_SEC;
    const DAY: i128 = 86_400 * SEC;

    #[test]
    fn leap_years_and_month_ends() {
        // Divisible by 4, except centuries, except every 400 years.
        for ok in ["2024-02-29", "2000-02-29", "1600-02-29", "0000-02-29", "9996-02-29"] {
            assert!(format!("{ok}T00:00:00Z").parse::<Timestamp>().is_ok(), "{ok}");
        }
        for bad in ["2023-02-29", "1900-02-29", "2100-02-29", "2024-02-30", "2026-02-29"] {
            assert!(format!("{bad}T00:00:00Z").parse::<Timestamp>().is_err(), "{bad}");
        }
        for (last, next) in [
            ("2026-01-31", "2026-02-01"),
            ("2026-02-28", "2026-03-01"),
            ("2024-02-29", "2024-03-01"),
            ("2026-04-30", "2026-05-01"),
            ("2026-06-30", "2026-07-01"),
            ("2026-09-30", "2026-10-01"),
            ("2026-11-30", "2026-12-01"),
            ("2026-12-31", "2027-01-01"),
        ] {
            let one_past = format!("{}-{:02}", &last[..7], last[8..].parse::<u32>().unwrap() + 1);
            assert!(format!("{one_past}T00:00:00Z").parse::<Timestamp>().is_err(), "{one_past}");
            assert_eq!(
                nanos(&format!("{next}T00:00:00Z")) - nanos(&format!("{last}T00:00:00Z")),
                DAY,
                "{last}"
            );
            // Written back from the instant, the day after is the next month's first.
            let end = Timestamp::from_unix_nanos(nanos(&format!("{last}T23:59:59.999999999Z")) + 1);
            assert_eq!(end.as_str(), format!("{next}T00:00:00.000000000+00:00"));
        }
        // Known instants across leap days and centuries.
        assert_eq!(nanos("2000-03-01T00:00:00Z"), 951_868_800 * SEC);
        assert_eq!(nanos("2024-02-29T00:00:00Z"), 1_709_164_800 * SEC);
        assert_eq!(nanos("2100-03-01T00:00:00Z") - nanos("2100-02-28T00:00:00Z"), DAY);
        assert_eq!(nanos("2001-01-01T00:00:00Z") - nanos("2000-01-01T00:00:00Z"), 366 * DAY);
        assert_eq!(nanos("1901-01-01T00:00:00Z") - nanos("1900-01-01T00:00:00Z"), 365 * DAY);
        // Before the epoch: negative, and written back as it was.
        assert_eq!(nanos("1969-12-31T23:59:59.5Z"), -SEC / 2);
        assert_eq!(Timestamp::from_unix_nanos(-SEC / 2).as_str(), "1969-12-31T23:59:59.500000000+00:00");
        assert_eq!(nanos("0000-01-01T00:00:00Z"), -62_167_219_200 * SEC);
        // Every day of two centuries goes to text and back to the same instant.
        let mut day = nanos("1900-01-01T06:07:08.000000009Z");
        while day < nanos("2100-12-31T00:00:00Z") {
            let t = Timestamp::from_unix_nanos(day);
            assert_eq!(nanos(t.as_str()), day, "{t}");
            day += DAY;
        }
        let last = Timestamp::from_unix_nanos(nanos("9999-12-31T23:59:59.999999999Z"));
        assert_eq!(last.as_str(), "9999-12-31T23:59:59.999999999+00:00");
    }

    #[test]
    fn offsets_separators_fractions_and_leap_seconds() {
        let utc = nanos("2026-01-01T00:30:00Z");
        // An offset moves the instant, across a day, month and year boundary too.
        assert_eq!(nanos("2026-01-01T01:30:00+01:00"), utc);
        assert_eq!(nanos("2025-12-31T19:00:00-05:30"), utc);
        assert_eq!(nanos("2026-01-02T00:29:00+23:59"), utc);
        assert_eq!(nanos("2025-12-31T00:31:00-23:59"), utc);
        assert_eq!(nanos("2026-01-01T00:30:00-00:00"), utc);
        assert_eq!(nanos("2026-01-01T00:30:00+00:00"), utc);
        // `T`, `t` or a space between date and time; `Z` or `z`.
        assert_eq!(nanos("2026-01-01t00:30:00z"), utc);
        assert_eq!(nanos("2026-01-01 00:30:00Z"), utc);
        // Fractions: any number of digits, nanoseconds kept, the rest ignored.
        assert_eq!(nanos("2026-01-01T00:30:00.1Z") - utc, SEC / 10);
        assert_eq!(nanos("2026-01-01T00:30:00.000000001Z") - utc, 1);
        assert_eq!(nanos("2026-01-01T00:30:00.1234567899999Z") - utc, 123_456_789);
        // A leap second is the following second.
        assert_eq!(nanos("2016-12-31T23:59:60Z"), nanos("2017-01-01T00:00:00Z"));
        assert_eq!(nanos("2016-12-31T23:59:60.25Z"), nanos("2017-01-01T00:00:00.25Z"));
        assert_eq!(nanos("2017-01-01T00:59:60+01:00"), nanos("2017-01-01T00:00:00Z"));
        for bad in [
            "2026-01-01T00:30:00+24:00",
            "2026-01-01T00:30:00+01:60",
            "2026-01-01T00:30:00+0100",
            "2026-01-01T00:30:00+01",
            "2026-01-01T00:30:00 +01:00",
            "2026-01-01T00:30:00\u{2212}01:00",
            "2026-01-01T00:30:00UTC",
            "2026-01-01T00:30:61Z",
            "2026-01-01T00:60:00Z",
            "2026-01-01T00:30Z",
            "2026-01-01X00:30:00Z",
            "2026-1-01T00:30:00Z",
            "26-01-01T00:30:00Z",
            "+2026-01-01T00:30:00Z",
            "2026-00-01T00:30:00Z",
            "2026-01-00T00:30:00Z",
            "2026-01-01T00:30:00.\u{0661}Z",
            " 2026-01-01T00:30:00Z",
            "2026-01-01T00:30:00Z ",
            "",
        ] {
            assert_eq!(bad.parse::<Timestamp>(), Err(ParseError::Time(bad.to_string())), "{bad:?}");
        }
    }

    #[test]
    fn instants_far_outside_the_log_are_clamped_not_a_panic() {
        let min = Timestamp::from_unix_nanos(i128::MIN);
        let max = Timestamp::from_unix_nanos(i128::MAX);
        assert!(min.as_str().starts_with("-262"), "{min}");
        assert!(max.as_str().starts_with("+262"), "{max}");
        let first: Timestamp = "0000-01-01T00:00:00Z".parse().unwrap();
        let last: Timestamp = "9999-12-31T23:59:59Z".parse().unwrap();
        assert!(min < first && last < max);
        // `xcore logs health --minutes <huge>` and `--since 99999999999999d` end here.
        let far = Timestamp::now().minus(Duration::from_secs(u64::MAX));
        assert_eq!(far, min);
        assert!(far < first);
    }

    #[test]
    fn log_files_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "xcore.log",
            "xcore.0.log",
            "xcore.2.log",
            "xcore.10.log",
            "xcore.x.log",
            "other.log",
            "xcore..log",
        ] {
            File::create(dir.path().join(name)).unwrap();
        }
        fs::create_dir(dir.path().join("xcore.3.log")).unwrap();
        let names: Vec<_> = log_files(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["xcore.10.log", "xcore.2.log", "xcore.0.log", "xcore.log"]);
        let err = log_files(&dir.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn filters() {
        let e = |level, target: &str, plugin: Option<&str>, s| {
            LogEntry::parse(&line(&t(1, s), level, target, plugin, "m")).unwrap()
        };
        let host_about_notes = e("INFO", "xcore::runtime", Some("notes"), 0);
        let notes_own = e("WARN", "notes", None, 10);
        let echo_err = e("ERROR", "echo", Some("echo"), 20);
        let notes = Filter { plugin: Some("notes".into()), ..Filter::default() };
        assert!(notes.matches(&host_about_notes) && notes.matches(&notes_own) && !notes.matches(&echo_err));
        let warn = Filter { min_level: Some(Level::Warn), ..Filter::default() };
        assert!(!warn.matches(&host_about_notes) && warn.matches(&notes_own) && warn.matches(&echo_err));
        let since = Filter { since: Some(t(1, 10).parse().unwrap()), ..Filter::default() };
        assert!(!since.matches(&host_about_notes) && since.matches(&notes_own) && since.matches(&echo_err));
        let all = Filter { plugin: Some("notes".into()), min_level: Some(Level::Warn), since: since.since };
        assert!(all.matches(&notes_own) && !all.matches(&host_about_notes));
        assert!(Filter::default().matches(&host_about_notes));
        assert!(Level::Error > Level::Warn && Level::Warn > Level::Info && Level::Debug > Level::Trace);
        assert_eq!("Warning".parse::<Level>().unwrap(), Level::Warn);
    }

    #[test]
    fn tail_spans_rotated_files() {
        let dir = tempfile::tempdir().unwrap();
        let old: Vec<_> =
            (0..4).map(|i| line(&t(0, i), "INFO", "echo", Some("echo"), &format!("old{i}"))).collect();
        write(&dir.path().join("xcore.0.log"), &old);
        write(&dir.path().join("xcore.1.log"), &[line(&t(0, 0), "INFO", "x", None, "oldest"), "junk".into()]);
        let new = vec![
            line(&t(1, 0), "WARN", "notes", Some("notes"), "new0"),
            "junk".to_string(),
            line(&t(1, 1), "INFO", "echo", Some("echo"), "new1"),
        ];
        write(&dir.path().join(LOG_FILE), &new);
        let all = Filter::default();
        assert_eq!(messages(&tail(dir.path(), &all, 4).unwrap()), ["old2", "old3", "new0", "new1"]);
        assert_eq!(messages(&tail(dir.path(), &all, 2).unwrap()), ["new0", "new1"]);
        assert_eq!(tail(dir.path(), &all, 100).unwrap().len(), 7);
        assert!(tail(dir.path(), &all, 0).unwrap().is_empty());
        let echo = Filter { plugin: Some("echo".into()), ..Filter::default() };
        assert_eq!(messages(&tail(dir.path(), &echo, 3).unwrap()), ["old2", "old3", "new1"]);
        let warn = Filter { min_level: Some(Level::Warn), ..Filter::default() };
        assert_eq!(messages(&tail(dir.path(), &warn, 10).unwrap()), ["new0"]);
    }

    #[test]
    fn stats_counts() {
        let dir = tempfile::tempdir().unwrap();
        write(
            &dir.path().join("xcore.0.log"),
            &[line(&t(0, 5), "INFO", "xcore", None, "a"), line(&t(0, 1), "ERROR", "echo", Some("echo"), "b")],
        );
        write(
            &dir.path().join(LOG_FILE),
            &[
                line(&t(2, 0), "WARN", "xcore::runtime", Some("notes"), "c"),
                "{broken".into(),
                line(&t(1, 0), "INFO", "echo", Some("echo"), "d"),
            ],
        );
        let s = stats(dir.path()).unwrap();
        assert_eq!(s.files, 2);
        let size = |n: &str| fs::metadata(dir.path().join(n)).unwrap().len();
        assert_eq!(s.total_bytes, size("xcore.0.log") + size(LOG_FILE));
        assert_eq!((s.entries, s.malformed), (4, 1));
        assert_eq!(s.malformed_samples.len(), 1);
        assert!(s.malformed_samples[0].contains("xcore.log:2:"), "{:?}", s.malformed_samples);
        assert_eq!(s.by_level, BTreeMap::from([(Level::Info, 2), (Level::Warn, 1), (Level::Error, 1)]));
        assert_eq!(s.by_plugin, BTreeMap::from([("echo".into(), 2), ("notes".into(), 1)]));
        assert_eq!(
            s.by_target,
            BTreeMap::from([("echo".into(), 2), ("xcore".into(), 1), ("xcore::runtime".into(), 1)])
        );
        assert_eq!(s.first.as_ref().unwrap().as_str(), t(0, 1));
        assert_eq!(s.last.as_ref().unwrap().as_str(), t(2, 0));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["by_level"]["ERROR"], 1);
        assert_eq!(json["first"], t(0, 1));
        assert_eq!(stats(tempfile::tempdir().unwrap().path()).unwrap(), Stats::default());
    }

    #[test]
    fn health_thresholds_and_exit_codes() {
        let dir = tempfile::tempdir().unwrap();
        let now: Timestamp = t(30, 0).parse().unwrap();
        let mut lines = vec![
            // Outside the 15-minute window (before 12:15, after now).
            line(&t(14, 59), "ERROR", "echo", Some("echo"), "too old"),
            line(&t(30, 1), "ERROR", "echo", Some("echo"), "future"),
            // Inside.
            line(&t(15, 0), "ERROR", "echo", Some("echo"), "e1"),
            line(&t(20, 0), "WARN", "notes", Some("notes"), "w1"),
            line(&t(21, 0), "WARN", "xcore", None, "w2"),
            line(&t(22, 0), "INFO", "quiet", Some("quiet"), "i"),
        ];
        write(&dir.path().join(LOG_FILE), &lines);
        let th = Thresholds::default();
        let h = health(dir.path(), DEFAULT_WINDOW_MINUTES, &th, &now).unwrap();
        assert_eq!((h.errors, h.warnings), (1, 2));
        assert_eq!((h.status, h.exit_code()), (Status::Degraded, 1));
        assert_eq!(h.per_plugin["echo"], Counts { errors: 1, warnings: 0 });
        assert_eq!(h.per_plugin["notes"], Counts { errors: 0, warnings: 1 });
        assert_eq!(h.per_plugin["quiet"], Counts::default());
        assert_eq!(h.window.from.as_str(), "2020-01-10T12:15:00.000000000+00:00");

        // A wider window takes in the old error.
        let h = health(dir.path(), 60, &th, &now).unwrap();
        assert_eq!(h.errors, 2);

        // Nothing in the window: healthy.
        let later: Timestamp = "2020-01-10T14:00:00Z".parse().unwrap();
        let h = health(dir.path(), 15, &th, &later).unwrap();
        assert_eq!((h.status, h.exit_code(), h.errors, h.warnings), (Status::Healthy, 0, 0, 0));

        // Ten errors: critical.
        lines.extend((0..9).map(|i| line(&t(25, i), "ERROR", "notes", Some("notes"), "boom")));
        write(&dir.path().join(LOG_FILE), &lines);
        let h = health(dir.path(), 15, &th, &now).unwrap();
        assert_eq!((h.status, h.exit_code(), h.errors), (Status::Critical, 2, 10));
        assert_eq!(h.per_plugin["notes"].errors, 9);
        assert_eq!(serde_json::to_value(&h).unwrap()["status"], "critical");

        assert_eq!(th.status(0, 19), Status::Healthy);
        assert_eq!(th.status(0, 20), Status::Degraded);
        assert_eq!(th.status(9, 1000), Status::Degraded);
        let strict = Thresholds { critical_warnings: 5, warn_errors: 0, ..th };
        assert_eq!(strict.status(0, 5), Status::Critical);
        assert_eq!(strict.status(3, 0), Status::Healthy);
    }

    #[test]
    fn follower_reads_appends_partial_lines_rotation_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let l = |msg: &str| line(&t(0, 0), "INFO", "x", None, msg) + "\n";
        append(&path, &l("before"));
        // A line being written when the follower starts is read whole later.
        let half = l("straddle");
        append(&path, &half[..10]);
        let mut f = Follower::at_end(dir.path()).unwrap();
        let all = Filter::default();
        let mut seen = Vec::new();
        let mut poll = |f: &mut Follower| {
            f.poll(&all, &mut |e| seen.push(e.message.clone())).unwrap();
            std::mem::take(&mut seen)
        };
        assert!(poll(&mut f).is_empty());
        append(&path, &half[10..]);
        append(&path, &l("a1"));
        let a2 = l("a2");
        append(&path, &a2[..20]);
        assert_eq!(poll(&mut f), ["straddle", "a1"]);
        append(&path, &a2[20..]);
        assert_eq!(poll(&mut f), ["a2"]);
        // Rotation: a last line reaches the old file, then it is renamed, then a new one.
        append(&path, &l("last-old"));
        fs::rename(&path, dir.path().join("xcore.0.log")).unwrap();
        assert!(poll(&mut f).contains(&"last-old".to_string()));
        append(&path, &(l("new1") + "garbage\n" + &l("new2")));
        assert_eq!(poll(&mut f), ["new1", "new2"]);
        assert_eq!(f.malformed(), 1);
        // Truncated in place.
        fs::write(&path, l("after-truncate")).unwrap();
        assert_eq!(poll(&mut f), ["after-truncate"]);
        assert!(poll(&mut f).is_empty());
    }

    #[test]
    fn follower_with_tail_has_no_gap_or_repeat() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let l = |msg: &str| line(&t(0, 0), "INFO", "x", None, msg) + "\n";
        append(&dir.path().join("xcore.0.log"), &l("r0"));
        append(&path, &(l("c0") + &l("c1")));
        let (entries, mut f) = Follower::with_tail(dir.path(), &Filter::default(), 3).unwrap();
        assert_eq!(messages(&entries), ["r0", "c0", "c1"]);
        append(&path, &l("c2"));
        let mut seen = Vec::new();
        f.poll(&Filter::default(), &mut |e| seen.push(e.message.clone())).unwrap();
        assert_eq!(seen, ["c2"]);
    }

    #[test]
    fn follow_in_a_thread_until_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOG_FILE);
        let l = |msg: &str, level: &str| line(&t(0, 0), level, "x", None, msg) + "\n";
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        // `follow` is `Follower::at_end` + `run`; the follower is made here so that the
        // thread's start cannot race the first append.
        let mut follower = Follower::at_end(dir.path()).unwrap();
        let handle = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                let filter = Filter { min_level: Some(Level::Warn), ..Filter::default() };
                follower.run(&filter, |e| seen.lock().unwrap().push(e.message.clone()), &stop)
            })
        };
        let wait_for = |n: usize| {
            let start = Instant::now();
            while seen.lock().unwrap().len() < n {
                assert!(start.elapsed() < Duration::from_secs(10), "saw only {:?}", seen.lock().unwrap());
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        // The file does not exist yet: the follower reads it from the start once it does.
        append(&path, &(l("w1", "WARN") + &l("quiet", "INFO")));
        wait_for(1);
        append(&path, &l("e1", "ERROR"));
        fs::rename(&path, dir.path().join("xcore.0.log")).unwrap();
        append(&path, &l("w2", "WARN"));
        wait_for(3);
        stop.store(true, Ordering::Relaxed);
        handle.join().unwrap().unwrap();
        assert_eq!(*seen.lock().unwrap(), ["w1", "e1", "w2"]);
    }
}
