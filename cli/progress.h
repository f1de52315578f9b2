// A progress bar on stderr for long writes (convert, synth): bytes done, rate and
// ETA, redrawn in place at most ten times a second when stderr is a terminal; a
// single summary line otherwise (logs and tests stay readable).
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

#include "core/formats/gguf_writer.h"

namespace llm::cli {

class ProgressBar {
 public:
  explicit ProgressBar(std::string label);
  ~ProgressBar();  // ends the bar's line if finish() was not called
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  // Thread-safe.
  void update(uint64_t done, uint64_t total);
  // A callback for the core writers; the bar must outlive its use.
  ProgressFn callback();
  // Draws 100% and prints the summary line ("LABEL: 3.83 GiB in 12.1 s (316 MiB/s)").
  void finish();

 private:
  void draw(bool final);

  std::string label_;
  bool tty_;
  bool finished_ = false;
  bool drawn_ = false;
  uint64_t done_ = 0, total_ = 0;
  std::chrono::steady_clock::time_point start_, last_draw_;
  std::mutex mu_;
};

// "1:05", "12 s": a duration for the bar.
std::string format_duration(double seconds);

}  // namespace llm::cli
