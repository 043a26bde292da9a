#!/usr/bin/env python3
"""Figures from an independent load generator, `oha` (crates.io; `cargo install oha`), against the
example site on several runtimes, runtimes interleaved round by round.

Two modes (run from the repository root, after `cargo build --release --example site --example
site_jemalloc`):

  benches/harness/oha_check.py rate [--rate 200] [--seconds 20] [--rounds 2] [--path /]
      Open loop at a fixed rate with oha's latency correction (latency from the intended send
      time, as pagegen-bench measures it): p50/p99 of the path per runtime. The cross-check of
      pagegen-bench's figure for the same rate on a one-class mix (`--mixes light`).

  benches/harness/oha_check.py throughput [--connections 16] [--seconds 10] [--rounds 3]
                                          [--path /fortunes]
      Closed loop, as fast as the server answers over N keep-alive connections: requests/s per
      runtime and the ratio to the first runtime (the whole-loop overhead figure).

Runtimes: `--runtimes tokio,pagegen,pagegen-off` (default). `pagegen-off` is the same pagegen
binary with prediction and profiling off (`PAGEGEN_PREDICTOR=static PAGEGEN_PROFILE=false`,
static equal shares, no trainer). Each server gets a fresh state directory, 2 workers and runs
alone while oha drives it; oha shares the machine's cores with it, as pagegen-bench does.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile

RUNTIMES = {
    "tokio": (["target/release/examples/site_jemalloc", "--runtime", "tokio"], {}),
    "tokio-limits": (["target/release/examples/site_jemalloc", "--runtime", "tokio-limits"], {}),
    "pagegen": (["target/release/examples/site", "--runtime", "pagegen"], {}),
    "pagegen-ewma": (["target/release/examples/site", "--runtime", "pagegen-ewma"], {}),
    # Prediction and profiling off: static predictor and shares, no profile, no trainer.
    "pagegen-off": (
        ["target/release/examples/site", "--runtime", "pagegen-static"],
        {"PAGEGEN_PROFILE": "false", "PAGEGEN_TRAINER": "false"},
    ),
}


def start(name, state):
    cmd, env = RUNTIMES[name]
    full_env = dict(os.environ, **env)
    p = subprocess.Popen(
        cmd + ["--port", "0", "--state-dir", state, "--workers", "2", "--metrics", "off"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=full_env, text=True)
    line = p.stdout.readline()
    if "http://" not in line:
        p.kill()
        sys.exit(f"{name}: no 'listening on http://...' line, got {line!r}")
    url = line.split("http://", 1)[1].split()[0]
    return p, f"http://{url}"


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=15)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def oha(args, url):
    out = subprocess.run([shutil.which("oha") or "oha", "--no-tui", "--output-format", "json"]
                         + args + [url], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["rate", "throughput"])
    ap.add_argument("--runtimes", default="tokio,pagegen,pagegen-off")
    ap.add_argument("--rate", type=int, default=200)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--seconds", type=int)
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--path")
    ap.add_argument("--warmup", type=int, default=3, help="seconds of load before measuring")
    a = ap.parse_args()
    if not shutil.which("oha"):
        sys.exit("oha not on PATH: `cargo install oha` (benches/harness/README.md)")
    rate = a.mode == "rate"
    secs = a.seconds or (20 if rate else 10)
    rounds = a.rounds or (2 if rate else 3)
    path = a.path or ("/" if rate else "/fortunes")
    names = a.runtimes.split(",")
    for n in names:
        if n not in RUNTIMES:
            sys.exit(f"unknown runtime {n!r}; known: {', '.join(RUNTIMES)}")
    results = {n: [] for n in names}
    # One state directory per runtime for the whole run (the site generates its data once).
    states = {n: tempfile.mkdtemp(prefix=f"oha-{n}-") for n in names}
    try:
        for r in range(rounds):
            for n in names:
                p, url = start(n, states[n])
                try:
                    if rate:
                        load = ["-q", str(a.rate), "--latency-correction", "-c", "64"]
                    else:
                        load = ["-c", str(a.connections)]
                    oha(load + ["-z", f"{a.warmup}s"], url + path)
                    res = oha(load + ["-z", f"{secs}s"], url + path)
                finally:
                    stop(p)
                s = res["summary"]
                lat = res["latencyPercentiles"]
                codes = res.get("statusCodeDistribution", {})
                row = {
                    "rps": s["requestsPerSec"],
                    "p50_ms": lat["p50"] * 1e3,
                    "p99_ms": lat["p99"] * 1e3,
                    "ok": sum(v for k, v in codes.items() if k.startswith("2")),
                    "all": sum(codes.values()),
                }
                results[n].append(row)
                print(f"round {r + 1} {n}: {row['rps']:.0f} req/s, p50 {row['p50_ms']:.3f} ms, "
                      f"p99 {row['p99_ms']:.3f} ms, {row['ok']}/{row['all']} 2xx", file=sys.stderr)
    finally:
        for d in states.values():
            shutil.rmtree(d, ignore_errors=True)
    what = (f"oha -q {a.rate} --latency-correction -c 64 -z {secs}s {path}" if rate
            else f"oha -c {a.connections} -z {secs}s {path}")
    print(f"\n`{what}`, {rounds} interleaved rounds (after {a.warmup} s of warm-up each); medians"
          " (min–max):\n")
    print("| runtime | req/s | p50 ms | p99 ms | 2xx | req/s ÷ first |")
    print("|---|---|---|---|---|---|")
    base = statistics.median(x["rps"] for x in results[names[0]])

    def cell(n, k, f):
        v = [x[k] for x in results[n]]
        return f"{f(statistics.median(v))} ({f(min(v))}–{f(max(v))})"

    for n in names:
        ratio = statistics.median(x["rps"] for x in results[n]) / base
        ok = sum(x["ok"] for x in results[n])
        every = sum(x["all"] for x in results[n])
        print(f"| {n} | {cell(n, 'rps', lambda v: f'{v:.0f}')} | "
              f"{cell(n, 'p50_ms', lambda v: f'{v:.3f}')} | {cell(n, 'p99_ms', lambda v: f'{v:.2f}')} | "
              f"{ok}/{every} | {ratio:.3f} |")


if __name__ == "__main__":
    main()
