// Reads user input for `llmcli chat`: libedit line editing and history on a
// terminal, plain lines from a pipe. Ctrl-C at the prompt clears the line.
#pragma once

#include <memory>
#include <string>

namespace llm::cli {

class LineReader {
 public:
  // history_file: where line history persists between runs (terminal only); may be empty.
  LineReader(bool interactive, std::string history_file);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  // One message: a line; lines ending in '\' continue; a line of """ opens a
  // block closed by another """. False at end of input.
  bool read_message(std::string& out);
  bool interactive() const { return interactive_; }

 private:
  bool read_line(const char* prompt, std::string& line);
  bool interactive_;
  std::string history_file_;
};

// Set by SIGINT while installed; the chat loop polls it to stop an answer.
bool take_interrupt();
// Installs the SIGINT handler (Ctrl-C stops the answer, not the program).
void install_interrupt_handler();

}  // namespace llm::cli
