//! Which engine holds which GPUs: [`GpuPool`] hands disjoint GPU sets to the engines
//! running on this host, and [`GpuGrant`] is the environment that makes an engine process
//! use exactly its set.

use std::collections::BTreeMap;

use crate::engine::gpu::inventory::Vendor;

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
    use super::*;

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
