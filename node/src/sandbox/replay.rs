//! A sandbox's replayable output: every exec event numbered and kept (the last [`LOG_EVENTS`]
//! events, at most [`LOG_BYTES`] of data), so a client can replay it from a cursor. Used by
//! [`super::runner`].

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::proto::Event;

/// Events kept per sandbox for replay.
pub const LOG_EVENTS: usize = 10_000;
/// Bytes of event data kept per sandbox for replay.
pub const LOG_BYTES: usize = 4 << 20;

/// One numbered output event.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct LogEntry {
    pub seq: u64,
    /// Which exec (1, 2, …) produced it.
    pub exec: u64,
    #[serde(flatten)]
    pub event: Event,
}

#[derive(Default)]
pub(super) struct Log {
    pub(super) entries: VecDeque<LogEntry>,
    bytes: usize,
    next_seq: u64,
    /// Execs started (their numbers).
    pub(super) execs: u64,
}

impl Log {
    pub(super) fn push(&mut self, exec: u64, event: Event) -> LogEntry {
        self.next_seq += 1;
        let entry = LogEntry {
            seq: self.next_seq,
            exec,
            event,
        };
        self.bytes += size(&entry.event);
        self.entries.push_back(entry.clone());
        while self.entries.len() > LOG_EVENTS || self.bytes > LOG_BYTES {
            match self.entries.pop_front() {
                Some(old) => self.bytes -= size(&old.event),
                None => break,
            }
        }
        entry
    }
}

fn size(e: &Event) -> usize {
    match e {
        Event::Stdout { data } | Event::Stderr { data } => data.len(),
        _ => 16,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_is_bounded_and_numbered() {
        let mut log = Log::default();
        for i in 0..(LOG_EVENTS + 5) {
            log.push(1, Event::Start { pid: i as u32 });
        }
        assert_eq!(log.entries.len(), LOG_EVENTS);
        assert_eq!(log.entries.front().unwrap().seq, 6);
        assert_eq!(log.entries.back().unwrap().seq, (LOG_EVENTS + 5) as u64);
        let big = "x".repeat(LOG_BYTES / 2 + 1);
        log.push(2, Event::Stdout { data: big.clone() });
        log.push(2, Event::Stdout { data: big });
        assert!(log.bytes <= LOG_BYTES);
        assert_eq!(log.entries.len(), 1, "the older big event was dropped");
    }
}
