#!/usr/bin/env python3
"""Draws docs/img/architecture.svg: the layers of bypass with the dependencies that exist
between them, and the path of one packet through them.

    scripts/arch-diagram.py            write docs/img/architecture.svg and the dependency
                                       block of docs/ARCHITECTURE.md (between its markers)
    scripts/arch-diagram.py --check    exit 1 when either is not what the code gives
    scripts/arch-diagram.py --print    print the edges found, one `from -> to` a line

The arrows are not typed by hand: each is a `crate::X` path (a `use` or an inline path) in the
non-test code of src/<layer>/ (or src/<layer>.rs), and, for the crates in front of the library
(capi/, python/, cli/), a `bypass_core::X` / `bypass::X` path in their src/. Comments are
skipped; code behind `#[cfg(test)]` or `#[cfg(feature = "testing")]` (a test module, the
`proto::testing` harness) counts as test-only and is drawn dashed. A module the code gains or
loses shows up here on the next run, and `--check` (a scripts/test.sh step) fails until the
SVG and the list are regenerated. The packet path (right) names functions; the script checks that each
still exists in the file it names.

Python 3 standard library only: the SVG is written by hand.
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "src")
OUT = os.path.join(ROOT, "docs", "img", "architecture.svg")
DOC = os.path.join(ROOT, "docs", "ARCHITECTURE.md")
BEGIN = "<!-- deps:begin (scripts/arch-diagram.py writes this block) -->"
END = "<!-- deps:end -->"

# The library's layers, one line each in the boxes (what the module owns).
LAYERS = {
    "socket": "Stack, Listener, Socket",
    "runtime": "poll loop: Port <-> transport",
    "ccsim": "CC simulator",
    "proto": "sans-IO Endpoint, Connection",
    "wire": "header views",
    "pmd": "trait Port: memif, dpdk, sim",
    "telemetry": "counters, histograms",
    "mem": "Region, Pool, PktBuf",
    "time": "Instant, Clock",
    "rng": "seeded generators",
}
# Where a layer sits across its row (0 = left); rows come from the dependencies.
COLUMN = {
    "socket": 1.6, "ccsim": 3.9,
    "runtime": 0.6, "proto": 2.6,
    "pmd": 1.0, "wire": 2.3, "telemetry": 3.6,
    "time": 0.2, "mem": 1.9, "rng": 3.5,
}
# Crates in front of the library: (name, folder, how they name the library, caption).
FRONT = [
    ("capi", "capi/src", "bypass_core", "C ABI, bypass.h"),
    ("python", "python/src", "bypass", "pyo3 package"),
    ("cli", "cli/src", "bypass", "the `bypass` binary"),
]
FRONT_COLUMN = {"capi": 0.3, "python": 1.95, "cli": 3.6}

COLOR = {
    "front": "#e8e8e8",
    "socket": "#cfe3f7", "runtime": "#d5ecd4", "proto": "#fbe3c2", "wire": "#f6d5d5",
    "pmd": "#e2d7f0", "mem": "#f3efc6", "telemetry": "#dcdcdc", "ccsim": "#fbe3c2",
    "time": "#e6e6e6", "rng": "#e6e6e6",
}

# One received DATA frame, then the send path back: (layer, step, file that holds the name).
RX_PATH = [
    ("pmd", "memif ring: MemifPort::rx_burst reads a descriptor naming a slot of the "
     "client's Pool region", "src/pmd/memif/port.rs", "fn rx_burst"),
    ("mem", "PktBuf over that slot (no copy); slot returns to the pool on drop",
     "src/mem/pktbuf.rs", "pub struct PktBuf"),
    ("runtime", "Runtime::poll_rx: Port::rx_burst into a reused Vec<PktBuf>",
     "src/runtime/mod.rs", "pub fn poll_rx"),
    ("runtime", "net::Net::handle_frame: Ethernet -> IPv4 -> UDP (smoltcp views), "
     "buffer advanced to the UDP payload", "src/runtime/net/ethernet.rs", "fn handle_frame"),
    ("socket", "UdpHandler::on_datagram (the stack's Transport)",
     "src/runtime/mod.rs", "fn on_datagram"),
    ("proto", "Endpoint::handle_rx(now, ..): demux by connection id (wire::transport)",
     "src/proto/endpoint.rs", "pub fn handle_rx"),
    ("proto", "Connection::handle_packet: ack state, placement -> RecvMsg "
     "(one-packet message: PktBytes over the same slot)",
     "src/proto/connection/mod.rs", "fn handle_packet"),
    ("socket", "Socket::recv_msg -> Connection::poll_recv -> the application",
     "src/socket", "fn recv_msg"),
]
TX_PATH = [
    ("socket", "Socket::send_bytes(Bytes) -> Connection::send (queued)",
     "src/proto/connection/send.rs", "pub fn send"),
    ("socket", "UdpHandler::on_poll: a buffer from Io::alloc_tx (the port's pool)",
     "src/runtime/mod.rs", "fn on_poll"),
    ("proto", "Endpoint::poll_transmit_ex(now, buf): header + payload, cc and pacing decide",
     "src/proto/endpoint.rs", "pub fn poll_transmit_ex"),
    ("runtime", "Net::send_udp: UDP/IPv4/Ethernet into the headroom, ARP next hop, tx queue",
     "src/runtime/net/udp.rs", "pub fn send_udp"),
    ("pmd", "Runtime flush: Port::tx_burst posts the slot to the memif ring",
     "src/runtime/mod.rs", "fn flush"),
]


# ---- reading the code ---------------------------------------------------------------------

def strip_comments(text):
    """Rust source without comments; string literals are kept (a `crate::` inside one is rare
    and would only add an arrow, which a reader of the code would see)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


