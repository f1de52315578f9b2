#include "cli/line_reader.h"

#include <editline/readline.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>

namespace llm::cli {

namespace {
std::atomic<bool> g_interrupted{false};
void on_sigint(int) { g_interrupted = true; }
}  // namespace

bool take_interrupt() { return g_interrupted.exchange(false); }

void install_interrupt_handler() {
  struct sigaction sa {};
  sa.sa_handler = on_sigint;
  sigemptyset(&sa.sa_mask);
  // SA_RESTART: writes of the streamed answer must not fail with EINTR (stdio would
  // drop everything after). libedit still returns from readline() on Ctrl-C.
  sa.sa_flags = SA_RESTART;
  sigaction(SIGINT, &sa, nullptr);
}

LineReader::LineReader(bool interactive, std::string history_file)
    : interactive_(interactive), history_file_(std::move(history_file)) {
  if (interactive_) {
    using_history();
    if (!history_file_.empty()) read_history(history_file_.c_str());
  }
}

LineReader::~LineReader() {
  if (interactive_ && !history_file_.empty()) write_history(history_file_.c_str());
}

bool LineReader::read_line(const char* prompt, std::string& line) {
  if (!interactive_) return static_cast<bool>(std::getline(std::cin, line));
  for (;;) {
    // A Ctrl-C from before the prompt (during a command's output) is stale. One that
    // comes after Enter, while readline() still returns the line (a loaded machine), is
    // meant for the answer: it stays pending and stops it.
    take_interrupt();
    char* raw = readline(prompt);
    if (raw) {
      line = raw;
      std::free(raw);
      return true;
    }
    // Ctrl-C ends readline() too: start a fresh line; Ctrl-D (no interrupt) is the end.
    if (!take_interrupt()) return false;
    std::printf("\n");
  }
}

bool LineReader::read_message(std::string& out) {
  out.clear();
  std::string line;
  if (!read_line(">>> ", line)) return false;
  if (line == "\"\"\"") {
    std::string block;
    while (read_line("... ", line) && line != "\"\"\"") block += (block.empty() ? "" : "\n") + line;
    out = block;
  } else {
    while (!line.empty() && line.back() == '\\') {
      line.pop_back();
      out += line + "\n";
      if (!read_line("... ", line)) {
        line.clear();
        break;
      }
    }
    out += line;
  }
  if (interactive_ && !out.empty()) add_history(out.c_str());
  return true;
}

}  // namespace llm::cli
