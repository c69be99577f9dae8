//! Hand-off between cores: a bounded single-producer single-consumer ring, and a mesh of them
//! for N shards.
//!
//! One runtime per core shares nothing; when a request must reach another shard (the core
//! that owns its key), the application hands it over through one of these queues and the
//! answer comes back the same way. [`channel`] makes one queue: a [`Sender`] for the thread
//! that produces and a [`Receiver`] for the thread that consumes, each moved to its thread
//! (both are `Send`). [`mesh`] makes the N x (N - 1) queues between N shards, one
//! [`Shard`] per thread.
//!
//! Contract:
//! - [`Sender::try_send`] and [`Receiver::try_recv`] never block, allocate, make a system
//!   call or take a lock: a store of the value into the ring, one release store of an index
//!   and, only when the cached view of the other side's index says full (empty), one
//!   acquire load of it. A full queue returns the value ([`Full`]): backpressure the caller
//!   acts on (keep polling its own stack and retry, or keep a backlog), never a wait on
//!   the other core.
//! - Values move without a copy of what they point to (a `Bytes` is three words).
//! - The capacity is fixed at construction, rounded up to a power of two (at least 1);
//!   [`channel`] allocates the ring once. Memory: `capacity * size_of::<T>()` plus two
//!   cache-line pairs.
//! - Layout: the producer's index (`tail`) and the consumer's (`head`) sit on separate
//!   128-byte lines (a pair of cache lines: the adjacent-line prefetcher's unit on x86), and
//!   each half keeps its own index and a cached copy of the other's in its own struct, so an
//!   operation reads the other core's line only when its cache runs out (the producer when
//!   the queue looks full, the consumer when it looks empty).
//! - Drop: either half may be dropped first and on any thread. Dropping the [`Receiver`]
//!   drops what is queued at that moment; whatever is queued when the last half goes is
//!   dropped then. Every value sent is dropped exactly once: by the receiver that took it,
//!   or by the queue.
//!
//! One of two modules of `runtime` with unsafe code (the other: [`clock`](super::clock)): the
//! ring's slots are `MaybeUninit` cells written by one side and read by the other, ordered by
//! the index stores (release) and loads (acquire).
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::fmt;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Pads and aligns a value to a cache-line pair (128 bytes) so the two indexes never share
/// a line.
#[repr(align(128))]
struct CachePadded<T>(T);

/// The ring both halves point to.
struct Ring<T> {
    /// The consumer's index: the next slot to read. Written by the receiver only.
    head: CachePadded<AtomicUsize>,
    /// The producer's index: the next slot to write. Written by the sender only.
    tail: CachePadded<AtomicUsize>,
    /// The slots; `slots.len()` is a power of two. Slot `i & mask` holds a value exactly
    /// when `head <= i < tail` (indexes run freely and wrap).
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
}

// SAFETY: the ring moves values of `T` from one thread to another (hence `T: Send`); a slot
// is accessed by one side at a time, handed over by the release/acquire pair on `tail`
// (sender to receiver) and on `head` (receiver back to sender). Only the `Sender` writes
// slots and `tail`, only the `Receiver` reads slots and writes `head`, and each half's
// mutating methods take `&mut self`, so sharing a `&Ring` between the two threads is sound.
unsafe impl<T: Send> Sync for Ring<T> {}
// SAFETY: as above; the ring owns values of `T`, which may be dropped on any thread.
unsafe impl<T: Send> Send for Ring<T> {}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // Both halves are gone (this is the last `Arc`, whose drop synchronised with the
        // other half's), so the indexes are final: drop what lies between them.
        let head = *self.head.0.get_mut();
        let tail = *self.tail.0.get_mut();
        let mask = self.slots.len() - 1;
        let mut i = head;
        while i != tail {
            // SAFETY: slots in head..tail hold values written by the sender and not taken by
            // the receiver; each is visited once, and nothing reads the ring after this.
            unsafe { self.slots[i & mask].get_mut().assume_init_drop() };
            i = i.wrapping_add(1);
        }
    }
}

