#!/usr/bin/env bash
# Every benchmark of benchmarks/, in order; results land in benchmarks/results/. About an hour on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
benchmarks/agent_speed.sh cpu
.venv/bin/python benchmarks/coco_eval_speed.py
.venv/bin/python benchmarks/quality.py --seeds 0 1 2
.venv/bin/python benchmarks/semi_supervised.py --sizes 200 600 --seeds 0 1 2
.venv/bin/python benchmarks/fuzz_readers.py --scale 20
