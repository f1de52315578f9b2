// Streaming detokenization: bytes are held back until they form whole characters.
#include "core/tokenizer/tokenizer.h"
#include "core/tokenizer/tokenizer_impl.h"
#include "core/tokenizer/unicode.h"

namespace llm {

StreamDecoder::StreamDecoder(const Tokenizer& tok, bool skip_special)
    : tok_(tok), skip_special_(skip_special) {}

std::string StreamDecoder::push(int32_t id) {
  tok_.impl_->append_token_bytes(id, skip_special_, &first_, &pending_);
  return unicode::take_valid_utf8(&pending_, false);
}

std::string StreamDecoder::flush() { return unicode::take_valid_utf8(&pending_, true); }

}  // namespace llm
