//! The fleet over TLS with real certificates (made by `controllerctl certs`), over real
//! sockets: who may call what, agents bound to their certificate's name, and a controller
//! that refuses to serve plain text off loopback.
//!
//! Replays the attacks of issue 17: a client without credentials, with a certificate of
//! another CA, or with a viewer token cannot submit or cancel; an agent cannot call the
//! control service, an operator cannot open an agent session; a second agent presenting
//! another agent's name is refused while the real agent keeps its session and runs the
//! sweep to the end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fleetbench_agent::config::{AgentConfig, GpuConfig};
use fleetbench_controller::{ControllerConfig, TlsFiles};
use fleetbench_proto::channel::{self, ClientTls};
use fleetbench_proto::pb::agent_service_client::AgentServiceClient;
use fleetbench_proto::pb::control_service_client::ControlServiceClient;
use fleetbench_proto::pb::{self, agent_message::Msg};
use fleetbench_tests::{
    TINY_SIM_ARGS, test_docker_config, test_policy, tiny_sweep, watch_to_end, workspace_bin,
};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

/// `controllerctl certs` into `dir`.
fn certs(dir: &Path, agents: &str, operators: &str) {
    let out = Command::new(workspace_bin("controllerctl"))
        .args(["certs", "--out"])
        .arg(dir)
        .args(["--controller-names", "localhost,127.0.0.1"])
        .args(["--agents", agents, "--operators", operators])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "controllerctl certs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tls(dir: &Path, ca: &Path, who: Option<&str>) -> ClientTls {
    ClientTls {
        ca: Some(ca.to_path_buf()),
        cert: who.map(|w| dir.join(format!("{w}.pem"))),
        key: who.map(|w| dir.join(format!("{w}-key.pem"))),
        server_name: None,
    }
}

async fn channel(url: &str, tls: &ClientTls) -> Result<Channel, channel::DialError> {
    channel::connect(url, tls).await
}

fn with_token(token: String) -> impl tonic::service::Interceptor + Clone {
    let value: MetadataValue<_> = format!("Bearer {}", token.trim()).parse().unwrap();
    move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", value.clone());
        Ok(req)
    }
}

fn submit_request() -> pb::SubmitSweepRequest {
    pb::SubmitSweepRequest {
        spec_toml: tiny_sweep("secure", "[1, 2]", 7),
        file_name: "secure.toml".into(),
    }
}

fn agent_config(name: &str, url: &str, tls: ClientTls, spool: PathBuf) -> AgentConfig {
    let mut vllm_command = vec![
        workspace_bin("vllm-sim").display().to_string(),
        "serve".into(),
    ];
    vllm_command.extend(TINY_SIM_ARGS.iter().map(|s| s.to_string()));
    AgentConfig {
        name: name.into(),
        host: format!("{name}-host"),
        controller: url.into(),
        gpus: (0..2)
            .map(|_| GpuConfig {
                vendor: "sim".into(),
                model: "vllm-sim".into(),
                memory_gib: 24.0,
            })
            .collect(),
        vllm_command,
        heartbeat_s: 1,
        docker: test_docker_config(),
        policy: test_policy(),
        spool_dir: spool,
        tls,
        ..AgentConfig::default()
    }
}

