//! PNG plots of a `bypass bench` run (`--plot DIR`, or `bypass bench plot RUN.json DIR` from
//! a saved `--json` run): one line per transport and variant, the bypass transports drawn
//! thick beside the kernel's thin ones; each point the median over the rounds, a vertical bar
//! its min-max.
//!
//! - `pingpong_latency.png`: round-trip p50, p99 and p99.9 (us, log scale) per message size;
//! - `stream_throughput.png`: Gb/s of payload (log scale) per message size, one panel per
//!   connection count;
//! - `rpc_latency.png`: p50 and p99 latency (us, log scale) per offered rate.
//!
//! Text uses the font of `bypass sim cc`'s plots ([`crate::sim_cc::plot::FONT_PATH`]); without
//! it the plots are drawn without labels.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use plotters::prelude::*;

use super::report::{self, Latency, Report, Status};

const USAGE: &str = "usage: bypass bench plot RUN.json DIR
  Writes PNG plots of a saved `bypass bench --json` run into DIR (created if missing).";

/// `bypass bench plot ARGS`.
pub fn main(args: &[String]) -> ExitCode {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let [run, dir] = args else {
        eprintln!("bypass bench plot: expected a run and a directory\n{USAGE}");
        return ExitCode::from(2);
    };
    let report = match super::compare::load(run) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("bypass bench plot: {e}");
            return ExitCode::from(2);
        }
    };
    match write_all(&report, Path::new(dir)) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bypass bench plot: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes the plots of every mode the report has into `dir`; returns the files written.
pub fn write_all(r: &Report, dir: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let labels = crate::sim_cc::plot::has_labels();
    let sub = subtitle(r);
    let mut files = Vec::new();
    if !r.pingpong.is_empty() {
        let path = dir.join("pingpong_latency.png");
        let rows: Vec<(String, bool, usize, Vec<&Latency>)> = r
            .pingpong
            .iter()
            .filter(|x| x.key.status == Status::Ok)
            .map(|x| {
                (
                    series_name(&x.key),
                    x.key.baseline,
                    x.key.size,
                    x.rounds.iter().filter_map(|k| k.rtt.as_ref()).collect(),
                )
            })
            .collect();
        let sizes = distinct(rows.iter().map(|x| x.2));
        let panels: Vec<Panel> = [
            ("p50", (|l: &Latency| l.p50_ns) as fn(&Latency) -> u64),
            ("p99", |l: &Latency| l.p99_ns),
            ("p99.9", |l: &Latency| l.p99_9_ns),
        ]
        .into_iter()
        .map(|(name, f)| Panel {
            caption: format!("{name} round trip"),
            series: group(rows.iter().map(|(s, b, size, lat)| {
                let x = sizes.iter().position(|v| v == size).unwrap_or(0);
                let vals = lat.iter().map(|l| f(l) as f64 / 1e3).collect();
                (s.clone(), *b, x, vals)
            })),
        })
        .collect();
        draw(
            &path,
            &format!("bypass bench pingpong: round-trip time per message size{sub}"),
            &sizes.iter().map(|&s| report::size(s)).collect::<Vec<_>>(),
            "message size (bytes)",
            "round trip (us, log scale)",
            &panels,
            labels,
        )?;
        files.push(path);
    }
    if !r.stream.is_empty() {
        let path = dir.join("stream_throughput.png");
        let ok: Vec<_> = r
            .stream
            .iter()
            .filter(|x| x.key.status == Status::Ok)
            .collect();
        let sizes = distinct(ok.iter().map(|x| x.key.size));
        let conns = distinct(ok.iter().map(|x| x.conns));
        let panels: Vec<Panel> = conns
            .iter()
            .map(|&n| Panel {
                caption: format!("{n} connection{}", if n == 1 { "" } else { "s" }),
                series: group(ok.iter().filter(|x| x.conns == n).map(|x| {
                    let i = sizes.iter().position(|v| *v == x.key.size).unwrap_or(0);
                    let vals = x.rounds.iter().filter_map(|k| k.gbps).collect();
                    (series_name(&x.key), x.key.baseline, i, vals)
                })),
            })
            .collect();
        draw(
            &path,
            &format!("bypass bench stream: one-way payload throughput{sub}"),
            &sizes.iter().map(|&s| report::size(s)).collect::<Vec<_>>(),
            "message size (bytes)",
            "throughput (Gb/s of payload, log scale)",
            &panels,
            labels,
        )?;
        files.push(path);
    }
    if !r.rpc.is_empty() {
        let path = dir.join("rpc_latency.png");
        let ok: Vec<_> = r
            .rpc
            .iter()
            .filter(|x| x.key.status == Status::Ok)
            .collect();
        let mut rates: Vec<f64> = Vec::new();
        for x in &ok {
            if !rates.contains(&x.offered_per_s) {
                rates.push(x.offered_per_s);
            }
        }
        rates.sort_by(f64::total_cmp);
        let panels: Vec<Panel> = [
            ("p50", (|l: &Latency| l.p50_ns) as fn(&Latency) -> u64),
            ("p99", |l: &Latency| l.p99_ns),
        ]
        .into_iter()
        .map(|(name, f)| Panel {
            caption: format!("{name} latency from the scheduled send"),
            series: group(ok.iter().map(|x| {
                let i = rates
                    .iter()
                    .position(|v| *v == x.offered_per_s)
                    .unwrap_or(0);
                let vals = x
                    .rounds
                    .iter()
                    .filter_map(|k| k.latency.as_ref())
                    .map(|l| f(l) as f64 / 1e3)
                    .collect();
                (series_name(&x.key), x.key.baseline, i, vals)
            })),
        })
        .collect();
        draw(
            &path,
            &format!(
                "bypass bench rpc: open-loop latency per offered load ({} B){sub}",
                ok.first().map_or(0, |x| x.key.size)
            ),
            &rates.iter().map(|&r| rate(r)).collect::<Vec<_>>(),
            "offered load (requests/s)",
            "latency (us, log scale)",
            &panels,
            labels,
        )?;
        files.push(path);
    }
    Ok(files)
}

