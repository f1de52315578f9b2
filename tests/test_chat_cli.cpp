// llmcli chat through a pipe and in a real terminal (tmux), and generate -p.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <thread>

#include "test_util.h"

using namespace llm;
using namespace llm::test;
using namespace std::chrono_literals;

namespace {

const std::string& chat_model() { return tiny_chat_model("q8f16_1", 21); }

std::string shell(const std::string& cmd) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  pclose(p);
  return out;
}

bool have_tmux() { return std::system("command -v tmux >/dev/null 2>&1") == 0; }

// The last pane a poll below saw (reported when a wait fails).
std::string last_pane;

// Polls a tmux pane (its last 200 lines, wrapped lines joined: " [stopped]" at the end of
// a long answer once wrapped as "[sto" / "pped]") until seen(pane) holds, for up to 90 s:
// a loaded 2-core machine (ctest -j2 beside the Vulkan tests) once took over 30.
template <class Pred>
bool poll_pane(const std::string& session, Pred seen) {
  for (int i = 0; i < 1800; i++) {
    last_pane = shell("tmux capture-pane -p -J -S -200 -t " + session);
    if (seen(last_pane)) return true;
    std::this_thread::sleep_for(50ms);
  }
  UNSCOPED_INFO("the pane when the wait ended:\n" << last_pane);
  return false;
}

// Until the pane shows text.
bool pane_shows(const std::string& session, const std::string& text, std::string* pane = nullptr) {
  const bool ok =
      poll_pane(session, [&](const std::string& p) { return p.find(text) != std::string::npos; });
  if (pane) *pane = last_pane;
  return ok;
}

// Until the pane shows text after the line holding `line` (an answer under way).
bool pane_shows_after(const std::string& session, const std::string& line) {
  return poll_pane(session, [&](const std::string& p) {
    const size_t at = p.rfind(line);
    const size_t nl = at == std::string::npos ? std::string::npos : p.find('\n', at);
    return nl != std::string::npos && p.find_first_not_of(" \n", nl) != std::string::npos;
  });
}

// Until the pane's last non-empty line is the input prompt.
bool at_prompt(const std::string& session) {
  return poll_pane(session, [](std::string p) {
    while (!p.empty() && (p.back() == '\n' || p.back() == ' ')) p.pop_back();
    const size_t nl = p.rfind('\n');
    return p.substr(nl == std::string::npos ? 0 : nl + 1) == ">>>";
  });
}

}  // namespace

TEST_CASE("llmcli generate -p streams text, raw or through the chat template", "[cli][chat]") {
  const auto raw = run_cli({"generate", chat_model(), "-p", "Once upon a time", "-n", "8",
                            "--temperature", "0", "--ignore-eos"});
  INFO(raw.err);
  REQUIRE(raw.exit_code == 0);
  CHECK(raw.out.size() > 1);
  const auto ids = run_cli({"generate", chat_model(), "-p", "Once upon a time", "-n", "8",
                            "--temperature", "0", "--ignore-eos", "--json"});
  REQUIRE(ids.exit_code == 0);
  const auto detok =
      run_cli({"detokenize", chat_model(), "--ids",
               join_ids(nlohmann::json::parse(ids.out)["ids"].get<std::vector<int32_t>>())});
  REQUIRE(detok.exit_code == 0);
  CHECK(raw.out == detok.out);
  const auto chat =
      run_cli({"generate", chat_model(), "-p", "Hello", "--chat", "-n", "8", "--temperature", "0"});
  REQUIRE(chat.exit_code == 0);
  CHECK(chat.out != raw.out);
  CHECK(run_cli({"generate", chat_model(), "-n", "4"}).exit_code != 0);  // no prompt
}

