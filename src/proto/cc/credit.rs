//! Receiver-granted credits against incast: a sans-IO grant allocator.
//!
//! Contract:
//! - A receiver owns one [`CreditAllocator`]. It keeps the bytes granted but not yet
//!   received, summed over every incoming message, near [`CreditConfig::budget`] (about one
//!   bandwidth-delay product of the receiver's link): however many senders converge on the
//!   receiver, the bytes they may have in flight towards it stay about one BDP, so the queue
//!   at its last hop stays near empty.
//! - The transport calls [`open`](CreditAllocator::open) when it learns of a message (its
//!   first packet carries the length), [`on_data`](CreditAllocator::on_data) for every byte
//!   of payload received for the first time, and [`close`](CreditAllocator::close) when the
//!   message completes or is abandoned. It then drains [`poll_grant`](CreditAllocator::poll_grant)
//!   and sends each [`Grant`] to its sender (in an ACK or a grant packet).
//! - Grants are cumulative offsets (the sender may send message bytes below `offset`), so a
//!   lost or reordered grant costs nothing; a newer one supersedes it.
//! - Free budget goes to the message with the fewest bytes left (shortest remaining first),
//!   which finishes small messages first and minimises the mean completion time. Messages
//!   with more than [`CreditConfig::srpt_below`] bytes left rank as equals and take turns
//!   (the least recently granted first), so long flows share the receiver fairly instead of
//!   starving each other; ties among short ones go to the least recently granted too. With
//!   `overcommit > 1` up to that many messages hold grants at once (each capped at
//!   `budget / overcommit`), so one slow sender cannot idle the link.
//! - `unscheduled` bytes of each message (its first packets, sent before any grant) count
//!   against the budget from `open` on.
//! - Allocation: the slot table is allocated once in [`CreditAllocator::new`]; no call
//!   allocates. A grant costs O(messages tracked * overcommit^2).

/// Allocator parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditConfig {
    /// Bytes granted and not yet received, across all messages (about one BDP).
    pub budget: u64,
    /// Grant granularity in bytes (one packet's payload): a grant is at least this much
    /// unless it completes the message.
    pub quantum: u64,
    /// Most messages holding grants at once.
    pub overcommit: usize,
    /// Most messages tracked at once.
    pub max_messages: usize,
    /// Messages with more bytes left than this share the budget round-robin; below it,
    /// shortest remaining first.
    pub srpt_below: u64,
}

/// A message's slot in the allocator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlotId(u32);

impl SlotId {
    /// The slot index (below `max_messages`).
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// A grant to send to a message's sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The message's slot.
    pub slot: SlotId,
    /// The caller's tag for the message (given to `open`).
    pub tag: u64,
    /// The sender may send the message's bytes below this offset.
    pub offset: u64,
}

/// Why [`CreditAllocator::open`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Every slot is in use: the message must wait (it can still send its unscheduled bytes).
    #[error("all {0} credit slots are in use")]
    Full(usize),
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    active: bool,
    tag: u64,
    len: u64,
    granted: u64,
    received: u64,
    /// Sequence number of the last grant (or of the open): round-robin order.
    last: u64,
}

impl Slot {
    fn outstanding(&self) -> u64 {
        self.granted.saturating_sub(self.received)
    }
    fn left(&self) -> u64 {
        self.len.saturating_sub(self.received)
    }
}

/// The grant allocator (see the module docs).
#[derive(Debug, Clone)]
pub struct CreditAllocator {
    cfg: CreditConfig,
    slots: Vec<Slot>,
    /// Indices of the slots in use (any order).
    live: Vec<u32>,
    /// Indices of free slots (a stack; the lowest index on top).
    free: Vec<u32>,
    outstanding: u64,
    seq: u64,
}

