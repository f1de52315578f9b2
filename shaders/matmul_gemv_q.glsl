// Decode GEMV for q4_0/q8_0 matrices in the backend's row layout (SPLIT = 1, see
// weights.glsl), for devices with subgroup arithmetic; the body of matmul_gemv_q.comp
// (float x) and matmul_gemv_qdot.comp (INT_DOT: x quantized by quantize_x.comp).
//
// The workgroup's threads form groups of p.tpr (a power of two); each group computes a
// task of R output rows (x is read once per R rows), each thread a block of 32 weights
// of every row at a time with one 16-byte load per row (q4_0; two for q8_0), the R
// loads issued before any arithmetic. Sums are reduced with subgroupAdd, then across
// the group's subgroups in shared memory (groups wider than a subgroup), by clustered
// adds (CLUSTER16: groups of 16 in wider subgroups, matmul_gemv_qdot_sx16.comp) or by a
// tree in shared memory (other groups narrower than a subgroup). Tokens (NT <= 8) and
// rows (R) are specialization constants, so the accumulators stay in registers.
//
// Dequantization without int->float conversions: a 4-bit q (8-bit for q8_0, offset by
// 128) is put at the top of the mantissa of 1.0, giving f = 1 + q/16 (1 + u/256); the
// block's sum is d * (16 Σ f x - 24 Σ x) for q4_0 (q - 8 is the weight) and
// d * (256 Σ f x - 384 Σ x) for q8_0. In float32 this loses a few bits to cancellation
// (about 1e-6 relative), far inside the float32 path's tolerance.
//
// ROPE_KV (matmul_gemv_qdot_rope.comp, with MODE 2 and R = 2): the rope of q and k and
// the cache appends of k and v in the same dispatch; a group's two rows are then a
// pair that rotates together.
//
// X_SHARED (matmul_gemv_qdot_sx.comp): the workgroup first copies x's planes into shared
// memory and reads them there; with NORM it computes them itself from x's rows and the
// RmsNorm before the matmul (whose dispatch it replaces).
//
// PERSIST: a fixed grid (a few workgroups per multiprocessor) whose groups loop over
// the tasks (R rows of one matrix each), issuing the next task's first weights before
// writing this one's sums; x's planes are then copied once per workgroup for many rows.
//
// QOUT (MODE 1, X_SHARED, one token, groups of 16 threads with 2 rows each): each round
// of a workgroup's tasks is WG / 256 blocks of 32 activations (QOUT_WIDE; else one),
// which it also rounds into quantize_x.comp's layout for the integer-dot down GEMV after
// it. With KSPLIT, K is cut into parts, a workgroup each, and the last part of a round to
// finish merges the sums and rounds.
//
// FFN_DOWN (QOUT, matmul_gemv_qdot_ffn*.comp): the down GEMV and the residual Add
// after it run in the same dispatch, split over K: each round's workgroup multiplies its
// rounded block of 32 activations by that block of every row of down (a copy of down's
// weights in block-major order at binding 15, so the block's rows are contiguous) and
// adds the products into a float accumulator with atomics; the workgroup that finishes
// the last round writes out = residual + accumulator and zeroes it for the next run.
// With FFN_PARTS each round writes its products to a row of partials instead, and a
// parts_reduce after the dispatch adds them in order (deterministic).
//
// INT_DOT: x arrives as two int8 planes per block (s = 256 h + l, quantize_x.comp), and
// a block costs per row 8 (q4_0: 4 ANDs, 4 shifts) plus 16 packed 4 x 8-bit dot
// products (OpSDot, GL_EXT_spirv_intrinsics: Debian's glslc predates
// GL_EXT_integer_dot_product) instead of about 3 float instructions per weight:
// Σ (q - 8) x = scale (256 Σ q h + Σ q l - 8 Σ s).
//
// MODE 1 (gate/up + SiLU): W2 is a second matrix of W's shape (up), Y2 its product,
// and out2 = silu(y) * y2, as the SiluMul node that follows in the graph (written to a
// scratch buffer, as the activation's place may still be x). The down GEMV then reads
// x from that scratch and copies it to the activation's place (copy_n floats, spread
// over its workgroups; with INT_DOT quantize_x.comp copies it, or, where gate/up rounded
// it (QOUT), the down GEMV from binding 6), so the graph's tensors end up as without the
// fusion.
//
// MODE 2 (q/k/v): two or three matrices of one K that multiply the same x (W, W2, W3;
// N, n2, n3 rows; outputs Y, Y2, Y3, no bias) in one grid, segment after segment, so
// small matrices share the GPU instead of running one after another.
#include "common.glsl"
#ifdef INT_DOT
#include "qdot.glsl"
#endif
#ifndef WG
#define WG 128
#endif
#ifdef X_SHARED
// X_SHARED: the workgroup size is specialization constant 14 (WG by default): each
// workgroup copies (or normalizes) x once, so larger workgroups read it fewer times.
layout(local_size_x = WG) in;
layout(local_size_x_id = 14) in;
#undef WG
#define WG gl_WorkGroupSize.x
#else
layout(local_size_x = WG) in;
#endif
layout(constant_id = 0) const int WDT = DT_Q4_0;
layout(constant_id = 1) const int BDT = DT_F32;
layout(constant_id = 2) const int SPLIT = 1;
layout(constant_id = 3) const int NT = 1;    // tokens
layout(constant_id = 4) const int R = 4;     // output rows per group of threads
// 0 plain (+ residual add), 1 gate/up + SiLU, 2 up to three matrices side by side (q/k/v)
layout(constant_id = 5) const int MODE = 0;
// Blocks of 32 weights per row a thread loads before computing any (more bytes in flight).
layout(constant_id = 8) const int U = 1;
// X8 (opt-in, steps of 2+ tokens, integer dots): x's high plane alone, an int8 rounding of
// x (step 256 xs, as ggml's q8_1), half the dot products; its block sums are taken from
// that plane.
layout(constant_id = 20) const int X8 = 0;
// A fixed grid whose workgroups loop over the tasks (see main).
layout(constant_id = 9) const int PERSIST = 0;
// A measuring aid (LLM_VULKAN_GEMV_STRIP, bits; results are then wrong): 1 the products
// without their arithmetic (each block's weights folded into the sum), 2 no sums'
// exchange and no outputs, 4 no prologue (x's planes neither copied nor normalized).
layout(constant_id = 23) const int STRIP = 0;
// LOOP_LOCAL (the planner's default): each iteration loads its own blocks at its top,
// instead of the next iteration's (and the next task's first) being issued at the end
// of the one before, so that nothing loaded lives across the loop's back edge and the
// compiler may schedule the loads of several iterations together (a guess from the
// measurements: H100, 7b decode +1.7%, down 18.5 -> 17.2 µs).
layout(constant_id = 24) const int LOOP_LOCAL = 0;
// PRELOAD (with LOOP_LOCAL and X_SHARED): the first iteration's blocks are issued before
// the prologue (x's copy or norm), so that they are on their way during it, and that
// iteration uses them; 1 where the prologue is a copy (NORM 0; the planner's default), 2
// for every prologue.
layout(constant_id = 25) const int PRELOAD = 0;
#ifdef X_SHARED
// NORM: binding 0 holds x raw (float rows) and each workgroup takes the RmsNorm before
// the matmul itself (weight of dtype NWDT at the binding after the others), rounding
// its result into shared memory: one dispatch less.
layout(constant_id = 10) const int NORM = 0;
layout(constant_id = 11) const int NWDT = DT_F32;
// NORM_PAR (NORM, subgroups of 8 or more): the rounding of the normalized x spread over 8
// threads a block of 32 (a vec4 each) instead of a thread a block, whose 128 threads
// (K = 4,096) each walked 32 values while the rest of the workgroup waited.
layout(constant_id = 21) const int NORM_PAR = 0;
// NORM_PRE (NORM_PAR, one token): the first NORM_PRE rounds of x and of the norm weight
// loaded at once before the sum of squares. The weight comes from DRAM (the weights
// streamed since the last step evicted it from L2), and loaded round by round after the
// sum it cost a trip to memory a round.
layout(constant_id = 22) const int NORM_PRE = 0;
// NORM_PRE's arrays have a literal size, so that glslc unrolls their loops and each
// element stays a register whatever NORM_PRE the pipeline is given (the planner keeps
// it at most NORM_PRE_MAX).
#define NORM_PRE_MAX 4
// A measuring aid (LLM_VULKAN_GEMV_PROLOGUE_ONLY=1): stop once x is in shared memory
// (no weights, no outputs), so that a profile times the launch and the prologue alone.
layout(constant_id = 15) const int PROLOGUE_ONLY = 0;
#endif
// QOUT: the rows of a workgroup's round (16 groups of 2 rows for every 256 threads), whole
// blocks of down's x (BPR of them). Workgroups of 512 or 1,024 take the QOUT_WIDE variants
// (matmul_gemv_qdot_sx*_wide.comp); the others keep literal sizes, which the compiler of
// NVIDIA's driver turned into faster code (H100, 1b tg128: 1,150-1,153 with the sizes from
// the workgroup's against 1,187-1,194).
#ifdef QOUT_WIDE
#define QROWS (WG / 8u)
#define BPR (WG / 256u)
#else
#define QROWS 32u
#define BPR 1u
#endif
#if defined(X_SHARED) && !defined(ROPE_KV)
// QOUT (MODE 1, one token, a workgroup's round of tasks = 32 rows): the activation is
// also rounded for the integer-dot down GEMV after it, into quantize_x.comp's layout at
// binding 12 (one dispatch less).
layout(constant_id = 12) const int QOUT = 0;
layout(std430, binding = 12) writeonly buffer QOutM { uvec2 qom[]; };
layout(std430, binding = 12) writeonly buffer QOutW { uint qo_w[]; };
// KSPLIT (QOUT, one pass): K cut into KSPLIT parts, a workgroup per (round, part), so
// that a matrix of few rounds still fills the GPU; each part's sums of the round's rows
// go to kpart, and the last part of the round to finish (a counter, reset by it) adds
// them in part order, writes the outputs and rounds the blocks.
layout(constant_id = 13) const int KSPLIT = 1;
layout(std430, binding = 13) coherent buffer KPart { vec2 kpart[]; };
layout(std430, binding = 14) buffer KCount { uint kcount[]; };
shared vec2 ks_part[QROWS];
shared bool ks_merging;
bool ks_final = false;  // this invocation writes the merged sums
#ifdef FFN_DOWN
// Down's weights in block-major order (Planner: block b's quants of rows 0 .. H - 1,
// then all the f16 scales in the same order), the accumulator of its products (zero
// between runs), the count of rounds done, the residual and the sum's output.
layout(std430, binding = 15) readonly coherent buffer DownQ { uvec4 dn_q[]; };
layout(std430, binding = 15) readonly coherent buffer DownW { uint dn_w[]; };
layout(std430, binding = 16) buffer FfnAcc { float ffn_acc[]; };
layout(std430, binding = 17) buffer FfnCount { uint ffn_count[]; };
layout(std430, binding = 18) readonly buffer FfnRes { float ffn_res[]; };
layout(std430, binding = 19) writeonly buffer FfnOut { float ffn_out[]; };
// Rows of down a thread loads at once.
layout(constant_id = 16) const int DN_ROWS = 8;
// 1: each round writes its products to ffn_acc[round][row] instead (no atomics, no count),
// which parts_reduce adds up in a fixed order with the residual (the same sum every run).
layout(constant_id = 17) const int FFN_PARTS = 0;
// NEXT_NORM (not with FFN_PARTS): the last workgroup also takes the RmsNorm of the sum
// (the next layer's, weight of dtype NNWDT at binding 20) and rounds it into the
// integer-dot planes at binding 21, which the GEMV after reads as its x.
layout(constant_id = 18) const int NEXT_NORM = 0;
layout(constant_id = 19) const int NNWDT = DT_F32;
layout(std430, binding = 20) readonly buffer NextNormW { uint nn_w[]; };
layout(std430, binding = 21) writeonly buffer NextPlanes { uvec4 nn_q[]; };
layout(std430, binding = 21) writeonly buffer NextMeta { uvec2 nn_m[]; };
shared uint dn_words[16];  // the round's rounded activation: h planes, then l planes
shared uvec2 dn_meta;
shared bool ffn_last;
#endif
#else
const int QOUT = 0;
const int KSPLIT = 1;
#endif
#ifdef X_SHARED
// The blocks of 32 of x a workgroup holds in shared memory (NT * K / 32).
layout(constant_id = 6) const int XBLOCKS = 128;
#endif
// The weights are `coherent`: each is read once per step, and on NVIDIA's driver such
// loads skip L1 (cached in L2 only), which made decode faster (H200, tg128: 7b 309 ->
// 321, 1b 1,077 -> 1,093-1,104; docs/PERFORMANCE.md). x and the other inputs stay
// plain: they are read again and L1 serves them.
layout(std430, binding = 0) readonly buffer X { vec4 x4[]; };
layout(std430, binding = 1) readonly coherent buffer W { uint wts[]; };
layout(std430, binding = 1) readonly coherent buffer W4 { uvec4 wts4[]; };
layout(std430, binding = 2) readonly buffer Bias { uint bias[]; };
layout(std430, binding = 3) writeonly buffer Y { float y[]; };
// fuse_add: the Add of a residual that follows in the graph, out2 = y + residual.
layout(std430, binding = 4) readonly buffer Res { float residual[]; };
layout(std430, binding = 5) writeonly buffer Out2 { float out2[]; };
layout(std430, binding = 6) readonly coherent buffer W2 { uint wts2[]; };
layout(std430, binding = 6) readonly coherent buffer W24 { uvec4 wts24[]; };
// INT_DOT, MODE 0: the fused FFN's activation to copy (from word 0; x is its planes).
layout(std430, binding = 6) readonly buffer CopySrc { float copy_src[]; };
layout(std430, binding = 7) writeonly buffer Y2 { float y2[]; };
layout(std430, binding = 8) writeonly buffer XCopy { float xcopy[]; };
layout(std430, binding = 9) readonly coherent buffer W3 { uint wts3[]; };
layout(std430, binding = 9) readonly coherent buffer W34 { uvec4 wts34[]; };
layout(std430, binding = 10) writeonly buffer Y3 { float y3[]; };
layout(std430, binding = 0) readonly buffer X1 { float x1[]; };
layout(std430, binding = 0) readonly buffer XQ { uvec4 xq[]; };  // INT_DOT: planes
layout(std430, binding = 0) readonly buffer XM { uvec2 xm[]; };  // INT_DOT: scale, sum
#ifdef ROPE_KV
// The rotary embedding of q and k and the cache appends of k and v after the q/k/v
// products (MODE 2): rotated q to QRot, rotated k to KRot and its cache row, v to its
// cache row (CDT: f32, or f16/bf16 halves written with atomics on their word).
layout(constant_id = 7) const int CDT = DT_F32;
layout(std430, binding = 11) readonly buffer Pos { int pos[]; };
layout(std430, binding = 12) readonly buffer Freq { float inv_freq[]; };
layout(std430, binding = 13) readonly buffer Slots { int slots[]; };
layout(std430, binding = 14) buffer KCache { uint k_cache[]; };
layout(std430, binding = 15) buffer VCache { uint v_cache[]; };
layout(std430, binding = 16) writeonly buffer QRot { float q_rot[]; };
layout(std430, binding = 17) writeonly buffer KRot { float k_rot[]; };
layout(std430, binding = 18) buffer Err { uint err_bits[]; };
#endif
#ifdef X_SHARED
// The weight as 4 floats (f32) or 4 halves (f16, bf16) at a time: the host aligns it.
#ifdef ROPE_KV
#define NORM_BINDING 19
#else
#define NORM_BINDING 11
#endif
layout(std430, binding = NORM_BINDING) readonly buffer NormW4 { vec4 norm_w4[]; };
layout(std430, binding = NORM_BINDING) readonly buffer NormH4 { uvec2 norm_h4[]; };
#endif
layout(push_constant) uniform P {
  uint x_off, w_off, b_off, y_off, T, K, N, has_bias, res_off, out2_off, fuse_add, tpr, y2_off,
      copy_off, copy_n, n2, n3, y3_off;
#ifdef ROPE_KV
  // write_mask: which of the q, k, v products (bits 0-2) and the rotated k (bit 3) to
  // write (not those whose memory another output of the dispatch reuses).
  uint pos_off, f_off, slots_off, kc_off, vc_off, cache_rows, qr_off, kr_off, head_dim, rot, gptj,
      write_mask;
#endif
#ifdef X_SHARED
  uint nw_off;  // NORM: the norm weight's offset
  float eps;
#ifndef ROPE_KV
  uint qo_off;  // QOUT: the planes' offset
#endif
#ifdef FFN_DOWN
  uint dn_off, dn_rows, fres_off, fout_off;  // down's weights (words), its rows, Add's
  uint nn_w_off, nn_q_off;                   // NEXT_NORM: its weight, the planes (words)
  float nn_eps;
#endif
#endif
} p;
#include "weights.glsl"

