#include "core/chat/jinja.h"

#include <new>

#include "core/chat/jinja_interp.h"
#include "core/chat/jinja_lexer.h"
#include "core/chat/jinja_parser.h"
#include "core/error.h"

namespace llm::jinja {

struct Template::Impl {
  Body body;
};

Template::Template(std::string_view source) : impl_(std::make_unique<Impl>()) {
  impl_->body = parse_template(tokenize(source));
}

Template::~Template() = default;
Template::Template(Template&&) noexcept = default;
Template& Template::operator=(Template&&) noexcept = default;

std::string Template::render(const nlohmann::ordered_json& context,
                             const RenderOptions& options) const {
  if (!context.is_object() && !context.is_null()) {
    throw llm::Error("template context must be a JSON object");
  }
  try {
    Value ctx = from_json(context);
    Interpreter interp(options);
    return interp.render(impl_->body, ctx);
  } catch (const RaisedError& e) {
    throw llm::Error(e.what());
  } catch (const RenderError& e) {
    if (e.line == 0) throw llm::Error(std::string("template: ") + e.what());
    throw llm::Error("template line " + std::to_string(e.line) + ": " + e.what());
  } catch (const std::bad_alloc&) {
    throw llm::Error("template: out of memory while rendering");
  }
}

std::string render_template(std::string_view source, const nlohmann::ordered_json& context,
                            const RenderOptions& options) {
  return Template(source).render(context, options);
}

}  // namespace llm::jinja
