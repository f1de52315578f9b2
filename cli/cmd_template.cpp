// llmcli template MODEL_OR_FILE.jinja --messages FILE.json [--add-generation-prompt]
// [--bos-token S --eos-token S] [--date YYYY-MM-DD] [--conv-template NAME]:
// prints the prompt the chat template renders.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/common.h"
#include "core/chat/chat_template.h"
#include "core/chat/jinja.h"
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

// Whether --messages is inline JSON (it starts with [ or {) rather than a file name.
bool inline_json(const std::string& arg) {
  const size_t first = arg.find_first_not_of(" \t\r\n");
  return first != std::string::npos && (arg[first] == '[' || arg[first] == '{');
}

// --messages' JSON text: inline, or the file's.
std::string messages_text(const std::string& arg) {
  if (inline_json(arg)) return arg;
  std::error_code ec;
  if (std::filesystem::is_directory(arg, ec))
    fail("--messages '%s' is a folder, not a JSON file", arg.c_str());
  std::ifstream f(arg, std::ios::binary);
  if (!f) fail("cannot read messages file '%s': %s", arg.c_str(), std::strerror(errno));
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

void run_template(const TemplateOptions& o) {
  std::tm day{};
  if (!o.date.empty() && !jinja::parse_date(o.date, &day))
    fail("--date '%s' is not a calendar date YYYY-MM-DD", o.date.c_str());
  const std::string where = inline_json(o.messages) ? "--messages" : o.messages;
  nlohmann::ordered_json doc;
  try {
    doc = nlohmann::ordered_json::parse(messages_text(o.messages));
  } catch (const nlohmann::json::parse_error& e) {
    fail("%s: invalid JSON: %s", where.c_str(), e.what());
  }
  // Either a list of messages or {"messages": [...], "tools": [...], ...}.
  nlohmann::ordered_json messages = doc;
  ChatTemplateOptions opts;
  if (doc.is_object()) {
    if (!doc.contains("messages")) fail("%s: no \"messages\" list", where.c_str());
    messages = doc["messages"];
    nlohmann::ordered_json extra = nlohmann::ordered_json::object();
    for (auto it = doc.begin(); it != doc.end(); ++it)
      if (it.key() != "messages") extra[it.key()] = it.value();
    opts.extra_context = extra;
  }
  if (!messages.is_array()) fail("%s: messages must be a JSON list", where.c_str());
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
  cmd->add_option("--messages", o->messages,
                  "A list of {role, content} messages (inline JSON or a JSON file), or an object "
                  "{\"messages\": [...], \"tools\": [...], ...}")
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
