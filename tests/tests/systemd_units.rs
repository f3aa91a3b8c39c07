//! The systemd units in `deploy/systemd/`: hardened as the README promises (a dedicated
//! user, no capabilities, a read-only system but for the state directory…), and accepted
//! by `systemd-analyze verify` without a single warning (an unknown or misspelt directive
//! is only a warning to systemd, and silently drops the protection).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn units_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("deploy")
        .join("systemd")
}

fn unit(name: &str) -> String {
    std::fs::read_to_string(units_dir().join(name)).unwrap()
}

/// The unit's `Key=value` lines (continuation lines joined), comments left out.
fn directives(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let line = line.trim();
        if pending.is_empty() && (line.starts_with('#') || line.starts_with('[') || line.is_empty())
        {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            continue;
        }
        pending.push_str(line);
        if let Some((k, v)) = pending.split_once('=') {
            out.push((k.trim().to_string(), v.trim().to_string()));
        }
        pending.clear();
    }
    out
}

fn value<'a>(d: &'a [(String, String)], key: &str) -> Option<&'a str> {
    d.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

const HARDENING: &[(&str, &str)] = &[
    ("User", "fleetbench"),
    ("NoNewPrivileges", "yes"),
    ("CapabilityBoundingSet", ""),
    ("ProtectSystem", "strict"),
    ("ProtectHome", "yes"),
    ("PrivateTmp", "yes"),
    ("LockPersonality", "yes"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectControlGroups", "yes"),
    ("RestrictSUIDSGID", "yes"),
    ("RestrictNamespaces", "yes"),
];

#[test]
fn both_units_run_hardened_as_a_dedicated_user() {
    for (name, state, umask) in [
        ("fleetbench-controller.service", "fleetbench", "0027"),
        ("fleetbench-agent.service", "fleetbench-agent", "0077"),
    ] {
        let d = directives(&unit(name));
        for (key, want) in HARDENING {
            assert_eq!(value(&d, key), Some(*want), "{name}: {key}");
        }
        assert_eq!(value(&d, "StateDirectory"), Some(state), "{name}");
        assert_eq!(
            value(&d, "ReadWritePaths"),
            Some(format!("/var/lib/{state}").as_str()),
            "{name}"
        );
        assert_eq!(value(&d, "UMask"), Some(umask), "{name}");
        let families = value(&d, "RestrictAddressFamilies").unwrap();
        for f in families.split_whitespace() {
            assert!(
                ["AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"].contains(&f),
                "{name}: {f}"
            );
        }
    }
}

#[test]
fn the_controller_listens_off_loopback_only_with_tls_and_credentials() {
    let d = directives(&unit("fleetbench-controller.service"));
    let exec = value(&d, "ExecStart").unwrap();
    for flag in [
        "--listen 0.0.0.0:50051",
        "--tls-cert /etc/fleetbench/controller.pem",
        "--tls-key /etc/fleetbench/controller-key.pem",
        "--client-ca /etc/fleetbench/ca.pem",
        "--tokens /etc/fleetbench/tokens.toml",
        "--results /var/lib/fleetbench/results",
        "--state-dir /var/lib/fleetbench/controller-state",
    ] {
        assert!(exec.contains(flag), "{flag} missing from {exec}");
    }
    assert!(!exec.contains("--insecure"), "{exec}");
    assert_eq!(value(&d, "PrivateDevices"), Some("yes"));
    assert_eq!(value(&d, "MemoryDenyWriteExecute"), Some("yes"));
}

#[test]
fn the_agent_keeps_the_docker_socket_and_the_gpus() {
    let d = directives(&unit("fleetbench-agent.service"));
    assert_eq!(value(&d, "SupplementaryGroups"), Some("docker"));
    // GPUs are device files: no private /dev, no device allow-list.
    assert_eq!(value(&d, "PrivateDevices"), None);
    assert_eq!(value(&d, "DevicePolicy"), None);
}

/// `systemd-analyze verify` on copies whose ExecStart names an existing binary (verify
/// checks that it is executable; the real paths exist only once installed). Every line it
/// prints is a problem: unknown directives and bad values are warnings, not errors.
#[test]
fn systemd_analyze_verify_accepts_both_units_without_a_warning() {
    let found = Command::new("systemd-analyze").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "systemd-analyze not found: install systemd (apt-get install -y systemd) to check the units"
    );
    let tmp = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for (name, bin) in [
        ("fleetbench-controller.service", "/usr/local/bin/controller"),
        ("fleetbench-agent.service", "/usr/local/bin/agent"),
    ] {
        let text = unit(name);
        assert!(text.contains(bin), "{name}");
        let path = tmp.path().join(name);
        std::fs::write(&path, text.replace(bin, "/bin/true")).unwrap();
        paths.push(path);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&paths)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert_eq!(said.trim(), "", "systemd-analyze verify warned");
}
