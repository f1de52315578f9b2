#!/usr/bin/env bash
# The demo: show the devices, make a tiny model with a real tokenizer, and run
# it on the best device found, then chat with it through `llmcli chat`.
set -euo pipefail
BUILD_DIR=${1:-build}
CLI="$BUILD_DIR/llmcli"
MODEL="$BUILD_DIR/demo-tiny"
"$CLI" devices
echo
echo "== a tiny random-weight llama with the Llama 2 vocabulary"
[ -f "$MODEL/llm-config.json" ] || "$CLI" synth --shape tiny --quantization q8f16_1 \
  --vocab tests/data/tokenizers/ggml-vocab-llama-spm.gguf -o "$MODEL"
echo '[{"role": "user", "content": "Hello! Who are you?"}]' > "$BUILD_DIR/demo-messages.json"
PROMPT=$("$CLI" template "$MODEL" --messages "$BUILD_DIR/demo-messages.json" --add-generation-prompt)
echo "prompt: $PROMPT"
IDS=$("$CLI" tokenize "$MODEL" --text "$PROMPT" --parse-special)
echo "prompt ids: $IDS"
echo
echo "== greedy generation (--device auto); random weights, so the text is noise"
OUT=$("$CLI" generate "$MODEL" --device auto --token-ids "$IDS" -n 16 --temperature 0)
echo "ids: $OUT"
echo "text: $("$CLI" detokenize "$MODEL" --ids "$OUT")"
echo
echo "== llmcli chat, scripted through a pipe (interactive when run on a terminal)"
printf 'Hello! Who are you?\n/stats\n' | "$CLI" chat "$MODEL" --device auto --temperature 0 --max-tokens 24
