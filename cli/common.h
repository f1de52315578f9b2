// Helpers shared by the llmcli subcommands.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/engine/engine.h"
#include "core/model.h"
#include "core/tokenizer/tokenizer.h"

namespace llm::cli {

// Options every model command takes.
// The most --threads a command takes (more would only add scheduling).
constexpr int kMaxThreads = 1024;

struct ModelOptions {
  std::string model;
  std::string device = "auto";
  int threads = 0;
  int context_size = 0;
  std::string quantization;  // empty: as stored
  std::string kv_cache_type = "f32";
  std::vector<std::string> lora;         // --lora PATH
  std::vector<std::string> lora_scaled;  // --lora-scaled PATH SCALE, flattened
};

// --kv-cache-type as a DType (throws llm::Error naming the allowed types).
DType kv_cache_dtype(const ModelOptions& o);

void add_model_options(CLI::App* cmd, ModelOptions& o);

// "1,2,3" -> {1,2,3} (token ids, batch sizes, layers: `what` names them in the error);
// throws llm::Error naming the bad item and the flag.
std::vector<int32_t> parse_int_list(const std::string& text, const char* flag, const char* what);

// A backend and a model on it, loaded as the options say.
struct LoadedModel {
  std::string path;  // the local model path (hf:// resolved)
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Model> model;
};
LoadedModel load_model(const ModelOptions& o);

// --draft-model PATH and --draft-max N (generate, chat, serve): speculative decoding with
// a small model of the same vocabulary (EngineOptions::draft_model).
struct DraftOptions {
  std::string model;  // empty: none
  int max_tokens = 4;
};
void add_draft_options(CLI::App* cmd, DraftOptions& o);
// The draft model on lm's backend, quantized as the main model (--quantization), set in
// eo (draft_model, draft_tokens); null without --draft-model. It must outlive the engine.
// tok: the model's tokenizer where the command loaded one (else read from lm's path),
// whose tokens the draft's must spell alike.
std::unique_ptr<Model> load_draft_model(const DraftOptions& d, const ModelOptions& o,
                                        const LoadedModel& lm, const Tokenizer* tok,
                                        EngineOptions& eo);

// The model's tokenizer (tokenizer.json in a folder, or the GGUF vocab); throws
// llm::Error saying what is missing. Ids of the model's padded embedding rows past
// the tokenizer's vocabulary decode to nothing (a warning says how many).
std::unique_ptr<Tokenizer> load_tokenizer(const LoadedModel& lm);
// MODEL as given, or for hf://ORG/NAME[/FILE.gguf] the local copy (downloaded
// into the cache first, with a progress bar per file on stderr).
std::string resolve_model(const std::string& model);

std::string format_bytes(size_t bytes);
// "3.92 GiB (q4_1 3.64 GiB, q8_0 262.5 MiB, f32 1.1 MiB)": a model's weights on the device
// and what each dtype they run in takes, largest first (one dtype: the total alone).
std::string format_weight_bytes(const Model& m);

// --chat-template-kwargs JSON: more variables for the chat template (e.g.
// '{"enable_thinking": false}'); an empty text gives null. Throws llm::Error naming the flag.
nlohmann::ordered_json parse_template_kwargs(const std::string& text);
void add_template_kwargs_option(CLI::App* cmd, std::string& text);

// The whole of file `path` (- for stdin), as bytes; errors name `flag`.
std::string read_input(const std::string& path, const char* flag);

// Subcommands (one file each).
void register_devices(CLI::App& app);
void register_logits(CLI::App& app);
void register_generate(CLI::App& app);
void register_tokenize(CLI::App& app);  // tokenize and detokenize
void register_bench(CLI::App& app);
void register_template(CLI::App& app);
void register_synth(CLI::App& app);
void register_convert(CLI::App& app);  // convert and gen-config
void register_chat(CLI::App& app);
void register_serve(CLI::App& app);
void register_trace(CLI::App& app);
void register_pull(CLI::App& app);
void register_embed(CLI::App& app);

}  // namespace llm::cli
