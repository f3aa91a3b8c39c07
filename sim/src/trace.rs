//! `--sim-trace-requests N`: what the `exact` and `fast` streams actually did, as ground
//! truth for a client's timing error.
//!
//! An `exact` schedule is what the simulator means to do; its timer wakes a little late,
//! and a busy machine delays it more. A client's measured TTFT and ITL are compared with
//! what the server did, not with what it meant: for each of the last N finished direct
//! streams, the request's `x-request-id` header and the offset, from the moment the
//! request was parsed (the schedule's origin), at which each body frame was handed to the
//! connection. In `exact` mode a frame is one token. `GET /sim/trace` answers them as JSON
//! (404 when tracing is off). Memory is bounded by N and the streams' lengths.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

/// One finished stream.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StreamTrace {
    /// The request's `x-request-id` header ("" without one).
    pub request_id: String,
    /// Per body frame: nanoseconds from the request's parse to the frame's hand-over.
    pub frame_offsets_ns: Vec<u64>,
}

impl StreamTrace {
    pub fn new(request_id: String, frames: usize) -> Self {
        StreamTrace {
            request_id,
            frame_offsets_ns: Vec::with_capacity(frames),
        }
    }

    /// A frame handed over `since_t0` after the request was parsed.
    pub fn frame(&mut self, since_t0: Duration) {
        self.frame_offsets_ns
            .push(u64::try_from(since_t0.as_nanos()).unwrap_or(u64::MAX));
    }
}

/// A stream being traced: its trace, and the log it goes to once finished.
#[derive(Debug)]
pub struct Tracer {
    log: std::sync::Arc<TraceLog>,
    trace: StreamTrace,
}

impl Tracer {
    pub fn new(log: std::sync::Arc<TraceLog>, request_id: String, frames: usize) -> Self {
        Tracer {
            log,
            trace: StreamTrace::new(request_id, frames),
        }
    }

    pub fn frame(&mut self, since_t0: Duration) {
        self.trace.frame(since_t0);
    }

    /// The stream finished: its trace goes to the log.
    pub fn finish(self) {
        self.log.push(self.trace);
    }
}

/// The last `capacity` finished streams, oldest first.
#[derive(Debug)]
pub struct TraceLog {
    capacity: usize,
    streams: Mutex<VecDeque<StreamTrace>>,
}

/// `GET /sim/trace`'s body.
#[derive(Debug, Serialize)]
pub struct TraceBody {
    pub streams: Vec<StreamTrace>,
}

impl TraceLog {
    pub fn new(capacity: usize) -> Self {
        TraceLog {
            capacity,
            streams: Mutex::new(VecDeque::with_capacity(capacity.min(65_536))),
        }
    }

    /// Keeps `trace`, dropping the oldest one beyond the capacity.
    pub fn push(&self, trace: StreamTrace) {
        if self.capacity == 0 {
            return;
        }
        let mut streams = self
            .streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if streams.len() >= self.capacity {
            streams.pop_front();
        }
        streams.push_back(trace);
    }

    /// A copy of what is kept, oldest first.
    pub fn snapshot(&self) -> TraceBody {
        let streams = self
            .streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        TraceBody {
            streams: streams.iter().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_streams_up_to_its_capacity() {
        let log = TraceLog::new(2);
        for id in ["a", "b", "c"] {
            let mut t = StreamTrace::new(id.into(), 2);
            t.frame(Duration::from_micros(1500));
            t.frame(Duration::from_micros(2500));
            log.push(t);
        }
        let kept = log.snapshot().streams;
        assert_eq!(
            kept.iter()
                .map(|t| t.request_id.as_str())
                .collect::<Vec<_>>(),
            ["b", "c"]
        );
        assert_eq!(kept[1].frame_offsets_ns, [1_500_000, 2_500_000]);
    }

    #[test]
    fn a_log_of_capacity_zero_keeps_nothing() {
        let log = TraceLog::new(0);
        log.push(StreamTrace::new("a".into(), 0));
        assert!(log.snapshot().streams.is_empty());
    }
}
