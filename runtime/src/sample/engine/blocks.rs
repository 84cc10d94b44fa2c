//! The paged KV cache's bookkeeping, without tensors: which fixed-size blocks are free, how many
//! rows share each block, and each row's block table.
//!
//! A request's prompt is prefilled once into blocks that its K samples then share (a reference
//! each). The first time a sample writes into a block it shares (the prompt's partly filled last
//! block), it gets a copy of its own: copy-on-write, reported to the caller, who copies the keys
//! and values. Full prompt blocks are never written again and stay shared until the last sample
//! releases them.

use crate::bail;
use crate::error::Result;

/// The free list and reference counts of a pool of `blocks` blocks of `block_size` positions.
#[derive(Debug, Clone)]
pub struct BlockAllocator {
    block_size: usize,
    /// Free blocks, the next to hand out last, so blocks go out in increasing order.
    free: Vec<u32>,
    refs: Vec<u32>,
}

impl BlockAllocator {
    pub fn new(blocks: usize, block_size: usize) -> Self {
        assert!(block_size > 0, "block_size must be positive");
        BlockAllocator { block_size, free: (0..blocks as u32).rev().collect(), refs: vec![0; blocks] }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn blocks(&self) -> usize {
        self.refs.len()
    }

    pub fn free_blocks(&self) -> usize {
        self.free.len()
    }

    /// How many block tables hold `block`.
    pub fn refs(&self, block: u32) -> u32 {
        self.refs[block as usize]
    }

    /// A free block, held once.
    pub fn allocate(&mut self) -> Result<u32> {
        let Some(block) = self.free.pop() else {
            bail!(
                "the paged KV cache is out of blocks: all {} blocks of {} positions are held",
                self.blocks(),
                self.block_size
            );
        };
        self.refs[block as usize] = 1;
        Ok(block)
    }

    fn retain(&mut self, block: u32) {
        self.refs[block as usize] += 1;
    }

    fn release(&mut self, block: u32) {
        let refs = &mut self.refs[block as usize];
        assert!(*refs > 0, "block {block} released more often than held");
        *refs -= 1;
        if *refs == 0 {
            self.free.push(block);
        }
    }
}

/// A copy the caller must make before writing: the first `filled` positions of block `from` into
/// block `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyOnWrite {
    pub from: u32,
    pub to: u32,
    pub filled: usize,
}

/// One row's blocks, in position order, and how many positions it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockTable {
    blocks: Vec<u32>,
    len: usize,
}

impl BlockTable {
    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn blocks(&self) -> &[u32] {
        &self.blocks
    }

    /// Another table over the same blocks, each held once more.
    pub fn share(&self, alloc: &mut BlockAllocator) -> BlockTable {
        for &b in &self.blocks {
            alloc.retain(b);
        }
        self.clone()
    }

    /// Room for one more position: its slot (`block * block_size + offset`) and the copy to
    /// make first when the last block is shared. A new block is taken when the last one is full.
    pub fn append_slot(&mut self, alloc: &mut BlockAllocator) -> Result<(u32, Option<CopyOnWrite>)> {
        let size = alloc.block_size();
        let offset = self.len % size;
        let mut copy = None;
        if offset == 0 {
            self.blocks.push(alloc.allocate()?);
        } else {
            let last = self.blocks.len() - 1;
            let block = self.blocks[last];
            if alloc.refs(block) > 1 {
                let to = alloc.allocate()?;
                alloc.release(block);
                self.blocks[last] = to;
                copy = Some(CopyOnWrite { from: block, to, filled: offset });
            }
        }
        self.len += 1;
        let block = self.blocks[self.blocks.len() - 1];
        Ok((block * size as u32 + offset as u32, copy))
    }

    /// The slot of every held position, in order.
    pub fn slots(&self, block_size: usize) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).map(move |p| self.blocks[p / block_size] * block_size as u32 + (p % block_size) as u32)
    }

    /// Give every block back (a shared block stays held by its other tables).
    pub fn release(&mut self, alloc: &mut BlockAllocator) {
        for b in self.blocks.drain(..) {
            alloc.release(b);
        }
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(alloc: &mut BlockAllocator, n: usize) -> BlockTable {
        let mut t = BlockTable::default();
        for _ in 0..n {
            t.append_slot(alloc).unwrap();
        }
        t
    }

    #[test]
    fn blocks_come_from_the_free_list_and_go_back_to_it() {
        let mut alloc = BlockAllocator::new(4, 2);
        let mut t = filled(&mut alloc, 5);
        assert_eq!(t.blocks(), [0, 1, 2]);
        assert_eq!(t.slots(2).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
        assert_eq!(alloc.free_blocks(), 1);
        t.release(&mut alloc);
        assert_eq!((alloc.free_blocks(), t.len()), (4, 0));
        // Freed blocks are handed out again, most recently freed first.
        let again = filled(&mut alloc, 2);
        assert_eq!(again.blocks(), [2]);
    }

    #[test]
    fn shared_blocks_live_until_their_last_holder_releases_them() {
        let mut alloc = BlockAllocator::new(8, 4);
        let mut prompt = filled(&mut alloc, 8);
        let mut a = prompt.share(&mut alloc);
        let mut b = prompt.share(&mut alloc);
        assert_eq!((alloc.refs(0), alloc.refs(1)), (3, 3));
        prompt.release(&mut alloc);
        a.release(&mut alloc);
        assert_eq!((alloc.refs(0), alloc.free_blocks()), (1, 6));
        b.release(&mut alloc);
        assert_eq!(alloc.free_blocks(), 8);
    }

    #[test]
    fn the_first_write_into_a_shared_partial_block_copies_it() {
        let mut alloc = BlockAllocator::new(8, 4);
        // Six prompt positions: one full block and one holding two.
        let mut prompt = filled(&mut alloc, 6);
        let (mut a, mut b) = (prompt.share(&mut alloc), prompt.share(&mut alloc));
        prompt.release(&mut alloc);
        let (slot, copy) = a.append_slot(&mut alloc).unwrap();
        assert_eq!(copy, Some(CopyOnWrite { from: 1, to: 2, filled: 2 }));
        assert_eq!(slot, 2 * 4 + 2);
        assert_eq!(a.blocks(), [0, 2]);
        // `b` is now the partial block's only holder: it writes in place.
        let (slot, copy) = b.append_slot(&mut alloc).unwrap();
        assert_eq!((slot, copy), (4 + 2, None));
        assert_eq!(b.blocks(), [0, 1]);
        // The full block stays shared; later writes need no copies.
        assert_eq!(alloc.refs(0), 2);
        assert_eq!(a.append_slot(&mut alloc).unwrap(), (2 * 4 + 3, None));
        assert_eq!(a.append_slot(&mut alloc).unwrap(), (3 * 4, None));
        assert_eq!(a.slots(4).collect::<Vec<_>>(), [0, 1, 2, 3, 8, 9, 10, 11, 12]);
    }

    #[test]
    fn a_full_pool_is_a_clear_error() {
        let mut alloc = BlockAllocator::new(2, 3);
        let mut t = filled(&mut alloc, 6);
        let err = t.append_slot(&mut alloc).unwrap_err().to_string();
        assert!(err.contains("out of blocks") && err.contains("all 2 blocks of 3 positions"), "{err}");
        // A copy-on-write needs a free block too.
        let mut alloc = BlockAllocator::new(1, 4);
        let prompt = filled(&mut alloc, 2);
        let mut row = prompt.share(&mut alloc);
        assert!(row.append_slot(&mut alloc).unwrap_err().to_string().contains("out of blocks"));
    }
}