#define M (MODE == 1 ? 2 : 1)  // matrices
// Partial sums per (matrix, row, token, subgroup); subgroups are at least 4 wide.
shared float partial[M * R * NT][WG / 4];
shared float red[WG];  // when subgroups are wider than a group of threads
#ifdef X_SHARED
// x's planes and (scale, sum) per block, copied once per workgroup: lanes read
// consecutive blocks, so each plane is its own array (no bank conflicts), and the
// weights stream through L1 without evicting x.
shared uvec4 sx[4][XBLOCKS];
shared uvec2 sxm[XBLOCKS];
shared float norm_inv[8];  // NORM: 1 / rms per token (NT <= 8)
shared float act_s[QROWS];  // QOUT: the round's activations
#define QUANTIZE_PLANES_ONLY 1
#include "quantize_block.glsl"

// The norm weight's elements e0 .. e0 + 31 (4 at a time from k).
vec4 norm_weight4(uint e0, uint k) {
  if (NWDT == DT_F32) return norm_w4[p.nw_off / 4u + e0 / 4u + k];
  const uvec2 h = norm_h4[(p.nw_off * 2u + e0) / 4u + k];
  return NWDT == DT_F16 ? vec4(f16_bits_to_f32(h.x & 0xffffu), f16_bits_to_f32(h.x >> 16),
                               f16_bits_to_f32(h.y & 0xffffu), f16_bits_to_f32(h.y >> 16))
                        : vec4(bf16_bits_to_f32(h.x & 0xffffu), bf16_bits_to_f32(h.x >> 16),
                               bf16_bits_to_f32(h.y & 0xffffu), bf16_bits_to_f32(h.y >> 16));
}

