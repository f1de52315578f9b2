#include "core/chat/conv_templates.h"

#include <map>

namespace llm {

namespace {

// A Jinja single-quoted string literal.
std::string quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\\' || c == '\'') out += '\\';
    out += c;
  }
  return out + "'";
}

// Shared head of every template: `text(content)` flattens string or multi-part content,
// `system` / `turns` split off a leading system message, `unsupported(role)` fails.
std::string prologue(const std::string& name, const std::string& default_system) {
  return R"J({%- macro text(content) -%}
    {%- if content is string -%}
        {{- content -}}
    {%- elif content is iterable and content is not mapping -%}
        {%- for part in content if part['type'] == 'text' -%}
            {{- part['text'] -}}
        {%- endfor -%}
    {%- endif -%}
{%- endmacro -%}
{%- macro unsupported(role) -%}
    {{- raise_exception("the )J" +
         name + R"J( template does not support role '" ~ role ~ "'") -}}
{%- endmacro -%}
{%- if messages and messages[0]['role'] == 'system' -%}
    {%- set system = text(messages[0]['content']) -%}
    {%- set turns = messages[1:] -%}
{%- else -%}
    {%- set system = )J" +
         quote(default_system) + R"J( -%}
    {%- set turns = messages -%}
{%- endif -%}
)J";
}

const char kLlama2[] = R"J(
{%- for m in turns -%}
    {%- if m['role'] == 'user' -%}
        {{- bos_token + '[INST] ' -}}
        {%- if loop.first and system -%}
            {{- '<<SYS>>\n' + system + '\n<</SYS>>\n\n' -}}
        {%- endif -%}
        {{- text(m['content']) + ' [/INST]' -}}
    {%- elif m['role'] == 'assistant' -%}
        {{- ' ' + text(m['content']) + ' ' + eos_token -}}
    {%- else -%}
        {{- unsupported(m['role']) -}}
    {%- endif -%}
{%- endfor -%}
)J";

const char kLlama3[] = R"J(
{{- bos_token -}}
{%- if system -%}
    {{- '<|start_header_id|>system<|end_header_id|>\n\n' + system | trim + '<|eot_id|>' -}}
{%- endif -%}
{%- for m in turns -%}
    {%- if m['role'] == 'user' or m['role'] == 'assistant' -%}
        {{- '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' -}}
        {{- text(m['content']) | trim + '<|eot_id|>' -}}
    {%- else -%}
        {{- unsupported(m['role']) -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
{%- endif -%}
)J";

const char kChatml[] = R"J(
{%- if system -%}
    {{- '<|im_start|>system\n' + system + '<|im_end|>\n' -}}
{%- endif -%}
{%- for m in turns -%}
    {{- '<|im_start|>' + m['role'] + '\n' + text(m['content']) + '<|im_end|>\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|im_start|>assistant\n' -}}
{%- endif -%}
)J";

const char kMistral[] = R"J(
{{- bos_token -}}
{%- for m in turns -%}
    {%- if m['role'] == 'user' -%}
        {{- '[INST] ' -}}
        {%- if loop.first and system -%}
            {{- system + '\n\n' -}}
        {%- endif -%}
        {{- text(m['content']) + ' [/INST]' -}}
    {%- elif m['role'] == 'assistant' -%}
        {{- ' ' + text(m['content']) + eos_token -}}
    {%- else -%}
        {{- unsupported(m['role']) -}}
    {%- endif -%}
{%- endfor -%}
)J";