CFG = re.compile(r"#\[cfg\((.*?)\)\]\s*", re.S)


def is_test_cfg(cond):
    terms = re.sub(r"\b(any|all)\(|\)", " ", cond).replace(",", " ")
    terms = re.sub(r'feature\s*=\s*"testing"', "testing", terms).split()
    return bool(terms) and all(t in ("test", "testing") for t in terms)


def item_end(code, i):
    """Index just past the item starting at i: to its `;` or its matching `}`."""
    depth = 0
    while i < len(code):
        c = code[i]
        if c == ";" and depth == 0:
            return i + 1
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return i


def split_test(code):
    """(code outside test-only items, code of test-only items, names of test-only `mod x;`)."""
    live, test, test_mods = [], [], []
    pos = 0
    for m in CFG.finditer(code):
        if m.start() < pos or not is_test_cfg(m.group(1)):
            continue
        start = m.end()
        while code.startswith("#[", start):  # further attributes on the same item
            start = code.find("]", start) + 1
            while start < len(code) and code[start].isspace():
                start += 1
        end = item_end(code, start)
        item = code[start:end]
        decl = re.match(r"(pub(\([^)]*\))?\s+)?mod\s+(\w+)\s*;", item)
        if decl:
            test_mods.append(decl.group(3))
        live.append(code[pos:m.start()])
        test.append(item)
        pos = end
    live.append(code[pos:])
    return "".join(live), "".join(test), test_mods


def child_file(path, name):
    base = os.path.dirname(path)
    stem = os.path.splitext(os.path.basename(path))[0]
    if stem not in ("mod", "lib", "main"):
        base = os.path.join(base, stem)
    for cand in (os.path.join(base, name + ".rs"), os.path.join(base, name, "mod.rs")):
        if os.path.exists(cand):
            return cand
    return None


def rust_files(path):
    if os.path.isfile(path):
        return [path]
    found = []
    for d, _, files in os.walk(path):
        found += [os.path.join(d, f) for f in files if f.endswith(".rs")]
    return sorted(found)