// norm_inv[t] = 1 / rms of n values, each thread holding a part ss of their sum of
// squares. Called by the whole workgroup.
void rms_inv_into(float ss, uint n, float eps, uint t) {
  ss = subgroupAdd(ss);
  if (subgroupElect()) red[gl_SubgroupID] = ss;
  barrier();
  if (gl_LocalInvocationID.x == 0u) {
    float sum = 0.0;
    for (uint k = 0u; k < gl_NumSubgroups; k++) sum += red[k];
    norm_inv[t] = 1.0 / sqrt(sum / float(n) + eps);
  }
  barrier();
}

// NORM_PAR: a thread's place counted by subgroups, so that 8 consecutive places share one.
uint subgroup_place() { return gl_SubgroupID * gl_SubgroupSize + gl_SubgroupInvocationID; }

// NORM_PAR: one round of the rounding. Quad i (place q of the round) is x's vec4 i of the
// step's rows, elements 4j .. 4j + 3 of block bi = i / 8 (j = i % 8); the 8 threads of a
// block share its largest |x| and Σ s through red[] (they are in one subgroup).
// xq, wq: the quad's x and norm weight (zero past the end). Every thread runs every
// round, so the subgroup barriers are in uniform control flow.
void norm_round_into_shared(uint i, vec4 xq, vec4 wq, uint nb) {
  const uint q = subgroup_place(), j = q % 8u, first = q - j, bi = i / 8u;
  const bool on = i < p.T * nb * 8u;
  const vec4 v = xq * norm_inv[min(bi / nb, p.T - 1u)] * wq;
  red[q] = max(max(abs(v.x), abs(v.y)), max(abs(v.z), abs(v.w)));
  subgroupMemoryBarrierShared();
  subgroupBarrier();
  float amax = 0.0;
  for (uint k = 0u; k < 8u; k++) amax = max(amax, red[first + k]);
  uint h, l;
  const int sum4 = quantize4(v, quantize_inv(amax), h, l);
  if (on) {
    sx[j / 4u][bi][j % 4u] = h;
    sx[2u + j / 4u][bi][j % 4u] = l;
  }
  subgroupBarrier();  // the largest |x| read before the sums take red[]
  red[q] = intBitsToFloat(sum4);
  subgroupMemoryBarrierShared();
  subgroupBarrier();
  if (on && j == 0u) {
    int sum = 0;
    for (uint k = 0u; k < 8u; k++) sum += floatBitsToInt(red[first + k]);
    sxm[bi] = quantize_meta(amax, sum);
  }
  subgroupBarrier();  // the sums read before the next round's values
}

