//! A hierarchical timing wheel for retransmission, ack and pacing timers.
//!
//! Contract:
//! - Time is in nanoseconds on the runtime's clock, quantised to ticks of `2^tick_shift` ns
//!   (default 1024 ns). A timer with deadline `d` is due at tick `ceil(d / tick)`; it expires
//!   in the first [`TimerWheel::advance`]`(now)` with `floor(now / tick) >= ceil(d / tick)`.
//!   So a timer never fires early, and fires at most one tick (plus the gap between advance
//!   calls) late. That is exact, which is what the property test checks against a
//!   `BTreeMap` oracle.
//! - Within one `advance` call, timers come out in tick order across ticks processed at the
//!   same wheel level; timers due in the same tick come out in no particular order. Callers
//!   must not rely on order within an `advance` call beyond "all due timers are returned".
//! - [`TimerWheel::insert`], [`TimerWheel::cancel`] and [`TimerWheel::reset`] are O(1).
//!   `advance` costs O(levels) per occupied slot it crosses plus O(1) per timer it moves down
//!   a level (each timer cascades at most `LEVELS - 1` times).
//! - Entries live in a slab preallocated at construction; inserting past its capacity is
//!   [`WheelFull`], never a heap allocation. A [`TimerHandle`] carries the entry's generation,
//!   so a handle to a timer that has fired or been cancelled cannot touch a reused entry.
//! - Range: `LEVELS` = 6 levels of 64 slots, `2^36` ticks (about 19.5 h at 1 µs ticks). A
//!   deadline further out is parked in the top level and re-filed when its slot comes round,
//!   so any `u64` deadline works.

use crate::time::Instant;
use std::fmt;

/// Slots per level (bits per level).
const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;
/// Number of levels.
pub const LEVELS: usize = 6;
const NIL: u32 = u32::MAX;
/// Ticks a wheel spans before deadlines are parked.
const RANGE_TICKS: u64 = 1 << (SLOT_BITS as u64 * LEVELS as u64);
/// List index of the "due now" list (deadlines at or before the wheel's current tick).
const DUE: u16 = (LEVELS * SLOTS) as u16;
/// List index of a free entry.
const FREE: u16 = u16::MAX;

/// A handle to a scheduled timer. Stale handles (the timer fired or was cancelled) are
/// detected by generation and ignored. (The generation is 32 bits: a handle kept across 2^32
/// reuses of the same slab entry could alias; nothing in the stack keeps handles that long.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerHandle {
    index: u32,
    generation: u32,
}

/// The wheel's slab is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timer wheel is full ({capacity} timers)")]
pub struct WheelFull {
    /// The slab's capacity.
    pub capacity: usize,
}

/// The handle no longer names a scheduled timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stale timer handle (the timer fired or was cancelled)")]
pub struct StaleHandle;

/// A timer that expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired<T> {
    /// Its handle (now stale).
    pub handle: TimerHandle,
    /// The deadline it was set for.
    pub deadline: Instant,
    /// The value stored with it.
    pub value: T,
}

struct Entry<T> {
    value: Option<T>,
    deadline: u64,
    generation: u32,
    prev: u32,
    next: u32,
    list: u16,
}

#[derive(Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
}

const EMPTY: List = List {
    head: NIL,
    tail: NIL,
};

/// A hierarchical timing wheel holding values of type `T`.
pub struct TimerWheel<T> {
    entries: Vec<Entry<T>>,
    free_head: u32,
    capacity: usize,
    len: usize,
    tick_shift: u32,
    /// Current tick: every timer due at or before it has been returned.
    elapsed: u64,
    occupied: [u64; LEVELS],
    /// LEVELS * SLOTS lists, then the due list.
    lists: Box<[List]>,
}

impl<T> fmt::Debug for TimerWheel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerWheel")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .field("tick_ns", &(1u64 << self.tick_shift))
            .field("elapsed_tick", &self.elapsed)
            .finish()
    }
}

/// Default tick: 1024 ns.
pub const DEFAULT_TICK_SHIFT: u32 = 10;

impl<T> TimerWheel<T> {
    /// A wheel for up to `capacity` timers with ticks of `2^tick_shift` ns (at most 2^20 ns),
    /// starting at time `now`.
    pub fn new(capacity: usize, tick_shift: u32, now: Instant) -> TimerWheel<T> {
        let now = now.as_nanos();
        let capacity = capacity.min(NIL as usize - 1);
        let tick_shift = tick_shift.min(20);
        TimerWheel {
            entries: Vec::with_capacity(capacity),
            free_head: NIL,
            capacity,
            len: 0,
            tick_shift,
            elapsed: now >> tick_shift,
            occupied: [0; LEVELS],
            lists: vec![EMPTY; LEVELS * SLOTS + 1].into_boxed_slice(),
        }
    }

