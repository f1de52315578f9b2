// llmcli chat MODEL: a conversation in the terminal through the model's chat
// template, streamed as it is generated. Interactive (line editing, history,
// /commands, Ctrl-C stops the answer) on a terminal; one message per line when
// stdin is a pipe, so it can be scripted.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/common.h"
#include "cli/line_reader.h"
#include "cli/sampling_options.h"
#include "core/chat/chat_prompt.h"
#include "core/engine/engine.h"
#include "core/error.h"

namespace llm::cli {

namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::ordered_json;

struct ChatOptions {
  ModelOptions model;
  SamplingOptions sampling;
  DraftOptions draft;
  std::string system;
  std::string conv_template;
  std::string template_kwargs;  // --chat-template-kwargs
  int max_tokens = 1024;
  std::string format = "text";  // "json": every answer is one JSON object
  bool ignore_eos = false;
  std::string load;  // --load FILE: a saved conversation to continue
};

struct AnswerStats {
  int prompt_tokens = 0;
  int cached_tokens = 0;  // of the prompt's, from the prefix cache (earlier turns)
  int tokens = 0;
  double prefill_s = 0;
  double decode_s = 0;
};

void print_stats(const char* what, const AnswerStats& s) {
  std::printf(
      "%s: prompt %d tokens (%d cached) in %.2f s (%.1f tok/s), answer %d tokens in %.2f s "
      "(%.1f tok/s)\n",
      what, s.prompt_tokens, s.cached_tokens, s.prefill_s,
      s.prefill_s > 0 ? (s.prompt_tokens - s.cached_tokens) / s.prefill_s : 0, s.tokens, s.decode_s,
      s.decode_s > 0 ? (s.tokens - 1) / s.decode_s : 0);
}

std::string history_path() {
  const char* cache = std::getenv("LLMRT_CACHE");
  const char* home = std::getenv("HOME");
  std::string dir = cache ? cache : home ? std::string(home) + "/.cache/llmrt" : "";
  if (dir.empty()) return {};
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  return ec ? std::string() : dir + "/chat_history";
}

class Chat {
 public:
  Chat(const ChatOptions& o, Engine& engine, const ChatPrompt& prompt, bool interactive)
      : o_(o), engine_(engine), prompt_(prompt), interactive_(interactive), system_(o.system) {}

  // Handles one input line; false to quit.
  bool handle(const std::string& input) {
    if (input.find_first_not_of(" \t\r") == std::string::npos) return true;  // blank
    if (input[0] == '/') return command(input);
    answer(input);
    return true;
  }

  // Turns that failed (the exit status says so when stdin is not a terminal).
  int failures() const { return failures_; }

  // Whether the system message alone (with an empty user turn) leaves room to answer.
  bool system_fits() const {
    if (system_.empty()) return true;
    const json only = {{{"role", "system"}, {"content", system_}},
                       {{"role", "user"}, {"content", ""}}};
    return static_cast<int>(prompt_.encode(only).size()) + kAnswerRoom <= engine_.context_size();
  }

  // A messages list in place of the conversation: a system message first, if any, then
  // user and assistant turns with text content (/load; --load before the first message,
  // reporting to stderr).
  void load(const std::string& path, std::FILE* report = stdout) {
    auto refuse = [&](const std::string& why) {
      std::fprintf(stderr, "error: /load %s: %s; kept the conversation\n", path.c_str(),
                   why.c_str());
      failures_++;
    };
    std::FILE* f = path.empty() ? nullptr : std::fopen(path.c_str(), "rb");
    if (!f) return refuse("cannot read it");
    std::string text;
    char buf[65536];
    for (size_t n; (n = std::fread(buf, 1, sizeof buf, f)) > 0;) text.append(buf, n);
    std::fclose(f);
    json messages;
    try {
      messages = json::parse(text);
    } catch (const json::exception& e) {
      return refuse(std::string("not JSON (") + e.what() + ")");
    }
    if (!messages.is_array()) return refuse("expected a list of {\"role\", \"content\"} messages");
    std::string system;
    json turns = json::array();
    for (size_t i = 0; i < messages.size(); i++) {
      const json& m = messages[i];
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string() ||
          !m.contains("content") || !m["content"].is_string())
        return refuse("message " + std::to_string(i) + " is not {\"role\", \"content\"} text");
      const std::string role = m["role"].get<std::string>();
      if (role == "system" && i == 0) {
        system = m["content"].get<std::string>();
      } else if (role == "user" || role == "assistant") {
        turns.push_back({{"role", role}, {"content", m["content"]}});
      } else {
        return refuse("message " + std::to_string(i) + " has role '" + role +
                      "' (user and assistant turns after one optional system message)");
      }
    }
    const std::string before = system_;
    system_ = system;
    if (!system_fits()) {
      system_ = before;
      return refuse("its system message leaves no room to answer");
    }
    history_ = std::move(turns);
    std::fprintf(report, "(loaded %zu messages from %s)\n", messages.size(), path.c_str());
  }

