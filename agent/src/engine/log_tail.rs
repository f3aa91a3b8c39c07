//! [`LogTail`]: the bounded ring of an engine's most recent log lines, filled by whichever
//! runtime follows the engine's output (a process's pipes, a container's log stream) and
//! read for forensics when the engine fails.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Bounded ring of the engine's most recent log lines.
#[derive(Debug, Clone)]
pub struct LogTail {
    lines: Arc<Mutex<VecDeque<String>>>,
    cap: usize,
}

impl LogTail {
    pub fn new(cap: usize) -> Self {
        LogTail {
            lines: Arc::new(Mutex::new(VecDeque::with_capacity(cap.min(1024)))),
            cap: cap.max(1),
        }
    }

    pub fn push(&self, line: String) {
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
}