TEST_CASE("llmcli chat reads messages from a pipe and answers each", "[cli][chat]") {
  TempDir tmp;
  write_file(tmp.file("in.txt"), "Hello\n/stats\n/reset\nHello\n/system Be brief.\nHello\n");
  const std::string cmd = llm::test::cli_path() + " chat " + chat_model() +
                          " --device cpu --temperature 0 --max-tokens 8 < " + tmp.file("in.txt") +
                          " 2>" + tmp.file("err.txt");
  const std::string out = shell(cmd);
  INFO(out);
  INFO(read_file(tmp.file("err.txt")));
  const auto single =
      run_cli({"generate", chat_model(), "-p", "Hello", "--chat", "-n", "8", "--temperature", "0"});
  REQUIRE(single.exit_code == 0);
  const std::string answer = single.out;  // ends with a newline
  // First answer, stats, the same answer after /reset, then a different one with a system message.
  REQUIRE(out.rfind(answer, 0) == 0);
  CHECK_THAT(out, Catch::Contains("last answer: prompt"));
  CHECK_THAT(out, Catch::Contains("(conversation cleared)"));
  const size_t cleared = out.find("(conversation cleared)\n");
  CHECK(out.compare(cleared + 23, answer.size(), answer) == 0);
  CHECK_THAT(out, Catch::Contains("(system message set, conversation cleared)"));
  CHECK_THAT(read_file(tmp.file("err.txt")), Catch::Contains("chat template from"));
}

TEST_CASE("llmcli chat /stats counts the prompt tokens the earlier turns left cached",
          "[cli][chat]") {
  TempDir tmp;
  std::string words;
  for (int i = 0; i < 40; i++) words += "word ";
  write_file(tmp.file("in.txt"), words + "\nAgain\n/stats\n");
  const std::string out = shell(llm::test::cli_path() + " chat " + chat_model() +
                                " --device cpu --temperature 0 --max-tokens 4 < " +
                                tmp.file("in.txt") + " 2>/dev/null");
  INFO(out);
  // The second turn's prompt starts with the first turn: its whole pages (16 tokens)
  // come from the prefix cache.
  const size_t at = out.find("last answer: prompt ");
  REQUIRE(at != std::string::npos);
  int prompt = 0, cached = 0;
  REQUIRE(std::sscanf(out.c_str() + at, "last answer: prompt %d tokens (%d cached)", &prompt,
                      &cached) == 2);
  CHECK(cached >= 32);
  CHECK(cached % 16 == 0);
  CHECK(cached < prompt);
}

// A message too long for the context is refused without trimming the conversation
// (the next turn's prompt is as long as without it), a failed turn makes the piped run
// exit non-zero, and a system message that leaves no room fails up front.
TEST_CASE("llmcli chat keeps the conversation when a message does not fit", "[cli][chat]") {
  TempDir tmp;
  std::string words;
  for (int i = 0; i < 300; i++) words += "word ";
  write_file(tmp.file("plain.txt"), "Hello\nHello again\n/stats\n");
  write_file(tmp.file("long.txt"), "Hello\n" + words + "\nHello again\n/stats\n");
  auto run = [&](const std::string& in, const std::string& extra) {
    const std::string cmd = llm::test::cli_path() + " chat " + chat_model() +
                            " --device cpu --temperature 0 --max-tokens 4 --context-size 128 " +
                            extra + " < " + tmp.file(in) + " 2>" + tmp.file("err.txt") +
                            "; echo \"rc=$?\"";
    return shell(cmd);
  };
  // "last answer: prompt N tokens": the last turn's prompt, history included.
  auto last_prompt = [](const std::string& out) {
    const size_t at = out.find("last answer: prompt ");
    return at == std::string::npos ? std::string() : out.substr(at, out.find(" tokens", at) - at);
  };
  const std::string plain = run("plain.txt", "");
  INFO(plain);
  REQUIRE_THAT(plain, Catch::EndsWith("rc=0\n"));
  const std::string with_long = run("long.txt", "");
  const std::string err = read_file(tmp.file("err.txt"));
  INFO(with_long);
  INFO(err);
  CHECK_THAT(err, Catch::Contains("does not fit the context window of 128 tokens; the "
                                  "conversation is kept as it was"));
  CHECK_THAT(err, !Catch::Contains("dropped"));
  CHECK(last_prompt(with_long) == last_prompt(plain));
  CHECK_THAT(with_long, Catch::EndsWith("rc=1\n"));
  CHECK_THAT(err, Catch::Contains("1 turn failed"));

  const std::string big_system = run("plain.txt", "--system \"" + words + "\"");
  CHECK_THAT(big_system, Catch::EndsWith("rc=1\n"));
  CHECK_THAT(read_file(tmp.file("err.txt")),
             Catch::Contains("the system message leaves no room to answer"));
}

