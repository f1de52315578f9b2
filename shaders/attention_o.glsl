// O_WORKERS (attention_decode_o.comp): the o GEMV (a quantized matrix in the row layout
// of weights.glsl) and its residual Add run in the decode attention's grid, so that o's
// weight loads overlap the attention instead of waiting for a dispatch boundary.
//
// o's rows are cut in o_parts slices per head (a slice: its rows times the head's D / 32
// blocks). After the T * H * SPLITS attention workgroups come H * o_parts workers, one a
// slice. A worker loads the weights of its first O_PF rows a thread, then waits for its
// head, a bounded spin on the slice's state word: bit 0 set by the workgroup that writes
// the head's output (and its planes), bit 1 by a worker that stopped waiting. Exactly one
// of the two owns each slice: the worker if it saw bit 0, else the head's workgroup,
// which sees bit 1 when it sets bit 0. So nothing depends on workgroups running at once:
// a worker that waits in vain (no free multiprocessor, a CPU driver that runs
// workgroups one after another, or lavapipe's limit of 65,535 loop iterations a shader
// invocation) gives its slice to the head's workgroup. The owner adds its rows'
// products into o_acc with float atomics; whoever completes the last slice writes
// residual + o_acc, and zeroes o_acc, the states and the count for the next run.
//
// The includer (attention_common.glsl) defines WG, MAX_D, the push constants p (o_w_off
// .. o_nn_eps), binding 10 (the planes that the head's workgroup writes) and tree_sum.
#ifndef LLM_ATTENTION_O_GLSL
#define LLM_ATTENTION_O_GLSL
#include "qdot.glsl"

layout(constant_id = 6) const int OWDT = DT_Q4_0;
layout(constant_id = 7) const uint O_PF = 2;  // rows a thread whose weights load before the wait
#define O_PF_MAX 4u
#define O_NBK (MAX_D / 32)  // blocks of a head

layout(std430, binding = 10) coherent readonly buffer QPR { uvec4 qpr[]; };
layout(std430, binding = 10) coherent readonly buffer QPMR { uvec2 qpmr[]; };
layout(std430, binding = 11) readonly buffer OW4 { uvec4 ow4[]; };
layout(std430, binding = 11) readonly buffer OW { uint ow[]; };
layout(std430, binding = 12) buffer OState { uint o_state[]; };  // [H * o_parts]
layout(std430, binding = 13) buffer OAcc { float o_acc[]; };     // [o_rows]
layout(std430, binding = 14) buffer OCount { uint o_count[]; };  // slices done
layout(std430, binding = 15) readonly buffer ORes { float o_res[]; };
layout(std430, binding = 16) writeonly buffer OSum { float o_sum[]; };
// O_NEXT_NORM: the last slice done also takes the RmsNorm of the sum (the FFN's, weight
// of dtype O_NNWDT) and rounds it into the integer-dot planes that the GEMV after it
// (gate/up) reads as its x, as the fused FFN's NEXT_NORM does for q/k/v.
layout(constant_id = 8) const int O_NEXT_NORM = 0;
layout(constant_id = 9) const int O_NNWDT = DT_F32;
layout(std430, binding = 17) readonly buffer ONormW { uint onn_w[]; };
layout(std430, binding = 18) writeonly buffer ONormQ { uvec4 onn_q[]; };
layout(std430, binding = 18) writeonly buffer ONormM { uvec2 onn_m[]; };
#define NN_WEIGHT(i) LOAD_FLOAT(onn_w, O_NNWDT, p.o_nn_w_off, i)
#define NN_RES(i) o_res[p.o_res_off + (i)]
#define NN_ACC o_acc
#define NN_OUT(i) o_sum[p.o_sum_off + (i)]
#define NN_PLANE(j) onn_q[p.o_nn_q_off / 4u + (j)]
#include "next_norm.glsl"

shared uvec4 o_x[O_NBK][4];  // the head's planes
shared uvec2 o_xm[O_NBK];
shared uint o_flag;

// A thread's rows' weights: O_PF_MAX rows of O_NBK blocks (q8: two uvec4 a block).
uvec4 o_qa[O_PF_MAX][O_NBK], o_qb[O_PF_MAX][O_NBK];
float o_d[O_PF_MAX][O_NBK];