    /// Tick length in ns.
    pub fn tick_ns(&self) -> u64 {
        1 << self.tick_shift
    }

    /// Timers scheduled.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no timer is scheduled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Slab capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The tick a deadline is due at (rounded up: never early).
    #[inline]
    fn due_tick(&self, deadline: u64) -> u64 {
        let t = deadline >> self.tick_shift;
        if deadline & ((1 << self.tick_shift) - 1) != 0 {
            t + 1
        } else {
            t
        }
    }

    /// Schedule `value` to expire at `deadline`. O(1), no allocation.
    pub fn insert(&mut self, deadline: Instant, value: T) -> Result<TimerHandle, WheelFull> {
        let deadline = deadline.as_nanos();
        let index = if self.free_head != NIL {
            let i = self.free_head;
            self.free_head = self.entries[i as usize].next;
            let e = &mut self.entries[i as usize];
            e.value = Some(value);
            e.deadline = deadline;
            i
        } else if self.entries.len() < self.capacity {
            self.entries.push(Entry {
                value: Some(value),
                deadline,
                generation: 0,
                prev: NIL,
                next: NIL,
                list: FREE,
            });
            (self.entries.len() - 1) as u32
        } else {
            return Err(WheelFull {
                capacity: self.capacity,
            });
        };
        self.len += 1;
        self.file(index);
        Ok(TimerHandle {
            index,
            generation: self.entries[index as usize].generation,
        })
    }

    #[inline]
    fn live(&self, h: TimerHandle) -> bool {
        self.entries
            .get(h.index as usize)
            .is_some_and(|e| e.generation == h.generation && e.list != FREE)
    }

    /// Deadline of a scheduled timer.
    pub fn deadline(&self, h: TimerHandle) -> Option<Instant> {
        self.live(h)
            .then(|| Instant::from_nanos(self.entries[h.index as usize].deadline))
    }

    /// Cancel a timer and return its value; `None` for a stale handle. O(1).
    pub fn cancel(&mut self, h: TimerHandle) -> Option<T> {
        if !self.live(h) {
            return None;
        }
        self.unlink(h.index);
        Some(self.release(h.index))
    }

    /// Move a scheduled timer to a new deadline, keeping its handle. O(1).
    pub fn reset(&mut self, h: TimerHandle, deadline: Instant) -> Result<(), StaleHandle> {
        if !self.live(h) {
            return Err(StaleHandle);
        }
        self.unlink(h.index);
        self.entries[h.index as usize].deadline = deadline.as_nanos();
        self.file(h.index);
        Ok(())
    }