TEST_CASE("llmcli chat in a terminal: line editing, /stats, Ctrl-C stops the answer",
          "[cli][chat]") {
  if (!have_tmux()) {
    WARN("tmux not installed: terminal chat test skipped");
    return;
  }
  TempDir tmp;
  const std::string session = "llmrt_chat_" + std::to_string(getpid());
  // A long context so that an unlimited answer is still running when Ctrl-C comes.
  const std::string run =
      llm::test::cli_path() + " chat " + chat_model() +
      " --device cpu --temperature 0 --max-tokens -1 --context-size 60000 --ignore-eos";
  REQUIRE(std::system(("LLMRT_CACHE=" + tmp.path() + " tmux new-session -d -x 160 -y 50 -s " +
                       session + " 'LLMRT_CACHE=" + tmp.path() + " " + run + "; sleep 30'")
                          .c_str()) == 0);
  struct Kill {
    std::string s;
    ~Kill() { std::system(("tmux kill-session -t " + s + " 2>/dev/null").c_str()); }
  } kill{session};
  std::string pane;
  REQUIRE(pane_shows(session, ">>>", &pane));
  // Line editing: type, move left, insert, and the corrected line is sent.
  std::system(
      ("tmux send-keys -t " + session + " '/stat' Left Left Left Left BSpace '/' C-e 's' Enter")
          .c_str());
  REQUIRE(pane_shows(session, "(nothing generated yet)", &pane));
  REQUIRE(at_prompt(session));
  std::system(("tmux send-keys -t " + session + " 'Tell me everything' Enter").c_str());
  REQUIRE(pane_shows(session, "Tell me everything", &pane));
  // Ctrl-C once the answer is under way (it runs to 60000 tokens): a fixed wait was too
  // short on a loaded machine.
  REQUIRE(pane_shows_after(session, "Tell me everything"));
  std::system(("tmux send-keys -t " + session + " C-c").c_str());
  INFO(pane);
  REQUIRE(pane_shows(session, "[stopped]", &pane));
  REQUIRE(at_prompt(session));
  std::system(("tmux send-keys -t " + session + " '/stats' Enter").c_str());
  REQUIRE(pane_shows(session, "last answer: prompt", &pane));
  std::system(("tmux send-keys -t " + session + " '/exit' Enter").c_str());
  // The history file was written on exit.
  bool saved = false;
  for (int i = 0; i < 200 && !saved; i++) {
    saved = read_file(tmp.file("chat_history")).find("everything") != std::string::npos;
    if (!saved) std::this_thread::sleep_for(50ms);
  }
  CHECK(saved);
}

TEST_CASE("llmcli generate --chat-template-kwargs reaches the template", "[cli][chat]") {
  // The tiny chat model with Qwen3's template, which closes an empty think block when
  // enable_thinking is false: a longer prompt.
  test::TempDir dir;
  namespace fs = std::filesystem;
  for (const auto& e : fs::directory_iterator(chat_model()))
    fs::copy_file(e.path(), dir.path() + "/" + e.path().filename().string());
  fs::copy_file(test::data_dir() + "/chat-templates/Qwen-Qwen3-0.6B.jinja",
                dir.path() + "/chat_template.jinja", fs::copy_options::overwrite_existing);
  auto prompt_tokens = [&](const std::vector<std::string>& extra) {
    std::vector<std::string> args = {"generate", dir.path(),      "-p", "Hello", "--chat", "-n",
                                     "1",        "--temperature", "0"};
    args.insert(args.end(), extra.begin(), extra.end());
    const auto r = run_cli(args);
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    const size_t at = r.err.find("prompt ");
    REQUIRE(at != std::string::npos);
    return std::stoi(r.err.substr(at + 7));
  };
  const int plain = prompt_tokens({});
  CHECK(prompt_tokens({"--chat-template-kwargs", R"({"enable_thinking": false})"}) > plain);
  CHECK(prompt_tokens({"--chat-template-kwargs", R"({"enable_thinking": true})"}) == plain);
  const auto bad =
      run_cli({"generate", dir.path(), "-p", "Hi", "--chat", "--chat-template-kwargs", "[1"});
  CHECK(bad.exit_code != 0);
  CHECK_THAT(bad.err, Catch::Contains("--chat-template-kwargs"));
  const auto no_chat =
      run_cli({"generate", dir.path(), "-p", "Hi", "--chat-template-kwargs", "{}"});
  CHECK(no_chat.exit_code != 0);
  CHECK_THAT(no_chat.err, Catch::Contains("need --chat"));
}

