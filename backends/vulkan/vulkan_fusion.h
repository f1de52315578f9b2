// Which nodes of a step the Vulkan backend computes in one dispatch: predicates over the
// bound nodes (their ops, tensor ids, dtypes and the bytes they occupy) that
// the planner (vulkan_planner.h) asks before it plans a dispatch. A fused dispatch must
// compute what its nodes compute without races: each rule checks that no output of the
// dispatch overlaps what another part of it still reads or writes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "backends/vulkan/vulkan_context.h"
#include "backends/vulkan/vulkan_program.h"
#include "core/backend.h"

namespace llm {
namespace vk {

// Most tokens the GEMV shader takes (its MAX_T); more go through the tiled GEMM.
constexpr int64_t kGemvMaxTokens = 8;
// The workgroup size of matmul_gemv_q (its WG).
constexpr uint32_t kGemvQThreads = 128;
// The workgroup sizes of matmul_gemv_qdot_sx (X_SHARED, specialization constant 14): the
// default, and the largest (one workgroup per multiprocessor where the grid has enough).
constexpr uint32_t kGemvQThreadsShared = 256;
constexpr uint32_t kGemvQThreadsMax = 1024;
// The most rounds of x a fused norm loads before its sum (NORM_PRE_MAX in matmul_gemv_q.glsl).
constexpr int64_t kNormPreMax = 4;
// The workgroup size of attention_decode_sg and attention_decode_o (their WG).
constexpr uint32_t kAttnDecodeThreads = 256;
// The shared memory of matmul_gemv_q.glsl with x in it (X_SHARED): x's planes of T
// tokens of K (72 bytes a block), `sums` partial sums (M * R * NT) per subgroup of at
// least 4 threads, red (a float a thread) and under 512 bytes of small arrays.
constexpr uint64_t gemv_shared_bytes(int64_t T, int64_t K, uint64_t sums, uint32_t threads) {
  // x's planes, the partial sums and red[], QOUT's round (threads / 8 rows: a vec2 and a
  // float each) and the rest.
  return static_cast<uint64_t>(T * (K / 32)) * 72 + (sums * (threads / 4) + threads) * 4 +
         threads / 8 * 12 + 512;
}

// The backend's settings the rules depend on.
struct FusionSettings {
  bool coop = false;                 // many-token matmuls on the tensor-core GEMM
  int64_t coop_gemv_max_tokens = 4;  // ... and the most tokens the GEMVs take then
  bool int_dot = false;              // integer-dot GEMVs
  bool shared_x = false;             // ... with x's planes in shared memory
  int ffn_down = 0;                  // down and its Add inside gate/up: 1 atomics, 2 parts
  bool ffn_next_norm = false;        // ... 1 with the next RmsNorm's rounding too
  int attn_o = 0;  // o and its Add inside the decode attention's grid: 1; 2 the next norm too
};

class FusionRules {
 public:
  FusionRules(const std::vector<BoundNode>& nodes, const PhysicalInfo& phys,
              const FusionSettings& settings)
      : nodes_(nodes), phys_(phys), set_(settings) {}

  // How the GEMV dispatch of node i (gemv_q) groups the nodes after it: the residual
  // Add's index of the residual (res >= 0), gate/up with their SiluMul (glu), or up to
  // three matmuls of one x (segs).
  struct GemvGroup {
    int res;
    bool glu;
    size_t segs;
  };

  // Each rule is documented at its definition (vulkan_fusion.cpp). Node i's dispatch:
  int residual_add(size_t i) const;        // adds the residual of the Add after it (its index)
  bool silu_after(size_t i) const;         // the split-K reduce computes the SiluMul after it
  bool use_coop(int64_t T) const;          // a matmul of T tokens runs on the tensor cores
  bool gemv_q(size_t i) const;             // a quantized GEMV (matmul_gemv_q and variants)
  bool ffn_fusable(size_t i) const;        // gate/up/SiluMul at i, down at i + 3
  int ffn_down_fusable(size_t i) const;    // ... and down's residual Add at i + 4 (its index)
  bool norm_after_ffn(size_t i) const;     // ... and the RmsNorm at i + 5 rounds for i + 6
  int attn_o_fusable(size_t i) const;      // attention i, o i + 1, its Add i + 2 (residual)
  bool norm_after_attn_o(size_t i) const;  // ... and the RmsNorm at i + 3 rounds for i + 4
  bool feeds_int_dot_gemv(size_t i, const TensorRef& t) const;  // rounds t for i + 1
  size_t gemv_segments(size_t i) const;  // matmuls of one x side by side (q/k/v)
  GemvGroup gemv_group(size_t i) const;
  bool read_from(size_t j, TensorId t) const;  // a node from j on reads t
  bool uses_shared_x(size_t i) const;          // the GEMV keeps x's planes in shared memory
  bool norm_into_gemv(size_t i) const;         // RmsNorm i runs in i + 1's GEMV
  bool rope_store_fusable(size_t i) const;     // the rope writes the cache row of i + 1
  int rope_kv_fusable(size_t i) const;         // q/k/v, ropes and appends: the outputs' mask

 private:
  const std::vector<BoundNode>& nodes_;
  const PhysicalInfo& phys_;
  FusionSettings set_;
};

}  // namespace vk
}  // namespace llm
