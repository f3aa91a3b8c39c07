//! NVIDIA GPUs, as `nvidia-smi` lists them (index, name, memory, PCI address, driver
//! version), with their DRM nodes from sysfs.

use std::collections::BTreeMap;

use crate::engine::gpu::inventory::{GpuDevice, Inventory, ToolRunner, Vendor};
use crate::engine::gpu::sysfs::{DrmDevice, normalize_pci_address};

/// NVIDIA GPUs from `nvidia-smi`; `None` when it is missing, fails or lists none.
pub(super) fn discover_nvidia(
    tools: &dyn ToolRunner,
    drm: &BTreeMap<String, DrmDevice>,
) -> Option<Inventory> {
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
