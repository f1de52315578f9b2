#include "server/generation_plan.h"

#include <algorithm>
#include <random>
#include <string>

#include "core/chat/reasoning.h"

namespace llm::server {

GenerationPlan plan_generation(const ParsedRequest& p, const Tokenizer& tokenizer,
                               const ChatPrompt* chat, bool split_reasoning, int context_size) {
  GenerationPlan plan;
  GenerationRequest& g = plan.request;
  ReplyFormat& format = plan.format;
  if (p.chat) {
    if (!chat) throw ApiError(400, "this model has no chat template; use /v1/completions");
    nlohmann::ordered_json messages = nlohmann::ordered_json::array();
    for (const auto& m : p.messages) {
      nlohmann::ordered_json msg = {{"role", m.role}, {"content", m.content}};
      for (auto it = m.tool_fields.begin(); it != m.tool_fields.end(); ++it) msg[it.key()] = *it;
      messages.push_back(std::move(msg));
    }
    if (!p.tools.is_null()) {
      format.tools = chat->tool_call_syntax();
      format.one_call = !p.parallel_tool_calls;
      g.keep_special = format.tools != ToolCallSyntax::None;  // markers may be such tokens
    }
    if (!p.forced_tool.empty()) {
      // The reply is constrained to the call's JSON object, after the syntax's opener,
      // which goes at the end of the prompt.
      const nlohmann::json tools = nlohmann::json::parse(p.tools.dump());
      try {
        format.forced = forced_tool_call(chat->tool_call_syntax(), tools,
                                         p.forced_tool == "*" ? "" : p.forced_tool);
      } catch (const Error& e) {
        throw ApiError(400, e.what(), "tool_choice");
      }
      try {
        g.json = JsonSchema::compile(format.forced->schema);
      } catch (const Error&) {
        // Parameters this server cannot enforce: any arguments object.
        g.json = JsonSchema::compile(format.forced->loose_schema);
      }
    }
    try {
      std::string rendered = chat->render(messages, p.tools, p.template_kwargs);
      format.thinks = !format.forced && split_reasoning && chat->thinks();
      format.think_inside = format.thinks && prompt_opens_think(rendered);
      if (format.forced) rendered += format.forced->opener;
      g.prompt = chat->encode_rendered(rendered);
    } catch (const Error& e) {
      throw ApiError(400, std::string("chat template: ") + e.what(), "messages");
    }
  } else if (p.suffix) {
    // Fill in the middle. The prompt keeps room for the reply: max_tokens, or 256 tokens,
    // but at most half the context.
    const int reply = std::min(p.max_tokens.value_or(256), context_size / 2);
    try {
      InfillPrompt infill = build_infill_prompt(tokenizer, {p.prompt, *p.suffix, p.infill_extra},
                                                context_size - reply);
      g.prompt = std::move(infill.tokens);
      g.stop_token_ids = std::move(infill.stop_ids);
    } catch (const Error& e) {
      throw ApiError(400, e.what(), "suffix");
    }
  } else {
    g.prompt = p.prompt_tokens.empty() ? tokenizer.encode(p.prompt, true) : p.prompt_tokens;
  }
  g.stop_token_ids.insert(g.stop_token_ids.end(), p.stop_token_ids.begin(), p.stop_token_ids.end());
  g.sampling.temperature = p.temperature;
  g.sampling.top_p = p.top_p;
  g.sampling.top_k = p.top_k;
  g.sampling.min_p = p.min_p;
  g.sampling.presence_penalty = p.presence_penalty;
  g.sampling.frequency_penalty = p.frequency_penalty;
  g.sampling.repetition_penalty = p.repetition_penalty;
  g.sampling.seed = p.seed ? *p.seed : std::random_device{}();
  for (const auto& [id, bias] : p.logit_bias) g.sampling.logit_bias[id] = bias;
  g.max_tokens = p.max_tokens ? *p.max_tokens : -1;
  g.stop = p.stop;
  g.top_logprobs = p.logprobs ? p.top_logprobs : -1;
  if (!format.forced) g.json = p.json;
  return plan;
}

}  // namespace llm::server