async fn connected_agents(client: &mut ControlServiceClient<Channel>) -> Vec<pb::AgentStatus> {
    client
        .list_agents(pb::ListAgentsRequest {})
        .await
        .unwrap()
        .into_inner()
        .agents
        .into_iter()
        .filter(|a| a.connected)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_credentialed_callers_reach_the_fleet_and_agents_are_bound_to_their_certificates() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");
    certs(&dir, "gpu-a,gpu-b", "alice:admin,victor:viewer");
    let other = tmp.path().join("other-ca");
    certs(&other, "gpu-a", "mallory:admin");
    let ca = dir.join("ca.pem");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().unwrap().port()
    );
    let results = tmp.path().join("results");
    let shutdown = CancellationToken::new();
    let controller = tokio::spawn(fleetbench_controller::run(
        ControllerConfig {
            results_dir: results.clone(),
            tls: Some(TlsFiles {
                cert: dir.join("controller.pem"),
                key: dir.join("controller-key.pem"),
                client_ca: Some(ca.clone()),
            }),
            tokens: Some(dir.join("tokens.toml")),
            ..ControllerConfig::default()
        },
        listener,
        shutdown.clone(),
    ));

    // Plain text to a TLS listener gets nowhere.
    let plain = url.replace("https://", "http://");
    let mut c = ControlServiceClient::new(channel(&plain, &ClientTls::default()).await.unwrap());
    assert!(c.list_sweeps(pb::ListSweepsRequest {}).await.is_err());

    // No credentials: TLS with the CA only.
    let anon = channel(&url, &tls(&dir, &ca, None)).await.unwrap();
    let mut c = ControlServiceClient::new(anon.clone());
    for code in [
        c.submit_sweep(submit_request()).await.unwrap_err().code(),
        c.cancel_sweep(pb::CancelSweepRequest {
            sweep_id: "x".into(),
        })
        .await
        .unwrap_err()
        .code(),
        c.list_agents(pb::ListAgentsRequest {})
            .await
            .unwrap_err()
            .code(),
    ] {
        assert_eq!(code, Code::Unauthenticated);
    }
    // A wrong token is no token.
    let mut c = ControlServiceClient::with_interceptor(anon.clone(), with_token("nope".into()));
    let e = c.submit_sweep(submit_request()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");

    // A certificate of another CA: the TLS handshake fails, nothing reaches a service.
    let foreign = tls(&other, &ca, Some("operator-mallory"));
    match channel(&url, &foreign).await {
        Err(e) => assert!(matches!(e, channel::DialError::Connect(..)), "{e}"),
        Ok(ch) => {
            let e = ControlServiceClient::new(ch)
                .submit_sweep(submit_request())
                .await
                .unwrap_err();
            // TLS 1.3: the client may finish its side before the server refuses the
            // certificate; the call then dies with the connection, never in a service.
            assert!(
                matches!(
                    e.code(),
                    Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
                ),
                "{e}"
            );
        }
    }

    // A viewer token: read yes, submit or cancel no.
    let viewer = std::fs::read_to_string(dir.join("token-victor.txt")).unwrap();
    let mut v = ControlServiceClient::with_interceptor(anon.clone(), with_token(viewer));
    v.list_sweeps(pb::ListSweepsRequest {}).await.unwrap();
    let e = v.submit_sweep(submit_request()).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    let e = v
        .cancel_sweep(pb::CancelSweepRequest {
            sweep_id: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");

    // An agent's certificate opens no control session; an operator's no agent session.
    let agent_b = channel(&url, &tls(&dir, &ca, Some("agent-gpu-b")))
        .await
        .unwrap();
    let e = ControlServiceClient::new(agent_b.clone())
        .list_sweeps(pb::ListSweepsRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    let admin_cert = channel(&url, &tls(&dir, &ca, Some("operator-alice")))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let e = AgentServiceClient::new(admin_cert.clone())
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    drop(tx);

    // The real agent gpu-a connects with its certificate.
    let agent = tokio::spawn(fleetbench_agent::run(
        agent_config(
            "gpu-a",
            &url,
            tls(&dir, &ca, Some("agent-gpu-a")),
            tmp.path().join("spool-a"),
        ),
        shutdown.clone(),
    ));
    let mut admin = ControlServiceClient::new(admin_cert);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while connected_agents(&mut admin).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gpu-a never connected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // gpu-b presents gpu-a's name: refused, and gpu-a keeps its session.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(pb::AgentMessage {
        msg: Some(Msg::Register(pb::Register {
            inventory: Some(pb::Inventory {
                agent_name: "gpu-a".into(),
                host: "attacker-box".into(),
                gpus: vec![pb::Gpu {
                    index: 0,
                    vendor: "sim".into(),
                    model: "vllm-sim".into(),
                    memory_bytes: 80 << 30,
                    pci_bus_id: String::new(),
                }],
                fleetbench_version: fleetbench_proto::FLEETBENCH_VERSION.into(),
                ..Default::default()
            }),
            active_points: Vec::new(),
        })),
    })
    .await
    .unwrap();
    let refused = match AgentServiceClient::new(agent_b)
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    {
        Err(e) => e,
        Ok(resp) => resp.into_inner().message().await.unwrap_err(),
    };
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused}");
    assert!(refused.message().contains("gpu-b"), "{refused}");
    let agents = connected_agents(&mut admin).await;
    assert_eq!(agents.len(), 1, "{agents:?}");
    assert_eq!(agents[0].agent_id, "gpu-a");
    let inventory = agents[0].inventory.as_ref().unwrap();
    assert_eq!(
        inventory.host, "gpu-a-host",
        "the forged inventory was not taken"
    );

    // The admin submits with a token; gpu-a runs the sweep to the end over TLS.
    let alice = std::fs::read_to_string(dir.join("token-alice.txt")).unwrap();
    let mut a = ControlServiceClient::with_interceptor(anon, with_token(alice));
    let id = a
        .submit_sweep(submit_request())
        .await
        .unwrap()
        .into_inner()
        .sweep_id;
    let last = watch_to_end(&mut admin, &id).await;
    assert_eq!(last.state, "done", "{last:?}");
    // Only the admin's submission reached the controller.
    let sweeps = admin
        .list_sweeps(pb::ListSweepsRequest {})
        .await
        .unwrap()
        .into_inner()
        .sweeps;
    assert_eq!(sweeps.len(), 1, "{sweeps:?}");
    assert!(
        last.points
            .iter()
            .all(|p| p.state == "done" && p.agent == "gpu-a"),
        "{last:?}"
    );

    // controllerctl with the viewer's token file: status works, cancel is refused.
    let ctl = |args: &[&str]| {
        Command::new(workspace_bin("controllerctl"))
            .args(["--controller", &url, "--ca"])
            .arg(&ca)
            .arg("--token-file")
            .arg(dir.join("token-victor.txt"))
            .args(args)
            .env_remove("FLEETBENCH_TOKEN")
            .output()
            .unwrap()
    };
    let out = ctl(&["status", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ctl(&["cancel", &id]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin"), "{err}");

    shutdown.cancel();
    agent.await.unwrap().unwrap();
    controller.await.unwrap().unwrap();
}

#[tokio::test]
async fn plain_text_off_loopback_needs_insecure() {
    let tmp = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let e = fleetbench_controller::run(
        ControllerConfig {
            results_dir: tmp.path().join("results"),
            ..ControllerConfig::default()
        },
        listener,
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("refusing to listen"), "{text}");
    assert!(text.contains("--insecure"), "{text}");

    // With --insecure it serves (and stops on shutdown).
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(fleetbench_controller::run(
        ControllerConfig {
            results_dir: tmp.path().join("results"),
            insecure: true,
            ..ControllerConfig::default()
        },
        listener,
        shutdown.clone(),
    ));
    shutdown.cancel();
    run.await.unwrap().unwrap();
}

/// GET `path` over TLS from the report pages at `addr`, as `client` (a certificate stem in
/// `dir`) or anonymously; the status line and body, or the TLS error.
async fn https_get(
    addr: std::net::SocketAddr,
    dir: &Path,
    client: Option<&str>,
    path: &str,
) -> Result<String, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match client {
        Some(stem) => {
            let certs = CertificateDer::pem_file_iter(dir.join(format!("{stem}.pem")))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(dir.join(format!("{stem}-key.pem"))).unwrap();
            builder.with_client_auth_cert(certs, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    tls.read_to_end(&mut body)
        .await
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_pages_are_served_over_tls_to_certified_clients_only() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");
    certs(&dir, "gpu-a", "victor:viewer");
    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let shutdown = CancellationToken::new();
    let controller = tokio::spawn(fleetbench_controller::run(
        ControllerConfig {
            results_dir: tmp.path().join("results"),
            http: Some(http),
            tls: Some(TlsFiles {
                cert: dir.join("controller.pem"),
                key: dir.join("controller-key.pem"),
                client_ca: Some(dir.join("ca.pem")),
            }),
            ..ControllerConfig::default()
        },
        listener,
        shutdown.clone(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let page = loop {
        if let Ok(page) = https_get(http, &dir, Some("operator-victor"), "/").await {
            break page;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "report pages never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    // Without a client certificate the handshake (or the first read) fails.
    let anonymous = https_get(http, &dir, None, "/").await;
    assert!(
        anonymous.is_err() || !anonymous.as_ref().unwrap().contains("200 OK"),
        "{anonymous:?}"
    );
    // Plain HTTP to the TLS port gets no page.
    let mut plain = tokio::net::TcpStream::connect(http).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got).await;
    assert!(!String::from_utf8_lossy(&got).contains("200 OK"));
    shutdown.cancel();
    controller.await.unwrap().unwrap();

    // Plain-HTTP report pages off loopback are refused without --insecure.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let e = fleetbench_controller::run(
        ControllerConfig {
            results_dir: tmp.path().join("results"),
            http: Some("0.0.0.0:0".parse().unwrap()),
            ..ControllerConfig::default()
        },
        listener,
        CancellationToken::new(),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("plain HTTP"), "{e}");
}