// /save writes the conversation as a messages list; /load continues it, so the next
// answer is the one the unbroken conversation gives; bad files are refused.
TEST_CASE("llmcli chat /save and /load a conversation", "[cli][chat]") {
  TempDir tmp;
  auto run = [&](const std::string& input, const std::string& name) {
    write_file(tmp.file(name + ".in"), input);
    return shell(llm::test::cli_path() + " chat " + chat_model() +
                 " --device cpu --temperature 0 --max-tokens 6 < " + tmp.file(name + ".in") +
                 " 2>" + tmp.file(name + ".err") + "; echo \"exit $?\"");
  };
  const std::string saved = tmp.file("conv.json");
  const std::string whole = run("Hello\nTell me more\n", "whole");
  const std::string split =
      run("Hello\n/save " + saved + "\n/reset\n/load " + saved + "\nTell me more\n", "split");
  INFO(whole);
  INFO(split);
  const nlohmann::json conv = nlohmann::json::parse(read_file(saved));
  REQUIRE(conv.size() == 2);
  CHECK(conv[0] == nlohmann::json{{"role", "user"}, {"content", "Hello"}});
  CHECK(conv[1]["role"] == "assistant");
  const std::string first = conv[1]["content"];
  REQUIRE(!first.empty());
  CHECK_THAT(split, Catch::Contains("(saved 2 messages to " + saved + ")"));
  CHECK_THAT(split, Catch::Contains("(loaded 2 messages from " + saved + ")"));
  // The answer after /load is the unbroken conversation's second answer.
  const size_t loaded = split.find("(loaded 2 messages");
  const std::string after = split.substr(split.find('\n', loaded) + 1);
  const std::string second = whole.substr(whole.find(first) + first.size() + 1);  // its '\n'
  CHECK(after.substr(0, after.find("exit")) == second.substr(0, second.find("exit")));
  CHECK_THAT(split, Catch::Contains("exit 0"));
  // --load does the same before the first message (its report on stderr).
  write_file(tmp.file("more.in"), "Tell me more\n");
  const std::string resumed = shell(llm::test::cli_path() + " chat " + chat_model() +
                                    " --device cpu --temperature 0 --max-tokens 6 --load " + saved +
                                    " < " + tmp.file("more.in") + " 2>" + tmp.file("more.err"));
  CHECK(resumed == second.substr(0, second.find("exit")));
  CHECK_THAT(read_file(tmp.file("more.err")), Catch::Contains("(loaded 2 messages"));
  const std::string missing =
      shell(llm::test::cli_path() + " chat " + chat_model() + " --device cpu --load " +
            tmp.file("none.json") + " < /dev/null 2>&1; echo \"exit $?\"");
  CHECK_THAT(missing, Catch::Contains("cannot read it") && !Catch::Contains("exit 0"));

  // A system message travels with the file; bad files keep the conversation and fail.
  write_file(tmp.file("sys.json"), R"([{"role": "system", "content": "Be brief."},
                                       {"role": "user", "content": "Hello"}])");
  write_file(tmp.file("bad.json"), R"([{"role": "tool", "content": "x"}])");
  write_file(tmp.file("junk.json"), "{not json");
  const std::string errs =
      run("/load " + tmp.file("sys.json") + "\n/save " + tmp.file("again.json") + "\n/load " +
              tmp.file("bad.json") + "\n/load " + tmp.file("junk.json") + "\n/load " +
              tmp.file("missing.json") + "\n",
          "errs");
  CHECK(nlohmann::json::parse(read_file(tmp.file("again.json")))[0]["content"] == "Be brief.");
  const std::string err = read_file(tmp.file("errs.err"));
  CHECK_THAT(err, Catch::Contains("has role 'tool'"));
  CHECK_THAT(err, Catch::Contains("not JSON"));
  CHECK_THAT(err, Catch::Contains("cannot read it"));
  CHECK_THAT(errs, !Catch::Contains("exit 0"));
}
