//! Unit tests of GPU discovery on a fake host (a sysfs tree, `/dev/dri` nodes and captured
//! `nvidia-smi` / `xpu-smi` output), and of the config's list winning over discovery.

use std::collections::HashMap;
use std::os::unix::fs::symlink;
use std::path::PathBuf;

use super::*;
use crate::config::{AgentConfig, GpuConfig};

/// A fake host: `sys/` laid out like the kernel's sysfs (class/drm entries are symlinks
/// into devices/, each node's `device` links back to its PCI function, `driver` links
/// into bus/pci/drivers) and `dev/dri/` with the device nodes.
struct FakeHost {
    dir: tempfile::TempDir,
}

impl FakeHost {
    fn new() -> FakeHost {
        let host = FakeHost {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(host.sys().join("class/drm")).unwrap();
        std::fs::create_dir_all(host.dev().join("dri")).unwrap();
        std::fs::write(host.sys().join("class/drm/version"), "drm 1.1.0 20060810\n").unwrap();
        host
    }

    fn sys(&self) -> PathBuf {
        self.dir.path().join("sys")
    }

    fn dev(&self) -> PathBuf {
        self.dir.path().join("dev")
    }

    /// A PCI function at `address` with DRM `nodes` (`card1`, `renderD128`), each with
    /// a /dev node.
    fn pci(
        &self,
        address: &str,
        vendor: &str,
        class: &str,
        device: &str,
        driver: &str,
        nodes: &[&str],
    ) {
        let sys = self.sys();
        let func = sys.join("devices/pci0000:00").join(address);
        std::fs::create_dir_all(func.join("drm")).unwrap();
        std::fs::write(func.join("vendor"), format!("{vendor}\n")).unwrap();
        std::fs::write(func.join("class"), format!("{class}\n")).unwrap();
        std::fs::write(func.join("device"), format!("{device}\n")).unwrap();
        std::fs::create_dir_all(sys.join("bus/pci/drivers").join(driver)).unwrap();
        symlink(
            format!("../../../bus/pci/drivers/{driver}"),
            func.join("driver"),
        )
        .unwrap();
        for node in nodes {
            let dir = func.join("drm").join(node);
            std::fs::create_dir_all(&dir).unwrap();
            symlink(format!("../../../{address}"), dir.join("device")).unwrap();
            symlink(
                format!("../../devices/pci0000:00/{address}/drm/{node}"),
                sys.join("class/drm").join(node),
            )
            .unwrap();
            std::fs::write(self.dev().join("dri").join(node), "").unwrap();
        }
    }

    /// A display connector entry, e.g. `card1-DP-1`, whose `device` is the card.
    fn connector(&self, address: &str, card: &str, connector: &str) {
        let sys = self.sys();
        let dir = sys
            .join("devices/pci0000:00")
            .join(address)
            .join("drm")
            .join(card)
            .join(connector);
        std::fs::create_dir_all(&dir).unwrap();
        symlink("..", dir.join("device")).unwrap();
        symlink(
            format!("../../devices/pci0000:00/{address}/drm/{card}/{connector}"),
            sys.join("class/drm").join(connector),
        )
        .unwrap();
    }

    fn discover(&self, tools: &FakeTools) -> Inventory {
        discover(&self.sys(), &self.dev(), tools)
    }
}

/// Captured tool output by exact command line (`program arg arg`).
#[derive(Default)]
struct FakeTools(HashMap<String, String>);

impl FakeTools {
    fn with(mut self, command: &str, stdout: &str) -> FakeTools {
        self.0.insert(command.into(), stdout.into());
        self
    }
}

impl ToolRunner for FakeTools {
    fn run(&self, program: &str, args: &[&str]) -> Option<String> {
        let mut command = vec![program];
        command.extend_from_slice(args);
        self.0.get(&command.join(" ")).cloned()
    }
}

const NVIDIA_SMI: &str = "nvidia-smi --query-gpu=index,name,memory.total,pci.bus_id,driver_version --format=csv,noheader,nounits";
const XPU_SMI: &str = "xpu-smi discovery --dump 1,2,11,16";

fn two_b60_host() -> FakeHost {
    let host = FakeHost::new();
    // Created out of PCI order, and the second card got the lower node numbers: indices
    // must follow PCI addresses, not node names.
    host.pci(
        "0000:83:00.0",
        "0x8086",
        "0x030000",
        "0xe211",
        "xe",
        &["card1", "renderD128"],
    );
    host.connector("0000:83:00.0", "card1", "card1-DP-1");
    host.pci(
        "0000:03:00.0",
        "0x8086",
        "0x030000",
        "0xe211",
        "xe",
        &["card2", "renderD129"],
    );
    // Intel, has a DRM-style node, but not a display controller (an NPU-like
    // processing accelerator): ignored.
    host.pci(
        "0000:00:0b.0",
        "0x8086",
        "0x120000",
        "0x7d1d",
        "intel_vpu",
        &["renderD130"],
    );
    host
}

#[test]
fn two_b60_cards_in_pci_order_and_non_display_device_ignored() {
    let host = two_b60_host();
    let inv = host.discover(&FakeTools::default());
    assert_eq!(inv.source, "sysfs");
    assert_eq!(inv.driver, "xe");
    assert_eq!(inv.gpus.len(), 2, "{inv:#?}");
    let dri = host.dev().join("dri");
    assert_eq!(
        inv.gpus[0],
        GpuDevice {
            index: 0,
            vendor: Vendor::Intel,
            model: "Arc Pro B60".into(),
            memory_bytes: 0,
            pci_address: "0000:03:00.0".into(),
            render_node: Some(dri.join("renderD129")),
            card_node: Some(dri.join("card2")),
        }
    );
    assert_eq!(inv.gpus[1].index, 1);
    assert_eq!(inv.gpus[1].pci_address, "0000:83:00.0");
    assert_eq!(inv.gpus[1].render_node, Some(dri.join("renderD128")));
    assert_eq!(inv.gpus[1].card_node, Some(dri.join("card1")));
    let proto = inv.to_proto();
    assert_eq!(proto[1].vendor, "intel");
    assert_eq!(proto[1].model, "Arc Pro B60");
}

#[test]
fn xpu_smi_supplies_memory_and_missing_dev_nodes_are_none() {
    let host = two_b60_host();
    std::fs::remove_file(host.dev().join("dri/renderD128")).unwrap();
    let tools = FakeTools::default().with(
        XPU_SMI,
        "Device ID,Device Name,PCI BDF Address,Memory Physical Size\n\
         0,\"Intel(R) Arc(TM) Pro B60 Graphics\",\"0000:03:00.0\",\"24480.00 MiB\"\n\
         1,\"Intel(R) Arc(TM) Pro B60 Graphics\",\"0000:83:00.0\",\"N/A\"\n",
    );
    let inv = host.discover(&tools);
    assert_eq!(inv.source, "sysfs");
    assert_eq!(inv.gpus[0].memory_bytes, 24480 << 20);
    assert_eq!(inv.gpus[1].memory_bytes, 0);
    assert_eq!(inv.gpus[1].render_node, None);
    assert!(inv.gpus[1].card_node.is_some());
}

#[test]
fn unknown_intel_ids_and_i915() {
    let host = FakeHost::new();
    host.pci(
        "0000:03:00.0",
        "0x8086",
        "0x038000",
        "0xe2ff",
        "i915",
        &["card0", "renderD128"],
    );
    // Not Intel: left to nvidia-smi.
    host.pci(
        "0000:04:00.0",
        "0x10de",
        "0x030200",
        "0x2330",
        "nvidia",
        &["card1", "renderD129"],
    );
    let inv = host.discover(&FakeTools::default());
    assert_eq!(inv.gpus.len(), 1);
    assert_eq!(inv.gpus[0].model, "Intel GPU 0xe2ff");
    assert_eq!(inv.driver, "i915");
}

#[test]
fn xpu_smi_alone_lists_gpus_when_sysfs_has_none() {
    let host = FakeHost::new();
    let tools = FakeTools::default().with(
        XPU_SMI,
        "Device ID,Device Name,PCI BDF Address,Memory Physical Size\n\
         1,\"Intel(R) Arc(TM) Pro B60 Graphics\",\"0000:83:00.0\",\"24480.00 MiB\"\n\
         0,\"Intel(R) Arc(TM) Pro B60 Graphics\",\"0000:03:00.0\",\"24480.00 MiB\"\n",
    );
    let inv = host.discover(&tools);
    assert_eq!(inv.source, "xpu-smi");
    assert_eq!(inv.gpus.len(), 2);
    assert_eq!(inv.gpus[0].pci_address, "0000:03:00.0");
    assert_eq!(inv.gpus[0].model, "Intel(R) Arc(TM) Pro B60 Graphics");
    assert_eq!(inv.gpus[1].memory_bytes, 24480 << 20);
}

#[test]
fn nvidia_smi_with_eight_h100s() {
    let host = FakeHost::new();
    host.pci(
        "0000:18:00.0",
        "0x10de",
        "0x030200",
        "0x2330",
        "nvidia",
        &["card1", "renderD128"],
    );
    let buses = ["18", "2a", "3a", "5d", "9a", "ab", "ba", "db"];
    let out: String = buses
        .iter()
        .enumerate()
        .map(|(i, bus)| {
            format!(
                "{i}, NVIDIA H100 80GB HBM3, 81559, 00000000:{}:00.0, 560.35.03\n",
                bus.to_uppercase()
            )
        })
        .collect();
    let inv = host.discover(&FakeTools::default().with(NVIDIA_SMI, &out));
    assert_eq!(inv.source, "nvidia-smi");
    assert_eq!(inv.driver, "nvidia 560.35.03");
    assert_eq!(inv.gpus.len(), 8);
    for (i, g) in inv.gpus.iter().enumerate() {
        assert_eq!(g.index as usize, i);
        assert_eq!(g.vendor, Vendor::Nvidia);
        assert_eq!(g.model, "NVIDIA H100 80GB HBM3");
        assert_eq!(g.memory_bytes, 81559 * 1024 * 1024);
        assert_eq!(g.pci_address, format!("0000:{}:00.0", buses[i]));
    }
    assert_eq!(
        inv.gpus[0].render_node,
        Some(host.dev().join("dri/renderD128"))
    );
    assert_eq!(inv.gpus[1].render_node, None);
    assert_eq!(inv.to_proto()[7].vendor, "nvidia");
}

#[test]
fn config_override_wins() {
    let cfg = AgentConfig {
        gpus: vec![
            GpuConfig {
                vendor: "sim".into(),
                model: "vllm-sim".into(),
                memory_gib: 24.0,
            },
            GpuConfig {
                vendor: "Intel".into(),
                model: "Arc Pro B60".into(),
                memory_gib: 0.0,
            },
        ],
        ..AgentConfig::default()
    };
    let inv = resolve(&cfg, || {
        panic!("discovery must not run when the config lists GPUs")
    });
    assert_eq!(inv.source, "config");
    assert_eq!(inv.driver, "");
    assert_eq!(inv.gpus.len(), 2);
    assert_eq!(inv.gpus[0].vendor, Vendor::None);
    assert_eq!(inv.gpus[0].vendor.to_string(), "none");
    assert_eq!(inv.gpus[0].memory_bytes, 24 << 30);
    assert_eq!(inv.gpus[1].index, 1);
    assert_eq!(inv.gpus[1].vendor, Vendor::Intel);

    let host = two_b60_host();
    let found = resolve(&AgentConfig::default(), || {
        host.discover(&FakeTools::default())
    });
    assert_eq!(found.source, "sysfs");
    assert_eq!(found.gpus.len(), 2);
}

#[test]
fn nothing_found() {
    let host = FakeHost::new();
    let inv = host.discover(&FakeTools::default());
    assert_eq!(inv, Inventory::none());
    assert_eq!(inv.source, "none");
    assert!(inv.gpus.is_empty());
    // No sysfs at all, and tools that fail or print nothing useful.
    let missing = host.dir.path().join("nowhere");
    let tools = FakeTools::default()
        .with(NVIDIA_SMI, "No devices were found\n")
        .with(XPU_SMI, "garbage\n");
    assert_eq!(discover(&missing, &missing, &tools), Inventory::none());
}
