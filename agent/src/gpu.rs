//! This host's GPUs: the inventory reported at registration (from the config, or discovered
//! with `nvidia-smi`, the kernel's sysfs and `xpu-smi`), and [`GpuPool`], which hands
//! disjoint GPU sets to the engines running on them.
//!
//! GPU indices are the ones the vendor runtime uses by default: `nvidia-smi`'s index for
//! NVIDIA, PCI address order for Intel (Level Zero's default order, the one
//! `ZE_AFFINITY_MASK` refers to).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

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

/// Discovers this machine's GPUs from `/sys`, `/dev` and the tools on `PATH`; blocking.
pub fn discover_host() -> Inventory {
    discover(Path::new("/sys"), Path::new("/dev"), &SystemTools)
}

/// Discovers the GPUs of a host whose sysfs is mounted at `sysfs_root` and device nodes at
/// `dev_root`: NVIDIA GPUs from `nvidia-smi` when it lists any, otherwise Intel display
/// controllers from sysfs (memory sizes from `xpu-smi` when it runs), otherwise Intel GPUs
/// `xpu-smi` alone lists, otherwise none.
pub fn discover(sysfs_root: &Path, dev_root: &Path, tools: &dyn ToolRunner) -> Inventory {
    let drm = scan_drm(sysfs_root, dev_root);
    if let Some(inv) = discover_nvidia(tools, &drm) {
        return inv;
    }
    if let Some(inv) = discover_intel(tools, &drm) {
        return inv;
    }
    Inventory::none()
}

const PCI_VENDOR_INTEL: u32 = 0x8086;
/// PCI base class of display controllers (VGA, 3D, other display).
const PCI_CLASS_DISPLAY: u32 = 0x03;

/// A PCI function with DRM nodes, as sysfs describes it.
#[derive(Debug, Clone, Default)]
struct DrmDevice {
    vendor: u32,
    /// 24-bit class code, e.g. `0x030000`.
    class: u32,
    device_id: u32,
    /// Kernel driver bound to the function, e.g. `xe`; empty when none.
    driver: String,
    render_node: Option<PathBuf>,
    card_node: Option<PathBuf>,
}

/// Every PCI function behind `<sysfs_root>/class/drm/{renderD*,card*}`, by PCI address
/// (normalized, so map order is PCI order). Unreadable entries are skipped.
fn scan_drm(sysfs_root: &Path, dev_root: &Path) -> BTreeMap<String, DrmDevice> {
    let mut found: BTreeMap<String, DrmDevice> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(sysfs_root.join("class").join("drm")) else {
        return found;
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| is_node_name(n, "renderD") || is_node_name(n, "card"))
        .collect();
    names.sort();
    for name in names {
        let entry = sysfs_root.join("class").join("drm").join(&name);
        let Ok(pci_dir) = std::fs::canonicalize(entry.join("device")) else {
            continue;
        };
        let Some(address) = pci_dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(normalize_pci_address)
        else {
            continue;
        };
        let device = found.entry(address).or_insert_with(|| DrmDevice {
            vendor: read_hex(&pci_dir.join("vendor")).unwrap_or(0),
            class: read_hex(&pci_dir.join("class")).unwrap_or(0),
            device_id: read_hex(&pci_dir.join("device")).unwrap_or(0),
            driver: std::fs::read_link(pci_dir.join("driver"))
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_default(),
            ..DrmDevice::default()
        });
        let node = dev_root.join("dri").join(&name);
        if !node.exists() {
            continue;
        }
        let slot = if name.starts_with("renderD") {
            &mut device.render_node
        } else {
            &mut device.card_node
        };
        slot.get_or_insert(node);
    }
    found
}

