#!/usr/bin/env python3
"""Plots sample.py's CSV as one SVG: four stacked panels (resident memory,
file descriptors, requests per second, p99 latency) against time, with the
PostgreSQL cut shaded. Standard library only.

usage: plot.py CSV CUT_START CUT_END TITLE > out.svg
"""
import csv
import sys

rows = list(csv.DictReader(open(sys.argv[1])))
cut_start, cut_end, title = float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
panels = [
    ("rss_mb", "resident memory (MB)"),
    ("fds", "open file descriptors"),
    ("requests_per_s", "OK requests per second"),
    ("p99_ms", "p99 latency (ms)"),
]
W, H, LEFT, TOP, GAP = 760, 150, 70, 40, 40
xs = [float(r["seconds"]) for r in rows] or [0.0]
x_max = max(xs) or 1.0
out = [
    f'<svg xmlns="http://www.w3.org/2000/svg" width="{W + LEFT + 20}" '
    f'height="{TOP + len(panels) * (H + GAP)}" font-family="sans-serif" font-size="12">',
    f'<text x="{LEFT}" y="20" font-size="14">{title}</text>',
]
for i, (key, label) in enumerate(panels):
    y0 = TOP + i * (H + GAP)
    ys = [float(r[key]) for r in rows] or [0.0]
    y_max = max(ys) * 1.15 or 1.0
    sx = lambda x: LEFT + W * x / x_max
    sy = lambda y: y0 + H - H * y / y_max
    out.append(f'<rect x="{sx(cut_start):.1f}" y="{y0}" width="{sx(cut_end) - sx(cut_start):.1f}" '
               f'height="{H}" fill="#fde2e2"/>')
    out.append(f'<rect x="{LEFT}" y="{y0}" width="{W}" height="{H}" fill="none" stroke="#888"/>')
    out.append(f'<text x="{LEFT}" y="{y0 - 6}">{label}</text>')
    for frac in (0, 0.5, 1):
        value = y_max * frac
        out.append(f'<text x="{LEFT - 6}" y="{sy(value) + 4:.1f}" text-anchor="end">{value:.0f}</text>')
    points = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xs, ys))
    out.append(f'<polyline points="{points}" fill="none" stroke="#1f5fbf" stroke-width="1.5"/>')
    for t in range(0, int(x_max) + 1, max(60, int(x_max) // 10 // 60 * 60 or 60)):
        out.append(f'<text x="{sx(t):.1f}" y="{y0 + H + 14}" text-anchor="middle">{t}s</text>')
out.append(f'<text x="{LEFT + W}" y="{TOP - 22}" text-anchor="end" fill="#b33">shaded: PostgreSQL cut</text>')
out.append("</svg>")
print("\n".join(out))
