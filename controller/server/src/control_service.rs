//! `fleetbench.v1.ControlService`: what `controllerctl` talks to.

use std::pin::Pin;
use std::sync::Arc;

use fleetbench_proto::pb;
use futures::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::error::ControllerError;
use crate::service::Controller;

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
        let file = if req.file_name.is_empty() {
            "sweep.toml"
        } else {
            req.file_name.as_str()
        };
        let (sweep_id, points, children) = self.ctl.submit(&req.spec_toml, file)?;
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
        let id = request.into_inner().sweep_id;
        let st = self.ctl.state();
        let status = st
            .group_status(&id, true)
            .ok_or(ControllerError::SweepNotFound(id))?;
        Ok(Response::new(status))
    }

    type WatchSweepStream = WatchStream;

    async fn watch_sweep(
        &self,
        request: Request<pb::WatchSweepRequest>,
    ) -> Result<Response<Self::WatchSweepStream>, Status> {
        let id = request.into_inner().sweep_id;
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
                let status = match ctl.state().group_status(&id, true) {
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
            (out, st.group_status(&id, true))
        };
        self.ctl.dispatch(out);
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
        let st = self.ctl.state();
        let group = st.group(&id);
        if group.is_empty() {
            return Err(ControllerError::SweepNotFound(id).into());
        }
        let points = group
            .iter()
            .flat_map(|s| s.points.iter())
            .filter_map(|p| p.summary.as_ref())
            .map(pb::PointSummary::from)
            .collect();
        Ok(Response::new(pb::GetResultsResponse {
            points,
            files: group
                .iter()
                .flat_map(|s| s.result_files.iter().cloned())
                .collect(),
        }))
    }
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