def paths_in(code, prefix):
    """Top-level module names reached by `prefix::X` or `prefix::{X::.., Y}` in code."""
    names = set(re.findall(r"(?<![\w$])\$?" + prefix + r"::([a-z_][a-z0-9_]*)", code))
    for m in re.finditer(r"(?<![\w$])\$?" + prefix + r"::\{", code):
        depth, i, items, cur = 1, m.end(), [], ""
        while i < len(code) and depth:
            c = code[i]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
            if depth == 1 and c == ",":
                items.append(cur)
                cur = ""
            elif depth >= 1:
                cur += c
            i += 1
        items.append(cur)
        for it in items:
            w = re.match(r"\s*([a-z_][a-z0-9_]*)", it)
            if w:
                names.add(w.group(1))
    return names


def scan(paths, prefix):
    """(uses in live code, uses in test-only code) of the files under paths."""
    files = []
    for p in paths:
        files += rust_files(p)
    parsed = {}
    for path in files:
        with open(path, encoding="utf-8") as f:
            parsed[path] = split_test(strip_comments(f.read()))
    test_files = set()  # files of modules declared behind a test cfg (`#[cfg(test)] mod x;`)
    for path, (_, _, test_mods) in parsed.items():
        for name in test_mods:
            child = child_file(path, name)
            if child:
                test_files.update(rust_files(os.path.dirname(child)
                                             if child.endswith("mod.rs") else child))
    live_uses, test_uses = set(), set()
    for path, (live, test, _) in parsed.items():
        if path in test_files:
            test_uses |= paths_in(live + test, prefix)
        else:
            live_uses |= paths_in(live, prefix)
            test_uses |= paths_in(test, prefix)
    return live_uses, test_uses - live_uses


def layer_paths(name):
    return [p for p in (os.path.join(SRC, name), os.path.join(SRC, name + ".rs"))
            if os.path.exists(p)]


def macros():
    """Exported macros (`crate::name!`) and the layer that defines them."""
    owner = {}
    for layer in LAYERS:
        for p in layer_paths(layer):
            for path in rust_files(p):
                with open(path, encoding="utf-8") as f:
                    for m in re.finditer(r"#\[macro_export\]\s*macro_rules!\s*(\w+)", f.read()):
                        owner[m.group(1)] = layer
    return owner


def edges():
    """[(from, to, test_only)] between layers and from the front crates, sorted."""
    lib_mods = set(re.findall(r"^pub mod (\w+);", open(os.path.join(SRC, "lib.rs")).read(), re.M))
    unknown = lib_mods - set(LAYERS)
    if unknown:
        sys.exit(f"arch-diagram: src/lib.rs has modules this script does not place: "
                 f"{sorted(unknown)}; add them to LAYERS and COLUMN")
    mac = macros()
    found = set()
    for layer in LAYERS:
        live, test = scan(layer_paths(layer), "crate")
        for uses, test_only in ((live, False), (test, True)):
            for u in uses:
                u = mac.get(u, u)
                if u in LAYERS and u != layer:
                    found.add((layer, u, test_only))
    for name, folder, prefix, _ in FRONT:
        live, test = scan([os.path.join(ROOT, folder)], prefix)
        for u in live:
            if u in LAYERS:
                found.add((name, u, False))
    # A dependency both live and test-only is live.
    return sorted(e for e in found if not (e[2] and (e[0], e[1], False) in found))


def check_path_names():
    for _, text, where, needle in RX_PATH + TX_PATH:
        hay = "".join(open(p, encoding="utf-8").read()
                      for p in rust_files(os.path.join(ROOT, where)))
        if needle not in hay:
            sys.exit(f"arch-diagram: the packet path names `{needle}` in {where}, which is no "
                     f"longer there; update RX_PATH/TX_PATH")


# ---- drawing ------------------------------------------------------------------------------