/// `renderD128`, `card0`: the prefix and digits only (not connectors like `card0-DP-1`).
fn is_node_name(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// A sysfs hex attribute like `0x8086\n`.
fn read_hex(path: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(path).ok()?;
    let t = text.trim();
    let digits = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    u32::from_str_radix(digits, 16).ok()
}

/// `domain:bus:device.function` in sysfs form (`0000:03:00.0`): lower case, 4-digit domain
/// (`nvidia-smi` prints 8 digits, `00000000:18:00.0`), domain 0 when missing.
fn normalize_pci_address(address: &str) -> Option<String> {
    let a = address.trim().to_ascii_lowercase();
    let (domain, rest) = match a.matches(':').count() {
        2 => a.split_once(':')?,
        1 => ("0000", a.as_str()),
        _ => return None,
    };
    let (bus, devfn) = rest.split_once(':')?;
    let (dev, func) = devfn.split_once('.')?;
    let hex = |s: &str| u32::from_str_radix(s, 16).ok();
    let (domain, bus, dev, func) = (hex(domain)?, hex(bus)?, hex(dev)?, hex(func)?);
    if domain > 0xffff || bus > 0xff || dev > 0x1f || func > 7 {
        return None;
    }
    Some(format!("{domain:04x}:{bus:02x}:{dev:02x}.{func:x}"))
}

/// NVIDIA GPUs from `nvidia-smi`; `None` when it is missing, fails or lists none.
fn discover_nvidia(tools: &dyn ToolRunner, drm: &BTreeMap<String, DrmDevice>) -> Option<Inventory> {
    let out = tools.run(
        "nvidia-smi",
        &[
            "--query-gpu=index,name,memory.total,pci.bus_id,driver_version",
            "--format=csv,noheader,nounits",
        ],
    )?;
    let mut gpus = Vec::new();
    let mut version = String::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        // The name is the only field that could hold a comma: take the others from the ends.
        let [index, .., memory_mib, bus_id, driver_version] = fields.as_slice() else {
            continue;
        };
        if fields.len() < 5 {
            continue;
        }
        let Ok(index) = index.parse::<u32>() else {
            continue;
        };
        let model = fields[1..fields.len() - 3].join(",");
        let pci_address = normalize_pci_address(bus_id).unwrap_or_default();
        let nodes = drm.get(&pci_address);
        if version.is_empty() {
            version = (*driver_version).to_string();
        }
        gpus.push(GpuDevice {
            index,
            vendor: Vendor::Nvidia,
            model,
            // `[N/A]` and the like: unknown.
            memory_bytes: memory_mib
                .parse::<u64>()
                .map_or(0, |m| m.saturating_mul(1 << 20)),
            pci_address,
            render_node: nodes.and_then(|n| n.render_node.clone()),
            card_node: nodes.and_then(|n| n.card_node.clone()),
        });
    }
    if gpus.is_empty() {
        return None;
    }
    gpus.sort_by_key(|g| g.index);
    Some(Inventory {
        gpus,
        driver: format!("nvidia {version}").trim_end().to_string(),
        source: "nvidia-smi".into(),
    })
}

/// Intel display controllers from sysfs, in PCI order, with `xpu-smi`'s memory sizes;
/// failing that, whatever `xpu-smi` alone lists. `None` when neither finds any.
fn discover_intel(tools: &dyn ToolRunner, drm: &BTreeMap<String, DrmDevice>) -> Option<Inventory> {
    let xpu: BTreeMap<String, XpuDevice> = tools
        .run("xpu-smi", &["discovery", "--dump", XPU_SMI_DUMP_FIELDS])
        .map(|out| parse_xpu_smi_dump(&out))
        .unwrap_or_default();
    let intel: Vec<(&String, &DrmDevice)> = drm
        .iter()
        .filter(|(_, d)| d.vendor == PCI_VENDOR_INTEL && d.class >> 16 == PCI_CLASS_DISPLAY)
        .collect();
    if intel.is_empty() {
        if xpu.is_empty() {
            return None;
        }
        let gpus = xpu
            .iter()
            .zip(0u32..)
            .map(|((address, x), index)| GpuDevice {
                index,
                vendor: Vendor::Intel,
                model: x.name.clone(),
                memory_bytes: x.memory_bytes,
                pci_address: address.clone(),
                render_node: None,
                card_node: None,
            })
            .collect();
        return Some(Inventory {
            gpus,
            driver: String::new(),
            source: "xpu-smi".into(),
        });
    }
    let mut drivers: Vec<&str> = intel
        .iter()
        .map(|(_, d)| d.driver.as_str())
        .filter(|d| !d.is_empty())
        .collect();
    drivers.sort_unstable();
    drivers.dedup();
    let gpus = intel
        .iter()
        .zip(0u32..)
        .map(|((address, d), index)| {
            let x = xpu.get(*address);
            let model = intel_model_name(d.device_id)
                .map(str::to_string)
                .or_else(|| x.map(|x| x.name.clone()).filter(|n| !n.is_empty()))
                .unwrap_or_else(|| format!("Intel GPU 0x{:04x}", d.device_id));
            GpuDevice {
                index,
                vendor: Vendor::Intel,
                model,
                memory_bytes: x.map_or(0, |x| x.memory_bytes),
                pci_address: (*address).clone(),
                render_node: d.render_node.clone(),
                card_node: d.card_node.clone(),
            }
        })
        .collect();
    Some(Inventory {
        gpus,
        driver: drivers.join(","),
        source: "sysfs".into(),
    })
}

