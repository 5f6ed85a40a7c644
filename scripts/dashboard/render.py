#!/usr/bin/env python3
"""Draws the Grafana dashboard (deploy/grafana/orderflow.json) as one SVG
without Grafana: each panel's queries are evaluated by a Prometheus over a
time range (query_range) and drawn as lines, in the dashboard's own layout
(gridPos). Grafana's variables become: $__rate_interval -> 30s (the
scrape interval is 5 s), $instance -> .* . Standard library only.

usage: render.py DASHBOARD PROMETHEUS_URL START END TITLE > out.svg
"""
import json
import sys
import urllib.parse
import urllib.request

dashboard = json.load(open(sys.argv[1]))
prometheus, start, end, title = sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
STEP = 10
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
UNIT_W, UNIT_H, TOP = 56, 28, 50


def query(expr):
    expr = expr.replace("$__rate_interval", "30s").replace("$instance", ".*")
    url = prometheus + "/api/v1/query_range?" + urllib.parse.urlencode(
        {"query": expr, "start": start, "end": end, "step": STEP})
    answer = json.load(urllib.request.urlopen(url, timeout=30))
    if answer.get("status") != "success":
        raise SystemExit(f"{expr}: {answer}")
    return answer["data"]["result"]


def legend(fmt, labels):
    for key, value in labels.items():
        fmt = fmt.replace("{{" + key + "}}", value)
    while "{{" in fmt:
        a = fmt.index("{{")
        fmt = fmt[:a] + fmt[fmt.index("}}", a) + 2:]
    return fmt


def scaled(value, unit):
    if unit == "bytes":
        for suffix, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
            if abs(value) >= size:
                return f"{value / size:.1f} {suffix}"
        return f"{value:.0f} B"
    if unit == "s":
        return f"{value * 1000:.1f} ms" if abs(value) < 1 else f"{value:.1f} s"
    if unit == "percentunit":
        return f"{value * 100:.0f}%"
    if abs(value) >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.2g}" if abs(value) < 10 else f"{value:.0f}"


def esc(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dashboard["panels"])
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{24 * UNIT_W + 20}" '
       f'height="{TOP + bottom * UNIT_H + 20}" font-family="sans-serif" font-size="11">',
       f'<rect width="100%" height="100%" fill="white"/>',
       f'<text x="10" y="24" font-size="15">{esc(title)}</text>']
for panel in dashboard["panels"]:
    g = panel["gridPos"]
    x0, y0 = 10 + g["x"] * UNIT_W, TOP + g["y"] * UNIT_H
    w, h = g["w"] * UNIT_W - 8, g["h"] * UNIT_H - 8
    if panel["type"] == "row":
        out.append(f'<text x="{x0}" y="{y0 + 18}" font-size="14" font-weight="bold">{esc(panel["title"])}</text>')
        continue
    unit = panel["fieldConfig"]["defaults"].get("unit", "short")
    series = []
    for target in panel["targets"]:
        for result in query(target["expr"]):
            points = [(float(t), float(v)) for t, v in result["values"] if v not in ("NaN", "+Inf", "-Inf")]
            if points:
                series.append((legend(target.get("legendFormat", ""), result["metric"]), points))
    px0, py0, pw, ph = x0 + 58, y0 + 24, w - 66, h - 30 - 14 * min(3, (len(series) + 2) // 3)
    out.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="#fafafa" stroke="#ccc"/>')
    out.append(f'<text x="{x0 + 6}" y="{y0 + 15}" font-weight="bold">{esc(panel["title"])}</text>')
    values = [v for _, pts in series for _, v in pts]
    y_max = max(values + [panel["fieldConfig"]["defaults"].get("max", 0)]) * 1.1 or 1.0
    y_min = min(values + [0])
    sx = lambda t: px0 + pw * (t - start) / max(end - start, 1)
    sy = lambda v: py0 + ph - ph * (v - y_min) / (y_max - y_min)
    out.append(f'<rect x="{px0}" y="{py0}" width="{pw}" height="{ph}" fill="white" stroke="#ddd"/>')
    for frac in (0, 0.5, 1):
        v = y_min + (y_max - y_min) * frac
        out.append(f'<text x="{px0 - 4}" y="{sy(v) + 4:.1f}" text-anchor="end">{scaled(v, unit)}</text>')
    for frac in (0, 0.5, 1):
        t = start + (end - start) * frac
        out.append(f'<text x="{sx(t):.1f}" y="{py0 + ph + 12}" text-anchor="middle">{(t - start) / 60:.0f} min</text>')
    if not series:
        out.append(f'<text x="{px0 + pw / 2}" y="{py0 + ph / 2}" text-anchor="middle" fill="#999">no data</text>')
    for i, (name, pts) in enumerate(series[:9]):
        colour = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{sx(t):.1f},{sy(v):.1f}" for t, v in pts)
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.3" points="{path}"/>')
        lx = x0 + 8 + (i % 3) * (w // 3)
        ly = py0 + ph + 26 + 14 * (i // 3)
        if ly < y0 + h:
            out.append(f'<rect x="{lx}" y="{ly - 8}" width="10" height="3" fill="{colour}"/>'
                       f'<text x="{lx + 14}" y="{ly - 4}">{esc(name[:38])}</text>')
out.append("</svg>")
print("\n".join(out))