/// The sending half of a queue: the producer's thread holds it (it is `Send`).
pub struct Sender<T> {
    ring: Arc<Ring<T>>,
    /// Our own index (the ring's `tail` holds the same, published).
    tail: usize,
    /// The receiver's `head` as last read: the queue has room while `tail - head < cap`.
    head: usize,
    mask: usize,
}

/// The receiving half of a queue: the consumer's thread holds it (it is `Send`).
pub struct Receiver<T> {
    ring: Arc<Ring<T>>,
    /// Our own index (the ring's `head` holds the same, published).
    head: usize,
    /// The sender's `tail` as last read: values wait while `head != tail`.
    tail: usize,
    mask: usize,
}

/// [`Sender::try_send`] on a full queue: the value, given back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Full<T>(pub T);

impl<T> Full<T> {
    /// The value that was not sent.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> fmt::Debug for Full<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Full(..)")
    }
}

impl<T> fmt::Display for Full<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the hand-off queue is full")
    }
}

impl<T> std::error::Error for Full<T> {}

/// A queue of at least `capacity` values (rounded up to a power of two; 0 makes 1), as its
/// two halves. Allocates the ring once; nothing after.
///
/// # Panics
///
/// If the rounded capacity overflows `usize` or the ring's size `isize::MAX`.
pub fn channel<T: Send>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let cap = capacity
        .max(1)
        .checked_next_power_of_two()
        .expect("hand-off capacity overflows usize");
    let slots: Box<[UnsafeCell<MaybeUninit<T>>]> = (0..cap)
        .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
        .collect();
    let ring = Arc::new(Ring {
        head: CachePadded(AtomicUsize::new(0)),
        tail: CachePadded(AtomicUsize::new(0)),
        slots,
    });
    let mask = cap - 1;
    (
        Sender {
            ring: ring.clone(),
            tail: 0,
            head: 0,
            mask,
        },
        Receiver {
            ring,
            head: 0,
            tail: 0,
            mask,
        },
    )
}

impl<T> Sender<T> {
    /// Queue `value`, or give it back if the queue is full. Never blocks; no allocation, no
    /// system call, no lock. The receiver sees values in the order they were sent.
    #[inline]
    pub fn try_send(&mut self, value: T) -> Result<(), Full<T>> {
        let tail = self.tail;
        if tail.wrapping_sub(self.head) > self.mask {
            // Looks full: read the receiver's progress (its line) only now.
            self.head = self.ring.head.0.load(Ordering::Acquire);
            if tail.wrapping_sub(self.head) > self.mask {
                return Err(Full(value));
            }
        }
        let slot = &self.ring.slots[tail & self.mask];
        // SAFETY: `head <= tail < head + cap` (checked above), so slot `tail` holds no value:
        // the receiver took the last one there before its release store of `head`, which we
        // acquired (or it was never written), and it will not read the slot until our
        // release store of `tail` below. Only this `Sender` (`&mut self`) writes slots.
        unsafe { (*slot.get()).write(value) };
        self.tail = tail.wrapping_add(1);
        self.ring.tail.0.store(self.tail, Ordering::Release);
        Ok(())
    }

    /// Values queued and not yet taken (by the receiver's last published progress).
    pub fn len(&self) -> usize {
        self.tail
            .wrapping_sub(self.ring.head.0.load(Ordering::Acquire))
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The queue's capacity (the requested one rounded up to a power of two).
    pub fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// Whether the [`Receiver`] has been dropped: what is sent now is only dropped.
    pub fn is_disconnected(&self) -> bool {
        Arc::strong_count(&self.ring) == 1
    }
}

impl<T> Receiver<T> {
    /// Take the oldest queued value, if any. Never blocks; no allocation, no system call,
    /// no lock.
    #[inline]
    pub fn try_recv(&mut self) -> Option<T> {
        let head = self.head;
        if head == self.tail {
            // Looks empty: read the sender's progress (its line) only now.
            self.tail = self.ring.tail.0.load(Ordering::Acquire);
            if head == self.tail {
                return None;
            }
        }
        let slot = &self.ring.slots[head & self.mask];
        // SAFETY: `head < tail` (the sender's index, acquired), so slot `head` holds a value
        // written before the sender's release store of `tail`; the sender will not write it
        // again until our release store of `head` below. Only this `Receiver` (`&mut self`)
        // reads slots, and it reads each once: `head` moves past it now.
        let value = unsafe { (*slot.get()).assume_init_read() };
        self.head = head.wrapping_add(1);
        self.ring.head.0.store(self.head, Ordering::Release);
        Some(value)
    }

