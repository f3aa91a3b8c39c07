//! Intel GPUs: the display controllers sysfs lists, in PCI order (Level Zero's default
//! order), named from their PCI device ids, with memory sizes from `xpu-smi`; failing
//! that, whatever `xpu-smi` alone lists.

use std::collections::BTreeMap;

use crate::engine::gpu::inventory::{GpuDevice, Inventory, ToolRunner, Vendor};
use crate::engine::gpu::sysfs::{DrmDevice, normalize_pci_address};

const PCI_VENDOR_INTEL: u32 = 0x8086;
/// PCI base class of display controllers (VGA, 3D, other display).
const PCI_CLASS_DISPLAY: u32 = 0x03;

/// Intel display controllers from sysfs, in PCI order, with `xpu-smi`'s memory sizes;
/// failing that, whatever `xpu-smi` alone lists. `None` when neither finds any.
pub(super) fn discover_intel(
    tools: &dyn ToolRunner,
    drm: &BTreeMap<String, DrmDevice>,
) -> Option<Inventory> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
