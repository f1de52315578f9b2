// llmcli template MODEL_OR_FILE.jinja --messages FILE.json [--add-generation-prompt]
// [--bos-token S --eos-token S] [--date YYYY-MM-DD] [--conv-template NAME]:
// prints the prompt the chat template renders.
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/common.h"
#include "core/chat/chat_template.h"
#include "core/chat/model_chat_template.h"
#include "core/error.h"

namespace llm::cli {

namespace {

struct TemplateOptions {
  std::string model;
  std::string messages;
  std::string conv_template;
  std::string bos, eos, date;
  bool add_generation_prompt = false;
};

void run_template(const TemplateOptions& o) {
  std::ifstream f(o.messages, std::ios::binary);
  if (!f) fail("cannot read messages file '%s'", o.messages.c_str());
  std::stringstream ss;
  ss << f.rdbuf();
  nlohmann::ordered_json doc;
  try {
    doc = nlohmann::ordered_json::parse(ss.str());
  } catch (const nlohmann::json::parse_error& e) {
    fail("%s: invalid JSON: %s", o.messages.c_str(), e.what());
  }
  // Either a list of messages or {"messages": [...], "tools": [...], ...}.
  nlohmann::ordered_json messages = doc;
  ChatTemplateOptions opts;
  if (doc.is_object()) {
    if (!doc.contains("messages")) fail("%s: no \"messages\" list", o.messages.c_str());
    messages = doc["messages"];
    nlohmann::json extra = nlohmann::json::object();
    for (auto it = doc.begin(); it != doc.end(); ++it)
      if (it.key() != "messages") extra[it.key()] = it.value();
    opts.extra_context = extra;
  }
  if (!messages.is_array()) fail("%s: messages must be a JSON list", o.messages.c_str());
  const ModelChatTemplate t = find_chat_template(resolve_model(o.model), o.conv_template);
  opts.add_generation_prompt = o.add_generation_prompt;
  opts.bos_token = o.bos.empty() ? t.bos_token : o.bos;
  opts.eos_token = o.eos.empty() ? t.eos_token : o.eos;
  opts.date = o.date;
  const std::string out = ChatTemplate(t.source).render(messages, opts);
  std::fwrite(out.data(), 1, out.size(), stdout);
}

}  // namespace

void register_template(CLI::App& app) {
  auto* cmd = app.add_subcommand("template", "Render a conversation through a chat template");
  auto o = std::make_shared<TemplateOptions>();
  cmd->add_option("model", o->model, "A model (folder or .gguf) or a .jinja template file");
  cmd->add_option("--messages", o->messages, "JSON file: a list of {role, content} messages")
      ->required();
  cmd->add_flag("--add-generation-prompt", o->add_generation_prompt,
                "End with the start of the assistant's turn");
  cmd->add_option("--conv-template", o->conv_template,
                  "Use a built-in conversation template (llama-2, llama-3, chatml, ...)");
  cmd->add_option("--bos-token", o->bos, "bos_token (default: the model's, or <s>)");
  cmd->add_option("--eos-token", o->eos, "eos_token (default: the model's, or </s>)");
  cmd->add_option("--date", o->date, "Date for strftime_now, YYYY-MM-DD (default: today)");
  cmd->callback([o]() { run_template(*o); });
}

}  // namespace llm::cli
