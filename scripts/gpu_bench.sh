#!/usr/bin/env bash
# Runs the GPU test suites and the benchmarks of docs/PERFORMANCE.md on this machine:
# synthetic llama-7b / llama-1b q4f16_1 models, then `llmrt_tests "[cuda]"` and
# `"[vulkan]"` and `llmcli bench` on every GPU backend llmcli sees. Logs go to OUTDIR.
# The q41 step benches the same shapes in GGUF Q4_1 blocks (what Q4_K files load as)
# against q4_0 and against their Q8_0 load (`--quantization q8f16_1`).
#
# usage: scripts/gpu_bench.sh [-b BUILD_DIR] [-o OUTDIR] [-m MODEL_DIR] [tests] [bench] [batch] [q41]
#   (no step named: tests, bench and batch)
# Run from the repository root (the tests read tests/data).
set -uo pipefail

build=build out=gpu-bench-out models=${TMPDIR:-/tmp}/llmrt-bench-models
while getopts "b:o:m:" opt; do
  case $opt in
    b) build=$OPTARG ;;
    o) out=$OPTARG ;;
    m) models=$OPTARG ;;
    *) exit 2 ;;
  esac
done
shift $((OPTIND - 1))
steps=${*:-tests bench batch}
cli=$build/llmcli tests_bin=$build/tests/llmrt_tests
[ -x "$cli" ] || { echo "no llmcli in $build (build first, or pass -b)" >&2; exit 1; }
# The tests take this checkout's data and this llmcli, wherever the binaries were built.
export LLMRT_TEST_DATA=$PWD/tests/data LLMRT_CLI=$(realpath "$cli")
mkdir -p "$out" "$models"

# GPU backends only: lavapipe (a Vulkan device of type cpu) is for the tests, not timings.
mapfile -t backends < <("$cli" devices --json | python3 -c '
import json, sys
seen = [d["id"].split(":")[0] for d in json.load(sys.stdin)["devices"] if d["type"] != "cpu"]
print("\n".join(b for b in ("cuda", "vulkan") if b in seen))' | grep .)
"$cli" devices | tee "$out/devices.txt"
[ ${#backends[@]} -gt 0 ] || { echo "no GPU backend sees a device: nothing to run" >&2; exit 77; }

vocab=tests/data/tokenizers/ggml-vocab-llama-spm.gguf
for shape in 7b 1b; do
  [ -f "$models/$shape/llm-config.json" ] && continue
  "$cli" synth --shape "llama-$shape" --quantization q4f16_1 --vocab "$vocab" \
    -o "$models/$shape" > /dev/null || exit 1
  if [[ " $steps " == *" q41 "* && ! -f "$models/$shape-q4_1.gguf" ]]; then
    "$cli" synth --shape "llama-$shape" --quantization q4_1 --format gguf --vocab "$vocab" \
      -o "$models/$shape-q4_1.gguf" > /dev/null || exit 1
  fi
done

status=0
for step in $steps; do
  for b in "${backends[@]}"; do
    case $step in
      tests)
        echo "=== llmrt_tests [$b]"
        "$tests_bin" "[$b]" > "$out/tests_$b.log" 2>&1
        rc=$?
        tail -3 "$out/tests_$b.log"
        [ $rc -eq 0 ] || status=1
        ;;
      bench)
        for m in 7b 1b; do
          echo "=== bench $m $b"
          "$cli" bench "$models/$m" --device "$b" -p 512 -n 128 -r 2 2>&1 | grep '^|' |
            tee -a "$out/bench_$b.md"
          # decode after 512 tokens of context (what bench called tg128 before it ran its
          # tests as llama-bench does)
          "$cli" bench "$models/$m" --device "$b" -p 0 -n 128 -d 512 -r 2 2>&1 | grep '^| /' |
            tee -a "$out/bench_$b.md"
        done
        ;;
      batch)
        for m in 7b 1b; do
          echo "=== bench --batch $m $b"
          "$cli" bench "$models/$m" --device "$b" --batch 1,2,4,8,32,64 -p 128 -n 128 -r 1 2>&1 |
            grep '^|' | tee -a "$out/batch_$b.md"
        done
        ;;
      q41)
        for m in 7b 1b; do
          echo "=== bench $m q4_0 / q4_1 / q4_1 loaded as q8_0, $b"
          for args in "$models/$m" "$models/$m-q4_1.gguf" \
            "$models/$m-q4_1.gguf --quantization q8f16_1"; do
            # shellcheck disable=SC2086 # args holds the model and its options
            "$cli" bench $args --device "$b" -p 512 -n 128 -r 2 2>&1 | grep '^|' |
              tee -a "$out/q41_$b.md"
          done
        done
        ;;
      *)
        echo "unknown step '$step' (tests, bench, batch, q41)" >&2
        exit 2
        ;;
    esac
  done
done
exit $status
