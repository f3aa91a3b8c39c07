//! The summaries as CSV, for people who paste into a sheet: every point in `points.csv`,
//! and one file per model and GPU count. The columns are those of `controllerctl results
//! --format csv`.

use crate::data::{ReportData, stem};
use fleetbench_results::query::to_csv;
use fleetbench_results::summary::PointSummary;

/// (file name, contents) of every CSV file of a report.
pub fn files(data: &ReportData) -> Vec<(String, String)> {
    let mut out = vec![("points.csv".to_owned(), to_csv(&data.points))];
    for model in data.models() {
        for gpus in data.gpu_counts(&model) {
            let points: Vec<PointSummary> = data.points_of(&model, gpus).cloned().collect();
            out.push((format!("{}.csv", stem(&model, Some(gpus))), to_csv(&points)));
        }
    }
    out
}
