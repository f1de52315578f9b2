#include "core/chat/model_chat_template.h"

#include <sys/stat.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/chat/conv_templates.h"
#include "core/error.h"
#include "core/formats/gguf.h"
#include "core/path_util.h"

namespace llm {

namespace {

bool exists(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0;
}

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("cannot read '%s'", path.c_str());
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// tokenizer_config.json writes special tokens as "text" or {"content": "text", ...}.
std::string token_text(const nlohmann::json& j) {
  if (j.is_string()) return j.get<std::string>();
  if (j.is_object() && j.contains("content") && j["content"].is_string())
    return j["content"].get<std::string>();
  return "";
}

std::string builtin(const std::string& name) {
  const std::string* src = find_conv_template(name);
  if (!src) {
    std::string known;
    for (const std::string& n : conv_template_names()) known += (known.empty() ? "" : ", ") + n;
    fail("unknown conversation template '%s' (known: %s)", name.c_str(), known.c_str());
  }
  return *src;
}

void from_hf_folder(const std::string& dir, ModelChatTemplate* t) {
  const std::string cfg_path = dir + "/tokenizer_config.json";
  nlohmann::json cfg;
  if (exists(cfg_path)) {
    try {
      cfg = nlohmann::json::parse(read_text(cfg_path));
    } catch (const nlohmann::json::parse_error& e) {
      fail("%s: invalid JSON: %s", cfg_path.c_str(), e.what());
    }
    if (cfg.contains("bos_token")) t->bos_token = token_text(cfg["bos_token"]);
    if (cfg.contains("eos_token")) t->eos_token = token_text(cfg["eos_token"]);
  }
  if (exists(dir + "/chat_template.jinja")) {
    t->source = read_text(dir + "/chat_template.jinja");
    t->origin = dir + "/chat_template.jinja";
    return;
  }
  if (cfg.contains("chat_template")) {
    const nlohmann::json& ct = cfg["chat_template"];
    if (ct.is_string()) {
      t->source = ct.get<std::string>();
    } else if (ct.is_array()) {  // [{"name": "default", "template": ...}, ...]
      for (const auto& e : ct)
        if (e.value("name", "") == "default" && e.contains("template"))
          t->source = e["template"].get<std::string>();
    }
    t->origin = cfg_path;
  }
  // A native folder (llm-config.json) names a built-in conversation template.
  if (t->source.empty() && exists(dir + "/llm-config.json")) {
    nlohmann::json nc = nlohmann::json::parse(read_text(dir + "/llm-config.json"), nullptr, false);
    if (nc.is_object() && nc.contains("conv_template") && nc["conv_template"].is_string()) {
      t->source = builtin(nc["conv_template"].get<std::string>());
      t->origin = "conv_template " + nc["conv_template"].get<std::string>();
    }
  }
}

}  // namespace

ModelChatTemplate find_chat_template(const std::string& path, const std::string& conv_template) {
  ModelChatTemplate t;
  t.bos_token = "<s>";
  t.eos_token = "</s>";
  if (!conv_template.empty()) {
    t.source = builtin(conv_template);
    t.origin = "conv_template " + conv_template;
  }
  if (path.empty()) {
    if (t.source.empty()) fail("no model or template given");
    return t;
  }
  if (!exists(path)) fail("'%s' does not exist", path.c_str());
  const std::string chosen = t.source;
  if (is_dir(path)) {
    from_hf_folder(path, &t);
  } else if (ends_with(path, ".gguf")) {
    GgufFile f(path);
    t.source = f.get_string_or("tokenizer.chat_template", "");
    t.origin = path + " (tokenizer.chat_template)";
    const std::vector<std::string> tokens = f.find("tokenizer.ggml.tokens")
                                                ? f.get_string_array("tokenizer.ggml.tokens")
                                                : std::vector<std::string>();
    auto special = [&](const char* key, std::string* out) {
      const int64_t id = f.get_int_or(key, -1);
      if (id >= 0 && id < static_cast<int64_t>(tokens.size())) *out = tokens[id];
    };
    special("tokenizer.ggml.bos_token_id", &t.bos_token);
    special("tokenizer.ggml.eos_token_id", &t.eos_token);
  } else {
    t.source = read_text(path);  // a template file
    t.origin = path;
  }
  if (!chosen.empty()) t.source = chosen;  // --conv-template wins over the model's own
  if (t.source.empty())
    fail("'%s' has no chat template; choose a built-in one with --conv-template", path.c_str());
  return t;
}

}  // namespace llm
