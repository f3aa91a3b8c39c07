//! Unit tests of container plans: the create body for Intel XPU, NVIDIA and CPU hosts, the
//! accelerator setting, container names.

use super::*;

fn spec() -> pb::EngineSpec {
    pb::EngineSpec {
        engine_kind: pb::EngineKind::Vllm.into(),
        runtime_kind: pb::Runtime::Docker.into(),
        model: "deepseek-ai/DeepSeek-R1-Distill-Llama-8B".into(),
        served_model_name: "deepseek-ai/DeepSeek-R1-Distill-Llama-8B".into(),
        max_model_len: 4096,
        gpu_memory_utilization: 0.9,
        block_size: 64,
        max_num_batched_tokens: 8192,
        max_num_seqs: 256,
        image: "intel/vllm:0.10.2-xpu".into(),
        ..Default::default()
    }
}

fn cfg() -> AgentConfig {
    let mut cfg = AgentConfig {
        name: "lab-b60".into(),
        ..AgentConfig::default()
    };
    cfg.engine_env.insert("HF_TOKEN".into(), "hf_secret".into());
    cfg.engine_env
        .insert("HTTPS_PROXY".into(), "http://proxy:912".into());
    cfg.docker.hf_cache = "/srv/hf".into();
    cfg
}

#[test]
fn intel_xpu_body_passes_dri_and_masks_the_held_gpus() {
    let mut cfg = cfg();
    cfg.policy.ipc_host = true;
    let plan = ContainerPlan::new(
        &spec(),
        4,
        &[4, 5, 6, 7],
        &cfg,
        Accelerator::Intel,
        "sw-1",
        "fleetbench-lab-b60-1",
    );
    let body = plan.create_body();
    let host = body.host_config.clone().unwrap();
    assert_eq!(
        host.devices.unwrap(),
        vec![DeviceMapping {
            path_on_host: Some("/dev/dri".into()),
            path_in_container: Some("/dev/dri".into()),
            cgroup_permissions: Some("rwm".into()),
        }]
    );
    assert!(host.device_requests.is_none());
    assert_eq!(host.ipc_mode.as_deref(), Some("host"));
    assert_eq!(host.shm_size, None);
    // Read-only unless the policy says otherwise.
    assert_eq!(
        host.binds.unwrap(),
        vec!["/srv/hf:/root/.cache/huggingface:ro"]
    );
    let env = body.env.clone().unwrap();
    for want in [
        "ZE_AFFINITY_MASK=4,5,6,7",
        "HF_TOKEN=hf_secret",
        "HTTPS_PROXY=http://proxy:912",
        "HF_HOME=/root/.cache/huggingface",
    ] {
        assert!(env.iter().any(|e| e == want), "{want} not in {env:?}");
    }
    let cmd = body.cmd.clone().unwrap();
    let flag = |name: &str| {
        cmd.iter()
            .position(|a| a == name)
            .map(|i| cmd[i + 1].as_str())
    };
    assert_eq!(
        flag("--model"),
        Some("deepseek-ai/DeepSeek-R1-Distill-Llama-8B")
    );
    assert_eq!(flag("--tensor-parallel-size"), Some("4"));
    assert_eq!(flag("--block-size"), Some("64"));
    assert_eq!(flag("--port"), Some("8000"));
    assert_eq!(flag("--host"), Some("0.0.0.0"));
    let labels = body.labels.clone().unwrap();
    assert_eq!(labels[LABEL_MANAGED], "true");
    assert_eq!(labels[LABEL_AGENT], "lab-b60");
    assert_eq!(labels[LABEL_SWEEP], "sw-1");
    assert_eq!(labels[LABEL_GPUS], "4,5,6,7");
    assert_eq!(body.image.as_deref(), Some("intel/vllm:0.10.2-xpu"));
    assert_eq!(body.exposed_ports, Some(vec!["8000/tcp".to_string()]));
    let binding = &host.port_bindings.unwrap()["8000/tcp"];
    assert_eq!(
        binding.as_ref().unwrap()[0].host_ip.as_deref(),
        Some("127.0.0.1")
    );
    // The body as Docker receives it: a map of exposed ports, secrets only in env.
    let json = serde_json::to_value(&body).unwrap();
    assert_eq!(json["ExposedPorts"], serde_json::json!({"8000/tcp": {}}));
    assert_eq!(json["HostConfig"]["IpcMode"], "host");
}

#[test]
fn nvidia_body_requests_the_held_gpus_and_renumbers_them() {
    let mut cfg = cfg();
    cfg.docker.ipc = String::new();
    cfg.docker.shm_size_gib = Some(16.0);
    let mut spec = spec();
    spec.image = "vllm/vllm-openai@sha256:abc".into();
    spec.entrypoint = vec!["vllm".into(), "serve".into()];
    let plan = ContainerPlan::new(&spec, 2, &[2, 3], &cfg, Accelerator::Nvidia, "s", "n");
    let body = plan.create_body();
    let host = body.host_config.clone().unwrap();
    assert!(host.devices.is_none());
    assert_eq!(
        host.device_requests.unwrap(),
        vec![DeviceRequest {
            driver: Some("nvidia".into()),
            device_ids: Some(vec!["2".into(), "3".into()]),
            capabilities: Some(vec![vec!["gpu".into()]]),
            ..Default::default()
        }]
    );
    assert_eq!(host.ipc_mode, None);
    assert_eq!(host.shm_size, Some(16 * 1024 * 1024 * 1024));
    let env = body.env.unwrap();
    assert!(
        env.iter().any(|e| e == "CUDA_VISIBLE_DEVICES=0,1"),
        "{env:?}"
    );
    assert!(!env.iter().any(|e| e.starts_with("ZE_AFFINITY_MASK")));
    let cmd = body.cmd.unwrap();
    assert_eq!(&cmd[..4], ["vllm", "serve", "--model", spec.model.as_str()]);
    let json = serde_json::to_value(&body.host_config).unwrap();
    assert_eq!(
        json["DeviceRequests"][0]["Capabilities"],
        serde_json::json!([["gpu"]])
    );
}

