//! Unit tests of the host policy: each rule refuses and names itself, allowed engines pass,
//! image patterns and digests, `extra_args` flags and values, external hosts.

use super::*;

fn docker(image: &str) -> pb::EngineSpec {
    pb::EngineSpec {
        runtime_kind: pb::Runtime::Docker.into(),
        image: image.into(),
        ..Default::default()
    }
}

fn process(extra_args: &[&str]) -> pb::EngineSpec {
    pb::EngineSpec {
        runtime_kind: pb::Runtime::Process.into(),
        extra_args: extra_args.iter().map(|s| (*s).to_string()).collect(),
        ..Default::default()
    }
}

fn external(url: &str) -> pb::EngineSpec {
    pb::EngineSpec {
        runtime_kind: pb::Runtime::External.into(),
        external_url: url.into(),
        ..Default::default()
    }
}

fn refused(policy: &Policy, spec: &pb::EngineSpec) -> Violation {
    policy
        .check(spec)
        .expect_err("the policy should refuse this engine")
}

#[test]
fn the_default_policy_admits_official_images_and_the_simulator() {
    let p = Policy::default();
    assert_eq!(p.validate(), Ok(()));
    for image in [
        "vllm/vllm-openai:v0.10.1",
        "vllm/vllm-openai:latest",
        "vllm/vllm-openai",
        "docker.io/vllm/vllm-openai:nightly",
        "intel/vllm:0.10.2-xpu",
        "rocm/vllm:rocm6.4.1_vllm_0.10.1",
        "fleetbench/vllm-sim:dev",
        "vllm/vllm-openai@sha256:0123abcd",
    ] {
        assert_eq!(p.check(&docker(image)), Ok(()), "{image}");
    }
    assert_eq!(p.check(&process(&[])), Ok(()));
    assert_eq!(p.check(&external("http://127.0.0.1:8000")), Ok(()));
}

#[test]
fn an_image_not_in_the_list_is_refused_naming_the_rule() {
    let p = Policy::default();
    for image in [
        "evil/x:1",
        "vllm/vllm-openai-evil:1",
        "evil.example/vllm/vllm-openai:1",
        "localhost:5000/vllm/vllm-openai:1",
        "intel/vllm-other:1",
        "",
    ] {
        let v = refused(&p, &docker(image));
        assert_eq!(v.rule, "policy.images", "{image}");
        let msg = v.to_string();
        assert!(
            msg.starts_with(&format!("agent policy: image {image:?} is not in policy.images (allowed: vllm/vllm-openai:*, intel/vllm:*")),
            "{msg}"
        );
    }
}

#[test]
fn image_patterns_glob_and_pin_digests() {
    assert!(image_matches("myorg/vllm:0.10.*", "myorg/vllm:0.10.2"));
    assert!(!image_matches("myorg/vllm:0.10.*", "myorg/vllm:0.11.0"));
    // No tag in the pattern means :latest, as in Docker.
    assert!(image_matches("myorg/vllm", "myorg/vllm"));
    assert!(image_matches("myorg/vllm", "myorg/vllm:latest"));
    assert!(!image_matches("myorg/vllm", "myorg/vllm:1"));
    // Docker Hub's implied prefixes.
    assert!(image_matches("ubuntu:*", "docker.io/library/ubuntu:24.04"));
    assert!(image_matches(
        "docker.io/vllm/vllm-openai:*",
        "vllm/vllm-openai:1"
    ));
    // A registry with a port is part of the name, not a tag.
    assert!(image_matches(
        "registry.lab:5000/vllm:*",
        "registry.lab:5000/vllm:1"
    ));
    assert!(!image_matches(
        "registry.lab:5000/vllm:*",
        "registry.lab:5001/vllm:1"
    ));
    // Pinned digests admit exactly that digest, with or without a tag beside it.
    let pin = "vllm/vllm-openai@sha256:aaaa";
    assert!(image_matches(pin, "vllm/vllm-openai@sha256:aaaa"));
    assert!(image_matches(pin, "vllm/vllm-openai:v1@sha256:aaaa"));
    assert!(!image_matches(pin, "vllm/vllm-openai@sha256:bbbb"));
    assert!(!image_matches(pin, "vllm/vllm-openai:v1"));
    assert!(!image_matches(pin, "other/vllm@sha256:aaaa"));
    // A repository pattern with a fixed tag does not admit arbitrary digests.
    assert!(!image_matches("myorg/vllm:1", "myorg/vllm@sha256:aaaa"));
    // `*` alone admits anything; nothing admits an empty image.
    assert!(image_matches("*", "anything/at:all"));
    assert!(!image_matches("*", " "));

    let pinned = Policy {
        images: vec![pin.into()],
        ..Policy::default()
    };
    assert_eq!(
        pinned.check(&docker("vllm/vllm-openai@sha256:aaaa")),
        Ok(())
    );
    assert_eq!(
        refused(&pinned, &docker("vllm/vllm-openai:latest")).rule,
        "policy.images"
    );
}