/// Marketing names of Intel discrete GPUs by PCI device id.
///
/// Names are the bracketed names of the PCI ID Repository (<https://pci-ids.ucw.cz/>,
/// vendor 8086, e.g. `e211  Battlemage G21 [Arc Pro B60]`); the Battlemage ids are also
/// those of `INTEL_BMG_IDS` in Linux's `include/drm/intel/pciids.h`. Ids the repository
/// does not name yet (e.g. 0xe210, 0xe220..0xe223) are left out on purpose.
const INTEL_MODELS: &[(u32, &str)] = &[
    // Battlemage (Xe2-HPG, BMG-G21)
    (0xe20b, "Arc B580"),
    (0xe20c, "Arc B570"),
    (0xe211, "Arc Pro B60"),
    (0xe212, "Arc Pro B50"),
    // Alchemist (Xe-HPG, DG2)
    (0x5690, "Arc A770M"),
    (0x5691, "Arc A730M"),
    (0x5692, "Arc A550M"),
    (0x5693, "Arc A370M"),
    (0x5694, "Arc A350M"),
    (0x5696, "Arc A570M"),
    (0x5697, "Arc A530M"),
    (0x56a0, "Arc A770"),
    (0x56a1, "Arc A750"),
    (0x56a2, "Arc A580"),
    (0x56a5, "Arc A380"),
    (0x56a6, "Arc A310"),
    (0x56b0, "Arc Pro A30M"),
    (0x56b1, "Arc Pro A40/A50"),
    (0x56b3, "Arc Pro A60"),
];

fn intel_model_name(device_id: u32) -> Option<&'static str> {
    INTEL_MODELS
        .iter()
        .find(|(id, _)| *id == device_id)
        .map(|(_, name)| *name)
}

/// `xpu-smi discovery --dump` property ids: 1 Device ID, 2 Device Name, 11 PCI BDF
/// Address, 16 Memory Physical Size (xpu-smi's `discovery --help` numbering).
const XPU_SMI_DUMP_FIELDS: &str = "1,2,11,16";

/// One row of `xpu-smi discovery --dump`.
#[derive(Debug, Clone, PartialEq)]
struct XpuDevice {
    name: String,
    memory_bytes: u64,
}

/// Parses `xpu-smi discovery --dump 1,2,11,16`, a CSV with a header row:
///
/// ```text
/// Device ID,Device Name,PCI BDF Address,Memory Physical Size
/// 0,"Intel(R) Arc(TM) Pro B60 Graphics","0000:03:00.0","24480.00 MiB"
/// ```
///
/// Columns are found by header name; rows without a PCI address are skipped, sizes that do
/// not parse are 0. Keyed by normalized PCI address.
fn parse_xpu_smi_dump(text: &str) -> BTreeMap<String, XpuDevice> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let Some(header) = lines.next() else {
        return BTreeMap::new();
    };
    let header = split_csv(header);
    let column = |name: &str| header.iter().position(|h| h.eq_ignore_ascii_case(name));
    let Some(bdf) = column("PCI BDF Address") else {
        return BTreeMap::new();
    };
    let name = column("Device Name");
    let memory = column("Memory Physical Size");
    lines
        .filter_map(|line| {
            let row = split_csv(line);
            let address = normalize_pci_address(row.get(bdf)?)?;
            let field = |i: Option<usize>| i.and_then(|i| row.get(i)).map(String::as_str);
            Some((
                address,
                XpuDevice {
                    name: field(name).unwrap_or_default().to_string(),
                    memory_bytes: field(memory).and_then(parse_size).unwrap_or(0),
                },
            ))
        })
        .collect()
}

