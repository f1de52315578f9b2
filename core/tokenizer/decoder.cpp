#include "core/tokenizer/decoder.h"

#include "core/tokenizer/normalizer.h"
#include "core/tokenizer/unicode.h"
#include "core/tokenizer/vocab.h"

namespace llm {

void Decoder::add_replace(const std::string& from, const std::string& to) {
  steps_.push_back(Step{Kind::kReplace, from, to});
}

void Decoder::add_byte_fallback() { steps_.push_back(Step{Kind::kByteFallback, "", ""}); }

void Decoder::add_byte_level() { steps_.push_back(Step{Kind::kByteLevel, "", ""}); }

void Decoder::add_metaspace(const std::string& replacement, bool strip_first) {
  Step s{Kind::kMetaspace, replacement, " "};
  s.strip_first = strip_first;
  steps_.push_back(std::move(s));
}

void Decoder::add_fuse() { fused_ = true; }

void Decoder::add_strip(const std::string& content, int start, int stop) {
  Step s{Kind::kStrip, content, ""};
  s.start = start;
  s.stop = stop;
  s.after_fuse = fused_;
  steps_.push_back(std::move(s));
}

namespace {

void strip_front(std::string* s, const std::string& content, int count) {
  size_t pos = 0;
  for (int i = 0; i < count && !content.empty() && s->compare(pos, content.size(), content) == 0;
       ++i) {
    pos += content.size();
  }
  s->erase(0, pos);
}

void strip_back(std::string* s, const std::string& content, int count) {
  for (int i = 0; i < count && !content.empty() && s->size() >= content.size() &&
                  s->compare(s->size() - content.size(), content.size(), content) == 0;
       ++i) {
    s->resize(s->size() - content.size());
  }
}

}  // namespace

void Decoder::decode_piece(std::string_view piece, bool first, std::string* out) const {
  std::string s(piece);
  for (const Step& step : steps_) {
    switch (step.kind) {
      case Kind::kReplace:
        s = replace_all(s, step.a, step.b);
        break;
      case Kind::kByteFallback: {
        const int b = parse_byte_token(s);
        if (b >= 0) s.assign(1, static_cast<char>(b));
        break;
      }
      case Kind::kByteLevel: {
        std::string bytes;
        bytes.reserve(s.size());
        for (size_t pos = 0; pos < s.size();) {
          const size_t start = pos;
          const uint32_t cp = unicode::next_codepoint(s, &pos);
          const int b = unicode::codepoint_to_byte(cp);
          if (b >= 0) {
            bytes.push_back(static_cast<char>(b));
          } else {
            bytes.append(s, start, pos - start);  // not from the table: keep as is
          }
        }
        s.swap(bytes);
        break;
      }
      case Kind::kMetaspace:
        s = replace_all(s, step.a, step.b);
        if (first && step.strip_first && !s.empty() && s[0] == ' ') s.erase(0, 1);
        break;
      case Kind::kStrip:
        if (!step.after_fuse) {
          strip_front(&s, step.a, step.start);
          strip_back(&s, step.a, step.stop);
        } else if (first) {
          strip_front(&s, step.a, step.start);
        }
        break;
    }
  }
  out->append(s);
}

}  // namespace llm
