#include "cli/common.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <utility>
#include <vector>

#include "backends/registry.h"
#include "cli/progress.h"
#include "core/error.h"
#include "core/sources/hf_hub.h"

namespace llm::cli {

void add_model_options(CLI::App* cmd, ModelOptions& o) {
  cmd->add_option("model", o.model,
                  "Model: a Hugging Face folder, a native folder (llm-config.json), a .gguf file "
                  "or hf://ORG/NAME[/FILE.gguf]")
      ->required();
  cmd->add_option("--device", o.device, "auto, cpu, cuda[:N] or vulkan[:N]")->capture_default_str();
  cmd->add_option("--threads", o.threads, "CPU threads (default: all hardware threads)")
      ->check(CLI::Range(1, kMaxThreads));
  cmd->add_option("--context-size", o.context_size,
                  "Context window in tokens (default: the model's, at most 4096)")
      ->check(CLI::Range(1, 1 << 30));
  cmd->add_option("--quantization", o.quantization,
                  "Quantize float weights at load: q4f16_1, q8f16_1, q0f16, q0bf16 or q0f32");
  cmd->add_option("--kv-cache-type", o.kv_cache_type,
                  "KV cache elements: f32, or f16 / bf16 (half the memory and bandwidth)")
      ->capture_default_str();
  cmd->add_option("--lora", o.lora,
                  "LoRA adapter merged into the weights at load: a PEFT folder or a GGUF "
                  "adapter (repeatable)");
  cmd->add_option("--lora-scaled", o.lora_scaled,
                  "LoRA adapter and a scale for it (repeatable): --lora-scaled PATH 0.5")
      ->type_size(2);
}

DType kv_cache_dtype(const ModelOptions& o) {
  DType t;
  if (!dtype_from_name(o.kv_cache_type, &t) ||
      (t != DType::F32 && t != DType::F16 && t != DType::BF16))
    fail("--kv-cache-type %s: expected f32, f16 or bf16", o.kv_cache_type.c_str());
  return t;
}

std::vector<int32_t> parse_int_list(const std::string& text, const char* flag, const char* what) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t comma = text.find(',', pos);
    if (comma == std::string::npos) comma = text.size();
    std::string item = text.substr(pos, comma - pos);
    while (!item.empty() && item.front() == ' ') item.erase(0, 1);
    while (!item.empty() && item.back() == ' ') item.pop_back();
    char* end = nullptr;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || v < INT32_MIN || v > INT32_MAX)
      fail("invalid %s '%s' in %s (expected comma-separated integers)", what, item.c_str(), flag);
    ids.push_back(static_cast<int32_t>(v));
    pos = comma + 1;
  }
  if (ids.empty()) fail("%s is empty", flag);
  return ids;
}

void add_draft_options(CLI::App* cmd, DraftOptions& o) {
  cmd->add_option("--draft-model", o.model,
                  "Speculative decoding: a small model of the same vocabulary proposes tokens "
                  "the model checks in one step (while one sequence runs)");
  cmd->add_option("--draft-max", o.max_tokens, "Tokens the draft model proposes a step (1-32)")
      ->check(CLI::Range(1, 32))
      ->capture_default_str();
}

namespace {

// A token's text for a message: control characters and bytes past ASCII as \xNN.
std::string escaped(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      char hex[8];
      std::snprintf(hex, sizeof hex, "\\x%02x", c);
      out += hex;
    }
  }
  return out;
}

// Refuses a draft whose tokenizer writes other text for an id than the model's (Mistral's
// and Llama 2's vocabularies both hold 32,000 tokens): its drafts would never be kept.
// Either side without a tokenizer is not checked (token ids only).
void check_draft_vocabulary(const LoadedModel& lm, const Tokenizer* tok,
                            const std::string& draft_path) {
  std::unique_ptr<Tokenizer> loaded, draft;
  try {
    if (!tok) tok = (loaded = Tokenizer::load(lm.path)).get();
    draft = Tokenizer::load(draft_path);
  } catch (const Error&) {
    return;
  }
  const int32_t n = std::min(tok->vocab_size(), draft->vocab_size());
  for (int32_t id = 0; id < n; id++) {
    const std::string x = tok->token_bytes(id), y = draft->token_bytes(id);
    if (x != y)
      fail(
          "the draft model's vocabulary is not the model's: token %d is '%s' in the model and "
          "'%s' in the draft (take a draft of the same model family)",
          id, escaped(x).c_str(), escaped(y).c_str());
  }
}

}  // namespace

std::unique_ptr<Model> load_draft_model(const DraftOptions& d, const ModelOptions& o,
                                        const LoadedModel& lm, const Tokenizer* tok,
                                        EngineOptions& eo) {
  eo.draft_model = nullptr;
  if (d.model.empty()) return nullptr;
  const std::string path = resolve_model(d.model);
  check_draft_vocabulary(lm, tok, path);
  std::unique_ptr<Model> m = Model::load(path, *lm.backend, LoadOptions(o.quantization));
  const ModelConfig& c = m->config();
  std::fprintf(stderr, "llmcli: draft %s (%s, %d layers, hidden %d), weights %s\n", d.model.c_str(),
               c.model_type.c_str(), c.num_layers, c.hidden_size, format_weight_bytes(*m).c_str());
  eo.draft_model = m.get();
  eo.draft_tokens = d.max_tokens;
  return m;
}

