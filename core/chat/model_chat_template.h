// Finds a model's chat template: a .jinja file, a Hugging Face folder
// (chat_template.jinja or tokenizer_config.json's chat_template), a GGUF file
// (tokenizer.chat_template), or a built-in conversation template by name.
#pragma once

#include <string>

namespace llm {

struct ModelChatTemplate {
  std::string source;  // Jinja source
  std::string origin;  // where it came from, for messages
  std::string bos_token;
  std::string eos_token;
};

// path: a .jinja file, a model folder or a .gguf file. conv_template, when not
// empty, selects a built-in template instead (and is the fallback the native
// folder's llm-config.json names). Throws llm::Error when none is found.
ModelChatTemplate find_chat_template(const std::string& path,
                                     const std::string& conv_template = "");

}  // namespace llm
