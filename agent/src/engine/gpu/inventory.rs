//! The GPU inventory's types: [`Vendor`], [`GpuDevice`] and [`Inventory`] (this host's
//! GPUs and where the list came from, as reported at registration), the config's GPU list
//! and [`resolve`] (the config wins over discovery), and [`ToolRunner`], how discovery runs
//! the vendor tools.

use std::fmt;
use std::path::PathBuf;

use fleetbench_proto::pb;

use crate::config::{AgentConfig, GpuConfig};

/// Who made a GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Vendor {
    Intel,
    Nvidia,
    /// No real GPU: simulated (`sim` in the config) or unknown.
    None,
}

impl Vendor {
    /// Parses a config's vendor name; anything but `intel` and `nvidia` is [`Vendor::None`].
    pub fn parse(name: &str) -> Vendor {
        match name.trim().to_ascii_lowercase().as_str() {
            "intel" => Vendor::Intel,
            "nvidia" => Vendor::Nvidia,
            _ => Vendor::None,
        }
    }

    /// The name reported to the controller: `intel`, `nvidia` or `none`.
    pub fn as_str(self) -> &'static str {
        match self {
            Vendor::Intel => "intel",
            Vendor::Nvidia => "nvidia",
            Vendor::None => "none",
        }
    }
}

impl fmt::Display for Vendor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One GPU of this host.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuDevice {
    /// Index in the vendor runtime's default order (see the module docs).
    pub index: u32,
    pub vendor: Vendor,
    /// Marketing name, e.g. `Arc Pro B60` or `NVIDIA H100 80GB HBM3`.
    pub model: String,
    /// Device memory; 0 when unknown.
    pub memory_bytes: u64,
    /// PCI address, e.g. `0000:03:00.0`; empty when unknown (config entries).
    pub pci_address: String,
    /// The DRM render node, e.g. `/dev/dri/renderD128`, when it exists.
    pub render_node: Option<PathBuf>,
    /// The DRM card node, e.g. `/dev/dri/card0`, when it exists.
    pub card_node: Option<PathBuf>,
}

impl GpuDevice {
    /// The registration message's view of this GPU.
    pub fn to_proto(&self) -> pb::Gpu {
        pb::Gpu {
            index: self.index,
            vendor: self.vendor.to_string(),
            model: self.model.clone(),
            memory_bytes: self.memory_bytes,
            pci_bus_id: self.pci_address.clone(),
        }
    }
}

/// This host's GPUs and where the list came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Inventory {
    /// Sorted by index.
    pub gpus: Vec<GpuDevice>,
    /// Kernel driver or driver version, e.g. `xe`, `i915`, `nvidia 560.35.03`; empty when
    /// unknown.
    pub driver: String,
    /// `config`, `sysfs`, `nvidia-smi`, `xpu-smi` or `none`.
    pub source: String,
}

impl Inventory {
    /// No GPUs found (source `none`).
    pub fn none() -> Inventory {
        Inventory {
            gpus: Vec::new(),
            driver: String::new(),
            source: "none".into(),
        }
    }

    /// The config's GPU list (source `config`), indexed in list order; vendors other than
    /// `intel` and `nvidia` (e.g. `sim`) become `none`.
    pub fn from_config(gpus: &[GpuConfig]) -> Inventory {
        const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
        Inventory {
            gpus: gpus
                .iter()
                .zip(0u32..)
                .map(|(g, index)| GpuDevice {
                    index,
                    vendor: Vendor::parse(&g.vendor),
                    model: g.model.clone(),
                    // `as` saturates: negative sizes become 0.
                    memory_bytes: (g.memory_gib * GIB) as u64,
                    pci_address: String::new(),
                    render_node: None,
                    card_node: None,
                })
                .collect(),
            driver: String::new(),
            source: "config".into(),
        }
    }

    /// The registration message's GPU list.
    pub fn to_proto(&self) -> Vec<pb::Gpu> {
        self.gpus.iter().map(GpuDevice::to_proto).collect()
    }
}

/// The inventory to report: the config's GPU list when it has one (it wins over anything
/// found), otherwise `discovered()`, which is not called when the config decides.
pub fn resolve(cfg: &AgentConfig, discovered: impl FnOnce() -> Inventory) -> Inventory {
    if cfg.gpus.is_empty() {
        discovered()
    } else {
        Inventory::from_config(&cfg.gpus)
    }
}

/// Runs the external tools discovery asks (`nvidia-smi`, `xpu-smi`).
pub trait ToolRunner {
    /// The program's standard output when it exists and exits 0, otherwise `None`.
    fn run(&self, program: &str, args: &[&str]) -> Option<String>;
}

/// [`ToolRunner`] that runs programs from `PATH`; blocks until they exit, so call it off
/// the async runtime (`spawn_blocking`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemTools;

impl ToolRunner for SystemTools {
    fn run(&self, program: &str, args: &[&str]) -> Option<String> {
        let out = std::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8(out.stdout).ok()
    }
}
