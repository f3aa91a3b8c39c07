//! The engine's KV-cache blocks, with vLLM V1's automatic prefix caching (APC).
//!
//! [`BlockPool`] owns every KV-cache block; each sequence holds its own in a [`BlockTable`].
//! With prefix caching on (`--enable-prefix-caching`, vLLM's default) the pool also keeps the
//! KV of prompts that ran, so that a later prompt starting with the same tokens skips
//! prefilling them. Modelled after vLLM 0.32 (`vllm/v1/core/kv_cache_manager.py`,
//! `block_pool.py`, `kv_cache_utils.py`, `single_type_kv_cache_manager.py`):
//!
//! - **Block hashes**: a prompt's token ids are cut into blocks of `--block-size` tokens; each
//!   *full* block gets a hash of its parent block's hash and its own token ids (vLLM's
//!   `hash_block_tokens(parent_block_hash, curr_block_token_ids)`), see [`block_hashes`]. A
//!   hash therefore names the whole prefix up to the end of its block: two prompts share a
//!   block only if all their tokens up to there are equal. A partial last block is never
//!   cached.
//! - **Caching at allocation**: a block is registered under its hash as soon as it is
//!   allocated for tokens a step computes (vLLM's `allocate_slots` → `cache_blocks`), before
//!   the step ends: a request admitted after it, even in the same step, can hit it.
//! - **Lookup** ([`BlockPool::lookup`], vLLM's `get_computed_blocks` and
//!   `FullAttentionManager.find_longest_cache_hit`): the longest run of cached blocks from the
//!   start of the prompt, among its first `(num_tokens − 1) / block_size` blocks. At least the
//!   last token is always computed, since its logits give the first output token; when every
//!   full block is cached this costs a whole block (a 32-token prompt with 16-token blocks
//!   hits 16 tokens, not 31). The hit tokens are not prefilled: the sequence starts with them
//!   computed, and the step time covers only the rest (they still count as attention context).
//! - **Reference counts**: a cached block used by running sequences is never evicted. When the
//!   last of them releases it (finish, abort, preemption) it joins the free queue and stays
//!   cached until its block is reused.
//! - **Free queue and eviction** (vLLM's `FreeKVCacheBlockQueue`): free blocks wait in the
//!   order they were freed, never-used ones first; a sequence frees its blocks last-first, so
//!   its tail goes before its prefix. New blocks come from the head of the queue; taking a
//!   cached block drops its hash (least-recently-used eviction). A hit on a cached free block
//!   takes it out of the queue.
//! - **Usage**: `vllm:kv_cache_usage_perc` is `1 − free / total`, cached free blocks counting
//!   as free, as vLLM's `BlockPool.get_usage`.
//! - **Counters**: the engine counts each new request's lookup at admission (prompt tokens
//!   queried, tokens hit) into vLLM's `vllm:prefix_cache_queries` / `vllm:prefix_cache_hits`
//!   and the families derived from them (names, help texts and semantics from vLLM 0.32's
//!   `vllm/v1/metrics/loggers.py`, see `metrics/prometheus.rs`). Sent the same token-id
//!   prompts one after the other (70 tokens twice, 70 others, 100 sharing the first 64, 64
//!   twice; `--block-size 32`, the CPU build's smallest), a real vLLM 0.32 (CPU) and the
//!   simulator moved those counters identically.
//!
//! Simplified, compared with vLLM:
//!
//! - only prompt blocks are hashed; vLLM also caches the full blocks of generated tokens, so
//!   a follow-up turn can hit the blocks of the answer before it;
//! - the hash has no extra keys: no LoRA adapter (the simulator serves none), no multimodal
//!   inputs (it accepts none), no `cache_salt`; it is a 64-bit hash (FNV-1a over the parent
//!   hash and the token ids, then SplitMix64), not vLLM's SHA-256, since it never leaves the
//!   process;
//! - a block whose hash is already cached when it is filled (two sequences prefilling the same
//!   prefix at once) stays uncached, where vLLM keeps both blocks under the hash;
//! - one KV-cache group of full attention: no sliding window, Mamba or hybrid models, no
//!   EAGLE last-block drop, no KV connector (external prefix cache), no
//!   `reset_prefix_cache`.

