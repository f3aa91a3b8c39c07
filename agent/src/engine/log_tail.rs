//! [`LogTail`]: the bounded ring of an engine's most recent log lines, filled by whichever
//! runtime follows the engine's output (a process's pipes, a container's log stream) and
//! read for forensics when the engine fails. Lines are scrubbed of the agent's secrets
//! (see [`crate::policy::scrub`]) as they arrive, before they are kept or logged.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tracing::debug;

use crate::policy::scrub::Scrubber;

/// Bounded ring of the engine's most recent log lines.
#[derive(Debug, Clone)]
pub struct LogTail {
    lines: Arc<Mutex<VecDeque<String>>>,
    cap: usize,
    scrubber: Scrubber,
}

impl LogTail {
    pub fn new(cap: usize) -> Self {
        LogTail {
            lines: Arc::new(Mutex::new(VecDeque::with_capacity(cap.min(1024)))),
            cap: cap.max(1),
            scrubber: Scrubber::default(),
        }
    }

    /// This tail, redacting `scrubber`'s secrets from every line it is given.
    pub fn scrubbing(mut self, scrubber: Scrubber) -> Self {
        self.scrubber = scrubber;
        self
    }

    /// `lines` read past the tail (e.g. straight from Docker), scrubbed as the tail's own.
    pub fn scrub_lines(&self, mut lines: Vec<String>) -> Vec<String> {
        self.scrubber.scrub_strings(&mut lines);
        lines
    }

    /// Keeps an engine output line (scrubbed) and logs it at debug level.
    pub fn push(&self, mut line: String) {
        self.scrubber.scrub_string(&mut line);
        debug!(target: "engine", "{line}");
        if let Ok(mut l) = self.lines.lock() {
            if l.len() == self.cap {
                l.pop_front();
            }
            l.push_back(line);
        }
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.lines
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let t = LogTail::new(3);
        for i in 0..5 {
            t.push(format!("l{i}"));
        }
        assert_eq!(t.snapshot(), vec!["l2", "l3", "l4"]);
    }

    #[test]
    fn lines_are_scrubbed_as_they_arrive() {
        let env = std::collections::BTreeMap::from([("HF_TOKEN".into(), "hf_tail_secret".into())]);
        let t = LogTail::new(4).scrubbing(Scrubber::new(&env));
        t.push("token: hf_tail_secret".into());
        assert_eq!(t.snapshot(), vec!["token: [redacted:HF_TOKEN]"]);
        assert_eq!(
            t.scrub_lines(vec!["x hf_tail_secret".into()]),
            vec!["x [redacted:HF_TOKEN]"]
        );
    }
}
