//! This host's GPUs: the inventory reported at registration (from the config, or discovered
//! with `nvidia-smi`, the kernel's sysfs and `xpu-smi`), and [`GpuPool`], which hands
//! disjoint GPU sets to the engines running on them.
//!
//! GPU indices are the ones the vendor runtime uses by default: `nvidia-smi`'s index for
//! NVIDIA, PCI address order for Intel (Level Zero's default order, the one
//! `ZE_AFFINITY_MASK` refers to).
//!
//! This module is discovery's entry point ([`discover`]); the parts are `inventory` (the
//! types, the config's list), `sysfs` (PCI functions with DRM nodes), `nvidia`, `intel`
//! and `pool` (which engine holds which GPUs).

mod intel;
mod inventory;
mod nvidia;
mod pool;
mod sysfs;

use std::path::Path;

pub use inventory::{GpuDevice, Inventory, SystemTools, ToolRunner, Vendor, resolve};
pub use pool::{GpuGrant, GpuPool, GpuPoolError};

use crate::engine::gpu::intel::discover_intel;
use crate::engine::gpu::nvidia::discover_nvidia;
use crate::engine::gpu::sysfs::scan_drm;

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

#[cfg(test)]
mod tests;
