#!/usr/bin/env bash
# Page-render workload, one binary per allocator (glibc, jemalloc, pagegen accounting-only, pagegen
# class arena), run interleaved `REPS` times; prints each allocator's median ns/page and its ratio
# to plain jemalloc. `PAGEGEN_BENCH_SMOKE=1` runs a tiny configuration.
#
#   benches/alloc_render.sh            # from the repository root
set -euo pipefail
cd "$(dirname "$0")/.."
REPS="${REPS:-3}"
cargo build --release -q -p pagegen-alloc --example render_system --example render_jemalloc \
  --example render_pagegen
BIN="${CARGO_TARGET_DIR:-target}/release/examples"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
for _ in $(seq "$REPS"); do
  "$BIN/render_system"
  "$BIN/render_jemalloc"
  "$BIN/render_pagegen" acct
  "$BIN/render_pagegen" class
done | tee "$out"
awk '
  { for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
    n[f["name"]]++; v[f["name"], n[f["name"]]] = f["ns_per_page"] }
  END {
    for (k in n) {                       # median of the repetitions
      m = n[k]; for (i = 1; i <= m; i++) a[i] = v[k, i]
      for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
      med[k] = a[int((m + 1) / 2)]
    }
    printf "%-16s %12s %10s\n", "allocator", "ns/page", "vs jemalloc"
    split("system jemalloc pagegen_acct pagegen_class", order, " ")
    for (i = 1; i <= 4; i++) { k = order[i]; printf "%-16s %12.0f %10.3f\n", k, med[k], med[k] / med["jemalloc"] }
  }' "$out"