// NORM: x's RmsNorm, rounded into sx/sxm (as norm.comp with QUANT, then the copy).
void norm_into_shared(uint nb) {
  const uint tid = gl_LocalInvocationID.x;
  const uint quads = p.T * nb * 8u, kq = nb * 8u, place = subgroup_place(), x0 = p.x_off / 4u;
  if (NORM_PRE > 0) {
    vec4 xr[NORM_PRE_MAX], wr[NORM_PRE_MAX];
    [[unroll]] for (int c = 0; c < NORM_PRE_MAX; c++) {
      const uint i = uint(c) * WG + place;
      const bool on = c < NORM_PRE && i < quads;
      xr[c] = on ? x4[x0 + i] : vec4(0.0);
      wr[c] = on ? norm_weight4(0u, i) : vec4(0.0);
    }
    float ss = 0.0;  // in the order of the loop below (the same sum as without NORM_PRE)
    [[unroll]] for (int c = 0; c < NORM_PRE_MAX; c++)
      if (c < NORM_PRE) ss += dot(xr[c], xr[c]);
    for (uint i = uint(NORM_PRE) * WG + place; i < quads; i += WG) {
      const vec4 v = x4[x0 + i];
      ss += dot(v, v);
    }
    rms_inv_into(ss, p.K, p.eps, 0u);
    [[unroll]] for (int c = 0; c < NORM_PRE_MAX; c++)
      if (c < NORM_PRE) norm_round_into_shared(uint(c) * WG + place, xr[c], wr[c], nb);
  } else {
    for (uint t = 0u; t < p.T; t++) {
      const uint row = (p.x_off + t * p.K) / 4u;
      float ss = 0.0;
      for (uint i = tid; i < p.K / 4u; i += WG) {
        const vec4 v = x4[row + i];
        ss += dot(v, v);
      }
      rms_inv_into(ss, p.K, p.eps, t);
    }
  }
  if (NORM_PAR != 0) {
    // The rounds not loaded before the sum (NORM_PRE: those past its first ones).
    for (uint i0 = uint(NORM_PRE) * WG; i0 < quads; i0 += WG) {
      const uint i = i0 + place;
      const bool on = i < quads;
      norm_round_into_shared(i, on ? x4[x0 + i] : vec4(0.0),
                             on ? norm_weight4(0u, i % kq) : vec4(0.0), nb);
    }
    return;
  }
  for (uint i = tid; i < p.T * nb; i += WG) {
    const uint t = i / nb, e0 = (i % nb) * 32u;
    const uint xb = (p.x_off + t * p.K + e0) / 4u;
    const float inv = norm_inv[t];
    vec4 v[8];
    for (uint k = 0u; k < 8u; k++) v[k] = x4[xb + k] * inv * norm_weight4(e0, k);
    uvec4 h0, h1, l0, l1;
    uvec2 meta;
    quantize_planes(v, h0, h1, l0, l1, meta);
    sx[0][i] = h0;
    sx[1][i] = h1;
    sx[2][i] = l0;
    sx[3][i] = l1;
    sxm[i] = meta;
  }
}
#endif

// 1 + q/16 for the 4 bits at 19..22 of v; 1 + u/256 for the 8 bits at 15..22.
float nib(uint v) { return uintBitsToFloat((v & 0x00780000u) | 0x3f800000u); }
float byt(uint v) { return uintBitsToFloat((v & 0x007f8000u) | 0x3f800000u); }

// Σ f·x over one block of 32 weights (quants q, one uvec4 for q4_0/q4_1, two for q8_0)
// and the x of that block (xv[8]).
float block_dot(uvec4 qa, uvec4 qb, vec4 xv[8]) {
  float s = 0.0;
  if (WDT != DT_Q8_0) {
    // Word w holds elements 4w..4w+3 (low nibbles) and 16+4w.. (high nibbles).
    for (uint w = 0u; w < 4u; w++) {
      const uint v = qa[w];
      s += dot(xv[w], vec4(nib(v << 19), nib(v << 11), nib(v << 3), nib(v >> 5)));
      s += dot(xv[w + 4u], vec4(nib(v << 15), nib(v << 7), nib(v >> 1), nib(v >> 9)));
    }
  } else {
    for (uint w = 0u; w < 4u; w++) {
      const uint v = qa[w] ^ 0x80808080u, u = qb[w] ^ 0x80808080u;
      s += dot(xv[w], vec4(byt(v << 15), byt(v << 7), byt(v >> 1), byt(v >> 9)));
      s += dot(xv[w + 4u], vec4(byt(u << 15), byt(u << 7), byt(u >> 1), byt(u >> 9)));
    }
  }
  return s;
}

// Words of matrix m (MODE 1: gate, up; MODE 2: segment m) at word / uvec4 index i.
uint w_word(uint m, uint i) {
  if ((M > 1 || MODE == 2) && m == 1u) return wts2[i];
  if (MODE == 2 && m == 2u) return wts3[i];
  return wts[i];
}
uvec4 w_quad(uint m, uint i) {
  if ((M > 1 || MODE == 2) && m == 1u) return wts24[i];
  if (MODE == 2 && m == 2u) return wts34[i];
  return wts4[i];
}

// Loads the weights of blocks B0, B0 + tpr, ... (U of them) of the R rows at byte
// offsets srow into qa (qb: q8_0's second half), their scales into d (q4_1: the raw
// (d, min) word into dm, one register where two floats would take two; converted where
// it is used). Blocks past the end load the last one again (valid memory; not used). A
// macro: arrays sized by specialization constants do not pass to functions.
#define ISSUE_BLOCKS(B0)                                                                  \
  [[unroll]] for (int u = 0; u < U; u++) {                                                \
    const uint blk_ = min((B0) + uint(u) * tpr, nb - 1u);                                 \
    [[unroll]] for (int r = 0; r < R; r++) {                                              \
      const uint q = (srow[r] + meta_bytes) / 16u + blk_ * qpb;                           \
      qa[u][0][r] = w_quad(seg, q);                                                       \
      qb[u][0][r] = WDT == DT_Q8_0 ? w_quad(seg, q + 1u) : uvec4(0u);                     \
      if (WDT == DT_Q4_1) {                                                               \
        const uint dw_ = (srow[r] + blk_ * 4u) >> 2;                                      \
        dm[u][0][r] = MODE == 2 ? w_word(seg, dw_) : wts[dw_];                            \
        if (MODE == 1) dm[u][M - 1][r] = wts2[dw_];                                       \
      } else {                                                                            \
        const uint sb = srow[r] + blk_ * 2u;                                              \
        d[u][0][r] = f16_bits_to_f32(                                                     \
            MODE == 2 ? (w_word(seg, sb >> 2) >> ((sb & 2u) * 8u)) & 0xffffu : LOAD_U16(wts, sb)); \
        if (MODE == 1) d[u][M - 1][r] = f16_bits_to_f32(LOAD_U16(wts2, sb));              \
      }                                                                                   \
      if (MODE == 1) {                                                                    \
        qa[u][M - 1][r] = wts24[q];                                                       \
        qb[u][M - 1][r] = WDT == DT_Q8_0 ? wts24[q + 1u] : uvec4(0u);                     \
      }                                                                                   \
    }                                                                                     \
  }

#ifdef ROPE_KV
// Row r (0, 1) of task j of segment seg: q and k tasks are the pairs that rotate
// together (NeoX: i, i + rot/2; GPT-J and the dims past rot: 2i, 2i + 1), v's are
// consecutive rows.
uint rope_row(uint seg, uint j, uint r) {
  if (seg == 2u) return 2u * j + r;
  const uint hd2 = p.head_dim / 2u, h = j / hd2, i = j % hd2, half_ = p.rot / 2u;
  return h * p.head_dim + (p.gptj == 0u && i < half_ ? i + r * half_ : 2u * i + r);
}

