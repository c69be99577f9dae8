#!/usr/bin/env python3
"""Writes the headline table of bench/README.md from the `bypass bench --json` runs kept under
bench/results/ (and the memif-vs-testpmd JSON that scripts/dpdk-bench.sh --json writes).

    scripts/headline.py            rewrite the table between the markers in bench/README.md
    scripts/headline.py --check    exit 1 when bench/README.md's table is not what the files give
    scripts/headline.py --print    print the table only

Each row comes from the newest run (by the date in its header) that has the cell, and shows
that run's same-run ratio against the best kernel transport (or dpdk-testpmd), the run's
cache-line floor, its command, date and commit. Nothing here is typed by hand: a row no
recorded run has is left out, and the table says so.
"""
import glob
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")
README = os.path.join(ROOT, "bench", "README.md")
BEGIN = "<!-- headline:begin (scripts/headline.py writes this table) -->"
END = "<!-- headline:end -->"


def load_runs():
    runs = []
    for path in sorted(glob.glob(os.path.join(RESULTS, "*.json"))):
        try:
            with open(path) as f:
                doc = json.load(f)
        except (OSError, ValueError) as e:
            print(f"headline: skipping {path}: {e}", file=sys.stderr)
            continue
        header = doc.get("header") or {}
        if not header.get("date_utc"):
            continue
        runs.append((header["date_utc"], os.path.relpath(path, os.path.dirname(README)), doc))
    runs.sort(key=lambda r: r[0], reverse=True)
    return runs


def us(ns):
    return f"{ns / 1000:.2f} us"


def floor_text(header):
    floor = header.get("cacheline_floor")
    if not floor:
        return "n/a"
    return f"{floor['p50_ns'] / 1000:.2f} us"


def command_text(header):
    cmd = header.get("command_line") or []
    if cmd and os.path.basename(cmd[0]) == "bypass":
        cmd = ["bypass"] + cmd[1:]
    return "`" + " ".join(cmd) + "`" if cmd else "n/a"


def run_cols(header, path):
    date = header.get("date_utc", "?").replace("T", " ")[:16]
    rev = header.get("git_rev", "unknown")
    return f"{floor_text(header)} | {command_text(header)} | {date} | {rev} | [json]({path})"


def ok(row):
    return row.get("status") == "ok"


def best_kernel(rows, pick, better):
    vals = [pick(r) for r in rows if ok(r) and r.get("transport", "").startswith("kernel-")]
    vals = [v for v in vals if v is not None]
    return better(vals) if vals else None


def pingpong_row(runs, size):
    for _, path, doc in runs:
        rows = [r for r in doc.get("pingpong", []) if r.get("size") == size]
        ours = [r for r in rows if r.get("transport") == "bypass-memif" and ok(r) and r.get("rtt")]
        if not ours:
            continue
        r = min(ours, key=lambda r: r["rtt"]["p50_ns"])
        k50 = best_kernel(rows, lambda x: (x.get("rtt") or {}).get("p50_ns"), min)
        k999 = best_kernel(rows, lambda x: (x.get("rtt") or {}).get("p99_9_ns"), min)
        fig = f"p50 {us(r['rtt']['p50_ns'])}, p99.9 {us(r['rtt']['p99_9_ns'])}"
        ratio = "n/a"
        if k50 and k999:
            ratio = (f"{r['rtt']['p50_ns'] / k50:.2f}x / {r['rtt']['p99_9_ns'] / k999:.2f}x "
                     f"(kernel p50 {us(k50)}, p99.9 {us(k999)})")
        return f"| {size} B round trip, memif ({r.get('variant')}) | {fig} | {ratio} | {run_cols(doc['header'], path)} |"
    return None


def stream_row(runs, size, what):
    for _, path, doc in runs:
        rows = [r for r in doc.get("stream", []) if r.get("size") == size and r.get("conns", 1) == 1]
        ours = [r for r in rows if r.get("transport") == "bypass-memif" and ok(r)]
        if not ours:
            continue
        r = max(ours, key=lambda r: r.get(what) or 0)
        k = best_kernel(rows, lambda x: x.get(what), max)
        if what == "gbps":
            fig = f"{r['gbps']:.1f} Gb/s"
            label = f"{size_text(size)} messages, one connection, memif"
        else:
            fig = f"{r['msgs_per_s'] / 1e6:.2f} M msg/s"
            label = f"{size_text(size)} messages/s, one connection, memif"
        ratio = f"{r[what] / k:.2f}x" if k else "n/a"
        return f"| {label} | {fig} | {ratio} | {run_cols(doc['header'], path)} |"
    return None


def testpmd_row():
    """scripts/dpdk-bench.sh --json: {"header": ..., "bypass_mpps", "testpmd_mpps"}."""
    best = None
    for path in glob.glob(os.path.join(RESULTS, "*.json")):
        try:
            with open(path) as f:
                doc = json.load(f)
        except (OSError, ValueError):
            continue
        if doc.get("kind") != "memif-vs-testpmd" or not doc.get("bypass_mpps") or not doc.get("testpmd_mpps"):
            continue
        date = (doc.get("header") or {}).get("date_utc", "")
        if best is None or date > best[0]:
            best = (date, os.path.relpath(path, os.path.dirname(README)), doc)
    if not best:
        return None
    _, path, doc = best
    fig = f"{doc['bypass_mpps']:.1f} Mpps"
    ratio = f"{doc['bypass_mpps'] / doc['testpmd_mpps']:.2f}x (testpmd {doc['testpmd_mpps']:.1f} Mpps)"
    return f"| {doc.get('what', '64 B frames over memif')} | {fig} | {ratio} | {run_cols(doc['header'], path)} |"


def size_text(n):
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20} MiB"
    if n >= 1024 and n % 1024 == 0:
        return f"{n >> 10} KiB"
    return f"{n} B"


def table():
    runs = load_runs()
    rows = [
        pingpong_row(runs, 64),
        stream_row(runs, 64, "msgs_per_s"),
        stream_row(runs, 1 << 20, "gbps"),
        testpmd_row(),
    ]
    out = [
        "| what | figure | same-run ratio (vs best kernel, or testpmd) | cache-line floor | command | date (UTC) | commit | run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    missing = [name for name, r in zip(
        ["64 B round trip", "64 B messages/s", "1 MiB Gb/s", "memif Mpps vs testpmd"], rows) if r is None]
    out += [r for r in rows if r]
    if missing:
        out.append("")
        out.append("No recorded JSON run has yet: " + ", ".join(missing) + ".")
    return "\n".join(out) + "\n"


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    t = table()
    if mode == "--print":
        sys.stdout.write(t)
        return 0
    with open(README) as f:
        text = f.read()
    if BEGIN not in text or END not in text:
        print(f"headline: {README} has no {BEGIN} ... {END} markers", file=sys.stderr)
        return 2
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = head + BEGIN + "\n" + t + END + tail
    if mode == "--check":
        if new != text:
            print("headline: bench/README.md's table is stale: run scripts/headline.py", file=sys.stderr)
            return 1
        return 0
    with open(README, "w") as f:
        f.write(new)
    print(f"headline: wrote {os.path.relpath(README, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
