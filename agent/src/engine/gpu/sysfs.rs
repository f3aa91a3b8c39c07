//! What the kernel's sysfs says about this host's GPUs: every PCI function with DRM nodes
//! (`/sys/class/drm/{renderD*,card*}`), its vendor, class, device id and driver, and its
//! `/dev/dri` nodes; and PCI addresses in one normal form, so the vendor tools' lists can be
//! matched to it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A PCI function with DRM nodes, as sysfs describes it.
#[derive(Debug, Clone, Default)]
pub(super) struct DrmDevice {
    pub(super) vendor: u32,
    /// 24-bit class code, e.g. `0x030000`.
    pub(super) class: u32,
    pub(super) device_id: u32,
    /// Kernel driver bound to the function, e.g. `xe`; empty when none.
    pub(super) driver: String,
    pub(super) render_node: Option<PathBuf>,
    pub(super) card_node: Option<PathBuf>,
}

/// Every PCI function behind `<sysfs_root>/class/drm/{renderD*,card*}`, by PCI address
/// (normalized, so map order is PCI order). Unreadable entries are skipped.
pub(super) fn scan_drm(sysfs_root: &Path, dev_root: &Path) -> BTreeMap<String, DrmDevice> {
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
pub(super) fn normalize_pci_address(address: &str) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
