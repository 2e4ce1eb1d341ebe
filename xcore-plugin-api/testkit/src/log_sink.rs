//! The `log` crate's macros inside a plugin under test.
//!
//! A plugin linked into the test binary (`rlib`) shares the test's `log` logger with the
//! host's crates. The SDK would install its bridge there (forwarding every record to the
//! instance built last, from whichever test), so the kit installs this logger first:
//! it records a line into the journal of the kit whose call runs on the current thread
//! (set around every call the kit makes into the plugin), and drops lines written
//! elsewhere (threads the plugin spawned itself, or no kit call at all). When the test
//! already installed a logger of its own (env_logger...), that one stays and the lines
//! go there instead.

use std::cell::RefCell;
use std::sync::{Arc, Once, Weak};

use crate::record::{Journal, LogLine};

thread_local! {
    static CURRENT: RefCell<Vec<Weak<Journal>>> = const { RefCell::new(Vec::new()) };
}

struct KitLogger;

static LOGGER: KitLogger = KitLogger;
static INSTALL: Once = Once::new();

impl log::Log for KitLogger {
    fn enabled(&self, _metadata: &log::Metadata<'_>) -> bool {
        CURRENT.with(|c| !c.borrow().is_empty())
    }

    fn log(&self, record: &log::Record<'_>) {
        let Some(journal) = CURRENT.with(|c| c.borrow().last().and_then(Weak::upgrade)) else {
            return;
        };
        journal.log(LogLine {
            level: record.level(),
            request_id: String::new(),
            target: Some(record.target().to_string()),
            message: record.args().to_string(),
        });
    }

    fn flush(&self) {}
}

/// Installs the kit's logger unless a logger is installed already.
pub(crate) fn install() {
    INSTALL.call_once(|| {
        if log::set_logger(&LOGGER).is_ok() {
            log::set_max_level(log::LevelFilter::Trace);
        }
    });
}

/// Runs `f` with `journal` receiving the `log` lines written on this thread.
pub(crate) fn with_journal<R>(journal: &Arc<Journal>, f: impl FnOnce() -> R) -> R {
    struct Pop;
    impl Drop for Pop {
        fn drop(&mut self) {
            CURRENT.with(|c| {
                c.borrow_mut().pop();
            });
        }
    }
    CURRENT.with(|c| c.borrow_mut().push(Arc::downgrade(journal)));
    let _pop = Pop;
    f()
}
