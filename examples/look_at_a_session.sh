#!/usr/bin/env bash
# Look at a recording from the shell: start a server on the demo recording, then describe,
# list, export and draw it with `python -m software`. Run from the repository root:
#
#     bash examples/look_at_a_session.sh [OUTDIR]
#
# Environment: PYTHON (default python), PORT (default 18871), DATA (data root, default
# OUTDIR/data: the server writes the demo recording there on its first start).
set -euo pipefail
PY=${PYTHON:-python}
OUT=${1:-$(mktemp -d)}
PORT=${PORT:-18871}
DATA=${DATA:-$OUT/data}
mkdir -p "$OUT" "$DATA"

"$PY" start.py --data-root "$DATA" --port "$PORT" >"$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true' EXIT

mef() { "$PY" -m software "$@" --port "$PORT"; }

# waits up to 60 s for the server, which first writes the demo recording (a few seconds)
mef info demo.mefd --timeout 60
mef ls
# the demo's gap runs from 00:10:00 to 00:10:30 UTC: export 50 s around its start
mef export demo.mefd --channels EEG01,EEG02 --start 2024-01-01T00:09:50 --stop 00:10:40 \
    --out "$OUT/around_gap.mefd"
mef export demo.mefd --channels EEG01,EEG02 --start 300 --stop 310s --out "$OUT/ten_seconds.csv"
mef plot demo.mefd --start 00:09:50 --seconds 15 --out "$OUT/window.png"
mef plot demo.mefd --follow --frames "$OUT/frames" --start 590 --seconds 10 --step 5 \
    --max-frames 4
echo "pictures and exports are in $OUT"