W, H = 1540, 800
FONT = "DejaVu Sans, Verdana, Helvetica, Arial, sans-serif"
MONO = "DejaVu Sans Mono, Menlo, Consolas, monospace"
BOX_W, BOX_H = 170, 50
LEFT_X, COL_W = 40, 150          # layer panel: x of column 0, width of one column
ROW_Y0, ROW_DY = 160, 115        # y of the top row's box top, distance between rows


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def ranks(es):
    """Row of each node: a layer sits one row above the highest thing it uses."""
    deps = {}
    for a, b, test_only in es:
        if not test_only:
            deps.setdefault(a, set()).add(b)
    rank = {}

    def r(n, seen=()):
        if n in rank:
            return rank[n]
        if n in seen:
            sys.exit(f"arch-diagram: dependency cycle through {n}")
        rank[n] = 1 + max((r(d, seen + (n,)) for d in deps.get(n, ())), default=-1)
        return rank[n]

    for n in list(LAYERS) + [f[0] for f in FRONT]:
        r(n)
    top = max(rank[n] for n in LAYERS)
    for f in FRONT:
        rank[f[0]] = top + 1  # the front crates share the top row
    return rank


def layout(es):
    rank = ranks(es)
    top = max(rank.values())
    pos = {}
    for n in list(LAYERS) + [f[0] for f in FRONT]:
        col = COLUMN.get(n, FRONT_COLUMN.get(n, 0))
        x = LEFT_X + col * COL_W
        y = ROW_Y0 + (top - rank[n]) * ROW_DY
        pos[n] = (round(x, 1), round(y, 1))
    return pos, rank, top


def route(a, b, pos, rank, top):
    """Points of an arrow from a's bottom to b's top, through the gaps of the rows between."""
    ax, ay = pos[a]
    bx, by = pos[b]
    x0, y0 = ax + BOX_W / 2, ay + BOX_H
    x1, y1 = bx + BOX_W / 2, by
    pts = [(x0, y0)]
    for r in range(rank[a] - 1, rank[b], -1):
        row_y = ROW_Y0 + (top - r) * ROW_DY
        t = (row_y + BOX_H / 2 - y0) / (y1 - y0)
        want = x0 + t * (x1 - x0)
        boxes = sorted(pos[n][0] for n in pos if rank[n] == r)
        # Candidate x: the gaps between this row's boxes and both sides of the row.
        gaps = [boxes[0] - 22] + [(l + BOX_W + rr) / 2 for l, rr in zip(boxes, boxes[1:])
                                  if rr - l - BOX_W > 24] + [boxes[-1] + BOX_W + 22]
        inside = any(l - 12 <= want <= l + BOX_W + 12 for l in boxes)
        x = min(gaps, key=lambda g: abs(g - want)) if inside else want
        pts.append((x, row_y - 8))
        pts.append((x, row_y + BOX_H + 8))
    pts.append((x1, y1))
    return pts


def path_d(pts):
    """A smooth path through pts (vertical tangents at each point)."""
    d = f"M{pts[0][0]:.1f},{pts[0][1]:.1f}"
    for (xa, ya), (xb, yb) in zip(pts, pts[1:]):
        k = (yb - ya) * 0.45
        d += f" C{xa:.1f},{ya + k:.1f} {xb:.1f},{yb - k:.1f} {xb:.1f},{yb:.1f}"
    return d


