//! Unit tests of [`super`]: block hashes, the last-token rule, hits, reference counts and
//! least-recently-used eviction.

use super::*;

const B: u32 = 16;

fn ids(range: std::ops::Range<u32>) -> Vec<u32> {
    range.collect()
}

/// Admits `prompt` whole, as the engine does for a new request in one step: lookup, then the
/// hit blocks plus new ones for the rest, then its full blocks registered. Returns its blocks
/// and its hit in tokens.
fn admit(pool: &mut BlockPool, prompt: &[u32]) -> (BlockTable, u64) {
    let hashes = block_hashes(prompt, B);
    let len = prompt.len() as u64;
    let hit = pool.lookup(&hashes, len);
    let mut table = BlockTable::default();
    let new_blocks = len.div_ceil(u64::from(B)) - hit as u64;
    assert!(pool.allocate(&mut table, &hashes[..hit], new_blocks));
    pool.register(&mut table, &hashes, len);
    (table, hit as u64 * u64::from(B))
}

/// Every block is free (counted once in the free queue), private to one of `tables` (all
/// the tables holding blocks), or cached and referenced by exactly the tables that list it.
fn assert_accounted(pool: &BlockPool, tables: &[&BlockTable]) {
    let queued: u64 = pool
        .queue
        .values()
        .map(|run| match run {
            FreeRun::Empty(n) => *n,
            FreeRun::Cached(_) => 1,
        })
        .sum();
    assert_eq!(queued, pool.free_blocks());
    let private: u64 = tables
        .iter()
        .map(|t| t.held() - t.cached.len() as u64)
        .sum();
    let mut referenced = 0;
    for (hash, block) in &pool.cached {
        let refs = tables.iter().filter(|t| t.cached.contains(hash)).count();
        assert_eq!(block.refs as usize, refs);
        assert_eq!(block.queued.is_some(), refs == 0);
        referenced += u64::from(refs > 0);
    }
    assert_eq!(private + referenced, pool.total() - pool.free_blocks());
}

#[test]
fn block_hashes_chain_over_the_token_ids() {
    let a = ids(0..40);
    let ha = block_hashes(&a, B);
    // 40 tokens: two full blocks; the partial third has no hash.
    assert_eq!(ha.len(), 2);
    assert_eq!(block_hashes(&a, 8).len(), 5);
    assert_eq!(block_hashes(&a, B), ha, "a pure function of the ids");
    // A change in block 1 leaves block 0's hash.
    let mut b = a.clone();
    b[20] = 7;
    let hb = block_hashes(&b, B);
    assert_eq!(hb[0], ha[0]);
    assert_ne!(hb[1], ha[1]);
    // A change in block 0 changes every hash after it: block 1's tokens are equal, but its
    // hash covers its parent's.
    let mut c = a.clone();
    c[0] = 7;
    let hc = block_hashes(&c, B);
    assert_ne!(hc[0], ha[0]);
    assert_ne!(hc[1], ha[1]);
    // Same length, other ids: nothing shared.
    let hd = block_hashes(&ids(100..140), B);
    assert!(hd.iter().all(|h| !ha.contains(h)));
    // The same tokens at another position are another block.
    let repeated = vec![5; 32];
    let hr = block_hashes(&repeated, B);
    assert_ne!(hr[0], hr[1]);
}

#[test]
fn at_least_the_last_token_is_computed() {
    // vLLM: max_cache_hit_length = num_tokens - 1, rounded down to whole blocks.
    for (tokens, blocks) in [
        (0, 0),
        (1, 0),
        (16, 0),
        (17, 1),
        (32, 1),
        (33, 2),
        (96, 5),
        (97, 6),
        (100, 6),
    ] {
        assert_eq!(max_hit_blocks(tokens, B), blocks, "{tokens} tokens");
    }
}

#[test]
fn the_same_prompt_again_hits_its_full_blocks_but_the_last_token() {
    let mut pool = BlockPool::new(100, B, true);
    // (prompt length, hit of the second time): (len - 1) / 16 whole blocks.
    for (len, hit) in [(100, 96), (96, 80), (97, 96), (16, 0), (17, 16), (5, 0)] {
        let prompt = ids(1000 * len..1000 * len + len);
        let (mut first, first_hit) = admit(&mut pool, &prompt);
        assert_eq!(first_hit, 0, "{len} tokens, first time");
        pool.release(&mut first);
        let (mut second, second_hit) = admit(&mut pool, &prompt);
        assert_eq!(second_hit, hit, "{len} tokens, second time");
        assert_accounted(&pool, &[&second]);
        pool.release(&mut second);
    }
    assert_eq!(pool.free_blocks(), 100);
}

#[test]
fn prompts_sharing_64_tokens_hit_64() {
    let mut pool = BlockPool::new(100, B, true);
    let shared = ids(1000..1064);
    let a = [shared.clone(), ids(2000..2036)].concat();
    let b = [shared, ids(3000..3036)].concat();
    assert_eq!((a.len(), b.len()), (100, 100));
    let (ta, _) = admit(&mut pool, &a);
    // Blocks 0..4 cover tokens 0..64, equal in both prompts, so their chained hashes are
    // equal; block 4 (tokens 64..80) differs. The last-token cap, (100 - 1) / 16 = 6
    // blocks, is not reached: 4 blocks × 16 = 64 tokens. (A still runs: hits on held blocks.)
    let (tb, hit) = admit(&mut pool, &b);
    assert_eq!(hit, 64);
    assert_accounted(&pool, &[&ta, &tb]);
    // 7 blocks each, 4 of them shared.
    assert_eq!(pool.free_blocks(), 100 - 7 - 3);
}

