//! `fleetbench.v1.AgentService`: the one long-lived stream each agent opens.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use fleetbench_proto::pb::{self, agent_message::Msg, controller_message::Msg as CMsg};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, info, info_span, warn};

use crate::auth::{Principal, valid_name};
use crate::service::Controller;

/// How long an agent has to send `Register` after opening the stream.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages queued for one agent before sends back-pressure.
const AGENT_QUEUE: usize = 1024;

pub struct AgentServiceImpl {
    pub ctl: Arc<Controller>,
    pub shutdown: CancellationToken,
    pub tracker: tokio_util::task::TaskTracker,
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<pb::ControllerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl pb::agent_service_server::AgentService for AgentServiceImpl {
    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        // Set by the auth layer: on a controller with client certificates, the agent's name
        // comes from its certificate.
        let principal = request
            .extensions()
            .get::<Principal>()
            .cloned()
            .unwrap_or(Principal::Open);
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(REGISTER_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Register within 10s"))??;
        let Some(pb::AgentMessage {
            msg: Some(Msg::Register(reg)),
        }) = first
        else {
            return Err(Status::invalid_argument(
                "the first message must be Register",
            ));
        };
        let inventory = reg
            .inventory
            .ok_or_else(|| Status::invalid_argument("Register lacks inventory"))?;
        let name = inventory.agent_name.clone();
        if !valid_name(&name) {
            return Err(Status::invalid_argument(
                "agent_name must be 1-64 characters of A-Z a-z 0-9 . _ -",
            ));
        }
        if let Principal::Agent(certified) = &principal {
            if *certified != name {
                warn!(agent = %name, certificate = %certified, "registration under another agent's name refused");
                return Err(Status::permission_denied(format!(
                    "this certificate identifies agent {certified:?}; it may not register as {name:?}"
                )));
            }
        }
        let (tx, rx) = mpsc::channel(AGENT_QUEUE);
        let heartbeat_ms = 5000;
        let generation = {
            let mut st = self.ctl.state();
            st.register(inventory.clone(), &reg.active_points)
        };
        self.ctl.attach_session(&name, generation, tx.clone());
        info!(agent = %name, host = %inventory.host, gpus = inventory.gpus.len(), generation, "agent registered");
        tx.send(Ok(pb::ControllerMessage {
            msg: Some(CMsg::Registered(pb::Registered {
                agent_id: name.clone(),
                heartbeat_interval_ms: heartbeat_ms,
            })),
        }))
        .await
        .map_err(|_| Status::internal("session closed"))?;
        let out = self.ctl.state().schedule();
        self.ctl.dispatch(out);

        let ctl = self.ctl.clone();
        let shutdown = self.shutdown.clone();
        let span = info_span!("agent_session", agent = %name, generation);
        self.tracker.spawn(
            async move {
                loop {
                    let next = tokio::select! {
                        m = inbound.message() => m,
                        () = shutdown.cancelled() => break,
                    };
                    match next {
                        Ok(Some(m)) => handle(&ctl, &name, &tx, m).await,
                        Ok(None) => {
                            info!("agent closed its stream");
                            break;
                        }
                        Err(e) => {
                            warn!(error = %e, "agent stream broke");
                            break;
                        }
                    }
                }
                ctl.detach_session(&name, generation);
            }
            .instrument(span),
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

async fn handle(
    ctl: &Controller,
    agent: &str,
    tx: &mpsc::Sender<Result<pb::ControllerMessage, Status>>,
    m: pb::AgentMessage,
) {
    match m.msg {
        Some(Msg::Heartbeat(hb)) => {
            ctl.state().heartbeat(agent, &hb);
            // Dropped when the session's queue is full: the next heartbeat is acked.
            let _ = tx.try_send(Ok(pb::ControllerMessage {
                msg: Some(CMsg::HeartbeatAck(pb::HeartbeatAck {
                    unix_ms: hb.unix_ms,
                })),
            }));
        }
        Some(Msg::RecordBatch(batch)) => {
            // Decoded before taking the lock: the lock is shared by every agent's stream.
            let batch = crate::state::DecodedBatch::decode(batch);
            ctl.metrics
                .batch_received(batch.records.len(), batch.encoded);
            let ack = ctl.state().record_decoded(agent, batch);
            let _ = tx.send(Ok(ack)).await;
        }
        Some(Msg::PointFinished(pf)) => {
            let (job, out) = ctl.state().point_finished(agent, pf);
            if let Some(job) = job {
                ctl.queue_write(job);
            }
            ctl.dispatch(out);
        }
        Some(Msg::EngineEvent(ev)) => ctl.state().engine_event(agent, ev),
        Some(Msg::Register(_)) => warn!(agent, "duplicate Register ignored"),
        None => {}
    }
}
