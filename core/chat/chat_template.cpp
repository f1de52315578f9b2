#include "core/chat/chat_template.h"

#include "core/error.h"

namespace llm {

ChatTemplate::ChatTemplate(const std::string& source) : tmpl_(source) {}

std::string ChatTemplate::render(const nlohmann::ordered_json& messages,
                                 const ChatTemplateOptions& opts) const {
  if (!messages.is_array()) throw llm::Error("chat messages must be a JSON array");
  // transformers passes tools and documents explicitly, as None when absent: templates can
  // tell `tools is none` apart from undefined.
  nlohmann::ordered_json ctx = {
      {"messages", messages},        {"tools", nullptr},
      {"documents", nullptr},        {"add_generation_prompt", opts.add_generation_prompt},
      {"bos_token", opts.bos_token}, {"eos_token", opts.eos_token},
  };
  if (!opts.extra_context.is_null()) {
    if (!opts.extra_context.is_object()) throw llm::Error("extra_context must be a JSON object");
    for (auto it = opts.extra_context.begin(); it != opts.extra_context.end(); ++it) {
      ctx[it.key()] = it.value();
    }
  }
  jinja::RenderOptions ro;
  ro.date = opts.date;
  ro.immutable_sandbox = opts.immutable_sandbox;
  return tmpl_.render(ctx, ro);
}

std::string render_chat_template(const std::string& source, const nlohmann::ordered_json& messages,
                                 const ChatTemplateOptions& opts) {
  return ChatTemplate(source).render(messages, opts);
}

std::string render_chat_template(const std::string& source, const nlohmann::json& messages,
                                 const ChatTemplateOptions& opts) {
  return ChatTemplate(source).render(nlohmann::ordered_json(messages), opts);
}

}  // namespace llm
