//! `fleetbench.v1.ControlService`: what `controllerctl` talks to.

use std::pin::Pin;
use std::sync::Arc;

use fleetbench_proto::limits::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use fleetbench_proto::pb;
use fleetbench_proto::spec::MAX_SWEEP_FILE_BYTES;
use futures::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::error::ControllerError;
use crate::service::Controller;
use crate::state::State;

pub struct ControlServiceImpl {
    pub ctl: Arc<Controller>,
    pub shutdown: CancellationToken,
}

/// The one place controller errors become gRPC statuses.
impl From<ControllerError> for Status {
    fn from(e: ControllerError) -> Self {
        match e {
            ControllerError::Spec(e) => Status::invalid_argument(e.to_string()),
            ControllerError::SweepNotFound(id) => {
                Status::not_found(format!("sweep {id} not found"))
            }
            ControllerError::Usage(m) => Status::invalid_argument(m),
            e @ ControllerError::NoMatchingAgent(_) => Status::failed_precondition(e.to_string()),
            ControllerError::Status(s) => s,
            other => Status::internal(other.to_string()),
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::SweepStatus, Status>> + Send>>;

/// (offset, limit) of a page request: the token is the offset the previous page ended at.
fn page(page_size: u32, page_token: &str) -> Result<(usize, usize), Status> {
    let offset = if page_token.is_empty() {
        0
    } else {
        page_token
            .parse::<usize>()
            .map_err(|_| Status::invalid_argument(format!("bad page_token {page_token:?}")))?
    };
    let size = match page_size {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    };
    Ok((offset, size as usize))
}

fn is_final(state: &str) -> bool {
    // `failed`: ended with results that could not be written (`state::SWEEP_WRITE_FAILED`).
    matches!(state, "done" | "cancelled" | "failed")
}

#[tonic::async_trait]
impl pb::control_service_server::ControlService for ControlServiceImpl {
    async fn submit_sweep(
        &self,
        request: Request<pb::SubmitSweepRequest>,
    ) -> Result<Response<pb::SubmitSweepResponse>, Status> {
        let req = request.into_inner();
        // Bounded before anything is parsed (the message size already caps it near this);
        // the point count is checked from the matrix sizes before anything is expanded.
        if req.spec_toml.len() > MAX_SWEEP_FILE_BYTES {
            return Err(Status::invalid_argument(format!(
                "the sweep file is {} bytes; at most {MAX_SWEEP_FILE_BYTES} bytes are accepted",
                req.spec_toml.len()
            )));
        }
        if req.file_name.len() > 255 || req.file_name.chars().any(char::is_control) {
            return Err(Status::invalid_argument(
                "file_name must be at most 255 bytes without control characters",
            ));
        }
        let file = if req.file_name.is_empty() {
            "sweep.toml"
        } else {
            req.file_name.as_str()
        };
        let (sweep_id, points, children, ticket) = self.ctl.submit(&req.spec_toml, file)?;
        self.ctl.durable(ticket).await;
        Ok(Response::new(pb::SubmitSweepResponse {
            sweep_id,
            points: u32::try_from(points).unwrap_or(u32::MAX),
            children,
        }))
    }

    async fn get_sweep(
        &self,
        request: Request<pb::GetSweepRequest>,
    ) -> Result<Response<pb::SweepStatus>, Status> {
        // The first page; GetSweepPage serves the rest.
        let id = request.into_inner().sweep_id;
        let page = |st: &State| st.group_status_page(&id, 0, DEFAULT_PAGE_SIZE as usize);
        let status = match self.ctl.archived_view(&id).await? {
            Some(view) => page(&view).map(read_back),
            None => page(&self.ctl.state()),
        };
        Ok(Response::new(
            status.ok_or(ControllerError::SweepNotFound(id))?,
        ))
    }

    async fn get_sweep_page(
        &self,
        request: Request<pb::GetSweepPageRequest>,
    ) -> Result<Response<pb::SweepStatus>, Status> {
        let req = request.into_inner();
        let (offset, limit) = page(req.page_size, &req.page_token)?;
        let at = |st: &State| st.group_status_page(&req.sweep_id, offset, limit);
        let status = match self.ctl.archived_view(&req.sweep_id).await? {
            Some(view) => at(&view).map(read_back),
            None => at(&self.ctl.state()),
        };
        Ok(Response::new(
            status.ok_or(ControllerError::SweepNotFound(req.sweep_id))?,
        ))
    }

    type WatchSweepStream = WatchStream;

    async fn watch_sweep(
        &self,
        request: Request<pb::WatchSweepRequest>,
    ) -> Result<Response<Self::WatchSweepStream>, Status> {
        let id = request.into_inner().sweep_id;
        // An archived sweep has ended: its final status, read back from the store.
        if let Some(view) = self.ctl.archived_view(&id).await? {
            let status = view
                .group_status_watched(&id)
                .map(read_back)
                .ok_or(ControllerError::SweepNotFound(id))?;
            return Ok(Response::new(async_stream_of(move |tx| async move {
                let _ = tx.send(Ok(status)).await;
            })));
        }
        // A replicate parent id follows all its child sweeps.
        let mut rxs: Vec<tokio::sync::watch::Receiver<u64>> = {
            let st = self.ctl.state();
            let group = st.group(&id);
            if group.is_empty() {
                return Err(ControllerError::SweepNotFound(id).into());
            }
            group.iter().map(|s| s.version.subscribe()).collect()
        };
        let ctl = self.ctl.clone();
        let shutdown = self.shutdown.clone();
        let stream = async_stream_of(move |tx| async move {
            loop {
                for rx in &mut rxs {
                    rx.borrow_and_update();
                }
                // Points only up to WATCH_POINTS_MAX: a larger sweep's statuses carry the
                // counts (its points page through GetSweepPage).
                let status = match ctl.state().group_status_watched(&id) {
                    Some(s) => s,
                    None => break,
                };
                let done = is_final(&status.state);
                if tx.send(Ok(status)).await.is_err() || done {
                    break;
                }
                let any_changed =
                    futures::future::select_all(rxs.iter_mut().map(|rx| Box::pin(rx.changed())));
                tokio::select! {
                    (changed, _, _) = any_changed => if changed.is_err() { break },
                    () = shutdown.cancelled() => {
                        let _ = tx.send(Err(Status::unavailable("controller shutting down"))).await;
                        break;
                    }
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn cancel_sweep(
        &self,
        request: Request<pb::CancelSweepRequest>,
    ) -> Result<Response<pb::CancelSweepResponse>, Status> {
        let id = request.into_inner().sweep_id;
        let (out, status) = {
            let mut st = self.ctl.state();
            let out = st
                .cancel_group(&id)
                .ok_or_else(|| ControllerError::SweepNotFound(id.clone()))?;
            (out, st.group_status_watched(&id))
        };
        let ticket = self.ctl.dispatch(out);
        self.ctl.durable(ticket).await;
        Ok(Response::new(pb::CancelSweepResponse { status }))
    }

    async fn list_sweeps(
        &self,
        _request: Request<pb::ListSweepsRequest>,
    ) -> Result<Response<pb::ListSweepsResponse>, Status> {
        let st = self.ctl.state();
        Ok(Response::new(pb::ListSweepsResponse {
            sweeps: st.sweeps.iter().map(|s| s.status(false)).collect(),
        }))
    }

    async fn list_agents(
        &self,
        _request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        Ok(Response::new(pb::ListAgentsResponse {
            agents: self.ctl.state().agent_statuses(),
        }))
    }

    async fn get_results(
        &self,
        request: Request<pb::GetResultsRequest>,
    ) -> Result<Response<pb::GetResultsResponse>, Status> {
        let id = request.into_inner().sweep_id;
        results_page(&self.ctl, id, 0, DEFAULT_PAGE_SIZE as usize).await
    }

    async fn get_results_page(
        &self,
        request: Request<pb::GetResultsPageRequest>,
    ) -> Result<Response<pb::GetResultsResponse>, Status> {
        let req = request.into_inner();
        let (offset, limit) = page(req.page_size, &req.page_token)?;
        results_page(&self.ctl, req.sweep_id, offset, limit).await
    }
}

/// Summaries `offset..offset + limit` of a sweep's (or replicate group's) finished points.
async fn results_page(
    ctl: &Arc<Controller>,
    id: String,
    offset: usize,
    limit: usize,
) -> Result<Response<pb::GetResultsResponse>, Status> {
    match ctl.archived_view(&id).await? {
        Some(view) => results_of(&view, id, offset, limit),
        None => results_of(&ctl.state(), id, offset, limit),
    }
}

fn results_of(
    st: &State,
    id: String,
    offset: usize,
    limit: usize,
) -> Result<Response<pb::GetResultsResponse>, Status> {
    let group = st.group(&id);
    if group.is_empty() {
        return Err(ControllerError::SweepNotFound(id).into());
    }
    let mut summaries = group
        .iter()
        .flat_map(|s| s.points.iter())
        .filter_map(|p| p.summary.as_ref())
        .skip(offset);
    let points = summaries
        .by_ref()
        .take(limit)
        .map(pb::PointSummary::from)
        .collect();
    let more = summaries.next().is_some();
    Ok(Response::new(pb::GetResultsResponse {
        points,
        files: if offset == 0 {
            group
                .iter()
                .flat_map(|s| s.result_files.iter().cloned())
                .collect()
        } else {
            Vec::new()
        },
        next_page_token: if more {
            (offset + limit).to_string()
        } else {
            String::new()
        },
    }))
}

/// A status answered from an archived sweep read back from the store says so.
fn read_back(mut status: pb::SweepStatus) -> pb::SweepStatus {
    status.archived = true;
    status
}

/// A bounded channel-backed stream fed by a spawned task.
fn async_stream_of<F, Fut>(f: F) -> WatchStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<pb::SweepStatus, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