 private:
  bool command(const std::string& input) {
    const size_t sp = input.find(' ');
    const std::string cmd = input.substr(0, sp);
    const std::string arg = sp == std::string::npos ? "" : input.substr(sp + 1);
    if (cmd == "/exit" || cmd == "/quit" || cmd == "/bye") return false;
    if (cmd == "/reset" || cmd == "/clear") {
      history_ = json::array();
      std::printf("(conversation cleared)\n");
    } else if (cmd == "/system") {
      const std::string before = system_;
      system_ = arg.find_first_not_of(" \t\r") == std::string::npos ? "" : arg;
      if (!system_fits()) {
        system_ = before;
        std::fprintf(stderr,
                     "error: that system message leaves no room to answer; kept the old one\n");
        failures_++;
        return true;
      }
      history_ = json::array();
      std::printf(arg.empty() ? "(system message removed, conversation cleared)\n"
                              : "(system message set, conversation cleared)\n");
    } else if (cmd == "/save") {
      save(arg);
    } else if (cmd == "/load") {
      load(arg);
    } else if (cmd == "/stats") {
      if (last_.tokens == 0)
        std::printf("(nothing generated yet)\n");
      else {
        print_stats("last answer", last_);
        print_stats("this session", total_);
        const EngineStats es = engine_.stats();
        if (es.draft_tokens > 0)
          std::printf("speculation: %llu of %llu draft tokens kept\n",
                      static_cast<unsigned long long>(es.draft_accepted),
                      static_cast<unsigned long long>(es.draft_tokens));
      }
    } else if (cmd == "/help" || cmd == "/?") {
      std::printf(
          "/reset          forget the conversation\n"
          "/system TEXT    set the system message (and reset)\n"
          "/stats          prompt and decode speed\n"
          "/save FILE      write the conversation as OpenAI-style messages (JSON)\n"
          "/load FILE      continue a conversation saved so (or any such messages list)\n"
          "/exit           quit (or Ctrl-D)\n"
          "Ctrl-C stops an answer. End a line with \\ to continue it, or wrap lines in \"\"\".\n");
    } else {
      std::printf("unknown command %s (try /help)\n", cmd.c_str());
    }
    std::fflush(stdout);
    return true;
  }

  // The conversation as a messages list: the system message, then the turns.
  void save(const std::string& path) {
    json messages = json::array();
    if (!system_.empty()) messages.push_back({{"role", "system"}, {"content", system_}});
    for (const json& m : history_) messages.push_back(m);
    std::FILE* f = path.empty() ? nullptr : std::fopen(path.c_str(), "wb");
    const std::string text = messages.dump(2) + "\n";
    if (!f || std::fwrite(text.data(), 1, text.size(), f) != text.size() || std::fclose(f) != 0) {
      if (f) std::fclose(f);
      std::fprintf(stderr, "error: /save %s: cannot write it\n", path.c_str());
      failures_++;
      return;
    }
    std::printf("(saved %zu messages to %s)\n", messages.size(), path.c_str());
  }

  json messages_with(const std::string& user, const json& history) const {
    json m = json::array();
    if (!system_.empty()) m.push_back({{"role", "system"}, {"content", system_}});
    for (const auto& h : history) m.push_back(h);
    m.push_back({{"role", "user"}, {"content", user}});
    return m;
  }

  // Tokens a prompt leaves free at least, for the answer.
  static constexpr int kAnswerRoom = 16;

  void answer(const std::string& user) {
    std::vector<int32_t> ids = prompt_.encode(messages_with(user, history_));
    // Drop the oldest exchanges until the prompt leaves room to answer; the history
    // changes only if the turn then fits.
    json kept = history_;
    int dropped = 0;
    while (static_cast<int>(ids.size()) + kAnswerRoom > engine_.context_size() && !kept.empty()) {
      kept.erase(kept.begin(), kept.begin() + std::min<size_t>(2, kept.size()));
      dropped += 2;
      ids = prompt_.encode(messages_with(user, kept));
    }
    if (static_cast<int>(ids.size()) >= engine_.context_size()) {
      std::fprintf(stderr,
                   "error: %s (%zu tokens) does not fit the context window of %d tokens; the "
                   "conversation is kept as it was\n",
                   system_.empty() ? "the message" : "the system message with this message",
                   ids.size(), engine_.context_size());
      failures_++;
      return;
    }
    if (dropped) {
      history_ = kept;
      std::fprintf(stderr, "(dropped the %d oldest messages to fit the context)\n", dropped);
    }
    GenerationRequest req;
    req.prompt = ids;
    req.sampling = o_.sampling.resolve();
    req.max_tokens = o_.max_tokens;
    req.ignore_eos = o_.ignore_eos;
    if (o_.format == "json") req.json = JsonSchema::any_object();
    const auto t0 = Clock::now();
    auto stream = engine_.submit(req);
    std::string text;
    AnswerStats st;
    st.prompt_tokens = static_cast<int>(ids.size());
    Clock::time_point first;
    FinishReason finish = FinishReason::None;
    while (finish == FinishReason::None) {
      if (take_interrupt()) stream->cancel();
      GenerationEvent ev;
      if (!stream->next(ev, std::chrono::milliseconds(50))) continue;
      if (st.tokens == 0 && !ev.tokens.empty()) first = Clock::now();
      st.tokens += static_cast<int>(ev.tokens.size());
      st.cached_tokens = ev.cached_tokens;
      text += ev.text;
      std::fwrite(ev.text.data(), 1, ev.text.size(), stdout);
      std::fflush(stdout);
      finish = ev.finish;
      if (finish == FinishReason::Error) {
        std::fprintf(stderr, "\nerror: %s", ev.error.c_str());
        failures_++;
      }
    }
    take_interrupt();
    std::printf(finish == FinishReason::Cancelled ? " [stopped]\n" : "\n");
    if (interactive_) std::printf("\n");
    std::fflush(stdout);
    if (st.tokens > 0) {
      const auto t1 = Clock::now();
      st.prefill_s = std::chrono::duration<double>(first - t0).count();
      st.decode_s = std::chrono::duration<double>(t1 - first).count();
      last_ = st;
      total_.prompt_tokens += st.prompt_tokens;
      total_.cached_tokens += st.cached_tokens;
      total_.tokens += st.tokens;
      total_.prefill_s += st.prefill_s;
      total_.decode_s += st.decode_s;
    }
    if (finish != FinishReason::Error) {
      history_.push_back({{"role", "user"}, {"content", user}});
      history_.push_back({{"role", "assistant"}, {"content", text}});
    }
  }

