#!/usr/bin/env bash
# One MGRAL agent iteration (rollout + update) against a bare fused nn.LSTM, at the paper's pool sizes.
# Each size runs in a fresh process so that peak_mb is that size's own. Usage: benchmarks/agent_speed.sh [device]
set -euo pipefail
cd "$(dirname "$0")/.."
device=${1:-cpu}
out=benchmarks/results/agent_speed_${device}.jsonl
: > "$out"
for pool in 1000 16551 117000; do
  .venv/bin/mgral bench agent --pool "$pool" --budget 1000 --repeats 5 --device "$device" | tee -a "$out"
done