/// Splits one CSV line; fields may be double-quoted (`""` inside quotes is a quote).
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut field).trim().to_string()),
            _ => field.push(c),
        }
    }
    fields.push(field.trim().to_string());
    fields
}

/// `24480.00 MiB`, `24 GiB`, `1024 KiB`, `4096 B`; a bare number is MiB (xpu-smi's unit).
fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "b" => 1.0,
        "kib" | "kb" => 1024.0,
        "" | "mib" | "mb" => 1024.0 * 1024.0,
        "gib" | "gb" => 1024.0 * 1024.0 * 1024.0,
        "tib" | "tb" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((number * scale).round() as u64)
}

/// The GPUs an engine process was given and the environment that makes it use exactly
/// those: `CUDA_VISIBLE_DEVICES` (NVIDIA) or `ZE_AFFINITY_MASK` (Intel) with the host's
/// indices, plus `FLEETBENCH_GPU_IDS` for any vendor (what vllm-sim and logs can read).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuGrant {
    pub ids: Vec<u32>,
    pub env: Vec<(String, String)>,
}

impl GpuGrant {
    /// The grant of `ids` to a process on a host whose GPUs are of `vendor`.
    pub fn for_process(vendor: Option<Vendor>, ids: Vec<u32>) -> GpuGrant {
        if ids.is_empty() {
            return GpuGrant::default();
        }
        let list = ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let mut env = vec![("FLEETBENCH_GPU_IDS".to_string(), list.clone())];
        match vendor {
            Some(Vendor::Nvidia) => env.push(("CUDA_VISIBLE_DEVICES".into(), list)),
            Some(Vendor::Intel) => env.push(("ZE_AFFINITY_MASK".into(), list)),
            _ => {}
        }
        GpuGrant { ids, env }
    }
}

/// Why a GPU set could not be allocated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GpuPoolError {
    #[error("{holder}: asked for 0 GPUs")]
    ZeroCount { holder: String },
    #[error("{holder} already holds GPUs {held:?}; release them first")]
    AlreadyHolds { holder: String, held: Vec<u32> },
    #[error(
        "{holder} needs {requested} GPUs but only {free} of {total} are free{}",
        describe_holders(.holders)
    )]
    NotEnough {
        holder: String,
        requested: u32,
        free: usize,
        total: usize,
        holders: BTreeMap<String, Vec<u32>>,
    },
}

fn describe_holders(holders: &BTreeMap<String, Vec<u32>>) -> String {
    if holders.is_empty() {
        return String::new();
    }
    let held: Vec<String> = holders
        .iter()
        .map(|(h, gpus)| format!("{h} {gpus:?}"))
        .collect();
    format!("; held by {}", held.join(", "))
}

/// Which GPUs each engine (holder) has: disjoint sets, the lowest free indices first.
#[derive(Debug, Clone, Default)]
pub struct GpuPool {
    /// Every GPU index of the host, sorted, no duplicates.
    indices: Vec<u32>,
    held: BTreeMap<String, Vec<u32>>,
}

impl GpuPool {
    /// A pool of these GPU indices, all free.
    pub fn new(mut indices: Vec<u32>) -> GpuPool {
        indices.sort_unstable();
        indices.dedup();
        GpuPool {
            indices,
            held: BTreeMap::new(),
        }
    }

    /// Gives `holder` the `count` lowest free GPUs. A holder holds one set at a time.
    pub fn allocate(&mut self, holder: &str, count: u32) -> Result<Vec<u32>, GpuPoolError> {
        if count == 0 {
            return Err(GpuPoolError::ZeroCount {
                holder: holder.into(),
            });
        }
        if let Some(held) = self.held.get(holder) {
            return Err(GpuPoolError::AlreadyHolds {
                holder: holder.into(),
                held: held.clone(),
            });
        }
        let free = self.free();
        let wanted = usize::try_from(count).unwrap_or(usize::MAX);
        if free.len() < wanted {
            return Err(GpuPoolError::NotEnough {
                holder: holder.into(),
                requested: count,
                free: free.len(),
                total: self.indices.len(),
                holders: self.held.clone(),
            });
        }
        let set: Vec<u32> = free.into_iter().take(wanted).collect();
        self.held.insert(holder.into(), set.clone());
        Ok(set)
    }

