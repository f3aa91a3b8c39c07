//! Whether a point's requests measured anything: a point whose every request failed, or
//! whose failed share exceeds the sweep's `[policy] max_failed_share`, is failed, with a
//! reason that names the most common error kinds and their counts.

use std::collections::HashMap;

use fleetbench_proto::record::RequestRecord;

/// Error kinds named in a reason, most common first; the rest are counted as "other".
const KINDS_NAMED: usize = 3;

/// The reason a point whose load ran to its end is failed anyway, or `None` when its
/// requests measured enough: `all 64 requests failed: stalled ×60, truncated ×4`, or
/// `40 of 64 requests failed (62.5% > 50%): stalled ×40`. A point without records is
/// left alone (nothing to judge; the agent says why it sent none).
pub fn load_failure(records: &[RequestRecord], max_failed_share: f64) -> Option<String> {
    let total = records.len();
    if total == 0 {
        return None;
    }
    let failed: Vec<&RequestRecord> = records.iter().filter(|r| !r.success()).collect();
    if failed.is_empty() {
        return None;
    }
    let share = failed.len() as f64 / total as f64;
    let head = if failed.len() == total {
        format!("all {total} requests failed")
    } else if share > max_failed_share {
        // The limit as the sweep file wrote it (0.07 → 7%, not 7.000000000000001%).
        let limit = format!("{:.1}", max_failed_share * 100.0);
        let limit = limit.strip_suffix(".0").unwrap_or(&limit);
        format!(
            "{} of {total} requests failed ({:.1}% > {limit}%)",
            failed.len(),
            share * 100.0,
        )
    } else {
        return None;
    };
    let mut counts: HashMap<&'static str, usize> = HashMap::new();
    for r in &failed {
        *counts
            .entry(r.error_kind.map_or("unknown", |k| k.as_str()))
            .or_default() += 1;
    }
    let mut kinds: Vec<(&str, usize)> = counts.into_iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut parts: Vec<String> = kinds
        .iter()
        .take(KINDS_NAMED)
        .map(|(k, n)| format!("{k} ×{n}"))
        .collect();
    let other: usize = kinds.iter().skip(KINDS_NAMED).map(|(_, n)| n).sum();
    if other > 0 {
        parts.push(format!("other ×{other}"));
    }
    Some(format!("{head}: {}", parts.join(", ")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use fleetbench_proto::record::{ErrorKind, RequestRecord};

    use super::load_failure;

    fn rec(kind: Option<ErrorKind>) -> RequestRecord {
        RequestRecord {
            error_kind: kind,
            ..RequestRecord::default()
        }
    }

    #[test]
    fn every_request_failed_names_the_kinds_most_common_first() {
        let mut records: Vec<_> = (0..60).map(|_| rec(Some(ErrorKind::Stalled))).collect();
        records.extend((0..4).map(|_| rec(Some(ErrorKind::Truncated))));
        assert_eq!(
            load_failure(&records, 1.0).unwrap(),
            "all 64 requests failed: stalled ×60, truncated ×4"
        );
    }

    #[test]
    fn a_share_above_the_limit_fails_and_one_at_or_below_it_does_not() {
        let mut records: Vec<_> = (0..3).map(|_| rec(Some(ErrorKind::Malformed))).collect();
        records.push(rec(None));
        assert_eq!(
            load_failure(&records, 0.5).unwrap(),
            "3 of 4 requests failed (75.0% > 50%): malformed ×3"
        );
        assert_eq!(load_failure(&records, 0.75), None);
        assert_eq!(load_failure(&[rec(None)], 0.0), None);
        assert_eq!(load_failure(&[], 0.0), None);
    }

    #[test]
    fn the_limit_prints_as_written() {
        let mut records = vec![rec(None), rec(None)];
        records.extend((0..8).map(|_| rec(Some(ErrorKind::Stalled))));
        let reason = load_failure(&records, 0.07).unwrap();
        assert!(reason.contains("(80.0% > 7%)"), "{reason}");
        let reason = load_failure(&records, 0.125).unwrap();
        assert!(reason.contains("> 12.5%)"), "{reason}");
    }

    #[test]
    fn more_than_three_kinds_count_the_rest_as_other() {
        let records = [
            rec(Some(ErrorKind::Stalled)),
            rec(Some(ErrorKind::Stalled)),
            rec(Some(ErrorKind::Truncated)),
            rec(Some(ErrorKind::Malformed)),
            rec(Some(ErrorKind::ServerError)),
            rec(Some(ErrorKind::Connect)),
        ];
        assert_eq!(
            load_failure(&records, 0.5).unwrap(),
            "all 6 requests failed: stalled ×2, connect ×1, malformed ×1, other ×2"
        );
    }
}