use std::collections::{BTreeMap, HashMap};

use crate::tokenizer::{fnv1a, fnv1a_extend, mix64};

/// The hash of a full block and all blocks before it.
pub type BlockHash = u64;

/// Chained hashes of the full blocks of `prompt` (a partial last block has none): block `i`
/// hashes block `i − 1`'s hash and its own `block_size` token ids, like vLLM's
/// `hash_block_tokens`.
pub fn block_hashes(prompt: &[u32], block_size: u32) -> Vec<BlockHash> {
    let size = usize::try_from(block_size.max(1)).unwrap_or(usize::MAX);
    let mut parent = fnv1a(b"vllm-sim prefix cache");
    prompt
        .chunks_exact(size)
        .map(|block| {
            let h = block
                .iter()
                .fold(fnv1a_extend(parent, &parent.to_le_bytes()), |h, id| {
                    fnv1a_extend(h, &id.to_le_bytes())
                });
            parent = mix64(h);
            parent
        })
        .collect()
}

/// Full blocks a prompt may hit when `num_tokens` tokens must be computed: vLLM's
/// `max_cache_hit_length = num_tokens − 1`, rounded down to blocks.
pub fn max_hit_blocks(num_tokens: u64, block_size: u32) -> u64 {
    num_tokens.saturating_sub(1) / u64::from(block_size.max(1))
}

/// The KV-cache blocks one sequence holds.
#[derive(Debug, Default)]
pub struct BlockTable {
    /// Blocks held, cached ones included.
    held: u64,
    /// The cached blocks it holds a reference to, in prompt order.
    cached: Vec<BlockHash>,
    /// Full prompt blocks already hit or registered (or found cached by another block).
    settled: usize,
}

impl BlockTable {
    /// Blocks held, cached ones included.
    pub fn held(&self) -> u64 {
        self.held
    }
}

/// A run of free blocks in the free queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FreeRun {
    /// Blocks without cached content (never used, or freed without a hash).
    Empty(u64),
    /// One cached block nobody uses: evicted when its block is taken.
    Cached(BlockHash),
}

/// A block registered under its hash.
#[derive(Debug, Clone, Copy)]
struct CachedBlock {
    /// Sequences holding it.
    refs: u32,
    /// Its key in the free queue while nobody holds it.
    queued: Option<u64>,
}

/// Every KV-cache block: the free queue and, with prefix caching, the blocks cached by hash.
#[derive(Debug)]
pub struct BlockPool {
    caching: bool,
    block_size: u32,
    total: u64,
    /// Blocks in the free queue (cached ones included).
    free: u64,
    /// The free queue, oldest first, keyed by the order of freeing.
    queue: BTreeMap<u64, FreeRun>,
    /// Key of the next run appended to the free queue.
    next_key: u64,
    cached: HashMap<BlockHash, CachedBlock>,
}

impl BlockPool {
    /// A pool of `total` blocks of `block_size` tokens, all free; `caching`: prefix caching.
    pub fn new(total: u64, block_size: u32, caching: bool) -> Self {
        let mut pool = Self {
            caching,
            block_size: block_size.max(1),
            total,
            free: 0,
            queue: BTreeMap::new(),
            next_key: 0,
            cached: HashMap::new(),
        };
        pool.push_empty(total);
        pool
    }

    /// Whether prefix caching is on.
    pub fn caching(&self) -> bool {
        self.caching
    }

    /// All blocks.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Blocks no running sequence holds (cached ones included).
    pub fn free_blocks(&self) -> u64 {
        self.free
    }

    /// Blocks registered under a hash (held or free).
    pub fn cached_blocks(&self) -> usize {
        self.cached.len()
    }

    /// The prefix-cache hit of a sequence with nothing computed yet and `num_tokens` tokens
    /// (prompt, plus output after a preemption) whose full blocks hash to `hashes`: the number
    /// of leading blocks that are cached, at most [`max_hit_blocks`]. 0 without caching.
    pub fn lookup(&self, hashes: &[BlockHash], num_tokens: u64) -> usize {
        if !self.caching {
            return 0;
        }
        let max = usize::try_from(max_hit_blocks(num_tokens, self.block_size)).unwrap_or(0);
        hashes
            .iter()
            .take(max)
            .take_while(|h| self.cached.contains_key(h))
            .count()
    }