fn subtitle(r: &Report) -> String {
    let rounds = if r.rounds > 1 {
        format!(", median of {} rounds, bars min-max", r.rounds)
    } else {
        String::new()
    };
    match &r.header {
        Some(h) => format!(
            "\n{} rev {}, {} CPUs, packet memory {}{rounds}",
            h.date_utc, h.git_rev, h.cpus, h.hugepages.packet_memory
        ),
        None => rounds,
    }
}

fn rate(r: f64) -> String {
    if r >= 1e6 && (r / 1e6).fract() == 0.0 {
        format!("{}M", r / 1e6)
    } else if r >= 1e3 && (r / 1e3).fract() == 0.0 {
        format!("{}k", r / 1e3)
    } else {
        format!("{r:.0}")
    }
}

fn series_name(k: &report::Key) -> String {
    format!("{} {}", k.transport, k.variant)
}

fn distinct(v: impl Iterator<Item = usize>) -> Vec<usize> {
    let mut out: Vec<usize> = v.collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// One line of a panel: its points `(x index, values over rounds)`.
struct Series {
    name: String,
    baseline: bool,
    points: Vec<(usize, Vec<f64>)>,
}

struct Panel {
    caption: String,
    series: Vec<Series>,
}

/// Groups `(series, baseline, x, values)` into series, in order of first appearance.
fn group(items: impl Iterator<Item = (String, bool, usize, Vec<f64>)>) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    for (name, baseline, x, vals) in items {
        // A median of 0 (a stream cell that moved nothing) has no place on a log scale.
        if report::median(&vals).is_none_or(|m| m <= 0.0) {
            continue;
        }
        match out.iter_mut().find(|s| s.name == name) {
            Some(s) => s.points.push((x, vals)),
            None => out.push(Series {
                name,
                baseline,
                points: vec![(x, vals)],
            }),
        }
    }
    out
}

