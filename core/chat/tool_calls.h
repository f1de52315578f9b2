// Tool calls in a model's reply: which syntax a chat template teaches (found from the
// template's own text), and the calls parsed out of generated text into OpenAI's
// shape (name, arguments as a JSON string), with the rest kept as the message content.
// Used by the server for chat requests that pass `tools`.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace llm {

enum class ToolCallSyntax {
  None,          // the template shows no tool calls we know
  HermesJson,    // <tool_call>{"name": ..., "arguments": {...}}</tool_call> (Qwen2.5/3, Hermes)
  QwenXml,       // <tool_call><function=NAME><parameter=K>V</parameter></function></tool_call>
  GlmXml,        // <tool_call>NAME<arg_key>K</arg_key><arg_value>V</arg_value></tool_call>
  Mistral,       // [TOOL_CALLS][{"name", "arguments"}, ...] or [TOOL_CALLS]NAME[ARGS]{...}
  Llama3Json,    // {"name": ..., "parameters": {...}} as the whole reply (Llama 3.1-3.3)
  FunctionTags,  // <function=NAME>{...}</function> (Functionary v3.1)
  KimiK2,  // <|tool_call_begin|>functions.NAME:i<|tool_call_argument_begin|>{...}<|tool_call_end|>
  DeepSeek,  // <｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME ```json {...}``` (R1, V3)
  SeedXml,   // <seed:tool_call><function=NAME><parameter=K>V</parameter>... (Seed-OSS)
  GraniteList,  // <|tool_call|>[{"name", "arguments"}, ...] (Granite 3.x)
  Functools,    // functools[{"name", "arguments"}, ...] (FireFunction v2)
  TaggedList,   // <tool_calls>[{"name", "arguments"}, ...]</tool_calls> (Apriel)
};

const char* tool_call_syntax_name(ToolCallSyntax s);

// The syntax a chat template's source renders its assistants' tool_calls in.
ToolCallSyntax detect_tool_call_syntax(const std::string& template_source);

struct ToolCall {
  std::string name;
  std::string arguments;  // a JSON object, as text
};

struct ParsedReply {
  std::string content;  // the text outside the calls, trimmed
  std::vector<ToolCall> calls;
};

// The calls in a finished reply. Text that does not parse as a call (malformed JSON, no
// name) stays in the content, so a failed parse never loses what the model wrote. With
// calls, an empty think block is not content either.
ParsedReply parse_tool_calls(ToolCallSyntax syntax, const std::string& text);

// While streaming: how many leading bytes of the reply so far are content for sure,
// i.e. come before any (possible) start of a tool call. The rest is held back until
// the reply ends.
size_t tool_call_free_prefix(ToolCallSyntax syntax, const std::string& text);

// tool_choice forcing a call, in a syntax whose calls are one JSON object (Hermes/Qwen
// <tool_call>, Llama 3): the schema of that object (the tool's name, and its parameters
// where one tool is possible), the text the reply starts after (it goes at the end of
// the prompt), and the key of the arguments.
struct ForcedToolCall {
  nlohmann::json schema;        // the call of one of the tools, with its parameters
  nlohmann::json loose_schema;  // any arguments object (parameters that cannot be enforced)
  std::string opener;
  std::string arguments_key;
};
// name: the tool to call, or empty for any of tools. Throws llm::Error for a syntax whose
// calls are not one JSON object.
ForcedToolCall forced_tool_call(ToolCallSyntax syntax, const nlohmann::json& tools,
                                const std::string& name);
// The call a forced reply makes; false when it is not one (cut by max_tokens).
bool forced_call_from_reply(const ForcedToolCall& forced, const std::string& reply, ToolCall* out);

// A reply streamed in pieces: the content that can go out at once, then at the end the
// calls and the content still held.
class ToolCallStream {
 public:
  explicit ToolCallStream(ToolCallSyntax syntax) : syntax_(syntax) {}
  // The next piece of the reply; returns the content to send now.
  std::string push(const std::string& text);
  // The reply has ended: its calls, and the content not sent yet (all of it when there
  // are no calls; else what comes before the first call).
  ParsedReply finish();

 private:
  ToolCallSyntax syntax_;
  std::string reply_;
  size_t sent_ = 0;
};

}  // namespace llm