  const ChatOptions& o_;
  Engine& engine_;
  const ChatPrompt& prompt_;
  bool interactive_;
  std::string system_;
  json history_ = json::array();
  AnswerStats last_, total_;
  int failures_ = 0;
};

void run_chat(const ChatOptions& o) {
  o.sampling.resolve();  // bad flags fail before the model loads
  if (o.max_tokens == 0 || o.max_tokens < -1) fail("--max-tokens must be >= 1 (or -1: no limit)");
  const nlohmann::ordered_json template_kwargs = parse_template_kwargs(o.template_kwargs);
  const bool interactive = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
  LoadedModel lm = load_model(o.model);
  std::unique_ptr<Tokenizer> tok = load_tokenizer(lm);
  ChatPrompt prompt(*tok, lm.path, o.conv_template);
  prompt.set_default_kwargs(template_kwargs);
  EngineOptions eo;
  eo.context_size = o.model.context_size;
  eo.max_seqs = 1;
  eo.kv_dtype = kv_cache_dtype(o.model);
  eo.lookup_draft = o.sampling.lookup_draft;
  const std::unique_ptr<Model> draft = load_draft_model(o.draft, o.model, lm, tok.get(), eo);
  Engine engine(*lm.model, tok.get(), eo);
  std::fprintf(stderr, "llmcli: chat template from %s; context %d tokens, KV cache %s\n",
               prompt.origin().c_str(), engine.context_size(),
               format_bytes(engine.cache_bytes()).c_str());
  if (interactive) std::fprintf(stderr, "Type a message, /help for commands, Ctrl-D to quit.\n");

  install_interrupt_handler();
  LineReader reader(interactive, interactive ? history_path() : "");
  Chat chat(o, engine, prompt, interactive);
  if (!chat.system_fits())
    fail("the system message leaves no room to answer in the context window of %d tokens",
         engine.context_size());
  if (!o.load.empty()) {
    chat.load(o.load, stderr);
    if (chat.failures() > 0) fail("--load %s: see above", o.load.c_str());
  }
  std::string msg;
  while (reader.read_message(msg))
    if (!chat.handle(msg)) break;
  if (interactive) {
    std::printf("\n");
  } else if (chat.failures() > 0) {
    // Scripts pair answers with input lines: a turn without one must show.
    fail("%d turn%s failed (see above)", chat.failures(), chat.failures() == 1 ? "" : "s");
  }
}

}  // namespace

void register_chat(CLI::App& app) {
  auto* cmd = app.add_subcommand("chat", "Chat with a model in the terminal (or through a pipe)");
  auto o = std::make_shared<ChatOptions>();
  add_model_options(cmd, o->model);
  add_sampling_options(cmd, o->sampling);
  add_draft_options(cmd, o->draft);
  cmd->add_option("--system", o->system, "System message");
  add_template_kwargs_option(cmd, o->template_kwargs);
  cmd->add_option("--conv-template", o->conv_template,
                  "Built-in conversation template (default: the model's own)");
  cmd->add_option("--max-tokens", o->max_tokens,
                  "Longest answer in tokens (-1: until the context is full)")
      ->capture_default_str();
  cmd->add_option("--format", o->format, "json: every answer is one JSON object (JSON mode)")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  cmd->add_flag("--ignore-eos", o->ignore_eos, "Keep answering past the model's EOS tokens");
  cmd->add_option("--load", o->load,
                  "Continue a conversation saved with /save (an OpenAI-style messages list)");
  cmd->callback([o]() { run_chat(*o); });
}

}  // namespace llm::cli