const char kPhi3[] = R"J(
{{- bos_token -}}
{%- if system -%}
    {{- '<|system|>\n' + system + '<|end|>\n' -}}
{%- endif -%}
{%- for m in turns -%}
    {%- if m['role'] == 'user' or m['role'] == 'assistant' -%}
        {{- '<|' + m['role'] + '|>\n' + text(m['content']) + '<|end|>\n' -}}
    {%- else -%}
        {{- unsupported(m['role']) -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|assistant|>\n' -}}
{%- endif -%}
)J";

const char kGemma[] = R"J(
{{- bos_token -}}
{%- for m in turns -%}
    {%- if m['role'] == 'user' -%}
        {{- '<start_of_turn>user\n' -}}
        {%- if loop.first and system -%}
            {{- system + '\n\n' -}}
        {%- endif -%}
        {{- text(m['content']) | trim + '<end_of_turn>\n' -}}
    {%- elif m['role'] == 'assistant' -%}
        {{- '<start_of_turn>model\n' + text(m['content']) | trim + '<end_of_turn>\n' -}}
    {%- else -%}
        {{- unsupported(m['role']) -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<start_of_turn>model\n' -}}
{%- endif -%}
)J";

const char kRedpajama[] = R"J(
{%- if system -%}
    {{- system + '\n' -}}
{%- endif -%}
{%- for m in turns -%}
    {%- if m['role'] == 'user' -%}
        {{- '<human>: ' + text(m['content']) + '\n' -}}
    {%- elif m['role'] == 'assistant' -%}
        {{- '<bot>: ' + text(m['content']) + '\n' -}}
    {%- else -%}
        {{- unsupported(m['role']) -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<bot>:' -}}
{%- endif -%}
)J";

const char kVicuna[] = R"J(
{{- bos_token -}}
{%- if system -%}
    {{- system + ' ' -}}
{%- endif -%}
{%- for m in turns -%}
    {%- if m['role'] == 'user' -%}
        {{- 'USER: ' + text(m['content']) + ' ' -}}
    {%- elif m['role'] == 'assistant' -%}
        {{- 'ASSISTANT: ' + text(m['content']) + eos_token -}}
    {%- else -%}
        {{- unsupported(m['role']) -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- 'ASSISTANT:' -}}
{%- endif -%}
)J";

// RWKV World has no system role: the system prompt is the reply of a canned first exchange.
// A blank line ends a turn, so texts are trimmed and blank lines folded.
const char kRwkvWorld[] = R"J(
{%- macro clean(content) -%}
    {{- text(content) | trim | replace('\n\n', '\n') -}}
{%- endmacro -%}
{%- if system -%}
    {{- 'User: hi\n\nAssistant: ' + clean(system) + '\n\n' -}}
{%- endif -%}
{%- for m in turns -%}
    {%- if m['role'] == 'user' -%}
        {{- 'User: ' + clean(m['content']) + '\n\n' -}}
    {%- elif m['role'] == 'assistant' -%}
        {{- 'Assistant: ' + clean(m['content']) + '\n\n' -}}
    {%- else -%}
        {{- unsupported(m['role']) -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- 'Assistant:' -}}
{%- endif -%}
)J";

const std::map<std::string, std::string>& templates() {
  static const std::map<std::string, std::string> table = [] {
    const std::string kHelpful = "You are a helpful, respectful and honest assistant.";
    struct Def {
      const char* name;
      std::string default_system;
      const char* body;
    };
    const Def defs[] = {
        {"llama-2", kHelpful, kLlama2},
        {"llama-3", kHelpful, kLlama3},
        {"chatml",
         "A conversation between a user and an LLM-based AI assistant. The assistant gives "
         "helpful and honest answers.",
         kChatml},
        {"mistral",
         "Always assist with care, respect, and truth. Respond with utmost utility yet "
         "securely. Avoid harmful, unethical, prejudiced, or negative content. Ensure replies "
         "promote fairness and positivity.",
         kMistral},
        {"phi-3",
         "You are a helpful digital assistant. Please provide safe, ethical and accurate "
         "information to the user.",
         kPhi3},
        {"gemma", "", kGemma},
        {"redpajama_chat", "", kRedpajama},
        {"vicuna_v1.1",
         "A chat between a curious user and an artificial intelligence assistant. The "
         "assistant gives helpful, detailed, and polite answers to the user's questions.",
         kVicuna},
        {"rwkv_world",
         "Hi. I am your assistant and I will provide expert full response in full details. "
         "Please feel free to ask any question and I will always answer it.",
         kRwkvWorld},
    };
    std::map<std::string, std::string> m;
    for (const Def& d : defs) m[d.name] = prologue(d.name, d.default_system) + d.body;
    return m;
  }();
  return table;
}

}  // namespace

const std::string* find_conv_template(const std::string& name) {
  auto it = templates().find(name);
  return it == templates().end() ? nullptr : &it->second;
}

std::vector<std::string> conv_template_names() {
  std::vector<std::string> names;
  for (const auto& kv : templates()) names.push_back(kv.first);
  return names;
}

}  // namespace llm
