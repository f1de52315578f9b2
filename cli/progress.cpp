#include "cli/progress.h"

#include <unistd.h>

#include <cstdio>

#include "cli/common.h"

namespace llm::cli {

namespace {
constexpr int kBarWidth = 30;
}

std::string format_duration(double s) {
  char buf[32];
  if (s < 60) {
    std::snprintf(buf, sizeof buf, "%.0f s", s);
  } else {
    const long t = static_cast<long>(s + 0.5);
    if (t >= 3600)
      std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
      std::snprintf(buf, sizeof buf, "%ld:%02ld", t / 60, t % 60);
  }
  return buf;
}

ProgressBar::ProgressBar(std::string label)
    : label_(std::move(label)),
      tty_(::isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

ProgressBar::~ProgressBar() {
  std::lock_guard<std::mutex> lock(mu_);
  if (drawn_ && !finished_) std::fputc('\n', stderr);  // leave the cursor on a fresh line
}

ProgressFn ProgressBar::callback() {
  return [this](uint64_t done, uint64_t total) { update(done, total); };
}

void ProgressBar::update(uint64_t done, uint64_t total) {
  std::lock_guard<std::mutex> lock(mu_);
  done_ = done;
  total_ = total;
  const auto now = std::chrono::steady_clock::now();
  if (!tty_ || now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  draw(false);
}

void ProgressBar::finish() {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_) return;
  finished_ = true;
  done_ = total_;
  draw(true);
}

void ProgressBar::draw(bool final) {
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate = elapsed > 0 ? done_ / elapsed : 0;
  if (final && !tty_) {
    std::fprintf(stderr, "%s: %s in %.1f s (%s/s)\n", label_.c_str(), format_bytes(done_).c_str(),
                 elapsed, format_bytes(static_cast<size_t>(rate)).c_str());
    return;
  }
  const double frac = total_ > 0 ? static_cast<double>(done_) / total_ : 1.0;
  const int filled = static_cast<int>(frac * kBarWidth);
  std::string bar(static_cast<size_t>(filled), '=');
  if (filled < kBarWidth) bar += '>';
  bar.resize(kBarWidth, ' ');
  std::string eta;
  if (final)
    eta = "in " + format_duration(elapsed);
  else if (done_ > 0 && rate > 0)
    eta = "ETA " + format_duration((total_ - done_) / rate);
  // \r and clear-to-end-of-line: redraw in place.
  std::fprintf(stderr, "\r%s [%s] %3.0f%%  %s / %s  %s/s  %s\033[K%s", label_.c_str(), bar.c_str(),
               frac * 100, format_bytes(done_).c_str(), format_bytes(total_).c_str(),
               format_bytes(static_cast<size_t>(rate)).c_str(), eta.c_str(), final ? "\n" : "");
  std::fflush(stderr);
  drawn_ = true;
}

}  // namespace llm::cli