    /// A lower bound on the earliest deadline among scheduled timers, `None` when empty.
    /// Exact for timers within 64 ticks; for later ones it is the start of the wheel slot
    /// that holds them. Use it to decide how long an idle loop may sleep.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.lists[DUE as usize].head != NIL {
            return Some(Instant::from_nanos(self.elapsed << self.tick_shift));
        }
        self.next_slot()
            .map(|(_, _, start)| Instant::from_nanos(start.saturating_mul(1 << self.tick_shift)))
    }

    /// Return every timer due at `now` (see the module contract) by appending to `out`.
    /// Returns how many were appended. Reserve capacity in `out` to keep this allocation-free.
    pub fn advance(&mut self, now: Instant, out: &mut Vec<Expired<T>>) -> usize {
        let before = out.len();
        let now_tick = now.as_nanos() >> self.tick_shift;
        if self.len == 0 {
            self.elapsed = self.elapsed.max(now_tick);
            return 0;
        }
        // Timers filed at or before the current tick.
        self.drain_list(DUE, out);
        // At rest every occupied slot starts after `elapsed` (see `next_slot`), so within the
        // current tick there is nothing more to do: the common case for a poll loop.
        if now_tick <= self.elapsed {
            return out.len() - before;
        }
        while let Some((level, slot, start)) = self.next_slot() {
            if start > now_tick {
                break;
            }
            self.elapsed = start;
            let id = level * SLOTS + slot;
            self.occupied[level] &= !(1u64 << slot);
            let list = std::mem::replace(&mut self.lists[id], EMPTY);
            let mut i = list.head;
            while i != NIL {
                let next = self.entries[i as usize].next;
                let e = &mut self.entries[i as usize];
                e.prev = NIL;
                e.next = NIL;
                e.list = FREE;
                if self.due_tick(self.entries[i as usize].deadline) <= start {
                    self.expire(i, out);
                } else {
                    // Cascade to a lower level (or re-park a far deadline).
                    self.file(i);
                }
                i = next;
            }
        }
        self.elapsed = now_tick;
        out.len() - before
    }

    fn drain_list(&mut self, id: u16, out: &mut Vec<Expired<T>>) {
        let list = std::mem::replace(&mut self.lists[id as usize], EMPTY);
        let mut i = list.head;
        while i != NIL {
            let next = self.entries[i as usize].next;
            self.entries[i as usize].list = FREE;
            self.expire(i, out);
            i = next;
        }
    }

    fn expire(&mut self, i: u32, out: &mut Vec<Expired<T>>) {
        let generation = self.entries[i as usize].generation;
        let deadline = self.entries[i as usize].deadline;
        let value = self.release(i);
        out.push(Expired {
            handle: TimerHandle {
                index: i,
                generation,
            },
            deadline: Instant::from_nanos(deadline),
            value,
        });
    }

    /// Free an (already unlinked) entry and take its value.
    fn release(&mut self, i: u32) -> T {
        let e = &mut self.entries[i as usize];
        e.generation = e.generation.wrapping_add(1);
        e.list = FREE;
        e.prev = NIL;
        e.next = self.free_head;
        self.free_head = i;
        self.len -= 1;
        e.value.take().expect("scheduled timer entry holds a value")
    }

    /// Earliest occupied slot over all levels: (level, slot, start tick).
    fn next_slot(&self) -> Option<(usize, usize, u64)> {
        let mut best: Option<(usize, usize, u64)> = None;
        for level in 0..LEVELS {
            let occ = self.occupied[level];
            if occ == 0 {
                continue;
            }
            let shift = SLOT_BITS * level as u32;
            let slot_ticks = 1u64 << shift;
            let level_ticks = slot_ticks << SLOT_BITS;
            let pos = ((self.elapsed >> shift) & (SLOTS as u64 - 1)) as u32;
            let level_start = self.elapsed & !(level_ticks - 1);
            // A slot's start in this turn of the level; a start before `elapsed` means the
            // next turn. Only the top level wraps like that (it holds deadlines in the next
            // turn of the wheel and parked far deadlines); lower levels only hold slots at or
            // after `elapsed`.
            let start_of = |slot: u32| {
                let s = level_start + slot as u64 * slot_ticks;
                if s < self.elapsed {
                    s + level_ticks
                } else {
                    s
                }
            };
            // The current slot is either due now (a tie with a slot just processed) or, at the
            // top level, a whole turn out: rank it by its start like any other.
            let pos_bit = 1u64 << pos;
            if occ & pos_bit != 0 {
                let start = start_of(pos);
                if best.is_none_or(|b| start < b.2) {
                    best = Some((level, pos as usize, start));
                }
            }
            let rest = occ & !pos_bit;
            if rest != 0 {
                let dist = rest.rotate_right(pos).trailing_zeros();
                let slot = (pos + dist) & (SLOTS as u32 - 1);
                let start = start_of(slot);
                if best.is_none_or(|b| start < b.2) {
                    best = Some((level, slot as usize, start));
                }
            }
        }
        best
    }

    /// File an unlinked, live entry into the list its deadline belongs to.
    fn file(&mut self, i: u32) {
        let due = self.due_tick(self.entries[i as usize].deadline);
        let id = if due <= self.elapsed {
            DUE
        } else {
            let mut masked = (due ^ self.elapsed) | (SLOTS as u64 - 1);
            if masked >= RANGE_TICKS {
                masked = RANGE_TICKS - 1;
            }
            let level = ((63 - masked.leading_zeros()) / SLOT_BITS) as usize;
            let tick = if due - self.elapsed >= RANGE_TICKS {
                // Park in the top level, one full turn out; re-filed when reached.
                self.elapsed + RANGE_TICKS - 1
            } else {
                due
            };
            let slot = ((tick >> (SLOT_BITS * level as u32)) & (SLOTS as u64 - 1)) as usize;
            self.occupied[level] |= 1u64 << slot;
            (level * SLOTS + slot) as u16
        };
        let list = &mut self.lists[id as usize];
        let tail = list.tail;
        if tail == NIL {
            list.head = i;
        } else {
            self.entries[tail as usize].next = i;
        }
        list.tail = i;
        let e = &mut self.entries[i as usize];
        e.prev = tail;
        e.next = NIL;
        e.list = id;
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next, id) = {
            let e = &self.entries[i as usize];
            (e.prev, e.next, e.list)
        };
        if prev == NIL {
            self.lists[id as usize].head = next;
        } else {
            self.entries[prev as usize].next = next;
        }
        if next == NIL {
            self.lists[id as usize].tail = prev;
        } else {
            self.entries[next as usize].prev = prev;
        }
        if id != DUE && self.lists[id as usize].head == NIL {
            let level = id as usize / SLOTS;
            let slot = id as usize % SLOTS;
            self.occupied[level] &= !(1u64 << slot);
        }
        let e = &mut self.entries[i as usize];
        e.prev = NIL;
        e.next = NIL;
        e.list = FREE;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ns: u64) -> Instant {
        Instant::from_nanos(ns)
    }

    fn fired(w: &mut TimerWheel<u32>, now_ns: u64) -> Vec<u32> {
        let mut out = Vec::new();
        w.advance(t(now_ns), &mut out);
        let mut v: Vec<u32> = out.into_iter().map(|e| e.value).collect();
        v.sort();
        v
    }

    #[test]
    fn fires_never_early_at_most_one_tick_late() {
        let mut w = TimerWheel::new(16, 10, t(0));
        w.insert(t(1500), 1).unwrap(); // due tick 2 (2048 ns)
        assert!(fired(&mut w, 2047).is_empty());
        assert_eq!(fired(&mut w, 2048), vec![1]);
        assert!(w.is_empty());
    }

    #[test]
    fn cancel_and_stale_handles() {
        let mut w = TimerWheel::new(2, 10, t(0));
        let a = w.insert(t(10_000), 1).unwrap();
        assert_eq!(w.cancel(a), Some(1));
        assert_eq!(w.cancel(a), None);
        // The entry is reused: the old handle must not cancel the new timer.
        let b = w.insert(t(20_000), 2).unwrap();
        assert_eq!(w.cancel(a), None);
        assert_eq!(w.reset(a, t(5)), Err(StaleHandle));
        assert_eq!(w.deadline(b), Some(t(20_000)));
        assert_eq!(fired(&mut w, 30_000), vec![2]);
        assert_eq!(w.cancel(b), None, "a fired timer's handle is stale");
    }

    #[test]
    fn full_wheel_refuses() {
        let mut w = TimerWheel::new(2, 10, t(0));
        w.insert(t(1), 1).unwrap();
        w.insert(t(2), 2).unwrap();
        assert_eq!(w.insert(t(3), 3), Err(WheelFull { capacity: 2 }));
    }

    #[test]
    fn reset_moves_timer() {
        let mut w = TimerWheel::new(4, 10, t(0));
        let h = w.insert(t(1_000_000), 7).unwrap();
        w.reset(h, t(5_000)).unwrap();
        assert_eq!(fired(&mut w, 6_000), vec![7]);
        let h = w.insert(t(5_000_000), 8).unwrap();
        w.reset(h, t(50_000_000)).unwrap();
        assert!(fired(&mut w, 6_000_000).is_empty());
        assert!(
            fired(&mut w, 50_000_000).is_empty(),
            "due tick is rounded up"
        );
        assert_eq!(fired(&mut w, 50_001_000), vec![8]);
    }

    #[test]
    fn past_and_far_deadlines() {
        let mut w = TimerWheel::new(8, 10, t(1 << 40));
        w.insert(t(5), 1).unwrap(); // in the past
        w.insert(t(u64::MAX), 2).unwrap(); // beyond the wheel's range
        w.insert(t((1 << 40) + (1 << 50)), 3).unwrap(); // beyond the wheel's range
        assert_eq!(fired(&mut w, 1 << 40), vec![1]);
        assert!(fired(&mut w, (1 << 40) + (1 << 49)).is_empty());
        assert_eq!(fired(&mut w, (1 << 40) + (1 << 50)), vec![3]);
        assert_eq!(w.len(), 1);
        assert!(w.next_deadline().is_some());
    }

    /// Found by the oracle property test: a parked far deadline in the top level's current
    /// slot (a whole turn out) hid an earlier next-turn slot behind it, which then fired late.
    #[test]
    fn top_level_next_turn_slots_fire_in_time_order() {
        let mut w = TimerWheel::new(4, 0, t(335_012_037_964));
        w.insert(t(413_609_363_896), 0).unwrap(); // parked: beyond the wheel's range
        w.insert(t(398_538_658_670), 3).unwrap(); // next turn of the top level
        assert!(fired(&mut w, 398_538_658_669).is_empty());
        assert_eq!(fired(&mut w, 398_538_658_670), vec![3]);
        assert_eq!(fired(&mut w, 457_548_622_588), vec![0]);
    }

    #[test]
    fn next_deadline_is_a_lower_bound() {
        let mut w = TimerWheel::<u32>::new(8, 10, t(0));
        assert_eq!(w.next_deadline(), None);
        w.insert(t(10 * 1024), 1).unwrap();
        w.insert(t(100_000 * 1024), 2).unwrap();
        assert_eq!(w.next_deadline(), Some(t(10 * 1024)));
        fired(&mut w, 10 * 1024);
        let n = w.next_deadline().unwrap().as_nanos();
        assert!(n <= 100_000 * 1024 && n > 10 * 1024);
    }
}
