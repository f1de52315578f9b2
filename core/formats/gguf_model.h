// Models from GGUF files: the config from the metadata and the weights under
// the Hugging Face names the graph builders use.
#pragma once

#include <memory>

#include "core/formats/gguf.h"
#include "core/formats/safetensors.h"
#include "core/models/model_config.h"

namespace llm {

// Reads the hyper-parameters of general.architecture; throws for an
// architecture this build cannot run.
ModelConfig config_from_gguf(const GgufFile& f);

// Adds f's tensors to store under Hugging Face names (token_embd.weight ->
// model.embed_tokens.weight ...). The store keeps `f` alive. Tensors of the
// GGUF block types the backends do not all run (Q4_1, Q5_0, Q5_1, Q4_K, Q5_K,
// Q6_K) are decoded and transcoded at this point: matrices to `transcode_to` (Q8_0,
// F16, BF16 or F32), vectors to F32; the store owns those copies. With `q4_1` (and
// transcode_to Q8_0), Q4_1 matrices stay as stored and Q4_K ones become Q4_1
// (gguf_quants.h: the same 4-bit values, scales rounded to f16) instead.
void add_gguf_weights(std::shared_ptr<const GgufFile> f, WeightStore& store,
                      DType transcode_to = DType::Q8_0, bool q4_1 = false);

// Whether a quantization scheme name ("" for none) lets Q4_1 / Q4_K matrices load as
// Q4_1: no scheme, or q4f16_1 (a float scheme decodes them, q8f16_1 asks for Q8_0).
bool gguf_keeps_q4_1(const std::string& quantization);

// What add_gguf_weights should transcode to under a quantization scheme name
// ("" = as stored): f16 for q0f16, bf16 for q0bf16, f32 for q0f32, q8_0 otherwise (no 4-bit
// type holds K-quant values exactly, so q4f16_1 gets the closer 8-bit one too).
DType gguf_transcode_target(const std::string& quantization);

// The Hugging Face name of a GGUF tensor of general.architecture `arch`
// ("blk.3.ffn_up.weight" -> "model.layers.3.mlp.up_proj.weight"); names it does not
// know come back unchanged.
std::string hf_tensor_name(const std::string& arch, const std::string& gguf_name);

}  // namespace llm
