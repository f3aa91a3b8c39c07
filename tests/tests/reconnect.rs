//! The agent dials the controller and keeps dialling: started before the controller, it
//! registers once the controller is up; when the controller goes away and comes back on
//! the same address, it registers again (with backoff in between).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use fleetbench_agent::config::AgentConfig;
use fleetbench_controller::ControllerConfig;
use fleetbench_proto::pb::{self, control_service_client::ControlServiceClient};
use tokio_util::sync::CancellationToken;

async fn connected_agents(addr: &str) -> Vec<String> {
    let Ok(mut c) = ControlServiceClient::connect(addr.to_string()).await else {
        return Vec::new();
    };
    c.list_agents(pb::ListAgentsRequest {})
        .await
        .map(|r| {
            r.into_inner()
                .agents
                .into_iter()
                .filter(|a| a.connected)
                .map(|a| a.agent_id)
                .collect()
        })
        .unwrap_or_default()
}

async fn wait_for_agent(addr: &str, name: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !connected_agents(addr).await.iter().any(|a| a == name) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never registered at {addr}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn start_controller(
    listener: tokio::net::TcpListener,
    results: std::path::PathBuf,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let stop = stop.clone();
        async move {
            fleetbench_controller::run(
                ControllerConfig {
                    results_dir: results,
                    ..ControllerConfig::default()
                },
                listener,
                stop,
            )
            .await
            .unwrap();
        }
    });
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_registers_late_and_again_after_a_controller_restart() {
    let tmp = tempfile::tempdir().unwrap();
    // Reserve an address, then free it: the agent starts dialling before anyone listens.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let url = format!("http://{addr}");
    let agent_stop = CancellationToken::new();
    let agent = tokio::spawn(fleetbench_agent::run(
        AgentConfig {
            name: "dialler".into(),
            controller: url.clone(),
            // Its own spool folder (the default is per user, and locked).
            spool_dir: tmp.path().join("spool"),
            ..AgentConfig::default()
        },
        agent_stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !agent.is_finished(),
        "the agent keeps trying while nobody listens"
    );

    let (stop, task) = start_controller(
        tokio::net::TcpListener::bind(addr).await.unwrap(),
        tmp.path().join("results"),
    );
    wait_for_agent(&url, "dialler").await;

    // The controller goes away: the agent's session breaks, the agent keeps running.
    stop.cancel();
    task.await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!agent.is_finished());

    // A new controller on the same address: the agent registers again.
    let (stop, task) = start_controller(
        tokio::net::TcpListener::bind(addr).await.unwrap(),
        tmp.path().join("results"),
    );
    wait_for_agent(&url, "dialler").await;

    agent_stop.cancel();
    agent.await.unwrap().unwrap();
    stop.cancel();
    task.await.unwrap();
}
