//! Expansion of a valid sweep into its ordered points (GPU count × workload × batch size
//! or rate; a search sweep: one first probe per GPU count × workload).

use super::sections::{BatchSizes, LoadMode, SweepSpec};
use super::workload::WorkloadEntry;

/// One point of the expanded plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedPoint {
    pub index: u32,
    pub gpus: u32,
    /// The workload's position in `[matrix] workloads`.
    pub workload_index: u32,
    pub workload: WorkloadEntry,
    /// Burst: requests per wave; concurrency: requests in flight; rate mode: 0.
    pub batch_size: u32,
    /// Rate mode: requests per second; otherwise 0.
    pub request_rate: f64,
}

impl SweepSpec {
    /// Batch sizes in the order they run (empty in rate mode).
    pub fn batch_sizes(&self) -> Vec<u32> {
        let Some(sizes) = &self.matrix.batch_sizes else {
            return Vec::new();
        };
        match sizes.get_ref() {
            BatchSizes::List(list) => list.iter().map(|b| *b.get_ref()).collect(),
            BatchSizes::PowersOf2 => {
                let max = self
                    .matrix
                    .max_batch_size
                    .as_ref()
                    .map_or(1, |m| *m.get_ref());
                std::iter::successors(Some(1u32), |b| b.checked_mul(2))
                    .take_while(|b| *b <= max)
                    .collect()
            }
        }
    }

    /// A search load as the point's (batch size, rate): a batch size in burst and
    /// concurrency mode, a rate in rate mode.
    pub fn search_load(&self, load: f64) -> (u32, f64) {
        if self.load.mode == LoadMode::Rate {
            (0, load)
        } else {
            // Validation keeps search loads whole numbers within the batch size limit.
            (load as u32, 0.0)
        }
    }

    /// Expands the matrix into points, ordered so the engine restarts as rarely as
    /// possible: grouped by GPU count (the only engine setting the matrix varies), then
    /// workload, then ascending batch size.
    pub fn expand(&self) -> Vec<PlannedPoint> {
        // (batch size, rate): one axis or the other, by mode.
        let loads: Vec<(u32, f64)> = match &self.matrix.rates {
            // A search starts each group with one probe at `min`; the controller adds the
            // rest as probes finish (`search::next_probe`).
            _ if self.search.is_some() => {
                let min = self.search().map_or(1.0, |s| s.min);
                vec![self.search_load(min)]
            }
            // A trace's arrivals are its own: one point per trace workload; a staged point
            // carries its loads in its stages.
            _ if self.load.mode == LoadMode::Trace || self.load.stages.is_some() => {
                vec![(0, 0.0)]
            }
            Some(rates) if self.load.mode == LoadMode::Rate => {
                rates.get_ref().iter().map(|r| (0, *r.get_ref())).collect()
            }
            _ => self.batch_sizes().into_iter().map(|b| (b, 0.0)).collect(),
        };
        let mut points = Vec::new();
        let mut index = 0u32;
        for gpus in self.matrix.gpus.get_ref() {
            for (w_index, w) in self.matrix.workloads.get_ref().iter().enumerate() {
                for &(batch_size, request_rate) in &loads {
                    points.push(PlannedPoint {
                        index,
                        gpus: *gpus.get_ref(),
                        workload_index: u32::try_from(w_index).unwrap_or(u32::MAX),
                        workload: w.get_ref().clone(),
                        batch_size,
                        request_rate,
                    });
                    index += 1;
                }
            }
        }
        points
    }
}