LoadedModel load_model(const ModelOptions& o) {
  LoadedModel lm;
  lm.backend = create_backend(o.device, o.threads);
  LoadOptions lo;
  lo.quantization = o.quantization;
  // Adapters may come from the Hub too (hf://ORG/NAME or hf://ORG/NAME/FILE.gguf).
  for (const std::string& path : o.lora) lo.loras.push_back({resolve_model(path), 1.0f});
  for (size_t i = 0; i + 1 < o.lora_scaled.size(); i += 2) {
    const std::string& text = o.lora_scaled[i + 1];
    char* end = nullptr;
    const float scale = std::strtof(text.c_str(), &end);
    if (text.empty() || *end != '\0' || !std::isfinite(scale))
      fail("--lora-scaled %s %s: the scale must be a number", o.lora_scaled[i].c_str(),
           text.c_str());
    lo.loras.push_back({resolve_model(o.lora_scaled[i]), scale});
  }
  lm.path = resolve_model(o.model);
  lm.model = Model::load(lm.path, *lm.backend, lo);
  const ModelConfig& c = lm.model->config();
  std::fprintf(stderr, "llmcli: %s (%s, %d layers, hidden %d) on %s (%s), weights %s\n",
               o.model.c_str(), c.model_type.c_str(), c.num_layers, c.hidden_size,
               lm.backend->info().id.c_str(), lm.backend->info().name.c_str(),
               format_weight_bytes(*lm.model).c_str());
  return lm;
}

std::unique_ptr<Tokenizer> load_tokenizer(const LoadedModel& lm) {
  std::unique_ptr<Tokenizer> tok;
  try {
    tok = Tokenizer::load(lm.path);
  } catch (const Error& e) {
    fail(
        "%s has no usable tokenizer (%s); chat and text prompts need one (generate and logits "
        "also take --token-ids)",
        lm.path.c_str(), e.what());
  }
  const int32_t model_vocab = lm.model->config().vocab_size;
  if (model_vocab > tok->vocab_size()) {
    std::fprintf(stderr,
                 "llmcli: the model has %d token ids, the tokenizer %d; the %d past it (padding) "
                 "decode to nothing\n",
                 model_vocab, tok->vocab_size(), model_vocab - tok->vocab_size());
    tok->pad_to(model_vocab);
  } else if (model_vocab < tok->vocab_size()) {
    std::fprintf(stderr,
                 "llmcli: warning: the tokenizer has %d token ids, the model only %d; prompts "
                 "with ids past them are refused\n",
                 tok->vocab_size(), model_vocab);
  }
  return tok;
}

std::string resolve_model(const std::string& model) {
  // One bar per file; a new file name ends the previous bar.
  std::string current;
  std::unique_ptr<ProgressBar> bar;
  const std::string path =
      resolve_model_source(model, [&](const std::string& file, uint64_t done, uint64_t total) {
        if (file != current) {
          if (bar) bar->finish();
          current = file;
          bar = std::make_unique<ProgressBar>("download " + file);
        }
        bar->update(done, total);
        if (total > 0 && done == total) bar->finish();
      });
  if (bar) bar->finish();
  return path;
}

std::string format_weight_bytes(const Model& m) {
  std::string s = format_bytes(m.weight_bytes());
  std::vector<std::pair<size_t, DType>> parts;
  for (const auto& [t, bytes] : m.weight_bytes_by_dtype()) parts.push_back({bytes, t});
  if (parts.size() < 2) return s;
  std::sort(parts.rbegin(), parts.rend());
  for (size_t i = 0; i < parts.size(); i++)
    s += (i ? ", " : " (") + std::string(dtype_name(parts[i].second)) + " " +
         format_bytes(parts[i].first);
  return s + ")";
}

std::string format_bytes(size_t bytes) {
  char buf[64];
  if (bytes >= (1ull << 30))
    std::snprintf(buf, sizeof buf, "%.2f GiB", bytes / double(1ull << 30));
  else if (bytes >= (1ull << 20))
    std::snprintf(buf, sizeof buf, "%.1f MiB", bytes / double(1ull << 20));
  else
    std::snprintf(buf, sizeof buf, "%.1f KiB", bytes / 1024.0);
  return buf;
}

std::string read_input(const std::string& path, const char* flag) {
  if (path == "-")
    return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) fail("%s '%s' is a folder", flag, path.c_str());
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("%s: cannot read '%s': %s", flag, path.c_str(), std::strerror(errno));
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

nlohmann::ordered_json parse_template_kwargs(const std::string& text) {
  if (text.empty()) return nullptr;
  nlohmann::ordered_json j;
  try {
    j = nlohmann::ordered_json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("--chat-template-kwargs: %s", e.what());
  }
  if (!j.is_object()) fail("--chat-template-kwargs must be a JSON object, got %s", text.c_str());
  return j;
}

void add_template_kwargs_option(CLI::App* cmd, std::string& text) {
  cmd->add_option("--chat-template-kwargs", text,
                  "More variables for the chat template, as a JSON object (e.g. "
                  "'{\"enable_thinking\": false}')");
}

}  // namespace llm::cli