void cache_put(bool is_k, uint i, float v) {
  if (CDT == DT_F32) {
    if (is_k)
      k_cache[p.kc_off + i] = floatBitsToUint(v);
    else
      v_cache[p.vc_off + i] = floatBitsToUint(v);
    return;
  }
  const uint h = (is_k ? p.kc_off : p.vc_off) * 2u + i;
  const uint bits = CDT == DT_F16 ? f32_to_f16_bits(v) : f32_to_bf16_bits(v);
  const uint shift = (h & 1u) * 16u;
  if (is_k) {
    atomicAnd(k_cache[h >> 1], ~(0xffffu << shift));
    atomicOr(k_cache[h >> 1], bits << shift);
  } else {
    atomicAnd(v_cache[h >> 1], ~(0xffffu << shift));
    atomicOr(v_cache[h >> 1], bits << shift);
  }
}

// Task j of segment seg (N rows), token t, with the products s0, s1 of its two rows:
// the products as the matmuls write them, then the rope and the cache rows. freq (the
// pair's inverse frequency, 0 past the rotated dims), ps and sl (token t's position and
// cache slot) are read by the caller: as arguments they are loaded before this function's
// stores, in one trip to memory (past a store to another buffer the compiler cannot move a
// load up, as the buffers may alias, and each would cost a trip of its own).
void write_rope_pair(uint seg, uint N, uint j, uint t, float s0, float s1, float freq, int ps,
                     int sl) {
  const uint n0 = rope_row(seg, j, 0u), n1 = rope_row(seg, j, 1u);
  if ((p.write_mask >> seg & 1u) != 0u) {
    if (seg == 0u) {
      y[p.y_off + t * N + n0] = s0;
      y[p.y_off + t * N + n1] = s1;
    } else if (seg == 1u) {
      y2[p.y2_off + t * N + n0] = s0;
      y2[p.y2_off + t * N + n1] = s1;
    } else {
      y3[p.y3_off + t * N + n0] = s0;
      y3[p.y3_off + t * N + n1] = s1;
    }
  }
  float a = s0, b = s1;
  if (seg < 2u && j % (p.head_dim / 2u) < p.rot / 2u) {
    const float theta = float(ps) * freq;
    float sn, cs;
    sincos_accurate(theta, sn, cs);
    a = s0 * cs - s1 * sn;
    b = s1 * cs + s0 * sn;
  }
  if (seg == 0u) {
    q_rot[p.qr_off + t * N + n0] = a;
    q_rot[p.qr_off + t * N + n1] = b;
    return;
  }
  if (seg == 1u && (p.write_mask & 8u) != 0u) {
    k_rot[p.kr_off + t * N + n0] = a;
    k_rot[p.kr_off + t * N + n1] = b;
  }
  const int slot = sl;
  if (slot < 0 || uint(slot) >= p.cache_rows) {
    if (j == 0u) atomicOr(err_bits[0], ERR_SLOT);
    return;
  }
  cache_put(seg == 1u, uint(slot) * N + n0, a);
  cache_put(seg == 1u, uint(slot) * N + n1, b);
}
#endif

// Output row n of token t of segment seg (MODE 2; 0 otherwise), N rows.
void write_out(uint seg, uint N, uint n, uint t, float s, float s2) {
  if (MODE == 2 && seg > 0u) {
    if (seg == 1u)
      y2[p.y2_off + t * N + n] = s;
    else
      y3[p.y3_off + t * N + n] = s;
    return;
  }
#if defined(X_SHARED) && !defined(ROPE_KV)
  if (KSPLIT > 1 && !ks_final) {
    ks_part[n % QROWS] = vec2(s, s2);  // this part's sums, merged in main
    return;
  }
#endif
  const float b = p.has_bias != 0u ? LOAD_FLOAT(bias, BDT, p.b_off, n) : 0.0;
  const float v = s + b;
#ifdef FFN_DOWN
  // Only the round's activations: nothing reads the products or the activation after.
  act_s[n % QROWS] = v / (1.0 + exp(-v)) * s2;
  return;
#endif
  y[p.y_off + t * p.N + n] = v;
  if (MODE == 1) {
    y2[p.y2_off + t * p.N + n] = s2;
    const float act = v / (1.0 + exp(-v)) * s2;
    out2[p.out2_off + t * p.N + n] = act;
#if defined(X_SHARED) && !defined(ROPE_KV)
    if (QOUT != 0) act_s[n % QROWS] = act;
#endif
  } else if (p.fuse_add != 0u) {
    out2[p.out2_off + t * p.N + n] = v + residual[p.res_off + t * p.N + n];
  }
}

// Task `task` (R rows of one segment; MODE 2 covers segment 0's tasks, then 1's, then
// 2's): its segment, that segment's rows N, and the task's index j within it.
uint task_of(uint task, out uint N, out uint j) {
  j = task;
  N = p.N;
  if (MODE != 2) return 0u;
  const uint t0 = (p.N + uint(R) - 1u) / uint(R), t1 = (p.n2 + uint(R) - 1u) / uint(R);
  if (j < t0) return 0u;
  j -= t0;
  N = p.n2;
  if (j < t1) return 1u;
  j -= t1;
  N = p.n3;
  return 2u;
}

#ifdef ROPE_KV
// The inverse frequency of task j's pair in segment seg (0 where it does not rotate).
float pair_freq(uint seg, uint j) {
  const uint i = j % (p.head_dim / 2u);
  return seg < 2u && i < p.rot / 2u ? inv_freq[p.f_off + i] : 0.0;
}
// write_rope_pair with the rope's inputs loaded first.
#define WRITE_ROPE_PAIR(seg, N, j, t, s0, s1)                                        \
  write_rope_pair(seg, N, j, t, s0, s1, pair_freq(seg, j), pos[p.pos_off + (t)], \
                  slots[p.slots_off + (t)])
#endif

#ifdef FFN_DOWN
#define NN_WEIGHT(i) LOAD_FLOAT(nn_w, NNWDT, p.nn_w_off, i)
#define NN_RES(i) ffn_res[p.fres_off + (i)]
#define NN_ACC ffn_acc
#define NN_OUT(i) ffn_out[p.fout_off + (i)]
#define NN_PLANE(j) nn_q[p.nn_q_off / 4u + (j)]
#include "next_norm.glsl"

