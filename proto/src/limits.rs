//! gRPC message sizes, set deliberately on both ends of both services (tonic's defaults
//! are 4 MiB to decode and no limit to encode).
//!
//! - Agent → controller: the largest message is a `RecordBatch` of the agent's
//!   `batch_records` (default 64) records. A record is about 100 bytes plus 9 bytes per
//!   inter-token latency (one per content chunk, at most the output length) plus its error
//!   text; 64 records of 32,768 output tokens each stay under 20 MiB, so
//!   [`AGENT_TO_CONTROLLER`] leaves room for long contexts and large `PointFinished`
//!   metric series without letting one message take unbounded memory.
//! - Controller → agent: assignments, acknowledgements and cancels are small.
//! - Operator → controller: a `SubmitSweep` carries the sweep file (at most
//!   [`MAX_SWEEP_FILE_BYTES`](crate::spec::MAX_SWEEP_FILE_BYTES)).
//! - Controller → operator: status and results are paged (`GetSweepPage`,
//!   `GetResultsPage`, at most [`MAX_PAGE_SIZE`] points a page) and a watch status carries
//!   its points only up to [`WATCH_POINTS_MAX`] of them, so [`CONTROLLER_TO_OPERATOR`]
//!   holds any answer.

/// Largest message the controller decodes from an agent (and an agent encodes).
pub const AGENT_TO_CONTROLLER: usize = 64 << 20;
/// Largest message an agent decodes from the controller (and the controller encodes).
pub const CONTROLLER_TO_AGENT: usize = 4 << 20;
/// Largest request the control service decodes (a sweep file of at most 1 MiB plus its
/// name).
pub const OPERATOR_TO_CONTROLLER: usize = 2 << 20;
/// Largest answer of the control service (and what `controllerctl` decodes).
pub const CONTROLLER_TO_OPERATOR: usize = 64 << 20;

/// Points (or point summaries) a status or results page holds unless asked otherwise.
pub const DEFAULT_PAGE_SIZE: u32 = 1000;
/// The most points a page holds.
pub const MAX_PAGE_SIZE: u32 = 5000;
/// A watched sweep's statuses carry its points only up to this many (above it, counts
/// only: page through `GetSweepPage` for the points).
pub const WATCH_POINTS_MAX: usize = 10_000;
/// Longest error or event text the controller keeps from an agent, in bytes (longer ones
/// are cut, marked with `…[truncated]`).
pub const MAX_TEXT_BYTES: usize = 4096;

/// Cuts `text` to at most `max` bytes (on a character boundary), marking the cut.
pub fn truncate_text(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str("…[truncated]");
}

#[cfg(test)]
mod tests {
    #[test]
    fn truncation_keeps_char_boundaries() {
        let mut s = "é".repeat(10);
        super::truncate_text(&mut s, 5);
        assert_eq!(s, "éé…[truncated]");
        let mut short = "ok".to_string();
        super::truncate_text(&mut short, 5);
        assert_eq!(short, "ok");
    }
}