void o_load_row(uint j, uint r, uint h) {
  const uint nbk = p.D / 32u, nb = p.H * nbk, qpb = OWDT == DT_Q8_0 ? 2u : 1u;
  const uint scale_bytes = (nb * 2u + 15u) / 16u * 16u, row_bytes = scale_bytes + nb * 16u * qpb;
  const uint rb = p.o_w_off * 4u + r * row_bytes;
  [[unroll]] for (uint b = 0u; b < O_NBK; b++) {
    if (b >= nbk) break;
    const uint blk = h * nbk + b, q = (rb + scale_bytes) / 16u + blk * qpb;
    o_qa[j][b] = ow4[q];
    o_qb[j][b] = OWDT == DT_Q8_0 ? ow4[q + 1u] : uvec4(0u);
    o_d[j][b] = f16_bits_to_f32(LOAD_U16(ow, rb + blk * 2u));
  }
}

float o_row_sum(uint j) {
  const uint nbk = p.D / 32u;
  float sum = 0.0;
  [[unroll]] for (uint b = 0u; b < O_NBK; b++) {
    if (b >= nbk) break;
    const uvec2 meta = o_xm[b];
    const int corr = OWDT == DT_Q4_0 ? 8 * int(meta.y) : 0;
    const int dot = block_dot_planes(OWDT == DT_Q4_0, o_qa[j][b], o_qb[j][b], o_x[b][0], o_x[b][1],
                                     o_x[b][2], o_x[b][3]);
    sum += float(dot - corr) * (o_d[j][b] * uintBitsToFloat(meta.x));
  }
  return sum;
}

// Rows [lo, hi) of slice `part` of o (as o_parts cut them).
uvec2 o_slice_rows(uint part) {
  const uint per = (p.o_rows + p.o_parts - 1u) / p.o_parts;
  return uvec2(min(p.o_rows, part * per), min(p.o_rows, part * per + per));
}

// The head's planes into shared memory (the caller has made them visible).
void o_load_planes(uint h) {
  const uint tid = gl_LocalInvocationID.x, nbk = p.D / 32u, q0 = p.planes_off / 4u;
  if (tid < nbk * 4u) o_x[tid / 4u][tid % 4u] = qpr[q0 + (h * nbk + tid / 4u) * 4u + tid % 4u];
  if (tid < nbk) o_xm[tid] = qpmr[(q0 + p.H * nbk * 4u) * 2u + h * nbk + tid];
  barrier();
}

// Rows [lo, hi) of head h's slice into o_acc; the first `pf` rows a thread were loaded
// by o_load_row before. O_PF sets the rows a thread holds at once (registers).
void o_rows(uint h, uvec2 rows, uint pf) {
  const uint tid = gl_LocalInvocationID.x;
  [[unroll]] for (uint j = 0u; j < O_PF_MAX; j++) {
    const uint r = rows.x + tid + j * WG;
    if (j < pf && r < rows.y) atomicAdd(o_acc[r], o_row_sum(j));
  }
  // The rest, O_PF rows a thread at a time (at least one), their loads in flight together.
  const uint batch = max(O_PF, 1u);
  for (uint r0 = rows.x + tid + pf * WG; r0 < rows.y; r0 += batch * WG) {
    [[unroll]] for (uint j = 0u; j < O_PF_MAX; j++) {
      const uint r = r0 + j * WG;
      if (j < batch && r < rows.y) o_load_row(j, r, h);
    }
    [[unroll]] for (uint j = 0u; j < O_PF_MAX; j++) {
      const uint r = r0 + j * WG;
      if (j < batch && r < rows.y) atomicAdd(o_acc[r], o_row_sum(j));
    }
  }
}

