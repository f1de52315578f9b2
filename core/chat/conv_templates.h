// Built-in conversation templates for models that ship no chat template, written as Jinja
// sources rendered by the same engine as Hugging Face templates (render_chat_template).
//
// Each follows its model family's prompt layout and MLC-LLM's conv template of the same name
// (default system prompts, separators); where MLC glues the system prompt to the first turn
// with no separator, these keep the family's separator. Shared rules:
//   - A leading `system` message replaces the default system prompt; an empty one drops it.
//   - Message content may be a string or a list of parts (only "text" parts are kept).
//   - Roles other than user/assistant raise an error (chatml accepts any role).
//   - `{{ bos_token }}` / `{{ eos_token }}` come from the render options.
//
// With system S, user U1, assistant A1, user U2 and add_generation_prompt (shown as "+ gen"):
//   llama-2        <s>[INST] <<SYS>>\nS\n<</SYS>>\n\nU1 [/INST] A1 </s><s>[INST] U2 [/INST]
//                  (gen adds nothing: the user turn already ends with [/INST])
//   llama-3        <s><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>... each turn
//                  <|start_header_id|>ROLE<|end_header_id|>\n\nTEXT<|eot_id|> (trimmed);
//                  + gen <|start_header_id|>assistant<|end_header_id|>\n\n
//   chatml         <|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n...;
//                  + gen <|im_start|>assistant\n
//   mistral        <s>[INST] S\n\nU1 [/INST] A1</s>[INST] U2 [/INST]  (gen adds nothing)
//   phi-3          <s><|system|>\nS<|end|>\n<|user|>\nU1<|end|>\n<|assistant|>\nA1<|end|>\n...;
//                  + gen <|assistant|>\n
//   gemma          <s><start_of_turn>user\nS\n\nU1<end_of_turn>\n<start_of_turn>model\nA1
//                  <end_of_turn>\n...; + gen <start_of_turn>model\n  (no system turn in Gemma)
//   redpajama_chat S\n<human>: U1\n<bot>: A1\n<human>: U2\n; + gen <bot>:
//   vicuna_v1.1    <s>S USER: U1 ASSISTANT: A1</s>USER: U2 ; + gen ASSISTANT:
//   rwkv_world     User: hi\n\nAssistant: S\n\nUser: U1\n\nAssistant: A1\n\nUser: U2\n\n;
//                  + gen Assistant:  (texts trimmed, blank lines folded as ChatRWKV does)
// Default system prompts (used when the conversation has no system message): llama-2,
// llama-3: "You are a helpful, respectful and honest assistant."; chatml, mistral, phi-3 and
// rwkv_world: MLC-LLM's; gemma and redpajama_chat: none; vicuna_v1.1: FastChat's.
#pragma once

#include <string>
#include <vector>

namespace llm {

// The Jinja source of the built-in template `name`, or nullptr if there is none.
const std::string* find_conv_template(const std::string& name);

// Names of all built-in templates, sorted.
std::vector<std::string> conv_template_names();

}  // namespace llm
