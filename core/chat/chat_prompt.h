// Turns a conversation into prompt token ids: the model's chat template rendered
// with its BOS/EOS strings, then tokenized with control tokens recognised, and
// BOS prepended when the tokenizer wants one and the template did not write it.
// Shared by `llmcli chat`, `llmcli generate --chat` and the server.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/chat/chat_template.h"
#include "core/chat/model_chat_template.h"
#include "core/chat/tool_calls.h"
#include "core/tokenizer/tokenizer.h"

namespace llm {

class ChatPrompt {
 public:
  // model_path: where find_chat_template looks; conv_template: a built-in
  // template by name instead. Throws llm::Error when there is no template.
  ChatPrompt(const Tokenizer& tokenizer, const std::string& model_path,
             const std::string& conv_template = "");

  // messages: a JSON list of {"role", "content"}; ends with the assistant's turn opened.
  // tools: a list for the template's `tools` variable, or null. kwargs: more variables
  // for the template (an object, e.g. {"enable_thinking": false}), or null.
  std::string render(const nlohmann::ordered_json& messages,
                     const nlohmann::ordered_json& tools = nullptr,
                     const nlohmann::ordered_json& kwargs = nullptr) const;
  std::vector<int32_t> encode(const nlohmann::ordered_json& messages,
                              const nlohmann::ordered_json& tools = nullptr) const;
  // Variables every render() gives the template (llmcli's --chat-template-kwargs); a
  // render's own kwargs win. Throws llm::Error unless an object (or null: none).
  void set_default_kwargs(const nlohmann::ordered_json& kwargs);
  // The ids of a prompt render() gave.
  std::vector<int32_t> encode_rendered(const std::string& text) const;
  const std::string& origin() const { return origin_; }
  // How the template writes tool calls, so that replies can be parsed back into calls.
  ToolCallSyntax tool_call_syntax() const { return tool_syntax_; }
  // Whether the template knows think blocks (<think>...</think>): a reasoning model.
  bool thinks() const { return thinks_; }

 private:
  const Tokenizer& tok_;
  std::unique_ptr<ChatTemplate> template_;
  std::string origin_;
  ToolCallSyntax tool_syntax_ = ToolCallSyntax::None;
  bool thinks_ = false;
  ChatTemplateOptions opts_;
  nlohmann::ordered_json default_kwargs_;
};

}  // namespace llm
