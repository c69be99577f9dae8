//! `ccsim`: the congestion-control experiment simulator behind `bypass sim cc`.
//!
//! Contract: a packet-level discrete-event model in virtual time ([`engine`]) that runs the
//! real controllers of [`proto::cc`](crate::proto::cc) (one instance per sender, driven
//! through the `Controller` trait exactly as the transport drives it) and the real receiver
//! credit allocator ([`proto::cc::credit`](crate::proto::cc::credit)) over a bottleneck FIFO
//! with a drain rate, a tail-drop buffer and an ECN marking threshold. Every run is
//! deterministic for its seed. [`scenario`] defines the experiments and their metrics.
//!
//! The front end is the tools crate's (`cli/src/sim_cc/`): the command line (`bypass sim
//! cc`), the table, CSV and goal checks, and the PNG plots; it keeps plotting out of the
//! library. This module lives outside `proto`, which stays sans-IO.

pub mod engine;
pub mod metrics;
pub mod scenario;

use scenario::{Cc, Run, Scenario};

/// Run every scenario with every controller in `ccs`; results in order (scenario-major).
/// Runs are independent and deterministic, so they are spread over the machine's cores
/// without changing any result.
pub fn run_all(scenarios: &[Scenario], ccs: &[Cc], seed: u64) -> Vec<Run> {
    run_all_with(scenarios, ccs, seed, None)
}

/// [`run_all`] with the credit stacks' unscheduled bytes set (see [`scenario::run_with`]).
pub fn run_all_with(
    scenarios: &[Scenario],
    ccs: &[Cc],
    seed: u64,
    unscheduled: Option<u64>,
) -> Vec<Run> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    let jobs: Vec<(&Scenario, Cc)> = scenarios
        .iter()
        .flat_map(|s| ccs.iter().map(move |&c| (s, c)))
        .collect();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Run>>> = Mutex::new(vec![None; jobs.len()]);
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(jobs.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(s, cc)) = jobs.get(i) else { break };
                let run = scenario::run_with(s, cc, seed, unscheduled);
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(run);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect()
}
