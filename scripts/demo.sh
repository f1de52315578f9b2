#!/usr/bin/env bash
# The demo: show the devices, then run a small model on the best one found.
set -euo pipefail
BUILD_DIR=${1:-build}
CLI="$BUILD_DIR/llmcli"
MODEL=tests/data/models/llama3
"$CLI" devices
echo
echo "== greedy generation with $MODEL (--device auto)"
"$CLI" generate "$MODEL" --device auto --token-ids 18,74,173,208,35,18 -n 16 --temperature 0
