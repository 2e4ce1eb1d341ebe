//! The log-line budget of one plugin instance: a token bucket of lines per second
//! (burst as many) and a cut of each line to a byte limit. The trusted tier's
//! [`LogGate`](crate::host_services::LogGate) and the sandboxed tier's output gate use
//! it; each keeps its own counters and messages.

use std::time::Instant;

use parking_lot::Mutex;

/// Lines per second and bytes per line.
pub struct LineBudget {
    max_line: usize,
    rate: f64,
    state: Mutex<State>,
}

struct State {
    tokens: f64,
    last: Instant,
    dropped: u64,
}

impl LineBudget {
    /// At most `lines_per_second` lines (at least 1), each cut to `max_line` bytes (at
    /// least 80).
    pub fn new(lines_per_second: u32, max_line: usize) -> Self {
        let rate = f64::from(lines_per_second.max(1));
        LineBudget {
            max_line: max_line.max(80),
            rate,
            state: Mutex::new(State { tokens: rate, last: Instant::now(), dropped: 0 }),
        }
    }

    /// The longest line, in bytes.
    pub fn max_line(&self) -> usize {
        self.max_line
    }

    /// The lines per second it lets through.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// `Some(lines dropped since the last admitted one)` when one more line may go;
    /// `None` (and one more line counted as dropped) when the budget is spent.
    pub fn admit(&self) -> Option<u64> {
        let mut s = self.state.lock();
        let now = Instant::now();
        s.tokens = (s.tokens + now.duration_since(s.last).as_secs_f64() * self.rate).min(self.rate);
        s.last = now;
        if s.tokens >= 1.0 {
            s.tokens -= 1.0;
            Some(std::mem::take(&mut s.dropped))
        } else {
            s.dropped += 1;
            None
        }
    }

    /// `line` cut to the longest line (on a character boundary), and the bytes cut.
    pub fn cut<'a>(&self, line: &'a str) -> (&'a str, usize) {
        let mut end = line.len().min(self.max_line);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        (&line[..end], line.len() - end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_cut_at_the_rate_and_the_dropped_lines_are_reported_with_the_next() {
        let b = LineBudget::new(3, 100);
        assert_eq!((b.admit(), b.admit(), b.admit()), (Some(0), Some(0), Some(0)));
        assert_eq!((b.admit(), b.admit()), (None, None));
        std::thread::sleep(std::time::Duration::from_millis(400));
        assert_eq!(b.admit(), Some(2));
    }

    #[test]
    fn lines_are_cut_on_a_character_boundary() {
        let b = LineBudget::new(1, 80);
        let line = format!("{}é", "a".repeat(79));
        assert_eq!(b.cut(&line), ("a".repeat(79).as_str(), 2));
        assert_eq!(b.cut("short"), ("short", 0));
    }
}
