//! Reading a whole sweep's status or results through the controller's pages
//! (`GetSweepPage`, `GetResultsPage`), so a sweep of any size fits the message limits.

use fleetbench_proto::limits::MAX_PAGE_SIZE;
use fleetbench_proto::pb;

use crate::connect::Client;
use crate::error::CliError;

/// A sweep's status with all its points, fetched page by page.
pub async fn sweep_status(
    client: &mut Client,
    sweep_id: &str,
) -> Result<pb::SweepStatus, CliError> {
    let mut status = client
        .get_sweep_page(pb::GetSweepPageRequest {
            sweep_id: sweep_id.to_string(),
            page_size: MAX_PAGE_SIZE,
            page_token: String::new(),
        })
        .await?
        .into_inner();
    let mut token = std::mem::take(&mut status.next_page_token);
    while !token.is_empty() {
        let mut page = client
            .get_sweep_page(pb::GetSweepPageRequest {
                sweep_id: sweep_id.to_string(),
                page_size: MAX_PAGE_SIZE,
                page_token: token,
            })
            .await?
            .into_inner();
        status.points.append(&mut page.points);
        token = page.next_page_token;
    }
    Ok(status)
}

/// A sweep's point summaries and result files, fetched page by page.
pub async fn results(
    client: &mut Client,
    sweep_id: &str,
) -> Result<pb::GetResultsResponse, CliError> {
    let mut all = pb::GetResultsResponse::default();
    let mut token = String::new();
    loop {
        let mut page = client
            .get_results_page(pb::GetResultsPageRequest {
                sweep_id: sweep_id.to_string(),
                page_size: MAX_PAGE_SIZE,
                page_token: token,
            })
            .await?
            .into_inner();
        all.points.append(&mut page.points);
        all.files.append(&mut page.files);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        token = page.next_page_token;
    }
}
