//! How controllerctl prints point summaries: the `--format` choice; the text itself is
//! [`fleetbench_results::text`].

use fleetbench_proto::pb;
use fleetbench_results::text::{to_csv, to_json, to_table};

/// Output format of `results` and `local`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

pub fn render(points: &[pb::PointSummary], format: Format) -> String {
    match format {
        Format::Table => to_table(points),
        Format::Csv => to_csv(points),
        Format::Json => to_json(points),
    }
}
