//! `ccsim`: the congestion-control experiment simulator behind `bypass sim cc`.
//!
//! Contract: a packet-level discrete-event model in virtual time ([`engine`]) that runs the
//! real controllers of [`proto::cc`](crate::proto::cc) (one instance per sender, driven
//! through the `Controller` trait exactly as the transport drives it) and the real receiver
//! credit allocator ([`proto::cc::credit`](crate::proto::cc::credit)) over a bottleneck FIFO
//! with a drain rate, a tail-drop buffer and an ECN marking threshold. Every run is
//! deterministic for its seed. [`scenario`] defines the experiments and their metrics,
//! [`report`] prints the table and writes CSV, [`plot`] draws PNGs.
//!
//! This module does file IO (CSV, PNG) and lives outside `proto`, which stays sans-IO.

pub mod engine;
pub mod metrics;
pub mod plot;
pub mod report;
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

/// Plots drawn by the CLI: (scenario, kind) with kind `queue` or `rates`.
pub const PLOTS: [(&str, &str); 5] = [
    ("join8-100g", "rates"),
    ("join8-100g", "queue"),
    ("incast64x64k-100g", "queue"),
    ("mixed60-100g", "queue"),
    ("noise5us-8flows-100g", "rates"),
];

const CLI_USAGE: &str =
    "usage: bypass sim cc [--quick] [--seed N] [--cc NAME,..] [--scenario SUBSTR]
                    [--out DIR] [--plots DIR] [--no-plots]
  Runs the congestion-control experiments (virtual time, the real controllers), prints the
  table and the goal checks, writes DIR/cc.csv (default DIR: target/ccsim) and PNG plots
  (default: the --out directory).
  controllers: swift+credit swift+ecn+credit swift cubic dctcp timely
  --unscheduled: bytes of a message the credit stacks send before a grant (default: one
  packet's payload, 4032)";

/// `bypass sim cc ARGS`: run the experiments, print the table, write CSV and plots.
pub fn cli(args: &[String]) -> std::process::ExitCode {
    use std::process::ExitCode;
    let mut quick = false;
    let mut seed = 1u64;
    let mut ccs: Vec<Cc> = Cc::ALL.to_vec();
    let mut filter: Option<String> = None;
    let mut out = std::path::PathBuf::from("target/ccsim");
    let mut plots: Option<std::path::PathBuf> = None;
    let mut draw = true;
    let mut unscheduled = None;
    let mut it = args.iter();
    let bad = |why: String| {
        eprintln!("bypass sim cc: {why}\n{CLI_USAGE}");
        ExitCode::from(2)
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--no-plots" => draw = false,
            "--seed" => match it.next().and_then(|s| s.parse().ok()) {
                Some(s) => seed = s,
                None => return bad("--seed takes a number".into()),
            },
            "--cc" => {
                let Some(list) = it.next() else {
                    return bad("--cc takes a list".into());
                };
                let mut v = Vec::new();
                for n in list.split(',') {
                    match Cc::parse(n) {
                        Some(c) => v.push(c),
                        None => return bad(format!("unknown controller {n}")),
                    }
                }
                ccs = v;
            }
            "--unscheduled" => match it.next().and_then(|s| s.parse().ok()) {
                Some(u) => unscheduled = Some(u),
                None => return bad("--unscheduled takes a number of bytes".into()),
            },
            "--scenario" => match it.next() {
                Some(s) => filter = Some(s.clone()),
                None => return bad("--scenario takes a name fragment".into()),
            },
            "--out" => match it.next() {
                Some(s) => out = s.into(),
                None => return bad("--out takes a directory".into()),
            },
            "--plots" => match it.next() {
                Some(s) => plots = Some(s.into()),
                None => return bad("--plots takes a directory".into()),
            },
            "-h" | "--help" => {
                println!("{CLI_USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return bad(format!("unknown option {other}")),
        }
    }
    let mut scenarios = if quick {
        scenario::reduced()
    } else {
        scenario::all()
    };
    if let Some(f) = &filter {
        scenarios.retain(|s| s.name.contains(f.as_str()));
    }
    let t0 = std::time::Instant::now();
    let runs = run_all_with(&scenarios, &ccs, seed, unscheduled);
    let wall = t0.elapsed();
    print!("{}", report::table(&runs));
    let packets: u64 = runs.iter().map(|r| r.packets).sum();
    println!(
        "\n{} runs, {} packets simulated in {:.2} s wall (seed {seed})",
        runs.len(),
        packets,
        wall.as_secs_f64()
    );
    for cc in [Cc::SwiftCredit, Cc::SwiftEcnCredit, Cc::Swift] {
        if !ccs.contains(&cc) {
            continue;
        }
        println!("\ngoals, {}:", cc.name());
        for g in report::goals(&runs, cc) {
            let v = if g.met { "met   " } else { "MISSED" };
            println!("  {v} {} [{}]", g.what, g.detail);
        }
    }
    if let Err(e) = std::fs::create_dir_all(&out)
        .and_then(|()| std::fs::write(out.join("cc.csv"), report::csv(&runs)))
    {
        eprintln!("bypass sim cc: writing {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    println!("\nwrote {}", out.join("cc.csv").display());
    if draw {
        let dir = plots.unwrap_or(out);
        if let Err(e) = std::fs::create_dir_all(&dir) {
            eprintln!("bypass sim cc: {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
        if !plot::has_labels() {
            println!(
                "font {} not found: plots drawn without labels",
                plot::FONT_PATH
            );
        }
        for (name, kind) in PLOTS {
            let sel: Vec<&Run> = runs.iter().filter(|r| r.scenario == name).collect();
            if sel.is_empty() {
                continue;
            }
            let path = dir.join(format!("cc-{name}-{kind}.png"));
            let res = if kind == "rates" {
                plot::rates(
                    &path,
                    &format!("{name}: per-flow rate (100 us bins)"),
                    &sel,
                    20,
                )
            } else {
                plot::queue(&path, &format!("{name}: queueing delay"), &sel)
            };
            match res {
                Ok(()) => println!("wrote {}", path.display()),
                Err(e) => {
                    eprintln!("bypass sim cc: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    ExitCode::SUCCESS
}