#[test]
fn cpu_body_has_no_devices_and_no_cache_when_disabled() {
    let mut cfg = cfg();
    cfg.docker.hf_cache = "none".into();
    let plan = ContainerPlan::new(&spec(), 1, &[], &cfg, Accelerator::None, "s", "n");
    let body = plan.create_body();
    let host = body.host_config.unwrap();
    assert!(host.devices.is_none() && host.device_requests.is_none());
    assert!(host.binds.is_none());
    let env = body.env.unwrap();
    assert!(!env.iter().any(|e| e.starts_with("HF_HOME=")), "{env:?}");
    assert!(
        !env.iter()
            .any(|e| e.contains("VISIBLE_DEVICES") || e.contains("ZE_"))
    );
}

#[test]
fn accelerator_follows_the_setting_then_the_inventory() {
    assert_eq!(
        Accelerator::resolve("", Some("intel")).unwrap(),
        Accelerator::Intel
    );
    assert_eq!(
        Accelerator::resolve("", Some("nvidia")).unwrap(),
        Accelerator::Nvidia
    );
    assert_eq!(Accelerator::resolve("", None).unwrap(), Accelerator::None);
    assert_eq!(
        Accelerator::resolve("none", Some("intel")).unwrap(),
        Accelerator::None
    );
    let err = Accelerator::resolve("tpu", None).unwrap_err().to_string();
    assert!(err.contains("docker.accelerator"), "{err}");
}

#[test]
fn container_names_are_docker_safe() {
    let n = container_name("lab host/1", 3);
    assert!(n.starts_with("fleetbench-lab-host-1-"), "{n}");
    assert!(n.ends_with("-3"), "{n}");
}

#[test]
fn the_default_policy_keeps_host_ipc_and_a_writable_cache_off() {
    let plan = ContainerPlan::new(&spec(), 2, &[0, 1], &cfg(), Accelerator::Intel, "s", "n");
    let host = plan.create_body().host_config.unwrap();
    assert_eq!(host.ipc_mode, None);
    assert_eq!(host.shm_size, Some(16 * 1024 * 1024 * 1024));
    assert_eq!(
        host.binds.unwrap(),
        vec!["/srv/hf:/root/.cache/huggingface:ro"]
    );
    // `[docker] ipc = "host"` alone does not give the host's IPC namespace.
    let mut cfg = cfg();
    cfg.docker.ipc = "host".into();
    let plan = ContainerPlan::new(&spec(), 2, &[0, 1], &cfg, Accelerator::Intel, "s", "n");
    assert_eq!(plan.create_body().host_config.unwrap().ipc_mode, None);

    cfg.policy.hf_cache_writable = true;
    let plan = ContainerPlan::new(&spec(), 2, &[0, 1], &cfg, Accelerator::Intel, "s", "n");
    assert_eq!(
        plan.create_body().host_config.unwrap().binds.unwrap(),
        vec!["/srv/hf:/root/.cache/huggingface"]
    );
}

#[test]
fn an_untrusted_entrypoint_gets_no_secrets_proxies_or_cache() {
    let mut cfg = cfg();
    cfg.policy.allow_entrypoint_override = true;
    let mut spec = spec();
    spec.entrypoint = vec!["/bin/sh".into(), "-c".into(), "env".into()];
    let plan = ContainerPlan::new(&spec, 1, &[3], &cfg, Accelerator::Intel, "s", "n");
    let body = plan.create_body();
    let env = body.env.clone().unwrap();
    assert!(!env.iter().any(|e| e.contains("hf_secret")), "{env:?}");
    assert!(!env.iter().any(|e| e.contains("proxy:912")), "{env:?}");
    assert!(!env.iter().any(|e| e.starts_with("HF_HOME=")), "{env:?}");
    // The GPU selection is not a secret.
    assert!(env.iter().any(|e| e == "ZE_AFFINITY_MASK=3"), "{env:?}");
    assert!(body.host_config.unwrap().binds.is_none());
    let json = serde_json::to_string(&plan.create_body()).unwrap();
    assert!(!json.contains("hf_secret"), "{json}");

    // The same image with a trusted entrypoint gets them.
    spec.entrypoint = vec!["vllm".into(), "serve".into()];
    let plan = ContainerPlan::new(&spec, 1, &[3], &cfg, Accelerator::Intel, "s", "n");
    let env = plan.create_body().env.unwrap();
    assert!(env.iter().any(|e| e == "HF_TOKEN=hf_secret"), "{env:?}");
}
