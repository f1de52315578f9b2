// A parsed completion request (OpenAI's shape, or Ollama's translated to it) as the
// engine request it asks for, and how its reply is read: the chat template's prompt
// (tools, a forced call's opener), sampling, limits, a JSON format. Shared by the
// OpenAI and Ollama routes.
#pragma once

#include <cstdint>

#include "core/chat/chat_prompt.h"
#include "core/engine/engine.h"
#include "core/tokenizer/tokenizer.h"
#include "server/chat_reply.h"
#include "server/openai_protocol.h"

namespace llm::server {

struct GenerationPlan {
  GenerationRequest request;  // sampling.seed: the request's (choice i adds i)
  ReplyFormat format;
};

// Throws ApiError: 400 for a chat without a template, a forced call the template's syntax
// cannot make, a template error, or a fill-in-the-middle request (suffix) to a model
// without FIM tokens. split_reasoning: a thinking template's think block goes to
// reasoning_content. context_size: the engine's, which an infill prompt is cut to fit.
GenerationPlan plan_generation(const ParsedRequest& p, const Tokenizer& tokenizer,
                               const ChatPrompt* chat, bool split_reasoning, int context_size);

}  // namespace llm::server
