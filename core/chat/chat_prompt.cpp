#include "core/chat/chat_prompt.h"

#include "core/error.h"

namespace llm {

ChatPrompt::ChatPrompt(const Tokenizer& tokenizer, const std::string& model_path,
                       const std::string& conv_template)
    : tok_(tokenizer) {
  const ModelChatTemplate t = find_chat_template(model_path, conv_template);
  template_ = std::make_unique<ChatTemplate>(t.source);
  origin_ = t.origin;
  tool_syntax_ = detect_tool_call_syntax(t.source);
  thinks_ = t.source.find("</think>") != std::string::npos;
  opts_.add_generation_prompt = true;
  // The template writes the tokenizer's own BOS/EOS strings.
  const int32_t bos = tokenizer.bos_id(), eos = tokenizer.eos_id();
  opts_.bos_token = bos >= 0 ? tokenizer.decode({bos}) : t.bos_token;
  opts_.eos_token = eos >= 0 ? tokenizer.decode({eos}) : t.eos_token;
}

std::string ChatPrompt::render(const nlohmann::ordered_json& messages,
                               const nlohmann::ordered_json& tools,
                               const nlohmann::ordered_json& kwargs) const {
  if (tools.is_null() && kwargs.is_null() && default_kwargs_.is_null())
    return template_->render(messages, opts_);
  ChatTemplateOptions opts = opts_;
  opts.extra_context =
      default_kwargs_.is_null() ? nlohmann::ordered_json::object() : default_kwargs_;
  if (!kwargs.is_null())
    for (auto it = kwargs.begin(); it != kwargs.end(); ++it) opts.extra_context[it.key()] = *it;
  if (!tools.is_null()) opts.extra_context["tools"] = tools;
  return template_->render(messages, opts);
}

void ChatPrompt::set_default_kwargs(const nlohmann::ordered_json& kwargs) {
  if (!kwargs.is_null() && !kwargs.is_object())
    fail("chat template kwargs must be a JSON object, got %s", kwargs.dump().c_str());
  default_kwargs_ = kwargs;
}

std::vector<int32_t> ChatPrompt::encode(const nlohmann::ordered_json& messages,
                                        const nlohmann::ordered_json& tools) const {
  return encode_rendered(render(messages, tools));
}

std::vector<int32_t> ChatPrompt::encode_rendered(const std::string& text) const {
  std::vector<int32_t> ids = tok_.encode(text, /*add_special=*/false, /*parse_special=*/true);
  const int32_t bos = tok_.bos_id();
  if (tok_.add_bos() && bos >= 0 && (ids.empty() || ids[0] != bos)) ids.insert(ids.begin(), bos);
  return ids;
}

}  // namespace llm