def svg(es):
    pos, rank, top = layout(es)
    o = []
    add = o.append
    add(f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'viewBox="0 0 {W} {H}" font-family="{FONT}">')
    add('<defs>'
        '<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#555"/></marker>'
        '<marker id="flow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="6" '
        'markerHeight="6" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#1f5fa8"/></marker></defs>')
    add(f'<rect width="{W}" height="{H}" fill="white"/>')
    add('<text x="40" y="42" font-size="22" font-weight="bold">bypass: layers and one '
        'packet\'s path</text>')
    add('<text x="40" y="66" font-size="13" fill="#444">Generated by scripts/arch-diagram.py '
        'from the source; do not edit. An arrow A -&gt; B: code in A names crate::B '
        '(dashed: test-only code).</text>')

    # Layer panel.
    panel_w = LEFT_X + 4.1 * COL_W + BOX_W
    add(f'<rect x="20" y="86" width="{panel_w:.0f}" height="{H - 106}" rx="10" fill="none" '
        f'stroke="#bbb"/>')
    add('<text x="36" y="110" font-size="15" font-weight="bold">Layers (crate bypass, src/) '
        'and the crates in front of it</text>')
    lib_top = top - 1
    for a, b, test_only in es:
        front = a in FRONT_COLUMN
        if front and rank[b] != lib_top:
            continue  # named in the box instead: arrows from the top row would cross it all
        pts = route(a, b, pos, rank, top)
        dash = ' stroke-dasharray="6,4"' if test_only else ""
        color = "#999" if front else "#555"
        width = 1.0 if front else 1.6
        add(f'<path d="{path_d(pts)}" fill="none" stroke="{color}" stroke-width="{width}"'
            f'{dash} marker-end="url(#arrow)"><title>{a} -&gt; {b}'
            f'{" (test-only)" if test_only else ""}</title></path>')
    front_y = ROW_Y0 + BOX_H + 14
    for name, folder, _, caption in FRONT:
        x, y = pos[name]
        also = sorted(b for a, b, _ in es if a == name and rank[b] != lib_top)
        lines = [caption] + (["also names " + ", ".join(also)] if also else [])
        grow = 16 * (len(lines) - 1)
        box(add, x - 20, y - grow, name + "/", lines, COLOR["front"], mono=True,
            w=BOX_W + 40, h=BOX_H + grow)
    add(f'<line x1="30" y1="{front_y + 12}" x2="{panel_w + 10:.0f}" y2="{front_y + 12}" '
        f'stroke="#ccc" stroke-dasharray="2,4"/>')
    for n, caption in LAYERS.items():
        x, y = pos[n]
        box(add, x, y, n, [caption], COLOR[n], mono=True)
    note_y = ROW_Y0 + top * ROW_DY + BOX_H + 36
    notes = [
        "Nothing imports upward: rows follow the arrows.",
        "unsafe only in mem, pmd::memif, pmd::dpdk, runtime::clock (TSC), capi/, python/.",
        "proto, wire: no clock, syscall, lock or allocation per packet.",
    ]
    for i, t in enumerate(notes):
        add(f'<text x="40" y="{note_y + 18 * i}" font-size="13" fill="#333">{esc(t)}</text>')

    # Packet path panel.
    px = panel_w + 50
    pw = W - px - 20
    add(f'<rect x="{px - 20:.0f}" y="86" width="{pw + 20:.0f}" height="{H - 106}" rx="10" '
        f'fill="none" stroke="#bbb"/>')
    add(f'<text x="{px:.0f}" y="110" font-size="15" font-weight="bold">One packet\'s path '
        f'(memif client, run-to-completion)</text>')
    y = 136
    pw -= 20
    y = steps(add, px, y, pw, "Receive: a DATA frame arrives", RX_PATH)
    y = steps(add, px, y + 24, pw, "Send: a message goes out (its ACK returns by the receive "
              "path)", TX_PATH)
    add("</svg>")
    return "\n".join(o) + "\n"


def box(add, x, y, title, lines, fill, mono=False, w=BOX_W, h=BOX_H):
    add(f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="7" fill="{fill}" '
        f'stroke="#555" stroke-width="1.2"/>')
    fam = f' font-family="{MONO}"' if mono else ""
    add(f'<text x="{x + w / 2:.1f}" y="{y + 21}" font-size="15" font-weight="bold" '
        f'text-anchor="middle"{fam}>{esc(title)}</text>')
    for i, line in enumerate(lines):
        add(f'<text x="{x + w / 2:.1f}" y="{y + 39 + 16 * i}" font-size="11.5" fill="#333" '
            f'text-anchor="middle">{esc(line)}</text>')


