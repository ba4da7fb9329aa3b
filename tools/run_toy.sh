#!/usr/bin/env bash
# The main job, on the CPU of one machine: generate the toy AVA benchmark if it is missing, train the raw reference
# detector and the adversarially anonymized one, train an adaptive attacker for each and an inversion attacker for
# the anonymized one, test both with AVA's frame-mAP and the privacy metrics (the worst case over attackers and
# protocols), test the raw detector behind the anonymizer, and print the tables (tools/analysis/privacy_utility.py
# does the work and keeps every step's command and log in the work directory).
#
#   bash tools/run_toy.sh                       # raw and learned
#   METHODS="raw box-blur gaussian-blur pixelate solid-mask gaussian-noise learned" bash tools/run_toy.sh
#
# Environment: WORK_DIR (default work_dirs/toy), METHODS (default "raw learned"). The toy configs read the data
# from data/toy_ava, relative to the repository root, where this script runs.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK_DIR=${WORK_DIR:-work_dirs/toy}
METHODS=${METHODS:-raw learned}

if [ ! -f data/toy_ava/toy_ava.json ]; then
  echo "[run_toy] generating the toy benchmark in data/toy_ava"
  python tools/data/make_toy_ava.py data/toy_ava
fi

echo "[run_toy] training and testing: $METHODS (logs in $WORK_DIR/<method>/)"
# The detectors are tested by the report itself; validating them during training would only repeat it.
python tools/analysis/privacy_utility.py --methods $METHODS --work-dir "$WORK_DIR" --train-args=--no-validate

echo
cat "$WORK_DIR/privacy_utility.md"
