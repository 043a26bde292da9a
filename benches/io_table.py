#!/usr/bin/env python3
"""Prints the benches/RESULTS.md ratio table of `cargo bench --bench io` from criterion's output.

Usage: benches/io_table.py [TARGET_DIR]   (default $CARGO_TARGET_DIR, else ./target)
Medians in µs per read; ratios: tokio's time ÷ pagegen's, raw's time ÷ pagegen's.
"""
import json
import os
import sys

target = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CARGO_TARGET_DIR", "target")
root = os.path.join(target, "criterion")
fns = ["pagegen_fs_read", "pagegen_read_at", "tokio_fs_read", "std_read_spawn_blocking",
       "raw_uring_read_files", "raw_uring_pread"]
# Since issue 16 (fs::read chained); printed as an extra column when present.
chained = "raw_uring_read_files_chained"


def median_us(group, fn):
    p = os.path.join(root, group, fn, "new", "estimates.json")
    try:
        with open(p) as f:
            return json.load(f)["median"]["point_estimate"] / 1e3
    except OSError:
        return None


rows = []
for size in ["4KiB", "16KiB", "1MiB"]:
    for conc in [1, 8, 32]:
        group = f"io_{size}_c{conc}"
        if not os.path.isdir(os.path.join(root, group)):
            group = f"io/{size}/c{conc}"
        v = [median_us(group, fn) for fn in fns]
        if any(x is None for x in v):
            continue
        rows.append((size, conc, v, median_us(group, chained)))
with_chained = any(c is not None for *_, c in rows)

head = ("| size / conc | `fs::read` | `read_at` | `tokio::fs::read` | std in `spawn_blocking` "
        "| raw files | raw pread | `fs::read` ÷ tokio | `read_at` ÷ tokio | `fs::read` ÷ raw "
        "| `read_at` ÷ raw |")
if with_chained:
    head += " raw chained | `fs::read` ÷ raw chained |"
print(head)
print("|---" * head.count(" | ") + "|---|")
for size, conc, v, ch in rows:
    fsr, rat, tok, std, rawf, rawp = v
    cells = [f"{x:.2f}" for x in v] + [
        f"{tok / fsr:.1f}×", f"{tok / rat:.1f}×",
        f"{rawf / fsr * 100:.0f} %", f"{rawp / rat * 100:.0f} %"]
    if with_chained:
        cells += [f"{ch:.2f}", f"{ch / fsr * 100:.0f} %"] if ch is not None else ["", ""]
    print(f"| {size} / {conc} | " + " | ".join(cells) + " |")