    /// Whether [`Self::allocate`] of `hits` and `new_blocks` would succeed: the new blocks and
    /// the hit blocks nobody holds (they leave the free queue) must fit the free blocks.
    pub fn can_allocate(&self, hits: &[BlockHash], new_blocks: u64) -> bool {
        let revived = hits
            .iter()
            .filter(|h| self.cached.get(h).is_some_and(|b| b.refs == 0))
            .count() as u64;
        new_blocks.saturating_add(revived) <= self.free
    }

    /// Gives `table` the cached blocks `hits` (a prefix hit just found by [`Self::lookup`],
    /// only while the table is empty) and `new_blocks` blocks from the head of the free queue, evicting
    /// the cached ones among those. Returns false, changing nothing, if they do not fit.
    pub fn allocate(
        &mut self,
        table: &mut BlockTable,
        hits: &[BlockHash],
        new_blocks: u64,
    ) -> bool {
        if !self.can_allocate(hits, new_blocks) {
            return false;
        }
        for hash in hits {
            let Some(block) = self.cached.get_mut(hash) else {
                // Not from a lookup of this pool as it is: the rest is no hit either.
                break;
            };
            block.refs += 1;
            if let Some(key) = block.queued.take() {
                self.queue.remove(&key);
                self.free -= 1;
            }
            table.cached.push(*hash);
            table.held += 1;
            table.settled += 1;
        }
        let mut wanted = new_blocks;
        while wanted > 0 {
            let Some(mut head) = self.queue.first_entry() else {
                break;
            };
            let taken = match head.get_mut() {
                FreeRun::Empty(n) if *n > wanted => {
                    *n -= wanted;
                    wanted
                }
                FreeRun::Empty(n) => {
                    let n = *n;
                    head.remove();
                    n
                }
                FreeRun::Cached(hash) => {
                    let hash = *hash;
                    head.remove();
                    self.cached.remove(&hash);
                    1
                }
            };
            wanted -= taken;
            self.free -= taken;
            table.held += taken;
        }
        true
    }

    /// Registers the full prompt blocks of `table` that `computed` tokens fill (those already
    /// computed and those scheduled in this step), `hashes` being the prompt's block hashes.
    /// A block whose hash is already cached by another block stays unregistered.
    pub fn register(&mut self, table: &mut BlockTable, hashes: &[BlockHash], computed: u64) {
        if !self.caching {
            return;
        }
        let full = usize::try_from(computed / u64::from(self.block_size))
            .unwrap_or(usize::MAX)
            .min(hashes.len());
        for hash in hashes.iter().take(full).skip(table.settled) {
            if !self.cached.contains_key(hash) {
                self.cached.insert(
                    *hash,
                    CachedBlock {
                        refs: 1,
                        queued: None,
                    },
                );
                table.cached.push(*hash);
            }
        }
        table.settled = table.settled.max(full);
    }

    /// Frees every block of `table` (empty afterwards), last block first, as vLLM does: the
    /// uncached ones (its tail), then its cached blocks from the last to the first; a cached
    /// block joins the free queue, still cached, when no other sequence holds it.
    pub fn release(&mut self, table: &mut BlockTable) {
        let table = std::mem::take(table);
        self.push_empty(table.held.saturating_sub(table.cached.len() as u64));
        for hash in table.cached.iter().rev() {
            let key = self.next_key;
            if let Some(block) = self.cached.get_mut(hash) {
                block.refs = block.refs.saturating_sub(1);
                if block.refs == 0 {
                    block.queued = Some(key);
                    self.queue.insert(key, FreeRun::Cached(*hash));
                    self.next_key += 1;
                    self.free += 1;
                }
            }
        }
    }

    /// Appends `n` uncached blocks to the free queue (merged into a last run of them).
    fn push_empty(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        self.free += n;
        if let Some(mut last) = self.queue.last_entry()
            && let FreeRun::Empty(m) = last.get_mut()
        {
            *m += n;
            return;
        }
        self.queue.insert(self.next_key, FreeRun::Empty(n));
        self.next_key += 1;
    }
}

#[cfg(test)]
mod tests;
