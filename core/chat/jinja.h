// A Jinja2 renderer for the template subset real chat templates use, configured like
// Hugging Face transformers' chat-template environment: trim_blocks, lstrip_blocks,
// loopcontrols, `tojson` as json.dumps(ensure_ascii=False), raise_exception(),
// strftime_now(), and the `generation` tag. Values follow Python semantics (truthiness,
// str()/repr(), int vs float arithmetic); undefined names behave like jinja2.Undefined.
//
//   llm::jinja::Template t("{% for m in messages %}{{ m.content }}{% endfor %}");
//   std::string s = t.render({{"messages", {{{"content", "hi"}}}}});
//
// Errors (syntax or runtime) throw llm::Error("template line N: ..."); a template's own
// raise_exception(msg) throws llm::Error(msg) unchanged.
#pragma once

#include <cstddef>
#include <ctime>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace llm::jinja {

struct RenderOptions {
  // Date used by strftime_now(), "YYYY-MM-DD" (time 00:00:00); empty = the local time now.
  std::string date;
  // Refuse methods that mutate lists and dicts (append, pop, update, ...) like transformers'
  // ImmutableSandboxedEnvironment does. Off by default: some templates (e.g. Kimi-K2) need them.
  bool immutable_sandbox = false;
  // Guards against runaway templates.
  size_t max_output_bytes = size_t{64} << 20;
  size_t max_loop_iterations = 20'000'000;
  int max_call_depth = 256;
};

class Template {
 public:
  // Parses `source`; throws llm::Error on syntax errors.
  explicit Template(std::string_view source);
  ~Template();
  Template(Template&&) noexcept;
  Template& operator=(Template&&) noexcept;

  // Renders with the keys of `context` (a JSON object) as variables; JSON null is None.
  // ordered_json keeps the caller's key order, which `tojson` and dict iteration expose
  // (an nlohmann::json converts implicitly, with its keys sorted).
  std::string render(const nlohmann::ordered_json& context,
                     const RenderOptions& options = {}) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Parses a calendar date "YYYY-MM-DD" (RenderOptions::date) into *out (00:00:00, the
// weekday and day of the year filled in); false for anything else, 2026-02-30 included.
bool parse_date(const std::string& date, std::tm* out);

// Convenience: parse and render once.
std::string render_template(std::string_view source, const nlohmann::ordered_json& context,
                            const RenderOptions& options = {});

}  // namespace llm::jinja