// Round blk's part of down (its block of 32 activations, rounded in dn_words/dn_meta,
// times that block of each of down's rows) added into ffn_acc; the workgroup that
// completes the last round then writes the residual sum. Uniform over the workgroup.
void ffn_down_round(uint blk) {
  const uint tid = gl_LocalInvocationID.x, H = p.dn_rows, nbd = p.N / 32u;
  const uint qpb = WDT == DT_Q8_0 ? 2u : 1u;
  const uvec4 h0 = uvec4(dn_words[0], dn_words[1], dn_words[2], dn_words[3]);
  const uvec4 h1 = uvec4(dn_words[4], dn_words[5], dn_words[6], dn_words[7]);
  const uvec4 l0 = uvec4(dn_words[8], dn_words[9], dn_words[10], dn_words[11]);
  const uvec4 l1 = uvec4(dn_words[12], dn_words[13], dn_words[14], dn_words[15]);
  const float xs = uintBitsToFloat(dn_meta.x);
  const int corr = WDT == DT_Q4_0 ? 8 * int(dn_meta.y) : 0;
  const uint scale_at = p.dn_off * 4u + nbd * H * 16u * qpb;  // bytes
  for (uint r0 = tid; r0 < H; r0 += uint(DN_ROWS) * WG) {
    uvec4 qa[DN_ROWS], qb[DN_ROWS];
    float d[DN_ROWS];
    [[unroll]] for (int i = 0; i < DN_ROWS; i++) {
      const uint e = blk * H + min(r0 + uint(i) * WG, H - 1u);
      qa[i] = dn_q[p.dn_off / 4u + e * qpb];
      qb[i] = WDT == DT_Q8_0 ? dn_q[p.dn_off / 4u + e * qpb + 1u] : uvec4(0u);
      d[i] = f16_bits_to_f32(LOAD_U16(dn_w, scale_at + e * 2u));
    }
    [[unroll]] for (int i = 0; i < DN_ROWS; i++) {
      const uint r = r0 + uint(i) * WG;
      if (r >= H) break;
      const int dot = block_dot_planes(WDT == DT_Q4_0, qa[i], qb[i], h0, h1, l0, l1);
      const float v = float(dot - corr) * (d[i] * xs);
      if (FFN_PARTS != 0)
        ffn_acc[blk * H + r] = v;
      else
        atomicAdd(ffn_acc[r], v);
    }
  }
  if (FFN_PARTS != 0) return;
  // This round's products are in the accumulator before it counts itself done.
  memoryBarrierBuffer();
  barrier();
  if (tid == 0u) ffn_last = atomicAdd(ffn_count[0], 1u) == nbd - 1u;
  barrier();
  if (!ffn_last) return;
  memoryBarrierBuffer();
  if (tid == 0u) ffn_count[0] = 0u;
  // The loads (residual, norm weight) and every exchange of a batch before any store:
  // a store between them would wait for each one's round trip (the buffers might alias),
  // and the compiler keeps loads and atomics in order.
  if (NEXT_NORM == 0) {
    for (uint r0 = tid; r0 < H; r0 += 8u * WG) {
      float v[8];
      [[unroll]] for (uint i = 0u; i < 8u; i++) {
        const uint r = r0 + i * WG;
        v[i] = r < H ? ffn_res[p.fres_off + r] : 0.0;
      }
      [[unroll]] for (uint i = 0u; i < 8u; i++) {
        const uint r = r0 + i * WG;
        if (r < H) v[i] += atomicExchange(ffn_acc[r], 0.0);
      }
      [[unroll]] for (uint i = 0u; i < 8u; i++) {
        const uint r = r0 + i * WG;
        if (r < H) ffn_out[p.fout_off + r] = v[i];
      }
    }
    return;
  }
  // A block of 32 sums a thread (H / 32 <= WG, checked by the planner): the sums, their
  // squares' total, and the block of sum ⊙ weight rounded (rounding is scale-free: the
  // block's scale takes 1 / rms once the total is known).
  const uint b = tid, nbn = H / 32u;
  float ss = 0.0;
  uvec2 meta = uvec2(0u);
  if (b < nbn) ss = next_norm_block(b, meta);
  rms_inv_into(ss, H, p.nn_eps, 0u);
  if (b < nbn)
    nn_m[(p.nn_q_off / 4u + nbn * 4u) * 2u + b] =
        uvec2(floatBitsToUint(uintBitsToFloat(meta.x) * norm_inv[0]), meta.y);
}
#endif

