// llmcli tokenize MODEL --text TEXT [--json] and llmcli detokenize MODEL --ids 1,2,3.
// MODEL is a Hugging Face folder or a GGUF file (a vocab-only GGUF will do).
#include <cstdio>
#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "core/error.h"
#include "core/tokenizer/tokenizer.h"

namespace llm::cli {

namespace {

struct TokenizeOptions {
  std::string model;
  std::string text;
  std::string ids;
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
  tok->add_option("--text", o->text, "Text to tokenize")->required();
  tok->add_flag("--json", o->json, "Print {\"ids\":[...]}");
  tok->add_flag("--add-special", o->add_special, "Add BOS/EOS as the model's config says");
  tok->add_flag("--parse-special", o->parse_special,
                "Recognise special tokens (e.g. <|im_start|>) written in the text");
  tok->callback([o]() {
    auto t = Tokenizer::load(resolve_model(o->model));
    const std::vector<int32_t> ids = t->encode(o->text, o->add_special, o->parse_special);
    if (o->json) {
      std::printf("%s\n", nlohmann::json{{"ids", ids}}.dump().c_str());
      return;
    }
    for (size_t i = 0; i < ids.size(); i++) std::printf(i ? ",%d" : "%d", ids[i]);
    std::printf("\n");
  });

  auto* detok = app.add_subcommand("detokenize", "Turn token ids into text");
  detok->add_option("model", o->model, "Hugging Face folder or .gguf file")->required();
  detok->add_option("--ids", o->ids, "Token ids, comma-separated")->required();
  detok->add_flag("--skip-special", o->skip_special, "Leave out special tokens");
  detok->callback([o]() {
    auto t = Tokenizer::load(resolve_model(o->model));
    const std::string text = t->decode(parse_int_list(o->ids, "--ids", "token id"), o->skip_special);
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::printf("\n");
  });
}

}  // namespace llm::cli