    /// Values queued and not yet taken (by the sender's last published progress).
    pub fn len(&self) -> usize {
        self.ring
            .tail
            .0
            .load(Ordering::Acquire)
            .wrapping_sub(self.head)
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The queue's capacity (the requested one rounded up to a power of two).
    pub fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// Whether the [`Sender`] has been dropped: nothing more will arrive after what is
    /// queued.
    pub fn is_disconnected(&self) -> bool {
        Arc::strong_count(&self.ring) == 1
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        // Drop what is queued now rather than when the sender goes (values may hold packet
        // buffers); what is sent after this is dropped with the ring.
        while self.try_recv().is_some() {}
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("len", &self.len())
            .field("capacity", &self.capacity())
            .finish()
    }
}

/// One shard's ends of a [`mesh`]: a [`Sender`] to every other shard and a [`Receiver`]
/// from every other shard. Moved to the shard's thread (it is `Send`).
pub struct Shard<T> {
    index: usize,
    /// `to[j]`: the queue to shard `j` (`None` at our own index).
    to: Box<[Option<Sender<T>>]>,
    /// `from[j]`: the queue from shard `j` (`None` at our own index).
    from: Box<[Option<Receiver<T>>]>,
    /// The peer [`try_recv`](Self::try_recv) looks at first: round robin, so one busy peer
    /// does not starve the others.
    next: usize,
}

/// The queues between `n` shards, each of at least `capacity` values: `n * (n - 1)` queues,
/// returned as one [`Shard`] per shard (index `i` at position `i`). Allocates once.
pub fn mesh<T: Send>(n: usize, capacity: usize) -> Vec<Shard<T>> {
    let mut to: Vec<Vec<Option<Sender<T>>>> =
        (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    let mut from: Vec<Vec<Option<Receiver<T>>>> =
        (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    for i in 0..n {
        for j in 0..n {
            if i != j {
                let (s, r) = channel(capacity);
                to[i][j] = Some(s);
                from[j][i] = Some(r);
            }
        }
    }
    to.into_iter()
        .zip(from)
        .enumerate()
        .map(|(index, (to, from))| Shard {
            index,
            to: to.into_boxed_slice(),
            from: from.into_boxed_slice(),
            next: 0,
        })
        .collect()
}

impl<T> Shard<T> {
    /// This shard's index.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The number of shards in the mesh.
    pub fn shards(&self) -> usize {
        self.to.len()
    }

    /// Queue `value` for shard `to`, or give it back if that queue is full
    /// ([`Sender::try_send`]).
    ///
    /// # Panics
    ///
    /// If `to` is this shard or not below [`shards`](Self::shards).
    #[inline]
    pub fn try_send(&mut self, to: usize, value: T) -> Result<(), Full<T>> {
        self.sender(to).try_send(value)
    }

    /// The oldest value from some other shard, with that shard's index: the peers are
    /// looked at in turn, starting after the one that gave the last value. Values from one
    /// peer arrive in the order it sent them.
    #[inline]
    pub fn try_recv(&mut self) -> Option<(usize, T)> {
        let n = self.from.len();
        for k in 0..n {
            let j = (self.next + k) % n;
            if let Some(v) = self.from[j].as_mut().and_then(Receiver::try_recv) {
                self.next = (j + 1) % n;
                return Some((j, v));
            }
        }
        None
    }

    /// The queue to shard `to`.
    ///
    /// # Panics
    ///
    /// If `to` is this shard or not below [`shards`](Self::shards).
    pub fn sender(&mut self, to: usize) -> &mut Sender<T> {
        let me = self.index;
        self.to[to]
            .as_mut()
            .unwrap_or_else(|| panic!("shard {me} has no queue to itself"))
    }

    /// The queue from shard `from`.
    ///
    /// # Panics
    ///
    /// If `from` is this shard or not below [`shards`](Self::shards).
    pub fn receiver(&mut self, from: usize) -> &mut Receiver<T> {
        let me = self.index;
        self.from[from]
            .as_mut()
            .unwrap_or_else(|| panic!("shard {me} has no queue from itself"))
    }

    /// Values queued to this shard, from all peers.
    pub fn pending(&self) -> usize {
        self.from.iter().flatten().map(Receiver::len).sum()
    }
}

impl<T> fmt::Debug for Shard<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shard")
            .field("index", &self.index)
            .field("shards", &self.shards())
            .field("pending", &self.pending())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn fifo_full_and_empty() {
        let (mut tx, mut rx) = channel::<u32>(4);
        assert_eq!(tx.capacity(), 4);
        assert!(rx.try_recv().is_none());
        assert!(tx.is_empty() && rx.is_empty());
        for i in 0..4 {
            tx.try_send(i).unwrap();
        }
        assert_eq!((tx.len(), rx.len()), (4, 4));
        assert_eq!(tx.try_send(99), Err(Full(99)));
        assert_eq!(tx.try_send(7).unwrap_err().into_inner(), 7);
        for i in 0..4 {
            assert_eq!(rx.try_recv(), Some(i));
        }
        assert!(rx.try_recv().is_none());
        assert_eq!((tx.len(), rx.len()), (0, 0));
        // Room again once the receiver took values.
        tx.try_send(5).unwrap();
        assert_eq!(rx.try_recv(), Some(5));
    }

    #[test]
    fn capacity_rounds_up_to_a_power_of_two() {
        for (asked, got) in [
            (0, 1),
            (1, 1),
            (2, 2),
            (3, 4),
            (5, 8),
            (1000, 1024),
            (1024, 1024),
        ] {
            let (tx, rx) = channel::<u8>(asked);
            assert_eq!((tx.capacity(), rx.capacity()), (got, got), "asked {asked}");
        }
        // Capacity 1: one value at a time.
        let (mut tx, mut rx) = channel(1);
        tx.try_send('a').unwrap();
        assert_eq!(tx.try_send('b'), Err(Full('b')));
        assert_eq!(rx.try_recv(), Some('a'));
        tx.try_send('b').unwrap();
        assert_eq!(rx.try_recv(), Some('b'));
    }

    #[test]
    fn wraps_around_many_times_in_order() {
        let (mut tx, mut rx) = channel::<u64>(8);
        let (mut sent, mut got) = (0u64, 0u64);
        // Uneven batches, so every slot is written at every phase.
        for round in 0..10_000u64 {
            let burst = 1 + round % 7;
            for _ in 0..burst {
                if tx.try_send(sent).is_ok() {
                    sent += 1;
                }
            }
            for _ in 0..(1 + (round * 3) % 5) {
                if let Some(v) = rx.try_recv() {
                    assert_eq!(v, got);
                    got += 1;
                }
            }
            assert_eq!(tx.len() as u64, sent - got);
        }
        while let Some(v) = rx.try_recv() {
            assert_eq!(v, got);
            got += 1;
        }
        assert_eq!(got, sent);
        assert!(sent > 8 * 1000, "{sent}");
    }

    #[test]
    fn indexes_wrap_past_usize_max() {
        let (mut tx, mut rx) = channel::<usize>(4);
        // Start both sides just below the wrap of the free-running indexes.
        let start = usize::MAX - 5;
        tx.tail = start;
        tx.head = start;
        tx.ring.tail.0.store(start, Ordering::Relaxed);
        tx.ring.head.0.store(start, Ordering::Relaxed);
        rx.head = start;
        rx.tail = start;
        for i in 0..100 {
            tx.try_send(i).unwrap();
            tx.try_send(i + 1000).unwrap();
            assert_eq!(rx.len(), 2);
            assert_eq!(rx.try_recv(), Some(i));
            assert_eq!(rx.try_recv(), Some(i + 1000));
        }
        for i in 0..4 {
            tx.try_send(i).unwrap();
        }
        assert!(tx.try_send(4).is_err());
    }

    /// Counts its drops in a shared counter.
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn queued_values_are_dropped_exactly_once_whichever_half_goes_first() {
        let drops = Arc::new(AtomicUsize::new(0));
        let c = || Counted(drops.clone());
        // Receiver first: what is queued goes with it; what is sent after goes with the
        // sender.
        let (mut tx, mut rx) = channel(8);
        for _ in 0..5 {
            assert!(tx.try_send(c()).is_ok());
        }
        drop(rx.try_recv().unwrap());
        assert_eq!(drops.load(Ordering::Relaxed), 1);
        drop(rx);
        assert_eq!(drops.load(Ordering::Relaxed), 5);
        assert!(tx.is_disconnected());
        assert!(tx.try_send(c()).is_ok());
        assert!(tx.try_send(c()).is_ok());
        assert_eq!(drops.load(Ordering::Relaxed), 5);
        drop(tx);
        assert_eq!(drops.load(Ordering::Relaxed), 7);

        // Sender first: the receiver still gets what was sent, and the rest goes with it.
        drops.store(0, Ordering::Relaxed);
        let (mut tx, mut rx) = channel(4);
        for _ in 0..4 {
            assert!(tx.try_send(c()).is_ok());
        }
        // The value of a refused send comes back, and is dropped by its owner once.
        let back = tx.try_send(c()).unwrap_err().into_inner();
        drop(back);
        assert_eq!(drops.load(Ordering::Relaxed), 1);
        drop(tx);
        assert!(rx.is_disconnected());
        drop(rx.try_recv().unwrap());
        assert_eq!(drops.load(Ordering::Relaxed), 2);
        drop(rx);
        assert_eq!(drops.load(Ordering::Relaxed), 5);

        // Wrapped around before the drop: the slots in head..tail straddle the end.
        drops.store(0, Ordering::Relaxed);
        let (mut tx, mut rx) = channel(4);
        for _ in 0..3 {
            assert!(tx.try_send(c()).is_ok());
            drop(rx.try_recv());
        }
        for _ in 0..3 {
            assert!(tx.try_send(c()).is_ok());
        }
        assert_eq!(drops.load(Ordering::Relaxed), 3);
        drop(tx);
        drop(rx);
        assert_eq!(drops.load(Ordering::Relaxed), 6);
    }

    #[test]
    fn zero_sized_values() {
        let (mut tx, mut rx) = channel::<()>(3);
        assert_eq!(tx.capacity(), 4);
        for _ in 0..4 {
            tx.try_send(()).unwrap();
        }
        assert_eq!(tx.try_send(()), Err(Full(())));
        assert_eq!(rx.len(), 4);
        for _ in 0..4 {
            assert_eq!(rx.try_recv(), Some(()));
        }
        assert_eq!(rx.try_recv(), None);

        /// A zero-sized type with a drop: the queue still counts them.
        struct Zst;
        static ZST_DROPS: AtomicUsize = AtomicUsize::new(0);
        impl Drop for Zst {
            fn drop(&mut self) {
                ZST_DROPS.fetch_add(1, Ordering::Relaxed);
            }
        }
        let (mut tx, mut rx) = channel::<Zst>(8);
        for _ in 0..6 {
            assert!(tx.try_send(Zst).is_ok());
        }
        drop(rx.try_recv());
        assert_eq!(ZST_DROPS.load(Ordering::Relaxed), 1);
        drop(tx);
        drop(rx);
        assert_eq!(ZST_DROPS.load(Ordering::Relaxed), 6);
    }

    #[test]
    fn halves_are_send_and_work_across_threads() {
        fn send<T: Send>() {}
        send::<Sender<bytes::Bytes>>();
        send::<Receiver<bytes::Bytes>>();
        send::<Shard<bytes::Bytes>>();
        let (mut tx, mut rx) = channel::<bytes::Bytes>(2);
        let t = std::thread::spawn(move || {
            let mut n = 0;
            while n < 100 {
                let v = bytes::Bytes::from(vec![n as u8; 10]);
                let mut v = Some(v);
                while let Some(x) = v.take() {
                    if let Err(Full(x)) = tx.try_send(x) {
                        v = Some(x);
                        std::hint::spin_loop();
                    }
                }
                n += 1;
            }
        });
        let mut n = 0;
        while n < 100 {
            if let Some(b) = rx.try_recv() {
                assert_eq!(&b[..], &[n as u8; 10]);
                n += 1;
            } else {
                std::thread::yield_now();
            }
        }
        t.join().unwrap();
    }

    #[test]
    fn mesh_connects_every_pair_both_ways() {
        let mut shards = mesh::<(usize, usize)>(3, 4);
        assert_eq!(shards.len(), 3);
        for (i, s) in shards.iter().enumerate() {
            assert_eq!((s.index(), s.shards()), (i, 3));
        }
        for (i, s) in shards.iter_mut().enumerate() {
            for j in (0..3).filter(|&j| j != i) {
                s.try_send(j, (i, j)).unwrap();
                s.try_send(j, (i, j + 10)).unwrap();
            }
        }
        for (j, s) in shards.iter_mut().enumerate() {
            assert_eq!(s.pending(), 4);
            let mut got = Vec::new();
            while let Some((from, v)) = s.try_recv() {
                assert_eq!(v.0, from);
                got.push(v);
            }
            got.sort_unstable();
            let want: Vec<_> = (0..3)
                .filter(|&i| i != j)
                .flat_map(|i| [(i, j), (i, j + 10)])
                .collect();
            assert_eq!(got, want);
        }
        // Round robin: two busy peers alternate.
        let mut shards = mesh::<usize>(3, 8);
        for v in 0..4 {
            shards[1].try_send(0, 100 + v).unwrap();
            shards[2].try_send(0, 200 + v).unwrap();
        }
        let order: Vec<usize> = std::iter::from_fn(|| shards[0].try_recv().map(|x| x.0)).collect();
        assert_eq!(order, [1, 2, 1, 2, 1, 2, 1, 2]);
    }

    /// Two threads, millions of values through a small queue (the full and empty paths
    /// taken constantly): every value arrives once, in order, intact (a value and its
    /// complement, so a torn read shows). `BYPASS_HANDOFF_STRESS_N` sets the count (a run
    /// under valgrind's helgrind or drd uses fewer).
    #[test]
    fn stress_two_threads_in_order_no_loss_no_duplicate() {
        let n: u64 = std::env::var("BYPASS_HANDOFF_STRESS_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2_000_000);
        // Spin a little on full (empty), then let the other thread have the core: the
        // machine may have fewer free cores than two.
        let wait = |misses: &mut u64| {
            *misses += 1;
            if misses.is_multiple_of(64) {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        };
        for cap in [2usize, 1024] {
            let (mut tx, mut rx) = channel::<(u64, u64)>(cap);
            let producer = std::thread::spawn(move || {
                let mut full = 0u64;
                for i in 0..n {
                    let mut v = (i, !i);
                    loop {
                        match tx.try_send(v) {
                            Ok(()) => break,
                            Err(Full(back)) => {
                                v = back;
                                wait(&mut full);
                            }
                        }
                    }
                }
                full
            });
            let mut next = 0u64;
            let mut empty = 0u64;
            while next < n {
                match rx.try_recv() {
                    Some((v, check)) => {
                        assert_eq!(v, next, "capacity {cap}: out of order or lost");
                        assert_eq!(check, !v, "capacity {cap}: torn value");
                        next += 1;
                    }
                    None => wait(&mut empty),
                }
            }
            let full = producer.join().unwrap();
            // Nothing more: no duplicate after the last value.
            assert_eq!(rx.try_recv(), None);
            assert!(rx.is_disconnected());
            eprintln!("capacity {cap}: {n} values in order; the sender found it full {full} times, the receiver empty {empty} times");
        }
    }

    #[test]
    #[should_panic(expected = "no queue to itself")]
    fn a_shard_has_no_queue_to_itself() {
        let mut shards = mesh::<u8>(2, 1);
        let _ = shards[1].try_send(1, 0);
    }
}