impl CreditAllocator {
    /// An allocator; `budget`, `quantum`, `overcommit` and `max_messages` are raised to at
    /// least 1.
    pub fn new(cfg: CreditConfig) -> CreditAllocator {
        let cfg = CreditConfig {
            budget: cfg.budget.max(1),
            quantum: cfg.quantum.max(1),
            overcommit: cfg.overcommit.max(1),
            max_messages: cfg.max_messages.max(1),
            srpt_below: cfg.srpt_below,
        };
        CreditAllocator {
            cfg,
            slots: vec![Slot::default(); cfg.max_messages],
            live: Vec::with_capacity(cfg.max_messages),
            free: (0..cfg.max_messages as u32).rev().collect(),
            outstanding: 0,
            seq: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &CreditConfig {
        &self.cfg
    }

    /// Bytes granted (or sent unscheduled) and not yet received, over all messages.
    pub fn outstanding(&self) -> u64 {
        self.outstanding
    }

    /// Messages tracked.
    pub fn active(&self) -> usize {
        self.live.len()
    }

    /// The cumulative grant of a slot (0 for a free slot).
    pub fn granted(&self, slot: SlotId) -> u64 {
        self.slots.get(slot.index()).map_or(0, |s| s.granted)
    }

    /// Track a message of `len` bytes whose first `unscheduled` bytes the sender sends
    /// without a grant. `tag` is returned in its grants.
    pub fn open(&mut self, tag: u64, len: u64, unscheduled: u64) -> Result<SlotId, OpenError> {
        let Some(i) = self.free.pop() else {
            return Err(OpenError::Full(self.slots.len()));
        };
        self.live.push(i);
        let i = i as usize;
        let granted = unscheduled.min(len);
        self.seq += 1;
        self.slots[i] = Slot {
            active: true,
            tag,
            len,
            granted,
            received: 0,
            last: self.seq,
        };
        self.outstanding += granted;
        Ok(SlotId(i as u32))
    }

    /// `bytes` of the message's payload arrived for the first time. Bytes beyond the message
    /// or for a free slot are ignored (a peer's mistake must not corrupt the accounting).
    pub fn on_data(&mut self, slot: SlotId, bytes: u64) {
        let Some(s) = self.slots.get_mut(slot.index()).filter(|s| s.active) else {
            return;
        };
        let before = s.outstanding();
        s.received = (s.received + bytes).min(s.len);
        // Bytes that arrive beyond the grant (a misbehaving sender) raise the grant with
        // them so the budget is not charged twice.
        s.granted = s.granted.max(s.received);
        let after = s.outstanding();
        self.outstanding = self.outstanding - before + after;
    }

    /// Stop tracking the message (complete or abandoned); its outstanding grant returns to
    /// the pool.
    pub fn close(&mut self, slot: SlotId) {
        let Some(s) = self.slots.get_mut(slot.index()).filter(|s| s.active) else {
            return;
        };
        self.outstanding -= s.outstanding();
        *s = Slot::default();
        if let Some(p) = self.live.iter().position(|&l| l == slot.0) {
            self.live.swap_remove(p);
        }
        self.free.push(slot.0);
    }

    /// The next grant to send, if budget is free and some message needs it.
    #[must_use]
    pub fn poll_grant(&mut self) -> Option<Grant> {
        let free = self.cfg.budget.saturating_sub(self.outstanding);
        if free == 0 {
            return None;
        }
        // Messages still needing grants, shortest remaining first.
        let needing = self
            .live
            .iter()
            .filter(|&&i| {
                let s = &self.slots[i as usize];
                s.granted < s.len
            })
            .count();
        if needing == 0 {
            return None;
        }
        let share = self.cfg.budget / self.cfg.overcommit.min(needing) as u64;
        // The k = overcommit shortest messages are eligible; grant to the first of them with
        // room below its share. Grants are whole quanta (so a sender is never left holding a
        // fraction of a packet's credit) or the message's tail. Ranking is
        // O(messages * k^2) and allocates nothing.
        let q = self.cfg.quantum;
        let mut pick = None;
        for rank in 0..self.cfg.overcommit.min(needing) {
            let i = self.nth_shortest(rank)?;
            let s = &self.slots[i];
            let room = share.saturating_sub(s.outstanding()).min(free);
            let left = s.len - s.granted;
            let amount = if left <= room { left } else { room / q * q };
            if amount > 0 {
                pick = Some((i, amount));
                break;
            }
        }
        let (i, amount) = pick?;
        let s = &mut self.slots[i];
        s.granted += amount;
        self.seq += 1;
        s.last = self.seq;
        self.outstanding += amount;
        Some(Grant {
            slot: SlotId(i as u32),
            tag: s.tag,
            offset: s.granted,
        })
    }

    /// Index of the `rank`-th message needing grants, ordered by bytes left (capped at
    /// `srpt_below`), then least recently granted.
    fn nth_shortest(&self, rank: usize) -> Option<usize> {
        let key = |i: usize| {
            let s = &self.slots[i];
            (s.left().min(self.cfg.srpt_below), s.last)
        };
        let mut prev: Option<(u64, u64)> = None;
        let mut found = None;
        for _ in 0..=rank {
            found = None;
            for &i in &self.live {
                let i = i as usize;
                let s = &self.slots[i];
                if s.granted >= s.len {
                    continue;
                }
                let k = key(i);
                if prev.is_some_and(|p| k <= p) {
                    continue;
                }
                if found.is_none_or(|f: usize| k < key(f)) {
                    found = Some(i);
                }
            }
            prev = Some(key(found?));
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(budget: u64, overcommit: usize) -> CreditAllocator {
        CreditAllocator::new(CreditConfig {
            budget,
            quantum: 1000,
            overcommit,
            max_messages: 8,
            srpt_below: u64::MAX,
        })
    }

    fn drain(a: &mut CreditAllocator) -> Vec<Grant> {
        let mut v = Vec::new();
        while let Some(g) = a.poll_grant() {
            v.push(g);
            assert!(v.len() < 1000);
        }
        v
    }

    #[test]
    fn grants_at_most_the_budget_in_total() {
        let mut a = alloc(10_000, 1);
        let slots: Vec<_> = (0..4).map(|i| a.open(i, 100_000, 1000).unwrap()).collect();
        assert_eq!(a.outstanding(), 4000, "unscheduled bytes count");
        let g = drain(&mut a);
        assert_eq!(a.outstanding(), 10_000);
        assert_eq!(g.len(), 1, "one message gets the free budget");
        // Data arrives: the freed budget is granted again, never more than the budget.
        a.on_data(slots[0], 1000);
        assert_eq!(a.outstanding(), 9000);
        let g = drain(&mut a);
        assert_eq!(g.len(), 1);
        assert_eq!(a.outstanding(), 10_000);
    }

    #[test]
    fn shortest_remaining_first() {
        let mut a = alloc(5000, 1);
        let big = a.open(1, 1_000_000, 0).unwrap();
        let small = a.open(2, 3000, 0).unwrap();
        let mid = a.open(3, 50_000, 0).unwrap();
        let g = drain(&mut a);
        // The small message gets all it needs first, then the budget rest goes to the next
        // shortest.
        assert_eq!(g[0].slot, small);
        assert_eq!(g[0].offset, 3000);
        assert_eq!(g[0].tag, 2);
        assert_eq!(g[1].slot, mid);
        assert_eq!(g[1].offset, 2000);
        assert_eq!(a.granted(big), 0);
        // The small message completes: its budget moves to the mid one.
        a.on_data(small, 3000);
        a.close(small);
        let g = drain(&mut a);
        assert_eq!(g.len(), 1);
        assert_eq!((g[0].slot, g[0].offset), (mid, 5000));
    }

    #[test]
    fn overcommit_shares_the_budget() {
        let mut a = alloc(8000, 2);
        let x = a.open(1, 100_000, 0).unwrap();
        let y = a.open(2, 200_000, 0).unwrap();
        let z = a.open(3, 300_000, 0).unwrap();
        drain(&mut a);
        assert_eq!(a.granted(x), 4000);
        assert_eq!(a.granted(y), 4000);
        assert_eq!(a.granted(z), 0);
    }

    #[test]
    fn lone_message_gets_the_whole_budget_and_tail_grants_are_exact() {
        let mut a = alloc(8000, 4);
        let x = a.open(7, 8500, 1000).unwrap();
        drain(&mut a);
        assert_eq!(a.granted(x), 8000);
        a.on_data(x, 1000);
        let g = drain(&mut a);
        assert_eq!(g.len(), 1);
        assert_eq!(
            g[0].offset, 8500,
            "tail grant below a quantum completes the message"
        );
    }

    #[test]
    fn long_messages_take_turns() {
        let mut a = CreditAllocator::new(CreditConfig {
            budget: 4000,
            quantum: 1000,
            overcommit: 4,
            max_messages: 8,
            srpt_below: 10_000,
        });
        let x = a.open(1, 1_000_000, 0).unwrap();
        let y = a.open(2, 2_000_000, 0).unwrap();
        let small = a.open(3, 5000, 0).unwrap();
        // The short message (below srpt_below) goes first, up to its share (budget / 3
        // needing = 1333, whole quanta: 1333).
        let g = drain(&mut a);
        assert_eq!(g[0].slot, small);
        // Long messages alternate, one quantum at a time, as data frees the budget.
        a.on_data(small, 5000);
        a.close(small);
        drain(&mut a);
        let mut turns = Vec::new();
        for _ in 0..6 {
            a.on_data(x, 1000);
            a.on_data(y, 1000);
            for g in drain(&mut a) {
                turns.push(g.slot);
            }
        }
        let nx = turns.iter().filter(|&&s| s == x).count();
        let ny = turns.iter().filter(|&&s| s == y).count();
        assert!(nx.abs_diff(ny) <= 1, "{nx} vs {ny}: {turns:?}");
        assert!(nx >= 4);
    }

    #[test]
    fn no_grant_below_a_quantum() {
        let mut a = alloc(10_000, 1);
        let x = a.open(1, 1_000_000, 0).unwrap();
        drain(&mut a);
        a.on_data(x, 500);
        assert!(a.poll_grant().is_none());
        a.on_data(x, 500);
        assert_eq!(a.poll_grant().map(|g| g.offset), Some(11_000));
    }

    #[test]
    fn bogus_input_does_not_corrupt_accounting() {
        let mut a = alloc(10_000, 1);
        let x = a.open(1, 5000, 0).unwrap();
        drain(&mut a);
        a.on_data(x, 1_000_000); // more than the message
        assert_eq!(a.outstanding(), 0);
        a.close(x);
        a.close(x); // twice
        a.on_data(x, 10); // after close
        assert_eq!(a.outstanding(), 0);
        assert_eq!(a.active(), 0);
        for i in 0..8 {
            a.open(i, 1, 0).unwrap();
        }
        assert_eq!(a.open(9, 1, 0), Err(OpenError::Full(8)));
    }
}
