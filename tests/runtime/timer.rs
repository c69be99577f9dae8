//! The timing wheel against a `BTreeMap` oracle.
//!
//! Resolution bound checked: a timer with deadline `d` fires in exactly the first
//! `advance(now)` with `floor(now / tick) >= ceil(d / tick)`: never early, at most one tick
//! late. Within one `advance` the set of expired timers must match the oracle's (order is not
//! part of the contract).

use std::collections::{BTreeMap, BTreeSet};

use bypass::runtime::timer::{TimerHandle, TimerWheel};
use bypass::time::Instant;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Insert(u64),
    Cancel(usize),
    Reset(usize, u64),
    Advance(u64),
}

/// Deadlines relative to now, spread over every level of the wheel and past its range.
fn delta() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..2_000,
        4 => 0u64..200_000,
        2 => 0u64..50_000_000,
        1 => 0u64..(1u64 << 40),
        1 => 0u64..(1u64 << 50),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => delta().prop_map(Op::Insert),
        1 => any::<usize>().prop_map(Op::Cancel),
        1 => (any::<usize>(), delta()).prop_map(|(i, d)| Op::Reset(i, d)),
        3 => delta().prop_map(Op::Advance),
    ]
}

fn t(ns: u64) -> Instant {
    Instant::from_nanos(ns)
}

fn due_tick(deadline: u64, shift: u32) -> u64 {
    deadline.div_ceil(1 << shift)
}

fn run(shift: u32, start: u64, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut w: TimerWheel<u64> = TimerWheel::new(256, shift, t(start));
    let mut oracle: BTreeMap<u64, u64> = BTreeMap::new(); // id -> deadline
    let mut handles: Vec<(TimerHandle, u64)> = Vec::new(); // every handle ever issued
    let mut next_id = 0u64;
    let mut now = start;
    let mut out = Vec::new();
    for op in ops {
        match op {
            Op::Insert(d) => {
                let deadline = now.saturating_add(d);
                match w.insert(t(deadline), next_id) {
                    Ok(h) => {
                        oracle.insert(next_id, deadline);
                        handles.push((h, next_id));
                        next_id += 1;
                    }
                    Err(_) => prop_assert_eq!(oracle.len(), 256),
                }
            }
            Op::Cancel(i) if !handles.is_empty() => {
                let (h, id) = handles[i % handles.len()];
                let expect = oracle.remove(&id).map(|_| id);
                prop_assert_eq!(w.cancel(h), expect);
            }
            Op::Reset(i, d) if !handles.is_empty() => {
                let (h, id) = handles[i % handles.len()];
                let deadline = now.saturating_add(d);
                let r = w.reset(h, t(deadline));
                match oracle.get_mut(&id) {
                    Some(dl) => {
                        prop_assert!(r.is_ok());
                        *dl = deadline;
                    }
                    None => prop_assert!(r.is_err(), "stale handle accepted"),
                }
            }
            Op::Advance(d) => {
                now = now.saturating_add(d);
                out.clear();
                w.advance(t(now), &mut out);
                let got: BTreeSet<u64> = out.iter().map(|e| e.value).collect();
                prop_assert_eq!(got.len(), out.len(), "a timer fired twice");
                let now_tick = now >> shift;
                let want: BTreeSet<u64> = oracle
                    .iter()
                    .filter(|(_, &dl)| due_tick(dl, shift) <= now_tick)
                    .map(|(&id, _)| id)
                    .collect();
                prop_assert_eq!(&got, &want, "now = {}", now);
                for e in &out {
                    prop_assert_eq!(Some(e.deadline.as_nanos()), oracle.get(&e.value).copied());
                    prop_assert!(
                        due_tick(e.deadline.as_nanos(), shift) <= now >> shift,
                        "fired early"
                    );
                    prop_assert_eq!(w.deadline(e.handle), None, "handle still live");
                }
                for id in &want {
                    oracle.remove(id);
                }
            }
            _ => {}
        }
        prop_assert_eq!(w.len(), oracle.len());
    }
    // Drain everything far in the future: every timer must come out exactly once.
    out.clear();
    w.advance(t(u64::MAX), &mut out);
    let got: BTreeSet<u64> = out.iter().map(|e| e.value).collect();
    let want: BTreeSet<u64> = oracle.keys().copied().collect();
    prop_assert_eq!(got, want);
    prop_assert!(w.is_empty());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn wheel_matches_oracle_1us_ticks(start in 0u64..(1 << 45), ops in prop::collection::vec(op(), 1..400)) {
        run(10, start, ops)?;
    }

    #[test]
    fn wheel_matches_oracle_1ns_ticks(start in 0u64..(1 << 45), ops in prop::collection::vec(op(), 1..400)) {
        run(0, start, ops)?;
    }
}

/// Many timers in one slot far out cascade down correctly (a level boundary crossing).
#[test]
fn cascade_across_level_boundaries() {
    let mut w: TimerWheel<u64> = TimerWheel::new(10_000, 0, t((1 << 24) - 5));
    for i in 0..10_000u64 {
        w.insert(t((1 << 24) + i * 37), i).unwrap();
    }
    let mut out = Vec::new();
    let mut fired = 0;
    let mut now = (1 << 24) - 5;
    while !w.is_empty() {
        now += 1000;
        out.clear();
        w.advance(t(now), &mut out);
        for e in &out {
            assert!(e.deadline.as_nanos() <= now);
            assert!(
                e.deadline.as_nanos() > now - 1000,
                "fired late: {} at {now}",
                e.deadline.as_nanos()
            );
        }
        fired += out.len();
    }
    assert_eq!(fired, 10_000);
}