/// Where a series comes in legends: transports in `TRANSPORTS` order, busy-poll first.
fn order(name: &str) -> usize {
    let i = super::TRANSPORTS
        .iter()
        .position(|(t, _)| name.starts_with(&format!("{t} ")))
        .unwrap_or(super::TRANSPORTS.len());
    2 * i + usize::from(name.ends_with("blocking"))
}

/// Colours by series name, the same in every panel and plot of a run.
fn colour(name: &str) -> RGBColor {
    const COLOURS: [RGBColor; 8] = [
        RGBColor(0xd6, 0x27, 0x28), // red
        RGBColor(0x1f, 0x77, 0xb4), // blue
        RGBColor(0x2c, 0xa0, 0x2c), // green
        RGBColor(0xff, 0x7f, 0x0e), // orange
        RGBColor(0x94, 0x67, 0xbd), // purple
        RGBColor(0x8c, 0x56, 0x4b), // brown
        RGBColor(0xe3, 0x77, 0xc2), // pink
        RGBColor(0x17, 0xbe, 0xcf), // cyan
    ];
    COLOURS[order(name) % COLOURS.len()]
}

/// A y axis in log10 of the values, with fixed ticks and minor grid lines.
struct Log10Axis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
    minor: Vec<f64>,
}

impl Ranged for Log10Axis {
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let f = (v - self.lo) / (self.hi - self.lo);
        limit.0 + (f * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<H: plotters::coord::ranged1d::KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.minor.clone()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

/// Ticks (log10 of 1, 2 and 5 times each power of ten; only the powers of ten over more than
/// four decades) and minor grid lines (log10 of 1..9 times each power) between `lo` and `hi`.
fn log_ticks(lo: f64, hi: f64) -> (Vec<f64>, Vec<f64>) {
    let (d0, d1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let marks: &[f64] = if d1 - d0 > 4 {
        &[1.0]
    } else {
        &[1.0, 2.0, 5.0]
    };
    let (mut ticks, mut minor) = (Vec::new(), Vec::new());
    for d in d0..=d1 {
        let p = 10f64.powi(d);
        for m in 1..10 {
            let v = f64::from(m) * p;
            if v < lo || v > hi {
                continue;
            }
            if marks.contains(&f64::from(m)) {
                ticks.push(v.log10());
            } else {
                minor.push(v.log10());
            }
        }
    }
    (ticks, minor)
}

/// Draws `panels` side by side, sharing the x categories `xs`.
fn draw(
    path: &Path,
    title: &str,
    xs: &[String],
    x_desc: &str,
    y_desc: &str,
    panels: &[Panel],
    labels: bool,
) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Display| format!("drawing {}: {e}", path.display());
    let n = panels.len().max(1) as u32;
    let root = BitMapBackend::new(path, (560 * n, 620)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let root = if labels {
        // Two title lines (the plot; the run: date, revision, machine, rounds), then the
        // legend, outside the panels so it hides no point: one entry per series, in the
        // order of `TRANSPORTS`, wrapped to the width.
        let mut names: Vec<(&str, bool)> = Vec::new();
        for s in panels.iter().flat_map(|p| &p.series) {
            if !names.iter().any(|(n, _)| *n == s.name) {
                names.push((&s.name, s.baseline));
            }
        }
        names.sort_by_key(|(n, _)| order(n));
        let item_w = |n: &str| 36 + 9 * n.len() as i32 + 28;
        let mut place = Vec::new();
        let (mut x, mut y) = (12, 76);
        for (name, baseline) in names {
            if x > 12 && x + item_w(name) > (560 * n) as i32 {
                (x, y) = (12, y + 26);
            }
            place.push((name, baseline, x, y));
            x += item_w(name);
        }
        let (top, rest) = root.split_vertically(y as u32 + 20);
        let mut lines = title.lines();
        top.draw(&Text::new(
            lines.next().unwrap_or_default().to_owned(),
            (12, 8),
            ("sans-serif", 22).into_font(),
        ))
        .map_err(|x| e(&x))?;
        if let Some(l) = lines.next() {
            top.draw(&Text::new(
                l.to_owned(),
                (12, 38),
                ("sans-serif", 15).into_font().color(&RGBColor(80, 80, 80)),
            ))
            .map_err(|x| e(&x))?;
        }
        for (name, baseline, x, y) in place {
            let c = colour(name);
            let width = if baseline { 1 } else { 3 };
            top.draw(&PathElement::new(
                vec![(x, y), (x + 28, y)],
                ShapeStyle::from(&c).stroke_width(width),
            ))
            .map_err(|x| e(&x))?;
            top.draw(&Circle::new((x + 14, y), 3 + width, c.filled()))
                .map_err(|x| e(&x))?;
            top.draw(&Text::new(
                name.to_owned(),
                (x + 36, y - 8),
                ("sans-serif", 15).into_font(),
            ))
            .map_err(|x| e(&x))?;
        }
        rest
    } else {
        root
    };
    let areas = root.split_evenly((1, panels.len().max(1)));
    for (area, p) in areas.iter().zip(panels) {
        let all: Vec<f64> = p
            .series
            .iter()
            .flat_map(|s| s.points.iter().flat_map(|(_, v)| v.iter().copied()))
            .filter(|v| *v > 0.0)
            .collect();
        let (lo, hi) = report::range(&all).unwrap_or((1.0, 10.0));
        let (y_lo, y_hi) = (lo / 1.6, hi * 1.6);
        // The y axis is log10 of the value on a linear axis, ticks at 1-2-5 of each decade
        // (plotters' own log axis leaves some decades unlabelled and crowds others).
        let (l_lo, l_hi) = (y_lo.log10(), y_hi.log10());
        let (ticks, minor) = log_ticks(y_lo, y_hi);
        let x_max = xs.len().max(1) as f64 - 0.5;
        let mut b = ChartBuilder::on(area);
        b.margin(12);
        if labels {
            b.caption(&p.caption, ("sans-serif", 17))
                .x_label_area_size(48)
                .y_label_area_size(72);
        }
        let mut chart = b
            .build_cartesian_2d(
                -0.5f64..x_max,
                Log10Axis {
                    lo: l_lo,
                    hi: l_hi,
                    ticks,
                    minor,
                },
            )
            .map_err(|x| e(&x))?;
        if labels {
            let fmt_x = |x: &f64| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    xs.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            };
            let fmt_y = |l: &f64| {
                let y = &10f64.powf(*l);
                if *y >= 10.0 {
                    format!("{y:.0}")
                } else if *y >= 1.0 {
                    format!("{y:.1}")
                } else {
                    format!("{y:.2}")
                }
            };
            chart
                .configure_mesh()
                .x_desc(x_desc)
                .y_desc(y_desc)
                .x_labels(xs.len() + 1)
                .x_label_formatter(&fmt_x)
                .y_label_formatter(&fmt_y)
                .label_style(("sans-serif", 13))
                .axis_desc_style(("sans-serif", 14))
                .light_line_style(RGBColor(235, 235, 235))
                .draw()
                .map_err(|x| e(&x))?;
        }
        let m = p.series.len().max(1) as f64;
        for (j, s) in p.series.iter().enumerate() {
            let c = colour(&s.name);
            let width = if s.baseline { 1 } else { 3 };
            // Side by side within a category, so the min-max bars do not hide each other.
            let dx = (j as f64 - (m - 1.0) / 2.0) * 0.06;
            let pts: Vec<(f64, f64, f64, f64)> = s
                .points
                .iter()
                .filter_map(|(x, v)| {
                    let (lo, hi) = report::range(v)?;
                    // A round of 0 draws its bar to the bottom of the axis.
                    Some((
                        *x as f64 + dx,
                        report::median(v)?.log10(),
                        lo.max(y_lo).log10(),
                        hi.log10(),
                    ))
                })
                .collect();
            let style = ShapeStyle::from(&c).stroke_width(width);
            chart
                .draw_series(LineSeries::new(pts.iter().map(|p| (p.0, p.1)), style))
                .map_err(|x| e(&x))?;
            chart
                .draw_series(
                    pts.iter()
                        .map(|p| Circle::new((p.0, p.1), 3 + width, c.filled())),
                )
                .map_err(|x| e(&x))?;
            chart
                .draw_series(
                    pts.iter()
                        .filter(|p| p.3 > p.2)
                        .map(|p| PathElement::new(vec![(p.0, p.2), (p.0, p.3)], c.stroke_width(2))),
                )
                .map_err(|x| e(&x))?;
        }
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::{Key, PingpongRound, PingpongRow, StreamRound, StreamRow};

    fn key(t: &str, v: &str, baseline: bool, size: usize) -> Key {
        Key {
            transport: t.into(),
            variant: v.into(),
            baseline,
            size,
            status: Status::Ok,
            note: None,
        }
    }

    #[test]
    fn plots_are_pngs_of_every_mode_run() {
        let mut h = crate::bench::modes::new_histogram();
        for v in 1..1000u64 {
            h.record(1000 + v).unwrap();
        }
        let pp = |t: &str, v: &str, b: bool, size: usize| PingpongRow {
            key: key(t, v, b, size),
            rtt: None,
            ratio_p50_to_best_kernel: None,
            rounds: vec![PingpongRound::ok(h.clone()).unwrap()],
        };
        let st = |t: &str, b: bool, size: usize| StreamRow {
            key: key(t, "busy-poll", b, size),
            conns: 1,
            gbps: None,
            msgs_per_s: None,
            sent_msgs: 0,
            recv_msgs: 0,
            delivered: None,
            ratio_gbps_to_best_kernel: None,
            rounds: vec![StreamRound {
                status: Status::Ok,
                note: None,
                gbps: Some(size as f64 / 100.0),
                ..StreamRound::error(String::new())
            }],
        };
        let mut r = Report {
            rounds: 1,
            pingpong: vec![
                pp("bypass-memif", "busy-poll", false, 64),
                pp("kernel-udp", "blocking", true, 64),
                pp("bypass-memif", "busy-poll", false, 1024),
            ],
            stream: vec![st("bypass-memif", false, 64), st("kernel-tcp", true, 64)],
            ..Report::default()
        };
        r.finish();
        let dir = std::env::temp_dir().join(format!("bypass-plot-unit-{}", std::process::id()));
        let files = write_all(&r, &dir).unwrap();
        assert_eq!(files.len(), 2);
        for f in &files {
            let b = std::fs::read(f).unwrap();
            assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "{}", f.display());
            assert!(b.len() > 2000, "{} is {} bytes", f.display(), b.len());
        }
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            colour("bypass-memif busy-poll"),
            colour("bypass-memif busy-poll")
        );
        assert_ne!(
            colour("kernel-udp blocking"),
            colour("kernel-udp busy-poll")
        );
        assert_eq!(rate(10e3), "10k");
        let (t, m) = log_ticks(1.5, 90.0);
        let t: Vec<f64> = t
            .iter()
            .map(|l| (10f64.powf(*l) * 100.0).round() / 100.0)
            .collect();
        assert_eq!(t, [2.0, 5.0, 10.0, 20.0, 50.0]);
        // 3, 4, 6, 7, 8, 9 and 30, 40, 60, 70, 80, 90.
        assert_eq!(m.len(), 12);
        assert_eq!(rate(1.5e6), "1500k");
    }
}
