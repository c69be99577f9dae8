//! PNG plots of the runs: queue over time and per-flow rate over time, one panel per
//! controller. Text uses DejaVu Sans (Debian's `fonts-dejavu-core`) when the font file is
//! present; without it the plots are drawn without labels.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;

use bypass::ccsim::scenario::Run;

/// Where the font is looked for.
pub const FONT_PATH: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Why a plot could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The drawing backend failed (file not writable, encoder error).
    #[error("drawing {path}: {msg}")]
    Draw {
        /// The file being drawn.
        path: PathBuf,
        /// The backend's message.
        msg: String,
    },
}

/// Register the font once; true if labels can be drawn.
fn fonts() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let Ok(bytes) = std::fs::read(FONT_PATH) else {
            return false;
        };
        // The font must live as long as the process: leak it once.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
    })
}

/// Whether plots carry text (the font was found).
pub fn has_labels() -> bool {
    fonts()
}

fn err<E: std::fmt::Display>(path: &Path) -> impl FnOnce(E) -> PlotError + '_ {
    move |e| PlotError::Draw {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

/// Keep at most `n` points by taking the maximum of each group (so spikes stay visible).
fn downsample(points: &[(f64, f64)], n: usize) -> Vec<(f64, f64)> {
    if points.len() <= n {
        return points.to_vec();
    }
    let k = points.len().div_ceil(n);
    points
        .chunks(k)
        .map(|c| {
            let y = c.iter().map(|p| p.1).fold(f64::MIN, f64::max);
            (c[0].0, y)
        })
        .collect()
}

/// Queueing delay (us, from the highest queue in each trace bin) over time, one panel per
/// run, into `path`.
pub fn queue(path: &Path, title: &str, runs: &[&Run]) -> Result<(), PlotError> {
    queue_with(path, title, runs, fonts())
}

fn queue_with(path: &Path, title: &str, runs: &[&Run], labels: bool) -> Result<(), PlotError> {
    let root = BitMapBackend::new(path, (720, 125 * runs.len() as u32 + 30)).into_drawing_area();
    root.fill(&WHITE).map_err(err(path))?;
    let root = if labels {
        root.titled(title, ("sans-serif", 18)).map_err(err(path))?
    } else {
        root
    };
    let panels = root.split_evenly((runs.len(), 1));
    for (area, run) in panels.iter().zip(runs) {
        let bin_ms = run.trace_bin.as_secs_f64() * 1e3;
        let pts: Vec<(f64, f64)> = run
            .queue_trace
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                (
                    i as f64 * bin_ms,
                    b as f64 * 8.0 / run.rate_bps as f64 * 1e6,
                )
            })
            .collect();
        let pts = downsample(&pts, 500);
        let tmax = pts.last().map_or(1.0, |p| p.0).max(1e-3);
        let ymax = pts.iter().map(|p| p.1).fold(1.0, f64::max) * 1.05;
        let mut b = ChartBuilder::on(area);
        b.margin(6);
        if labels {
            b.caption(run.cc.name(), ("sans-serif", 14))
                .x_label_area_size(28)
                .y_label_area_size(48);
        }
        let mut chart = b
            .build_cartesian_2d(0f64..tmax, 0f64..ymax)
            .map_err(err(path))?;
        if labels {
            chart
                .configure_mesh()
                .x_desc("time (ms)")
                .y_desc("queue (us)")
                .label_style(("sans-serif", 11))
                .light_line_style(WHITE)
                .x_labels(6)
                .y_labels(4)
                .draw()
                .map_err(err(path))?;
        }
        chart
            .draw_series(LineSeries::new(pts, &BLUE))
            .map_err(err(path))?;
    }
    root.present().map_err(err(path))?;
    Ok(())
}

/// Per-flow delivery rate (Gb/s, averaged over `smooth` trace bins) over time, one panel per
/// run, into `path`.
pub fn rates(path: &Path, title: &str, runs: &[&Run], smooth: usize) -> Result<(), PlotError> {
    rates_with(path, title, runs, smooth, fonts())
}

fn rates_with(
    path: &Path,
    title: &str,
    runs: &[&Run],
    smooth: usize,
    labels: bool,
) -> Result<(), PlotError> {
    let root = BitMapBackend::new(path, (720, 125 * runs.len() as u32 + 30)).into_drawing_area();
    root.fill(&WHITE).map_err(err(path))?;
    let root = if labels {
        root.titled(title, ("sans-serif", 18)).map_err(err(path))?
    } else {
        root
    };
    let panels = root.split_evenly((runs.len(), 1));
    let smooth = smooth.max(1);
    for (area, run) in panels.iter().zip(runs) {
        let bin_s = run.trace_bin.as_secs_f64();
        let line_gbps = run.rate_bps as f64 / 1e9;
        let len = run.flow_trace.iter().map(Vec::len).max().unwrap_or(0);
        let tmax = (len as f64 * bin_s * 1e3).max(1e-3);
        let mut b = ChartBuilder::on(area);
        b.margin(6);
        if labels {
            b.caption(run.cc.name(), ("sans-serif", 14))
                .x_label_area_size(28)
                .y_label_area_size(48);
        }
        let mut chart = b
            .build_cartesian_2d(0f64..tmax, 0f64..line_gbps * 1.05)
            .map_err(err(path))?;
        if labels {
            chart
                .configure_mesh()
                .x_desc("time (ms)")
                .y_desc("rate (Gb/s)")
                .label_style(("sans-serif", 11))
                .light_line_style(WHITE)
                .x_labels(6)
                .y_labels(4)
                .draw()
                .map_err(err(path))?;
        }
        for (i, tr) in run.flow_trace.iter().enumerate() {
            // At most ~400 points per flow.
            let step = smooth.max(tr.len().div_ceil(400));
            let pts: Vec<(f64, f64)> = tr
                .chunks(step)
                .enumerate()
                .map(|(k, c)| {
                    let bytes: f64 = c.iter().map(|&x| x as f64).sum();
                    let t = (k * step) as f64 * bin_s;
                    (t * 1e3, bytes * 8.0 / (c.len() as f64 * bin_s) / 1e9)
                })
                .collect();
            chart
                .draw_series(LineSeries::new(pts, &Palette99::pick(i)))
                .map_err(err(path))?;
        }
    }
    root.present().map_err(err(path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bypass::ccsim::scenario::{self, Cc, Workload};
    use std::time::Duration;

    #[test]
    fn draws_pngs_with_and_without_labels() {
        let mut s = scenario::reduced().remove(0);
        s.workload = Workload::Join {
            flows: 2,
            interval: Duration::from_micros(200),
        };
        let run = scenario::run(&s, Cc::Swift, 1);
        let dir = std::env::temp_dir().join(format!("bypass-plot-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut variants = vec![false];
        if fonts() {
            variants.push(true);
        } else {
            println!("{FONT_PATH} absent: only the unlabelled variant is drawn");
        }
        for labels in variants {
            let q = dir.join(format!("q-{labels}.png"));
            let r = dir.join(format!("r-{labels}.png"));
            queue_with(&q, "t", &[&run], labels).unwrap();
            rates_with(&r, "t", &[&run], 4, labels).unwrap();
            for p in [&q, &r] {
                let bytes = std::fs::read(p).unwrap();
                assert_eq!(&bytes[1..4], b"PNG", "{} is a PNG", p.display());
            }
        }
        let bad = dir.join("no-such-dir").join("x.png");
        assert!(queue_with(&bad, "t", &[&run], false).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