    /// Frees what `holder` holds and returns it (empty when it held nothing).
    pub fn release(&mut self, holder: &str) -> Vec<u32> {
        self.held.remove(holder).unwrap_or_default()
    }

    /// Every holder and its GPUs.
    pub fn holders(&self) -> BTreeMap<String, Vec<u32>> {
        self.held.clone()
    }

    /// GPUs nobody holds, ascending.
    pub fn free(&self) -> Vec<u32> {
        self.indices
            .iter()
            .copied()
            .filter(|i| !self.held.values().any(|set| set.contains(i)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::os::unix::fs::symlink;

    use super::*;

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

    #[test]
    fn pci_addresses_normalize() {
        assert_eq!(
            normalize_pci_address("00000000:1A:00.0").as_deref(),
            Some("0000:1a:00.0")
        );
        assert_eq!(
            normalize_pci_address("03:00.0").as_deref(),
            Some("0000:03:00.0")
        );
        assert_eq!(
            normalize_pci_address("0000:03:00.0").as_deref(),
            Some("0000:03:00.0")
        );
        assert_eq!(normalize_pci_address("card0"), None);
        assert_eq!(normalize_pci_address("0000:03:00"), None);
    }

    #[test]
    fn sizes_and_csv() {
        assert_eq!(parse_size("24480.00 MiB"), Some(24480 << 20));
        assert_eq!(parse_size("24 GiB"), Some(24 << 30));
        assert_eq!(parse_size("512"), Some(512 << 20));
        assert_eq!(parse_size("N/A"), None);
        assert_eq!(
            split_csv(r#"0,"a, ""b""", c "#),
            vec!["0", r#"a, "b""#, "c"]
        );
    }

    #[test]
    fn pool_gives_disjoint_sets_and_release_makes_room() {
        let mut pool = GpuPool::new((0..8).collect());
        assert_eq!(pool.allocate("engine-a", 4).unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(pool.allocate("engine-b", 4).unwrap(), vec![4, 5, 6, 7]);
        assert!(pool.free().is_empty());
        let err = pool.allocate("engine-c", 2).unwrap_err();
        assert!(
            matches!(err, GpuPoolError::NotEnough { free: 0, .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "engine-c needs 2 GPUs but only 0 of 8 are free; held by engine-a [0, 1, 2, 3], engine-b [4, 5, 6, 7]"
        );
        assert_eq!(pool.release("engine-a"), vec![0, 1, 2, 3]);
        assert_eq!(pool.free(), vec![0, 1, 2, 3]);
        assert_eq!(pool.allocate("engine-c", 2).unwrap(), vec![0, 1]);
        assert_eq!(
            pool.holders(),
            BTreeMap::from([
                ("engine-b".to_string(), vec![4, 5, 6, 7]),
                ("engine-c".to_string(), vec![0, 1]),
            ])
        );
        assert_eq!(pool.free(), vec![2, 3]);
    }

    #[test]
    fn pool_rejects_zero_second_sets_and_oversized_requests() {
        let mut pool = GpuPool::new(vec![3, 1, 2, 0, 1]);
        assert!(matches!(
            pool.allocate("a", 0),
            Err(GpuPoolError::ZeroCount { .. })
        ));
        assert_eq!(pool.allocate("a", 1).unwrap(), vec![0]);
        let err = pool.allocate("a", 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a already holds GPUs [0]; release them first"
        );
        let err = pool.allocate("b", 5).unwrap_err();
        assert_eq!(
            err.to_string(),
            "b needs 5 GPUs but only 3 of 4 are free; held by a [0]"
        );
        assert_eq!(pool.release("nobody"), Vec::<u32>::new());
        let mut empty = GpuPool::new(Vec::new());
        assert_eq!(
            empty.allocate("a", 1).unwrap_err().to_string(),
            "a needs 1 GPUs but only 0 of 0 are free"
        );
    }
}