// O_NEXT_NORM: a block of 32 sums a thread (o_rows / 32 <= WG, checked by the planner):
// the sums, their squares' total, and the block of sum ⊙ weight rounded (scale-free: the
// block's scale takes 1 / rms once the total is known).
void o_sum_and_norm() {
  const uint b = gl_LocalInvocationID.x, nbn = p.o_rows / 32u;
  float ss = 0.0;
  uvec2 meta = uvec2(0u);
  if (b < nbn) ss = next_norm_block(b, meta);
  const float inv = 1.0 / sqrt(tree_sum(ss, WG) / float(p.o_rows) + p.o_nn_eps);
  if (b < nbn)
    onn_m[(p.o_nn_q_off / 4u + nbn * 4u) * 2u + b] =
        uvec2(floatBitsToUint(uintBitsToFloat(meta.x) * inv), meta.y);
}

// n more slices are done (their products in o_acc); the workgroup that completes the
// last writes out = residual + o_acc (O_NEXT_NORM: and the norm's planes) and leaves the
// scratch at zero. The residual loads and every exchange of a batch go out before any
// store (see matmul_gemv_q.glsl's FFN_DOWN).
void o_slices_done(uint n) {
  const uint tid = gl_LocalInvocationID.x, slices = p.H * p.o_parts;
  memoryBarrierBuffer();
  barrier();
  if (tid == 0u) o_flag = atomicAdd(o_count[0], n) + n == slices ? 1u : 0u;
  barrier();
  if (o_flag == 0u) return;
  memoryBarrierBuffer();
  if (tid == 0u) o_count[0] = 0u;
  for (uint k = tid; k < slices; k += WG) o_state[k] = 0u;
  if (O_NEXT_NORM != 0) {
    o_sum_and_norm();
    return;
  }
  for (uint r0 = tid; r0 < p.o_rows; r0 += 8u * WG) {
    float v[8];
    [[unroll]] for (uint i = 0u; i < 8u; i++) {
      const uint r = r0 + i * WG;
      v[i] = r < p.o_rows ? o_res[p.o_res_off + r] : 0.0;
    }
    [[unroll]] for (uint i = 0u; i < 8u; i++) {
      const uint r = r0 + i * WG;
      if (r < p.o_rows) v[i] += atomicExchange(o_acc[r], 0.0);
    }
    [[unroll]] for (uint i = 0u; i < 8u; i++) {
      const uint r = r0 + i * WG;
      if (r < p.o_rows) o_sum[p.o_sum_off + r] = v[i];
    }
  }
}

// Worker w (slice w % o_parts of head w / o_parts).
void o_worker(uint w) {
  const uint tid = gl_LocalInvocationID.x, h = w / p.o_parts;
  const uvec2 rows = o_slice_rows(w % p.o_parts);
  [[unroll]] for (uint j = 0u; j < O_PF_MAX; j++) {
    const uint r = rows.x + tid + j * WG;
    if (j < O_PF && r < rows.y) o_load_row(j, r, h);
  }
  if (tid == 0u) {
    uint s = atomicAdd(o_state[w], 0u);
    for (uint n = 0u; (s & 1u) == 0u && n < p.o_spin; n++) s = atomicAdd(o_state[w], 0u);
    if ((s & 1u) == 0u) s = atomicOr(o_state[w], 2u);  // the head's workgroup takes it
    o_flag = s & 1u;
    memoryBarrierBuffer();
  }
  barrier();
  if (o_flag == 0u) return;
  o_load_planes(h);
  o_rows(h, rows, O_PF);
  o_slices_done(1u);
}

shared uint o_mine;

// Called by the workgroup that wrote head h's output and planes (every thread): raises
// the head's slices' bit 0 and computes those whose worker has stopped waiting.
void o_head_ready(uint h) {
  const uint tid = gl_LocalInvocationID.x;
  memoryBarrierBuffer();  // the planes before the states
  if (tid == 0u) o_mine = 0u;
  barrier();
  if (tid < p.o_parts) {
    const uint s = atomicOr(o_state[h * p.o_parts + tid], 1u);
    if ((s & 2u) != 0u) atomicOr(o_mine, 1u << tid);
  }
  barrier();
  const uint mine = o_mine;
  if (mine == 0u) return;
  o_load_planes(h);
  for (uint k = 0u; k < p.o_parts; k++)
    if ((mine & (1u << k)) != 0u) o_rows(h, o_slice_rows(k), 0u);
  o_slices_done(uint(bitCount(mine)));
}

#endif
