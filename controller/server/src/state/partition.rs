//! The state's side of a partition write (`crate::writer`): the job a finished point
//! queues, and the access the writer has to a sweep's points to take their records.

use fleetbench_proto::pb;
use fleetbench_proto::record::RequestRecord;
use fleetbench_results::summary::PointSummary;

use super::State;
use super::model::Sweep;

/// A partition (sweep, GPU count) whose results changed, and who waits for the write.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteJob {
    pub sweep_id: String,
    pub gpus: u32,
    /// Point acknowledgements to send once the files are on disk.
    pub acks: Vec<(String, pb::PointAck)>,
}

impl State {
    /// The sweep of a partition write, to move the finished points' records out of it.
    pub(crate) fn sweep_for_write(&mut self, id: &str) -> Option<&mut Sweep> {
        self.sweep_mut(id)
    }

    /// Puts back the records a failed partition write took, for points still at the same
    /// attempt whose records were not replaced meanwhile; a later write retries them.
    pub(crate) fn restore_records(
        &mut self,
        sweep_id: &str,
        rows: Vec<(PointSummary, Vec<RequestRecord>)>,
    ) {
        let Some(sweep) = self.sweep_mut(sweep_id) else {
            return;
        };
        for (summary, records) in rows {
            if let Some(p) = sweep.points.iter_mut().find(|p| {
                p.point_id == summary.meta.point_id
                    && p.attempt == summary.meta.attempt
                    && p.batches.is_empty()
            }) {
                p.batches.insert(0, records);
            }
        }
    }
}
