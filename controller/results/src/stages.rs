//! Per-stage summaries of multi-stage points (`[load] stages`): each stage's requests
//! (those whose `wave` is the stage) summarized on their own with the same definitions as
//! a point ([`summarize`]): a stage's duration runs from its first send to its last
//! completion, so requests still running when the next stage starts count in theirs.

use std::collections::BTreeMap;
use std::path::Path;

use fleetbench_proto::record::RequestRecord;

use crate::error::ResultsError;
use crate::query::{Filter, points_files, sort_points};
use crate::read::{read_point_summaries, read_requests};
use crate::summary::{PointSummary, summarize};

/// The stages of one multi-stage point as point summaries: stage k (1-based) has the id
/// `<point id>/stage-<k>` and, as its load, the stage's rate (rate mode) or requests in
/// flight (concurrency mode). `records` are the point attempt's requests.
pub fn stage_summaries(point: &PointSummary, records: &[RequestRecord]) -> Vec<PointSummary> {
    let mut by_stage: BTreeMap<u32, Vec<RequestRecord>> = BTreeMap::new();
    for r in records {
        by_stage.entry(r.wave).or_default().push(r.clone());
    }
    point
        .meta
        .stage_loads
        .iter()
        .enumerate()
        .map(|(k, &load)| {
            let mut meta = point.meta.clone();
            meta.point_id = format!("{}/stage-{}", point.meta.point_id, k + 1);
            if meta.mode == "rate" {
                meta.request_rate = load;
            } else {
                // A concurrency stage's load is a whole count of requests.
                meta.batch_size = load as u32;
            }
            let stage = u32::try_from(k).unwrap_or(u32::MAX);
            let records = by_stage.get(&stage).map_or(&[][..], Vec::as_slice);
            summarize(meta, records, &[])
        })
        .collect()
}

/// Every stage of the multi-stage points under `dir` that match `filter`, sorted, and the
/// number of points files read (each with its requests file beside it).
pub fn load_stages(
    dir: &Path,
    filter: &Filter,
) -> Result<(Vec<PointSummary>, usize), ResultsError> {
    let files = points_files(dir, filter)?;
    let mut out = Vec::new();
    for file in &files {
        let points: Vec<PointSummary> = read_point_summaries(file)?
            .into_iter()
            .filter(|p| filter.matches(p) && !p.meta.stage_loads.is_empty())
            .collect();
        if points.is_empty() {
            continue;
        }
        let name = file.to_string_lossy();
        let requests_file = name.replace(".points.parquet", ".requests.parquet");
        let mut requests: BTreeMap<(String, u32), Vec<RequestRecord>> = BTreeMap::new();
        for (point_id, attempt, r) in read_requests(Path::new(&requests_file))? {
            requests.entry((point_id, attempt)).or_default().push(r);
        }
        for p in &points {
            let key = (p.meta.point_id.clone(), p.meta.attempt);
            let records = requests.get(&key).map_or(&[][..], Vec::as_slice);
            out.extend(stage_summaries(p, records));
        }
    }
    sort_points(&mut out);
    Ok((out, files.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::PointMeta;

    fn record(wave: u32, send_us: i64, ttft: f64) -> RequestRecord {
        RequestRecord {
            wave,
            send_time_unix_us: 1_000_000 + send_us,
            ttft_s: Some(ttft),
            e2el_s: Some(ttft + 0.5),
            output_tokens: Some(10),
            target_output_tokens: 10,
            ..RequestRecord::default()
        }
    }

    #[test]
    fn each_stage_is_summarized_from_its_own_requests() {
        let meta = PointMeta {
            point_id: "s/p000".into(),
            mode: "rate".into(),
            state: "done".into(),
            stage_durations_s: vec![10.0, 5.0],
            stage_loads: vec![2.0, 8.0],
            ..PointMeta::default()
        };
        let records = vec![
            record(0, 0, 0.1),
            record(0, 500_000, 0.1),
            record(1, 10_000_000, 0.4),
            record(1, 10_125_000, 0.4),
            record(1, 10_250_000, 0.4),
        ];
        let point = summarize(meta, &records, &[]);
        let stages = stage_summaries(&point, &records);
        assert_eq!(stages.len(), 2);
        assert_eq!(stages[0].meta.point_id, "s/p000/stage-1");
        assert_eq!((stages[0].meta.request_rate, stages[0].completed), (2.0, 2));
        assert_eq!((stages[1].meta.request_rate, stages[1].completed), (8.0, 3));
        assert_eq!(stages[1].ttft_s.p50, Some(0.4));
        // Stage 2: first send at 10 s, last completion at 10.25 + 0.9 s.
        assert!(
            (stages[1].duration_s - 1.15).abs() < 1e-9,
            "{}",
            stages[1].duration_s
        );
    }
}
