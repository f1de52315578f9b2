// Chat prompt rendering as Hugging Face transformers' apply_chat_template does it: the
// model's Jinja chat template rendered with `messages`, `tools` and `documents` (None unless
// given), `add_generation_prompt`, `bos_token`, `eos_token`, plus any extra variables.
//
//   llm::ChatTemplateOptions opts;
//   opts.add_generation_prompt = true;
//   std::string prompt = llm::render_chat_template(source, messages, opts);
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "core/chat/jinja.h"

namespace llm {

struct ChatTemplateOptions {
  bool add_generation_prompt = false;
  std::string bos_token = "<s>", eos_token = "</s>";
  std::string date;  // YYYY-MM-DD for strftime_now, empty = today
  // Further template variables, a JSON object: "tools", "documents" (both None unless given
  // here), "enable_thinking", ... Its keys win over the variables set above. Ordered:
  // `tojson` writes objects (a tool's schema) in the order they were given, as
  // transformers does.
  nlohmann::ordered_json extra_context;
  // Reject list/dict mutation (append, pop, ...) exactly like transformers' sandbox.
  bool immutable_sandbox = false;
};

// A chat template parsed once and rendered many times.
class ChatTemplate {
 public:
  // Throws llm::Error("template line N: ...") if the source does not parse.
  explicit ChatTemplate(const std::string& source);

  // `messages` is a JSON array of {"role": ..., "content": ...} objects. Throws llm::Error;
  // a template's raise_exception("msg") surfaces as exactly "msg".
  std::string render(const nlohmann::ordered_json& messages, const ChatTemplateOptions& opts) const;

 private:
  jinja::Template tmpl_;
};

// Parses and renders in one go. An nlohmann::json has its object keys sorted, which shows in
// `tojson` output; pass nlohmann::ordered_json to keep the caller's key order.
std::string render_chat_template(const std::string& source, const nlohmann::json& messages,
                                 const ChatTemplateOptions& opts);
std::string render_chat_template(const std::string& source, const nlohmann::ordered_json& messages,
                                 const ChatTemplateOptions& opts);

}  // namespace llm
