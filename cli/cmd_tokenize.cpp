// llmcli tokenize MODEL --text TEXT|--file PATH [--json] and llmcli detokenize MODEL
// --ids 1,2,3|--ids-file PATH. MODEL is a Hugging Face folder or a GGUF file (a
// vocab-only GGUF will do). A PATH of - reads stdin (for inputs past the 128 KiB an
// argument may hold).
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "core/error.h"
#include "core/tokenizer/tokenizer.h"

namespace llm::cli {

namespace {

struct TokenizeOptions {
  std::string model;
  std::string text, text_file;
  std::string ids, ids_file;
  bool json = false;
  bool add_special = false;
  bool parse_special = false;
  bool skip_special = false;
};

}  // namespace

void register_tokenize(CLI::App& app) {
  auto o = std::make_shared<TokenizeOptions>();
  auto* tok = app.add_subcommand("tokenize", "Turn text into token ids");
  tok->add_option("model", o->model, "Hugging Face folder or .gguf file")->required();
  auto* text = tok->add_option("--text", o->text, "Text to tokenize");
  auto* file = tok->add_option("--file", o->text_file, "File of text to tokenize (- for stdin)");
  text->excludes(file);
  tok->add_flag("--json", o->json, "Print {\"ids\":[...]}");
  tok->add_flag("--add-special", o->add_special, "Add BOS/EOS as the model's config says");
  tok->add_flag("--parse-special", o->parse_special,
                "Recognise special tokens (e.g. <|im_start|>) written in the text");
  tok->callback([o, text, file]() {
    if (text->count() + file->count() != 1) fail("give one of --text and --file");
    const std::string input = o->text_file.empty() ? o->text : read_input(o->text_file, "--file");
    auto t = Tokenizer::load(resolve_model(o->model));
    const std::vector<int32_t> ids = t->encode(input, o->add_special, o->parse_special);
    if (o->json) {
      std::printf("%s\n", nlohmann::json{{"ids", ids}}.dump().c_str());
      return;
    }
    for (size_t i = 0; i < ids.size(); i++) std::printf(i ? ",%d" : "%d", ids[i]);
    std::printf("\n");
  });

  auto* detok = app.add_subcommand("detokenize", "Turn token ids into text");
  detok->add_option("model", o->model, "Hugging Face folder or .gguf file")->required();
  auto* ids = detok->add_option("--ids", o->ids, "Token ids, comma-separated");
  auto* ids_file =
      detok->add_option("--ids-file", o->ids_file, "File of comma-separated ids (- for stdin)");
  ids->excludes(ids_file);
  detok->add_flag("--skip-special", o->skip_special, "Leave out special tokens");
  detok->callback([o, ids, ids_file]() {
    if (ids->count() + ids_file->count() != 1) fail("give one of --ids and --ids-file");
    std::string list = o->ids_file.empty() ? o->ids : read_input(o->ids_file, "--ids-file");
    while (!list.empty() && (list.back() == '\n' || list.back() == '\r')) list.pop_back();
    auto t = Tokenizer::load(resolve_model(o->model));
    const std::string text =
        t->decode(parse_int_list(list, o->ids_file.empty() ? "--ids" : "--ids-file", "token id"),
                  o->skip_special);
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::printf("\n");
  });
}

}  // namespace llm::cli
