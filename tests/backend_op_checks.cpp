#include "backend_op_checks.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <random>

namespace llm::test {

namespace {
HostT zeros(Shape s) { return f32_tensor(s, std::vector<float>(s.numel(), 0.f)); }
}  // namespace

void check_norm_ops(const CompareWithCpu& compare, const std::vector<int64_t>& dims,
                    const std::vector<DType>& weight_types, bool bias_like_weight) {
  std::mt19937 rng(2);
  OpParams p;
  p.eps = 1e-5f;
  for (int64_t rows : {1, 7})
    for (int64_t d : dims)
      for (DType wt : weight_types)
        DYNAMIC_SECTION("rows=" << rows << " d=" << d << " w " << dtype_name(wt)) {
          const HostT x = f32_tensor({rows, d}, uniform(rows * d, rng, -3.f, 3.f));
          const HostT w{wt, {d}, encode(wt, uniform(d, rng))};
          const DType bt = bias_like_weight ? wt : DType::F32;
          const HostT b{bt, {d}, encode(bt, uniform(d, rng))};
          CHECK(compare(make_node(Op::RmsNorm, p), {x, w}, zeros({rows, d})) <= 1e-5);
          CHECK(compare(make_node(Op::LayerNorm, p), {x, w}, zeros({rows, d})) <= 1e-5);
          CHECK(compare(make_node(Op::LayerNorm, p), {x, w, b}, zeros({rows, d})) <= 1e-5);
        }
}

void check_rope_ops(const CompareWithCpu& compare, int32_t last_pos) {
  std::mt19937 rng(3);
  struct Case {
    int heads, head_dim, rot;
  };
  for (RopeStyle style : {RopeStyle::NeoX, RopeStyle::GptJ})
    for (Case c : {Case{3, 16, 16}, Case{2, 24, 8}, Case{5, 64, 32}})
      DYNAMIC_SECTION((style == RopeStyle::NeoX ? "neox" : "gptj")
                      << " heads=" << c.heads << " head_dim=" << c.head_dim << " rot=" << c.rot) {
        const int64_t T = 7, W = int64_t{c.heads} * c.head_dim;
        const std::vector<int32_t> pos = {0, 1, 2, 17, 100, 1000, last_pos};
        std::vector<float> freq(c.rot / 2);
        for (int i = 0; i < c.rot / 2; i++)
          freq[i] = 1.f / std::pow(10000.f, 2.f * i / static_cast<float>(c.rot));
        OpParams p;
        p.n_heads = c.heads;
        p.head_dim = c.head_dim;
        p.rot_dims = c.rot;
        p.rope_style = style;
        const double err = compare(make_node(Op::Rope, p),
                                   {f32_tensor({T, W}, uniform(T * W, rng)), i32_tensor({T}, pos),
                                    f32_tensor({c.rot / 2}, freq)},
                                   zeros({T, W}));
        INFO("max rel err " << err);
        CHECK(err <= 2e-6);
      }
}

void check_elementwise_ops(const CompareWithCpu& compare, float a_range) {
  std::mt19937 rng(4);
  const int64_t rows = 7, d = 67;
  const HostT a = f32_tensor({rows, d}, uniform(rows * d, rng, -a_range, a_range));
  const HostT b = f32_tensor({rows, d}, uniform(rows * d, rng, -4.f, 4.f));
  const HostT b_row = f32_tensor({d}, uniform(d, rng, -4.f, 4.f));
  for (Op op : {Op::SiluMul, Op::GeluMul, Op::Add, Op::Mul}) {
    INFO(op_name(op));
    CHECK(compare(make_node(op), {a, b}, zeros({rows, d})) <= 1e-6);
  }
  for (Op op : {Op::Add, Op::Mul}) {
    INFO(op_name(op) << " with one row broadcast");
    CHECK(compare(make_node(op), {a, b_row}, zeros({rows, d})) <= 1e-6);
  }
  OpParams p;
  p.scale = 0.37f;
  for (Op op : {Op::Gelu, Op::GeluTanh, Op::Scale}) {
    INFO(op_name(op));
    CHECK(compare(make_node(op, p), {a}, zeros({rows, d})) <= 1e-6);
  }
}

void check_attention_ops(const CompareWithCpu& compare, const std::vector<AttentionCase>& cases) {
  std::mt19937 rng(6);
  const int page = 4, max_pages = 6, cache_pages = 16;
  const std::vector<int32_t> table = {7,  2, 11, 0, 5,  9,   // sequence 0
                                      14, 3, 8,  1, 12, 6};  // sequence 1
  const std::vector<int32_t> pos = {9, 10, 11, 12, 13, 0, 1, 2};
  const std::vector<int32_t> seq = {0, 0, 0, 0, 0, 1, 1, 1};
  const int64_t T = static_cast<int64_t>(pos.size());
  for (const AttentionCase& c : cases) DYNAMIC_SECTION(attention_case_name(c)) {
      const double err =
          compare(make_node(Op::Attention, attention_params(c, page)),
                  attention_inputs(c, int64_t{cache_pages} * page, pos, seq, table, max_pages, rng),
                  zeros({T, int64_t{c.heads} * c.head_dim}));
      INFO("max rel err " << err);
      CHECK(err <= 1e-5);
    }
}

}  // namespace llm::test