void main() {
  for (uint i = flat_group() * WG + gl_LocalInvocationID.x; i < p.copy_n;
       i += gl_NumWorkGroups.x * gl_NumWorkGroups.y * WG)
#ifdef INT_DOT
    xcopy[p.copy_off + i] = copy_src[i];
#else
    xcopy[p.copy_off + i] = x1[p.x_off + i];
#endif
  const uint tpr = p.tpr, groups = WG / tpr;
  const uint tasks = (p.N + uint(R) - 1u) / uint(R) +
                     (MODE == 2 ? (p.n2 + uint(R) - 1u) / uint(R) + (p.n3 + uint(R) - 1u) / uint(R)
                                : 0u);
  // Group g of the workgroup takes task base + g; with PERSIST the workgroups (a few per
  // multiprocessor) then step over the tasks together (uniform, for the barriers).
  const uint kp = flat_group() % uint(KSPLIT);  // this workgroup's part of K
  uint base = flat_group() / uint(KSPLIT) * groups;
  if (base >= tasks) return;
  const uint step = PERSIST != 0 ? gl_NumWorkGroups.x * gl_NumWorkGroups.y * groups : tasks;
  const uint tid = gl_LocalInvocationID.x;
  const uint g = tid / tpr, lane = tid % tpr;
  const uint nb = p.K / 32u;
  // The blocks of this part: [b_lo, b_hi).
  const uint per_part = (nb + uint(KSPLIT) - 1u) / uint(KSPLIT);
  const uint b_lo = kp * per_part, b_hi = min(nb, b_lo + per_part);
  const uint row_bytes = quant_row_bytes(p.K), meta_bytes = split_meta_bytes(p.K);
  // Rows of a task: R consecutive ones, or (ROPE_KV, R = 2) a pair that rotates
  // together. A group past the last task reads the last task's rows (valid memory) and
  // writes nothing; so do rows past N (row N - 1).
  uint seg, N, j;
  uint srow[R];
#ifdef ROPE_KV
#define TASK_ROW(r) rope_row(seg, j, uint(r))
#else
#define TASK_ROW(r) (j * uint(R) + uint(r))
#endif
#define SET_TASK(task)                                                  \
  seg = task_of(min(task, tasks - 1u), N, j);                           \
  [[unroll]] for (int r = 0; r < R; r++)                                \
    srow[r] = p.w_off * 4u + min(TASK_ROW(r), N - 1u) * row_bytes;
  SET_TASK(base + g)
  float acc[M][R][NT];
  // The weights of U blocks per row in registers; the first ones are issued before x's
  // planes are copied (X_SHARED), so they are on their way during the copy.
  uvec4 qa[U][M][R], qb[U][M][R];
  float d[U][M][R];
  uint dm[U][M][R];
  const uint qpb = WDT == DT_Q8_0 ? 2u : 1u;  // uvec4 per block
  // Whether the first iteration's blocks are in registers (PRELOAD).
#ifdef X_SHARED
  bool preloaded = LOOP_LOCAL != 0 && (PRELOAD == 2 || (PRELOAD == 1 && NORM == 0));
#else
  bool preloaded = false;
#endif
#ifdef X_SHARED
  // NORM: the weights after the norm, whose registers would otherwise hold them too.
  if ((NORM == 0 && LOOP_LOCAL == 0) || preloaded) {
    ISSUE_BLOCKS(b_lo + lane)
  }
  if ((STRIP & 4) != 0) {
  } else if (NORM != 0) {
    norm_into_shared(nb);
  } else {
    const uint xb0 = p.x_off / 4u, nxb = p.T * nb;
    for (uint i = tid; i < nxb * 4u; i += WG) sx[i % 4u][i / 4u] = xq[xb0 + i];
    for (uint i = tid; i < nxb; i += WG) sxm[i] = xm[(xb0 + nxb * 4u) * 2u + i];
  }
  barrier();
  if (PROLOGUE_ONLY != 0) {
    // Reads what was copied, so that the copy is kept; writes nothing real.
    if (p.K == 0u && (sx[0][tid].x ^ sx[1][tid].x ^ sx[2][tid].x ^ sx[3][tid].x ^ sxm[tid].x) == 1u)
      y[0] = 0.0;
    return;
  }
  if (NORM != 0 && LOOP_LOCAL == 0) {
    ISSUE_BLOCKS(b_lo + lane)
  }
#else
  if (LOOP_LOCAL == 0) {
    ISSUE_BLOCKS(b_lo + lane)
  }
#endif
  while (true) {
    [[unroll]] for (int m = 0; m < M; m++)
      [[unroll]] for (int r = 0; r < R; r++)
        [[unroll]] for (int t = 0; t < NT; t++) acc[m][r][t] = 0.0;
    for (uint blk0 = b_lo + lane; blk0 < b_hi; blk0 += tpr * uint(U)) {
      if (LOOP_LOCAL != 0 && !preloaded) {
        ISSUE_BLOCKS(blk0)
      }
      preloaded = false;
      [[unroll]] for (int u = 0; u < U; u++) {
        const uint blk = blk0 + uint(u) * tpr;
        if (blk >= b_hi) break;
  #ifdef INT_DOT
        if ((STRIP & 1) != 0) {
          [[unroll]] for (int m = 0; m < M; m++)
            [[unroll]] for (int r = 0; r < R; r++) {
              const uvec4 q = qa[u][m][r];
              acc[m][r][0] += float(q.x ^ q.y ^ q.z ^ q.w) * d[u][m][r];
            }
          continue;
        }
        [[unroll]] for (int t = 0; t < NT; t++) {
  #ifdef X_SHARED
          const uint xi = uint(t) * nb + blk;
          const uvec4 h0 = sx[0][xi], h1 = sx[1][xi], l0 = sx[2][xi], l1 = sx[3][xi];
          const uvec2 meta = sxm[xi];
  #else
          const uint xb = p.x_off / 4u + (uint(t) * nb + blk) * 4u;
          const uvec4 h0 = xq[xb], h1 = xq[xb + 1u], l0 = xq[xb + 2u], l1 = xq[xb + 3u];
          const uvec2 meta = xm[(p.x_off / 4u + p.T * nb * 4u) * 2u + uint(t) * nb + blk];
  #endif
          const float xs = uintBitsToFloat(meta.x);
          int xsum = int(meta.y);
          if (X8 != 0) {
            xsum = 0;
            [[unroll]] for (int w = 0; w < 4; w++) xsum += dot4(h0[w], 0x01010101u) + dot4(h1[w], 0x01010101u);
            xsum *= 256;
          }
          const int corr = WDT == DT_Q4_0 ? 8 * xsum : 0;
          [[unroll]] for (int m = 0; m < M; m++)
            [[unroll]] for (int r = 0; r < R; r++) {
              int dh = 0, dl = 0;
              [[unroll]] for (int w = 0; w < 4; w++) {
                uint a = qa[u][m][r][w], b = qb[u][m][r][w];
                if (WDT != DT_Q8_0) {
                  b = (a >> 4) & 0x0f0f0f0fu;
                  a &= 0x0f0f0f0fu;
                }
                dh += dot4(a, h0[w]) + dot4(b, h1[w]);
                if (X8 == 0) dl += dot4(a, l0[w]) + dot4(b, l1[w]);
              }
              // q4_1: q d + m, the min times the block's sum of x (xs Σ s).
              if (WDT == DT_Q4_1)
                acc[m][r][t] += (float(dh * 256 + dl) * f16_bits_to_f32(dm[u][m][r] & 0xffffu) +
                                 float(xsum) * f16_bits_to_f32(dm[u][m][r] >> 16)) * xs;
              else
                acc[m][r][t] += float(dh * 256 + dl - corr) * (d[u][m][r] * xs);
            }
        }
  #else
        [[unroll]] for (int t = 0; t < NT; t++) {
          // x rows are 16-byte aligned (x_off and K multiples of 4, checked on the host).
          const uint xb = (p.x_off + uint(t) * p.K + blk * 32u) / 4u;
          vec4 xv[8];
          vec4 xs4 = vec4(0.0);
          for (uint k = 0u; k < 8u; k++) {
            xv[k] = x4[xb + k];
            xs4 += xv[k];
          }
          const float xs = xs4.x + xs4.y + xs4.z + xs4.w;
          [[unroll]] for (int m = 0; m < M; m++)
            [[unroll]] for (int r = 0; r < R; r++) {
              const float s = block_dot(qa[u][m][r], qb[u][m][r], xv);
              acc[m][r][t] += WDT == DT_Q4_0 ? d[u][m][r] * (16.0 * s - 24.0 * xs)
                              : WDT == DT_Q4_1
                                  ? f16_bits_to_f32(dm[u][m][r] & 0xffffu) * (16.0 * s - 16.0 * xs) +
                                        f16_bits_to_f32(dm[u][m][r] >> 16) * xs
                                  : d[u][m][r] * (256.0 * s - 384.0 * xs);
            }
        }
  #endif
      }
      if (LOOP_LOCAL == 0 && blk0 + tpr * uint(U) < b_hi) {
        ISSUE_BLOCKS(blk0 + tpr * uint(U))
      }
    }
    preloaded = false;  // also where this thread had no block of the task
    // This task's sums; with the old loop (LOOP_LOCAL 0) the next task's first weights are
    // issued before they are written.
    const uint cur = base + g, cseg = seg, cN = N, cj = j;
    const bool live = cur < tasks;
    base += step;
    const bool more = base < tasks;
    if (more) {
      SET_TASK(base + g)
      if (LOOP_LOCAL == 0) {
        ISSUE_BLOCKS(b_lo + lane)
      }
    }
    if ((STRIP & 2) != 0) {
      // No exchange and no outputs; a never-true store keeps the sums (and their loads).
      float sum = 0.0;
      [[unroll]] for (int m = 0; m < M; m++)
        [[unroll]] for (int r = 0; r < R; r++)
          [[unroll]] for (int t = 0; t < NT; t++) sum += acc[m][r][t];
      if (sum == 1.25e-30) y[p.y_off] = sum;
      if (!more) break;
      continue;
    }
    if (gl_SubgroupSize == tpr) {
      // A group is one subgroup: every lane gets the sums; lane 0 writes.
#ifdef ROPE_KV
      [[unroll]] for (int t = 0; t < NT; t++) {
        const float s0 = subgroupAdd(acc[0][0][t]), s1 = subgroupAdd(acc[0][R - 1][t]);
        if (lane == 0u && live) WRITE_ROPE_PAIR(cseg, cN, cj, uint(t), s0, s1);
      }
#else
      [[unroll]] for (int r = 0; r < R; r++)
        [[unroll]] for (int t = 0; t < NT; t++) {
          const float s = subgroupAdd(acc[0][r][t]);
          const float s2 = MODE == 1 ? subgroupAdd(acc[M - 1][r][t]) : 0.0;
          const uint n = cj * uint(R) + uint(r);
          if (lane == 0u && live && n < cN) write_out(cseg, cN, n, uint(t), s, s2);
        }
#endif
    } else if (gl_SubgroupSize < tpr) {
      // Several subgroups per group (both are powers of two, groups aligned): their sums
      // meet in shared memory, and the workgroup's threads write the round's outputs.
      const uint per_group = tpr / gl_SubgroupSize, b0 = base - step;
      [[unroll]] for (int m = 0; m < M; m++)
        [[unroll]] for (int r = 0; r < R; r++)
          [[unroll]] for (int t = 0; t < NT; t++) {
            const float s = subgroupAdd(acc[m][r][t]);
            if (subgroupElect()) partial[(m * R + r) * NT + t][gl_SubgroupID] = s;
          }
      barrier();
#ifdef ROPE_KV
      for (uint o = tid; o < groups * uint(NT); o += WG) {
        const uint og = o / uint(NT), t = o % uint(NT);
        if (b0 + og >= tasks) continue;
        uint oN, oj;
        const uint oseg = task_of(b0 + og, oN, oj);
        float s0 = 0.0, s1 = 0.0;
        for (uint sg = og * per_group; sg < (og + 1u) * per_group; sg++) {
          s0 += partial[t][sg];
          s1 += partial[uint(NT) + t][sg];
        }
        WRITE_ROPE_PAIR(oseg, oN, oj, t, s0, s1);
      }
#else
      for (uint o = tid; o < groups * uint(R * NT); o += WG) {
        const uint og = o / uint(R * NT), r = (o / uint(NT)) % uint(R), t = o % uint(NT);
        if (b0 + og >= tasks) continue;
        uint oN, oj;
        const uint oseg = task_of(b0 + og, oN, oj);
        const uint n = oj * uint(R) + r;
        if (n >= oN) continue;
        float s = 0.0, s2 = 0.0;
        for (uint sg = og * per_group; sg < (og + 1u) * per_group; sg++) {
          s += partial[r * uint(NT) + t][sg];
          if (MODE == 1) s2 += partial[(uint(R) + r) * uint(NT) + t][sg];
        }
        write_out(oseg, oN, n, t, s, s2);
      }
#endif
      barrier();  // partial is written again by the next round
#ifdef CLUSTER16
    } else if (tpr == 16u) {
      // Groups of 16 within wider subgroups: clustered sums; each group's lane 0 writes.
#ifdef ROPE_KV
      [[unroll]] for (int t = 0; t < NT; t++) {
        const float s0 = subgroupClusteredAdd(acc[0][0][t], 16u);
        const float s1 = subgroupClusteredAdd(acc[0][R - 1][t], 16u);
        if (lane == 0u && live) WRITE_ROPE_PAIR(cseg, cN, cj, uint(t), s0, s1);
      }
#else
      [[unroll]] for (int r = 0; r < R; r++)
        [[unroll]] for (int t = 0; t < NT; t++) {
          const float s = subgroupClusteredAdd(acc[0][r][t], 16u);
          const float s2 = MODE == 1 ? subgroupClusteredAdd(acc[M - 1][r][t], 16u) : 0.0;
          const uint n = cj * uint(R) + uint(r);
          if (lane == 0u && live && n < cN) write_out(cseg, cN, n, uint(t), s, s2);
        }
#endif
#endif
    } else {
      // Subgroups wider than a group: a tree in shared memory per (row, token).
      float pair_s[R];  // ROPE_KV: the sums of a task's two rows
      [[unroll]] for (int t = 0; t < NT; t++)
        [[unroll]] for (int r = 0; r < R; r++) {
          float s[M];
          [[unroll]] for (int m = 0; m < M; m++) {
            red[tid] = acc[m][r][t];
            barrier();
            for (uint h = tpr / 2u; h > 0u; h >>= 1) {
              if (lane < h) red[tid] += red[tid + h];
              barrier();
            }
            s[m] = red[tid];
            barrier();
          }
#ifdef ROPE_KV
          pair_s[r] = s[0];
          if (r == R - 1 && lane == 0u && live)
            WRITE_ROPE_PAIR(cseg, cN, cj, uint(t), pair_s[0], pair_s[R - 1]);
#else
          const uint n = cj * uint(R) + uint(r);
          if (lane == 0u && live && n < cN) write_out(cseg, cN, n, uint(t), s[0], s[M - 1]);
#endif
        }
    }
#if defined(X_SHARED) && !defined(ROPE_KV)
    if (QOUT != 0) {
      // The round's QROWS rows are BPR blocks of the down GEMV's x.
      barrier();
      // quantize_planes word by word from shared memory (few registers: the next
      // task's weights are in flight).
      const uint row0 = (base - step) * uint(R), rnd = row0 / QROWS;
      bool write_block = true;
      if (KSPLIT > 1) {
        if (tid < QROWS) kpart[(rnd * uint(KSPLIT) + kp) * QROWS + tid] = ks_part[tid];
        memoryBarrierBuffer();
        barrier();
        if (tid == 0u) ks_merging = atomicAdd(kcount[rnd], 1u) == uint(KSPLIT) - 1u;
        barrier();
        write_block = ks_merging;  // uniform: shared
        if (write_block) {
          memoryBarrierBuffer();
          if (tid == 0u) kcount[rnd] = 0u;
          if (tid < QROWS && row0 + tid < p.N) {
            vec2 sum = vec2(0.0);
            for (uint q = 0u; q < uint(KSPLIT); q++)
              sum += kpart[(rnd * uint(KSPLIT) + q) * QROWS + tid];
            ks_final = true;
            write_out(0u, p.N, row0 + tid, 0u, sum.x, sum.y);
          }
          barrier();  // act_s
        }
      }
      // A thread a block (threads of one subgroup: side by side).
      const uint blk = row0 / 32u + tid, a0 = 32u * tid;
      if (write_block && tid < BPR && blk < p.N / 32u) {
        float amax = 0.0;
        for (uint k = 0u; k < 32u; k++) amax = max(amax, abs(act_s[a0 + k]));
        const float inv = quantize_inv(amax);
        int sum = 0;
        const uint qw = p.qo_off + blk * 16u;  // words: h of 0-15, h of 16-31, l, l
        for (uint w = 0u; w < 8u; w++) {
          uint h, l;
          sum += quantize4(vec4(act_s[a0 + 4u * w], act_s[a0 + 4u * w + 1u],
                                act_s[a0 + 4u * w + 2u], act_s[a0 + 4u * w + 3u]),
                           inv, h, l);
#ifdef FFN_DOWN
          dn_words[w] = h;
          dn_words[8u + w] = l;
#else
          qo_w[qw + w] = h;
          qo_w[qw + 8u + w] = l;
#endif
        }
#ifdef FFN_DOWN
        dn_meta = quantize_meta(amax, sum);
#else
        qom[(p.qo_off / 4u + p.N / 32u * 4u) * 2u + blk] = quantize_meta(amax, sum);
#endif
      }
      barrier();  // act_s is written again by the next round
#ifdef FFN_DOWN
      if (write_block && row0 / 32u < p.N / 32u) {  // WG 256: one block a round
        ffn_down_round(row0 / 32u);
        barrier();  // dn_words is written again by the next round
      }
#endif
    }
#endif
    if (!more) break;
  }
}
