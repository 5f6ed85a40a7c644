#!/usr/bin/env python3
"""Samples a running orderflow every INTERVAL seconds until STOP_FILE
exists: resident memory and open file descriptors from /proc, and from
/metrics the request rate, the error rate and p99 latency over the
interval (from the histogram's bucket deltas). Writes CSV to stdout.
Standard library only.

usage: sample.py PID METRICS_ADDR INTERVAL STOP_FILE
"""
import os
import re
import sys
import time
import urllib.request

pid, metrics, interval, stop_file = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
BUCKET = re.compile(r'^orderflow_grpc_request_duration_seconds_bucket\{(.*)\} (\S+)$')
TOTAL = re.compile(r'^orderflow_grpc_requests_total\{(.*)\} (\S+)$')


def scrape():
    text = urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5).read().decode()
    buckets, ok, failed = {}, 0.0, 0.0
    for line in text.splitlines():
        m = BUCKET.match(line)
        if m:
            le = re.search(r'le="([^"]+)"', m.group(1)).group(1)
            bound = float("inf") if le == "+Inf" else float(le)
            buckets[bound] = buckets.get(bound, 0.0) + float(m.group(2))
            continue
        m = TOTAL.match(line)
        if m:
            if 'code="OK"' in m.group(1):
                ok += float(m.group(2))
            else:
                failed += float(m.group(2))
    return buckets, ok, failed


def p99(now, before):
    deltas = sorted((b, now[b] - before.get(b, 0.0)) for b in now)
    total = deltas[-1][1] if deltas else 0.0
    if total <= 0:
        return 0.0
    target = 0.99 * total
    previous_bound, previous_count = 0.0, 0.0
    for bound, count in deltas:
        if count >= target:
            if bound == float("inf"):
                return previous_bound
            share = (target - previous_count) / max(count - previous_count, 1e-9)
            return previous_bound + (bound - previous_bound) * share
        previous_bound, previous_count = bound, count
    return previous_bound


def rss_kb():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


print("seconds,rss_mb,fds,requests_per_s,errors_per_s,p99_ms", flush=True)
start = time.monotonic()
before, ok_before, failed_before = scrape()
while not os.path.exists(stop_file):
    time.sleep(interval)
    try:
        now, ok, failed = scrape()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        rss = rss_kb() / 1024
    except (OSError, ValueError):
        break
    elapsed = time.monotonic() - start
    print(
        f"{elapsed:.0f},{rss:.1f},{fds},{(ok - ok_before) / interval:.0f},"
        f"{(failed - failed_before) / interval:.1f},{p99(now, before) * 1000:.2f}",
        flush=True,
    )
    before, ok_before, failed_before = now, ok, failed
