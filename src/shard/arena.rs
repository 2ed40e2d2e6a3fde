//! The shard's read arena: sockets read into one large zeroed block, and each
//! read's bytes are split off it as a `BytesMut` that shares the block.
//!
//! Why: a per-connection read buffer costs its size for every idle
//! connection, and zeroing a fresh buffer per read costs a memset per read.
//! With the arena an idle connection holds no buffer, a block is zeroed once
//! for many reads, and decoded PUBLISH packets stay zero-copy slices of it.
//! A block is freed when the last slice of it is dropped.

use bytes::BytesMut;

/// Size of a fresh block.
const BLOCK_BYTES: usize = 256 * 1024;
/// Most bytes one read may ask for.
pub(crate) const READ_MAX: usize = 16 * 1024;
/// A block with less room than this is replaced before a read.
const READ_MIN: usize = 2 * 1024;

const _: () = assert!(READ_MIN <= READ_MAX && READ_MAX <= BLOCK_BYTES);

pub(crate) struct ReadArena {
    /// Initialized (zeroed or overwritten) bytes not yet handed out.
    free: BytesMut,
}

impl ReadArena {
    pub(crate) fn new() -> ReadArena {
        ReadArena {
            free: BytesMut::new(),
        }
    }

    /// Room for the next read: at least `READ_MIN`, at most `READ_MAX` bytes.
    pub(crate) fn space(&mut self) -> &mut [u8] {
        if self.free.len() < READ_MIN {
            self.free = BytesMut::from(&vec![0u8; BLOCK_BYTES][..]);
        }
        let n = self.free.len().min(READ_MAX);
        &mut self.free[..n]
    }

    /// Takes the first `n` bytes of the last `space()` as a buffer of their own.
    pub(crate) fn take(&mut self, n: usize) -> BytesMut {
        assert!(
            n <= self.free.len().min(READ_MAX),
            "took more than was offered"
        );
        self.free.split_to(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_split_off_one_block_until_it_runs_low() {
        let mut arena = ReadArena::new();
        let space = arena.space();
        assert_eq!(space.len(), READ_MAX);
        space[..3].copy_from_slice(b"abc");
        let a = arena.take(3);
        assert_eq!(&a[..], b"abc");
        let space = arena.space();
        space[0] = b'd';
        let b = arena.take(1);
        assert_eq!(&b[..], b"d");
        assert_eq!(&a[..], b"abc", "earlier reads are untouched");
        // Use the block up: a new one comes when fewer than READ_MIN remain.
        while arena.free.len() >= READ_MIN {
            let n = arena.space().len();
            arena.take(n);
        }
        assert_eq!(arena.space().len(), READ_MAX);
    }
}