def wrap(text, width):
    words, lines, cur = text.split(), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}" if cur else w
    return lines + [cur]


def steps(add, x, y, w, title, path):
    add(f'<text x="{x:.0f}" y="{y + 4}" font-size="14" font-weight="bold" '
        f'fill="#1f5fa8">{esc(title)}</text>')
    y += 16
    tag_w = 78
    chars = int((w - tag_w - 24) / 7.0)
    for i, (layer, text, _, _) in enumerate(path):
        lines = wrap(text, chars)
        h = 12 + 16 * len(lines)
        add(f'<rect x="{x:.0f}" y="{y}" width="{tag_w}" height="{h}" rx="5" '
            f'fill="{COLOR[layer]}" stroke="#777"/>')
        add(f'<text x="{x + tag_w / 2:.1f}" y="{y + h / 2 + 5:.1f}" font-size="13" '
            f'font-weight="bold" text-anchor="middle" font-family="{MONO}">{layer}</text>')
        add(f'<rect x="{x + tag_w + 6:.0f}" y="{y}" width="{w - tag_w - 6:.0f}" height="{h}" '
            f'rx="5" fill="#fafafa" stroke="#ccc"/>')
        for j, line in enumerate(lines):
            add(f'<text x="{x + tag_w + 16:.0f}" y="{y + 20 + 16 * j}" font-size="12.5">'
                f'{esc(line)}</text>')
        y += h
        if i + 1 < len(path):
            add(f'<line x1="{x + tag_w / 2:.1f}" y1="{y + 1}" x2="{x + tag_w / 2:.1f}" '
                f'y2="{y + 13}" stroke="#1f5fa8" stroke-width="2" marker-end="url(#flow)"/>')
            y += 14
    return y


def deps_block(es):
    """The layers top down, each with what it uses (the text twin of the picture)."""
    rank = ranks(es)
    order = sorted(LAYERS, key=lambda n: (-rank[n], list(LAYERS).index(n)))
    lines = ["```text"]
    for n in order:
        def targets(test_only):
            ts = [b for a, b, t in es if a == n and t == test_only]
            return sorted(ts, key=lambda b: (-rank[b], list(LAYERS).index(b)))
        live, test = targets(False), targets(True)
        text = ", ".join(live) if live else "(no other layer)"
        if test:
            text += "; test-only code also " + ", ".join(test)
        lines.append(f"{n:<10} -> {text}" if live else f"{n:<10}    {text}")
    lines.append("```")
    return "\n".join(lines)


def doc_with_block(es):
    with open(DOC, encoding="utf-8") as f:
        doc = f.read()
    if BEGIN not in doc or END not in doc:
        sys.exit(f"arch-diagram: {os.path.relpath(DOC, ROOT)} lacks the markers {BEGIN} {END}")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return doc, f"{head}{BEGIN}\n{deps_block(es)}\n{END}{tail}"


def main():
    args = sys.argv[1:]
    es = edges()
    if "--print" in args:
        for a, b, t in es:
            print(f"{a} -> {b}{' (test-only)' if t else ''}")
        return 0
    check_path_names()
    fresh = svg(es)
    doc, fresh_doc = doc_with_block(es)
    if "--check" in args:
        try:
            with open(OUT, encoding="utf-8") as f:
                old = f.read()
        except OSError:
            old = None
        stale = [p for p, a, b in ((OUT, old, fresh), (DOC, doc, fresh_doc)) if a != b]
        for p in stale:
            print(f"{os.path.relpath(p, ROOT)} is not what the code gives now: run "
                  f"scripts/arch-diagram.py and commit the result", file=sys.stderr)
        return 1 if stale else 0
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    for p, text in ((OUT, fresh), (DOC, fresh_doc)):
        with open(p, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {os.path.relpath(p, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