#[test]
fn glob_matching() {
    assert!(glob_match("--sim-*", "--sim-step-ms"));
    assert!(glob_match("*", ""));
    assert!(glob_match("a*b*c", "aXXbYYc"));
    assert!(glob_match("a*b*c", "abbc"));
    assert!(!glob_match("a*b*c", "abcx"));
    assert!(!glob_match("--sim-*", "--simulate"));
    assert!(!glob_match("abc", "abcd"));
    assert!(glob_match("*.lab.example", "gpu1.lab.example"));
    assert!(!glob_match("*.lab.example", "lab.example.evil"));
}

#[test]
fn an_entrypoint_override_is_refused_unless_trusted_or_allowed() {
    let p = Policy::default();
    let mut spec = docker("vllm/vllm-openai:latest");
    spec.entrypoint = vec![
        "/bin/sh".into(),
        "-c".into(),
        "echo $HF_TOKEN; exit 3".into(),
    ];
    let v = refused(&p, &spec);
    assert_eq!(v.rule, "policy.allow_entrypoint_override");
    let msg = v.to_string();
    assert!(
        msg.contains(r#"entrypoint ["/bin/sh", "-c", "echo $HF_TOKEN; exit 3"] replaces the image's and policy.allow_entrypoint_override is false"#),
        "{msg}"
    );
    assert!(!p.trusts_container(&spec));

    // The documented ways of starting vLLM's server are trusted.
    spec.entrypoint = vec![
        "python3".into(),
        "-m".into(),
        "vllm.entrypoints.openai.api_server".into(),
    ];
    assert_eq!(p.check(&spec), Ok(()));
    assert!(p.trusts_container(&spec));
    spec.entrypoint.clear();
    assert!(p.trusts_container(&spec));

    // Allowed overrides run, but their containers are not trusted with secrets.
    let open = Policy {
        allow_entrypoint_override: true,
        ..Policy::default()
    };
    spec.entrypoint = vec!["/bin/sh".into(), "-c".into(), "env".into()];
    assert_eq!(open.check(&spec), Ok(()));
    assert!(!open.trusts_container(&spec));
    // An image the policy does not list is never trusted.
    assert!(!open.trusts_container(&docker("evil/x:1")));
}

#[test]
fn runtimes_outside_the_list_are_refused() {
    let p = Policy {
        runtimes: vec![Runtime::Process],
        ..Policy::default()
    };
    assert_eq!(p.check(&process(&[])), Ok(()));
    let v = refused(&p, &docker("vllm/vllm-openai:latest"));
    assert_eq!(v.rule, "policy.runtimes");
    assert_eq!(
        v.to_string(),
        "agent policy: runtime \"docker\" is not in policy.runtimes (allowed: process)"
    );
    let unknown = pb::EngineSpec {
        runtime_kind: 99,
        ..Default::default()
    };
    assert_eq!(refused(&p, &unknown).rule, "policy.runtimes");
}

#[test]
fn extra_args_flags_must_be_listed() {
    let p = Policy::default();
    for ok in [
        &["--max-num-seqs", "64", "--block-size=32"][..],
        &["--enforce-eager", "--kv-cache-dtype", "fp8"],
        &["--sim-step-ms", "20", "--sim-oom-crash"],
        &["--seed", "-1", "--gpu-memory-utilization", "0.85"],
        &["--load-format", "dummy"],
        &[],
    ] {
        assert_eq!(p.check(&process(ok)), Ok(()), "{ok:?}");
    }
    let v = refused(
        &p,
        &process(&["--max-num-seqs", "8", "--trust-remote-code"]),
    );
    assert_eq!(v.rule, "policy.extra_args");
    assert!(
        v.to_string().starts_with(
            "agent policy: extra_args flag \"--trust-remote-code\" is not in policy.extra_args (allowed: --max-num-seqs,"
        ),
        "{v}"
    );
    // Flags are checked by name, also with an inline value.
    assert_eq!(
        refused(&p, &process(&["--chat-template=/etc/shadow"])).rule,
        "policy.extra_args"
    );
    // Flag names that only look allowed through a glob.
    assert_eq!(
        refused(&p, &process(&["--sim-$(id)"])).rule,
        "policy.extra_args"
    );
}

#[test]
fn extra_args_values_are_plain_words_after_a_flag() {
    let p = Policy::default();
    for bad in [
        &["--max-num-seqs", "$(curl evil)"][..],
        &["--max-num-seqs", "8; rm -rf /"],
        &["--max-num-seqs=`id`"],
        &["--dtype", "half", "extra-positional"],
        &["positional"],
        &["--dtype", ""],
        &["--dtype=--trust-remote-code"],
        &["--dtype", "a b"],
        &["--dtype", "{\"x\":1}"],
    ] {
        let v = refused(&p, &process(bad));
        assert_eq!(v.rule, "policy.extra_args", "{bad:?}: {v}");
    }
    let v = refused(&p, &process(&["--max-num-seqs", "$(id)"]));
    assert!(
        v.to_string()
            .contains("extra_args value \"$(id)\" of --max-num-seqs is not a plain value"),
        "{v}"
    );
    // A later flag is a flag, not the earlier flag's value.
    let v = refused(&p, &process(&["--dtype", "--trust-remote-code"]));
    assert!(v.to_string().contains("\"--trust-remote-code\""), "{v}");
    // Docker engines' flags are checked too.
    let mut spec = docker("vllm/vllm-openai:latest");
    spec.extra_args = vec!["--trust-remote-code".into()];
    assert_eq!(refused(&p, &spec).rule, "policy.extra_args");
    // An operator who lists `*` admits any flag, still with plain values.
    let any = Policy {
        extra_args: vec!["*".into()],
        ..Policy::default()
    };
    assert_eq!(any.check(&process(&["--whatever", "1"])), Ok(()));
    assert_eq!(
        refused(&any, &process(&["--whatever", "$(id)"])).rule,
        "policy.extra_args"
    );
}

#[test]
fn external_urls_are_loopback_only_by_default() {
    let p = Policy::default();
    for ok in [
        "http://127.0.0.1:8000",
        "http://localhost:8000/",
        "http://LOCALHOST:8000",
        "http://[::1]:8000",
        "https://127.0.0.1",
        // Decimal IPv4 is normalised by the URL parser.
        "http://2130706433:8000",
    ] {
        assert_eq!(p.check(&external(ok)), Ok(()), "{ok}");
    }
    for bad in [
        "http://10.0.0.5:8000",
        "http://169.254.169.254/latest/meta-data",
        "http://localhost.evil.example:8000",
        "http://127.0.0.1.nip.io",
        "file:///etc/passwd",
        "gopher://127.0.0.1:70",
        "not a url",
    ] {
        let v = refused(&p, &external(bad));
        assert_eq!(v.rule, "policy.external_hosts", "{bad}: {v}");
    }
    let v = refused(&p, &external("http://10.0.0.5:8000"));
    assert_eq!(
        v.to_string(),
        "agent policy: external url host \"10.0.0.5\" is not in policy.external_hosts (allowed: 127.0.0.1, ::1, localhost)"
    );
    let lab = Policy {
        external_hosts: vec![
            "*.lab.example".into(),
            "10.0.0.5".into(),
            "[fd00::1]".into(),
        ],
        ..Policy::default()
    };
    assert_eq!(lab.check(&external("http://gpu1.lab.example:8000")), Ok(()));
    assert_eq!(lab.check(&external("http://10.0.0.5:8000")), Ok(()));
    assert_eq!(lab.check(&external("http://[fd00:0::1]:8000")), Ok(()));
    assert!(lab.check(&external("http://127.0.0.1:8000")).is_err());
}

#[test]
fn long_sweep_text_is_cut_in_messages() {
    let p = Policy::default();
    let long = "x".repeat(10_000);
    let msg = refused(&p, &docker(&format!("evil/{long}:1"))).to_string();
    assert!(msg.len() < 1_000, "{}", msg.len());
}

#[test]
fn validation_names_the_bad_key() {
    let bad = |p: Policy| p.validate().unwrap_err().0;
    assert_eq!(
        bad(Policy {
            images: vec!["vllm/vllm-openai:*".into(), " ".into()],
            ..Policy::default()
        }),
        "policy.images[1]"
    );
    assert_eq!(
        bad(Policy {
            images: vec!["x@md5:1".into()],
            ..Policy::default()
        }),
        "policy.images[0]"
    );
    assert_eq!(
        bad(Policy {
            extra_args: vec!["max-num-seqs".into()],
            ..Policy::default()
        }),
        "policy.extra_args[0]"
    );
    assert_eq!(
        bad(Policy {
            entrypoints: vec![Vec::new()],
            ..Policy::default()
        }),
        "policy.entrypoints[0]"
    );
}

#[test]
fn the_example_sweeps_pass_the_default_policy() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with("sweep.toml") && !name.starts_with("seed-") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let spec = fleetbench_proto::spec::SweepSpec::parse(&text, &name).unwrap();
        assert_eq!(
            Policy::default().check(&spec.engine_wire()),
            Ok(()),
            "{name}"
        );
        checked += 1;
    }
    assert!(checked >= 5, "{checked}");
}
