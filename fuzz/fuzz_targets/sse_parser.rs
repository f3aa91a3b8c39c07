//! Fuzzes the agent's SSE parser: the first byte seeds where the rest is cut into reads;
//! fed whole, byte by byte and in those pieces it must not panic and must give the same
//! events, or the same first error (`fleetbench_agent::load::sse::check_split_consistency`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(disagreement) = fleetbench_agent::load::sse::check_split_consistency(data) {
        panic!("{disagreement}");
    }
});
