// Runs batched model steps over the paged KV cache: owns the State tensors (KV
// cache pages and recurrent state rows) and one compiled executor per shape
// bucket, pads each step up to its bucket, and returns one logits row per
// sequence. The scheduler (core/engine/engine) decides what goes into a step.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/executor.h"
#include "core/model.h"

namespace llm {

struct StepRunnerOptions {
  int n_pages = 0;              // KV cache pages shared by all sequences
  int page_size = 16;           // tokens per page
  int max_pages_per_seq = 0;    // columns of the block table (context window / page size)
  int max_seqs = 1;             // sequences in one step, and rows of recurrent state
  int max_tokens = 512;         // tokens in one step
  DType kv_dtype = DType::F32;  // KV cache elements
};

// What a step's graph ends in: logits and sampled ids of each sequence's last token, of
// every token (speculative decoding checks a draft's tokens in one step), or the final
// norm's row of every token (embeddings).
enum class StepOutput { LastRows, AllRows, Hidden };

// One sequence's part of a step: its tokens are tokens[first, first + count).
struct StepSeq {
  const std::vector<int>* pages = nullptr;  // page table covering every position used
  int state_slot = 0;                       // row of the recurrent states
  int first = 0;
  int count = 0;
  bool wants_logits = false;  // logits of its last token in this step
  // Op::Sample's parameters for its row (temperature, u, top_k, top_p, min_p); greedy
  // by default.
  SampleRow sample = kGreedySampleRow;
  // StepOutput::AllRows: the parameters of its rows after the first (a draft's tokens).
  std::vector<SampleRow> more_samples;
};

class StepRunner {
 public:
  StepRunner(Model& model, const StepRunnerOptions& opts);

  // Runs a step. tokens/positions hold every token of the step, sequence by sequence.
  // Its results are read afterwards, each copied from the device on first use: logits()
  // ([seqs.size(), vocab] row-major) or sampled() (one id per sequence, picked on the
  // device by Op::Sample with the sequence's parameters). Rows of sequences
  // without wants_logits are left unspecified.
  void run(const std::vector<int32_t>& tokens, const std::vector<int32_t>& positions,
           const std::vector<StepSeq>& seqs);
  // A step with another output: AllRows samples every token's row (sampled() then holds
  // one id per token, each row with its sequence's parameters); Hidden ends at the final
  // norm, and hidden() holds that row for every token ([tokens.size(), hidden]).
  void run(const std::vector<int32_t>& tokens, const std::vector<int32_t>& positions,
           const std::vector<StepSeq>& seqs, StepOutput output);
  const std::vector<float>& hidden();
  const std::vector<float>& logits();
  const std::vector<int32_t>& sampled();
  // Decoding a step ahead of the host: queues the next step of the last step's
  // sequences (in the same order), one token each, the ids the last step sampled (fed
  // to it on the device), and then returns those ids (read while the new step runs).
  // False (nothing queued) where the tokens cannot be fed that way: the step's token
  // and sequence buckets differ, or there was no such step.
  bool run_ahead(const std::vector<int32_t>& positions, const std::vector<StepSeq>& seqs,
                 std::vector<int32_t>& last_ids);
  // Whether run_ahead can queue a step of n sequences after the last one.
  bool can_run_ahead(int n_seqs) const;

  // Zeroes a recurrent-state row (a sequence starting in that slot).
  void clear_state_row(int slot);
  bool has_recurrent_state() const { return recurrent_rows_ > 0; }
  size_t cache_bytes() const { return cache_bytes_; }
  const StepRunnerOptions& options() const { return opts_; }
  // The executors compiled so far, by (tokens, sequences) bucket (for trace/profile).
  const std::map<std::pair<int, int>, std::unique_ptr<Executor>>& executors() const {
    return executors_;
  }
  // The executor of a bucket, compiled on first use.
  Executor& executor_for(int n_tokens, int n_seqs, StepOutput output = StepOutput::LastRows);
  // Compiles the executor of the bucket that a step of n tokens of n_seqs sequences takes
  // (a step's shape compiled on first use can stall it: Vulkan builds its pipelines).
  void prepare(int n_tokens, int n_seqs, StepOutput output) {
    const std::pair<int, int> b = buckets(n_tokens, n_seqs);
    executor_for(b.first, b.second, output);
  }
  // Smallest bucket holding n (powers of two, capped at limit).
  static int bucket(int n, int limit);

 private:
  TensorRef resolve_state(const TensorInfo& t);
  // The step's buckets (tokens T, sequences S) for n tokens of s sequences.
  std::pair<int, int> buckets(int n_tokens, int n_seqs) const;
  // Sets every input of ex but the tokens (the sequences' rows, positions, slots, page
  // tables, logit rows, sampling parameters and state rows) for a step of n tokens.
  void set_step_inputs(Executor& ex, int T, int S, int n, const std::vector<int32_t>& positions,
                       const std::vector<StepSeq>& seqs, StepOutput output = StepOutput::LastRows);

  Model& model_;
  StepRunnerOptions opts_;
  int scratch_page_ = 0;  // receives the KV of padding tokens
  int scratch_row_ = 0;   // recurrent-state row of padding sequences
  int recurrent_rows_ = 0;
  size_t cache_bytes_ = 0;
  std::map<std::string, std::unique_ptr<DeviceBuffer>> states_;
  std::map<std::string, size_t> recurrent_row_bytes_;
  std::map<std::pair<int, int>, std::unique_ptr<Executor>> executors_;  // LastRows
  std::map<std::pair<int, int>, std::unique_ptr<Executor>> all_rows_executors_, hidden_executors_;
  Executor* last_ = nullptr;  // the executor of the last step
  int last_rows_ = 0;
  int last_tokens_ = 0;
  StepOutput last_output_ = StepOutput::LastRows;
  bool have_logits_ = false, have_sampled_ = false, have_hidden_ = false;
  std::vector<float> logits_, hidden_;
  std::vector<int32_t> sampled_;
  std::vector<float> in_params_;
  std::vector<int32_t> in_tokens_, in_pos_, in_seq_, in_slots_, in_table_, in_rows_, in_states_;
};

}  // namespace llm
