#!/usr/bin/env bash
# Runs the test cases of one GPU backend, or reports them skipped (exit 77,
# which ctest shows as "Skipped") when this machine has no such device.
# usage: run_device_tests.sh cuda|vulkan LLMCLI LLMRT_TESTS
set -euo pipefail
kind=$1 cli=$2 tests=$3
if ! "$cli" devices --json | grep -q "\"id\": \"$kind:"; then
  echo "no $kind device on this machine: [$kind] tests skipped"
  exit 77
fi
exec "$tests" "[$kind]"