#[test]
fn without_caching_nothing_is_cached_or_hit() {
    let mut pool = BlockPool::new(100, B, false);
    let prompt = ids(0..100);
    let (mut t, _) = admit(&mut pool, &prompt);
    pool.release(&mut t);
    let (t, hit) = admit(&mut pool, &prompt);
    assert_eq!(hit, 0);
    assert_eq!(pool.cached_blocks(), 0);
    assert_eq!(t.held(), 7);
}

#[test]
fn blocks_are_cached_when_allocated_so_a_later_admission_in_the_step_hits_them() {
    let mut pool = BlockPool::new(100, B, true);
    let prompt = ids(0..100);
    let hashes = block_hashes(&prompt, B);
    // A first chunk of 40 tokens: blocks 0 and 1 are full and registered.
    let mut a = BlockTable::default();
    assert!(pool.allocate(&mut a, &[], 3));
    pool.register(&mut a, &hashes, 40);
    assert_eq!(pool.lookup(&hashes, 100), 2);
    // The rest of the prompt in a later step: blocks 2..6.
    assert!(pool.allocate(&mut a, &[], 4));
    pool.register(&mut a, &hashes, 100);
    assert_eq!(pool.lookup(&hashes, 100), 6);
    assert_eq!(pool.cached_blocks(), 6);
}

#[test]
fn a_block_cached_twice_stays_uncached_in_the_second_sequence() {
    // Two sequences prefill the same prompt at once, neither hitting the other.
    let mut pool = BlockPool::new(20, B, true);
    let prompt = ids(0..64);
    let hashes = block_hashes(&prompt, B);
    let (mut a, mut b) = (BlockTable::default(), BlockTable::default());
    assert!(pool.allocate(&mut a, &[], 4));
    assert!(pool.allocate(&mut b, &[], 4));
    pool.register(&mut a, &hashes, 64);
    pool.register(&mut b, &hashes, 64);
    assert_eq!(pool.cached_blocks(), 4);
    pool.release(&mut b);
    // b's blocks come back uncached; a's are still held and cached.
    assert_eq!(pool.free_blocks(), 16);
    assert_eq!(pool.lookup(&hashes, 65), 4);
    pool.release(&mut a);
    assert_eq!(pool.free_blocks(), 20);
    assert_eq!(pool.cached_blocks(), 4);
}

#[test]
fn eviction_takes_the_least_recently_freed_blocks_and_a_prompt_s_tail_first() {
    // 4 blocks of 16 tokens.
    let mut pool = BlockPool::new(4, B, true);
    let a = ids(0..48);
    let (mut ta, _) = admit(&mut pool, &a);
    assert_eq!(ta.held(), 3);
    pool.release(&mut ta);
    // Free queue: 1 never-used block, then A's blocks last-first: A2, A1, A0.
    assert_eq!(pool.cached_blocks(), 3);
    assert_eq!(pool.lookup(&block_hashes(&a, B), 48), 2);
    // B (3 blocks, nothing shared) takes the never-used block, then evicts A2 and A1.
    let b = ids(100..148);
    let (mut tb, hit) = admit(&mut pool, &b);
    assert_eq!(hit, 0);
    assert_accounted(&pool, &[&tb]);
    // A's first block survived: A hits 16 tokens instead of 32.
    let ha = block_hashes(&a, B);
    assert_eq!(pool.lookup(&ha, 48), 1);
    // While B runs, its cached blocks cannot be evicted: one block is free (A0).
    assert!(pool.can_allocate(&[], 1));
    assert!(!pool.can_allocate(&[], 2));
    pool.release(&mut tb);
    // Now A0 was freed before B's blocks: a 1-block allocation evicts it first.
    let mut c = BlockTable::default();
    assert!(pool.allocate(&mut c, &[], 1));
    assert_eq!(pool.lookup(&ha, 48), 0);
    assert_eq!(pool.lookup(&block_hashes(&b, B), 48), 2);
}

#[test]
fn a_hit_on_a_free_cached_block_takes_it_off_the_free_queue() {
    let mut pool = BlockPool::new(8, B, true);
    let prompt = ids(0..64);
    let (mut t, _) = admit(&mut pool, &prompt);
    pool.release(&mut t);
    assert_eq!(pool.free_blocks(), 8);
    let hashes = block_hashes(&prompt, B);
    // 3 hit blocks ((64 - 1) / 16) leave the free queue, plus 1 new block for the last 16
    // tokens, recomputed.
    let hit = pool.lookup(&hashes, 64);
    assert_eq!(hit, 3);
    assert!(!pool.can_allocate(&hashes[..hit], 6));
    assert!(pool.can_allocate(&hashes[..hit], 5));
    let mut again = BlockTable::default();
    assert!(pool.allocate(&mut again, &hashes[..hit], 1));
    assert_eq!(again.held(), 4);
    assert_eq!(pool.free_blocks(), 4);
    // The hit blocks are held again: a 4-block allocation takes the rest (evicting the old
    // fourth block of the prompt) and leaves them cached.
    let mut other = BlockTable::default();
    assert!(pool.allocate(&mut other, &[], 4));
    assert_eq!(pool.lookup(&hashes, 65), 3);
    assert_accounted(&pool, &[&again, &other]);
}
