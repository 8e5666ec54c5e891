#!/usr/bin/env python3
"""Draws the loadgen's table as an SVG chart: throughput and latency against client count.

    cargo run --release -p vsva-client --example loadgen -- --clients 1,2,4,8,16,32,64 \\
        --seconds 3 --modes off,sync | tee loadgen.txt
    python3 scripts/loadgen-chart.py loadgen.txt docs/loadgen.svg --title "2 vCPU, 2026-11-30"

Reads the first Markdown table the loadgen prints (the `| store | clients | pairs/s | ...`
rows; everything else in the input is ignored) and writes one SVG with two panels side by side:
requests per second (left) and the p50 and p99 latency of an alloc+free pair in microseconds
(right, logarithmic), both against the number of clients (logarithmic), one colour per store
mode. Standard library only, so it runs wherever Python 3 does.
"""

import argparse
import math
import sys
from xml.sax.saxutils import escape

COLOURS = {"off": "#1f77b4", "async": "#2ca02c", "sync": "#d62728"}
W, H = 440, 300  # one panel
M = {"l": 64, "r": 16, "t": 36, "b": 44}


def parse(text):
    """{mode: [(clients, requests_per_s, p50_us, p99_us)]}, from the loadgen's table rows."""
    header, rows = None, {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 6 or not line.lstrip().startswith("|"):
            if rows:
                break  # the end of the first table
            continue
        if cells[0] == "store":
            header = cells
            continue
        if header is None or set(cells[0]) <= set("-: "):
            continue
        row = dict(zip(header, cells))
        try:
            point = (
                int(row["clients"]),
                float(row["requests/s"]),
                float(row["p50 pair (µs)"]),
                float(row["p99 pair (µs)"]),
            )
        except (KeyError, ValueError) as e:
            raise SystemExit(f"loadgen-chart: cannot read the row {line.strip()!r}: {e}")
        rows.setdefault(row["store"], []).append(point)
    if not rows:
        raise SystemExit("loadgen-chart: no loadgen table in the input (is it loadgen's output?)")
    return {m: sorted(p) for m, p in rows.items()}


def nice_ticks(lo, hi, log):
    if log:
        a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
        return [10.0**e for e in range(a, b + 1)]
    step = 10 ** math.floor(math.log10(max(hi, 1e-9)))
    for f in (1, 2, 5, 10):
        if hi / (step * f) <= 6:
            step *= f
            break
    return [i * step for i in range(0, int(hi / step) + 2)]


def label(v):
    if v >= 1e6:
        return f"{v / 1e6:g}M"
    if v >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def panel(x0, title, ylabel, series, ylog, clients):
    """SVG for one panel at horizontal offset x0; series: [(name, colour, dash, [(x, y)])]."""
    ys = [y for _, _, _, pts in series for _, y in pts if y > 0]
    ylo, yhi = (min(ys) / 1.5, max(ys) * 1.5) if ylog else (0.0, max(ys) * 1.1)
    yt = nice_ticks(ylo, yhi, ylog)
    ylo, yhi = (yt[0], yt[-1]) if ylog else (0.0, yt[-1])
    xlo, xhi = min(clients), max(clients)
    pw, ph = W - M["l"] - M["r"], H - M["t"] - M["b"]

    def px(x):
        if xhi == xlo:
            return x0 + M["l"] + pw / 2
        return x0 + M["l"] + pw * (math.log(x) - math.log(xlo)) / (math.log(xhi) - math.log(xlo))

    def py(y):
        if ylog:
            f = (math.log(max(y, ylo)) - math.log(ylo)) / (math.log(yhi) - math.log(ylo))
        else:
            f = (y - ylo) / (yhi - ylo)
        return M["t"] + ph * (1 - f)

    out = [f'<text x="{x0 + W / 2}" y="20" text-anchor="middle" font-weight="bold">{escape(title)}</text>']
    for t in yt:
        out.append(f'<line x1="{x0 + M["l"]}" x2="{x0 + W - M["r"]}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{x0 + M["l"] - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{label(t)}</text>')
    for c in clients:
        out.append(f'<line x1="{px(c):.1f}" x2="{px(c):.1f}" y1="{M["t"]}" y2="{M["t"] + ph}" stroke="#eee"/>')
        out.append(f'<text x="{px(c):.1f}" y="{M["t"] + ph + 16}" text-anchor="middle">{c}</text>')
    out.append(f'<text x="{x0 + M["l"] + pw / 2}" y="{H - 8}" text-anchor="middle">clients</text>')
    out.append(
        f'<text transform="translate({x0 + 14},{M["t"] + ph / 2}) rotate(-90)" text-anchor="middle">{escape(ylabel)}</text>'
    )
    out.append(f'<rect x="{x0 + M["l"]}" y="{M["t"]}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>')
    for name, colour, dash, pts in series:
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}"/>')
        for x, y in pts:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"><title>{escape(name)}: {x} clients, {y:g}</title></circle>')
    return out


def render(data, title):
    clients = sorted({c for pts in data.values() for c, *_ in pts})
    modes = sorted(data, key=lambda m: list(COLOURS).index(m) if m in COLOURS else 99)
    colour = {m: COLOURS.get(m, "#7f7f7f") for m in modes}
    thr = [(f"store {m}", colour[m], "", [(c, r) for c, r, _, _ in data[m]]) for m in modes]
    lat = []
    for m in modes:
        lat.append((f"store {m} p50", colour[m], "", [(c, p) for c, _, p, _ in data[m]]))
        lat.append((f"store {m} p99", colour[m], "5,4", [(c, p) for c, _, _, p in data[m]]))
    body = panel(0, "throughput", "requests / s", thr, False, clients)
    body += panel(W, "latency of an alloc+free pair", "µs (log scale)", lat, True, clients)
    legend_y = H + 18
    x = M["l"]
    legend = []
    for m in modes:
        legend.append(f'<line x1="{x}" x2="{x + 24}" y1="{legend_y - 4}" y2="{legend_y - 4}" stroke="{colour[m]}" stroke-width="2"/>')
        legend.append(f'<text x="{x + 30}" y="{legend_y}">store {escape(m)}</text>')
        x += 120
    legend.append(f'<text x="{x}" y="{legend_y}">solid: p50, dashed: p99</text>')
    total_h = H + 48
    caption = f'<text x="{W}" y="{total_h - 6}" text-anchor="middle" fill="#555">{escape(title)}</text>' if title else ""
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" height="{total_h}" viewBox="0 0 {2 * W} {total_h}" font-family="sans-serif" font-size="12">',
            '<rect width="100%" height="100%" fill="white"/>',
            *body,
            *legend,
            caption,
            "</svg>",
            "",
        ]
    )


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input", help="the loadgen's output ('-' for standard input)")
    ap.add_argument("output", help="the SVG file to write")
    ap.add_argument("--title", default="", help="a caption under the chart (machine, date)")
    a = ap.parse_args(argv)
    text = sys.stdin.read() if a.input == "-" else open(a.input, encoding="utf-8").read()
    svg = render(parse(text), a.title)
    with open(a.output, "w", encoding="utf-8") as f:
        f.write(svg)


if __name__ == "__main__":
    main(sys.argv[1:])
