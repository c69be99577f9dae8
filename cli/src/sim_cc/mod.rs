//! `bypass sim cc`: the congestion-control experiments of [`bypass::ccsim`] from the command
//! line: the table, the goal checks, a CSV ([`report`]) and PNG plots ([`plot`]).
pub mod plot;
pub mod report;

use std::path::PathBuf;
use std::process::ExitCode;

use bypass::ccsim::run_all_with;
use bypass::ccsim::scenario::{self, Cc, Run};
use clap::Args;

/// Plots drawn: (scenario, kind) with kind `queue` or `rates`.
const PLOTS: [(&str, &str); 5] = [
    ("join8-100g", "rates"),
    ("join8-100g", "queue"),
    ("incast64x64k-100g", "queue"),
    ("mixed60-100g", "queue"),
    ("noise5us-8flows-100g", "rates"),
];

/// Parses one controller name.
fn parse_cc(s: &str) -> Result<Cc, String> {
    Cc::parse(s.trim()).ok_or_else(|| {
        let names: Vec<&str> = Cc::ALL.iter().map(|c| c.name()).collect();
        format!("unknown controller {s} (known: {})", names.join(", "))
    })
}

/// The longer description of `bypass sim cc --help`.
pub const ABOUT: &str = "Runs the congestion-control experiments (virtual time, the real \
    controllers), prints the table and the goal checks, writes OUT/cc.csv and PNG plots.";

/// `bypass sim cc` options.
#[derive(Args, Debug)]
#[command(after_help = "controllers: swift+credit swift+ecn+credit swift cubic dctcp timely")]
pub struct SimCcArgs {
    /// The reduced scenario set (the one the snapshot test pins)
    #[arg(long)]
    pub quick: bool,
    /// Seed of every run
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
    /// Controllers, comma-separated [default: all]
    #[arg(long, value_name = "NAME,..", value_delimiter = ',', value_parser = parse_cc)]
    pub cc: Vec<Cc>,
    /// Only the scenarios whose name contains SUBSTR
    #[arg(long, value_name = "SUBSTR")]
    pub scenario: Option<String>,
    /// Bytes of a message the credit stacks send before a grant [default: one packet's
    /// payload, 4032]
    #[arg(long, value_name = "BYTES")]
    pub unscheduled: Option<u64>,
    /// Where cc.csv goes
    #[arg(long, value_name = "DIR", default_value = "target/ccsim")]
    pub out: PathBuf,
    /// Where the PNG plots go [default: the --out directory]
    #[arg(long, value_name = "DIR")]
    pub plots: Option<PathBuf>,
    /// Draw no plots
    #[arg(long)]
    pub no_plots: bool,
}

/// `bypass sim cc`: run the experiments, print the table, write CSV and plots.
pub fn main(a: &SimCcArgs) -> ExitCode {
    let ccs: Vec<Cc> = if a.cc.is_empty() {
        Cc::ALL.to_vec()
    } else {
        a.cc.clone()
    };
    let seed = a.seed;
    let mut scenarios = if a.quick {
        scenario::reduced()
    } else {
        scenario::all()
    };
    if let Some(f) = &a.scenario {
        scenarios.retain(|s| s.name.contains(f.as_str()));
    }
    let t0 = std::time::Instant::now();
    let runs = run_all_with(&scenarios, &ccs, seed, a.unscheduled);
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
    let out = &a.out;
    if let Err(e) = std::fs::create_dir_all(out)
        .and_then(|()| std::fs::write(out.join("cc.csv"), report::csv(&runs)))
    {
        eprintln!("bypass sim cc: writing {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    println!("\nwrote {}", out.join("cc.csv").display());
    if a.no_plots {
        return ExitCode::SUCCESS;
    }
    let dir = a.plots.as_ref().unwrap_or(out);
    if let Err(e) = std::fs::create_dir_all(dir) {
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
    ExitCode::SUCCESS
}
