// Measuring shader of bench/vk_dispatch_probe.cpp (not used by the backend): what a
// dependent dispatch, a change of shared-memory size, a grid-wide barrier and a
// stream of weights cost on a device.
#version 450
// The workgroup size is specialization constant 8 (256 by default; MODE 7 takes others).
layout(local_size_x = 256) in;
layout(local_size_x_id = 8) in;
#define WG gl_WorkGroupSize.x
// 0: one word a workgroup; 1: grid-wide barriers; 3: shared memory of SMEM_WORDS;
// 4: L 16-byte loads a thread from phase p.base; 5: p.rounds such phases, each ended by
// a grid-wide barrier (PREFETCH 1: the next phase's loads issued before it);
// 6: p.rounds rounds in which every thread writes a word, passes a grid-wide barrier
// and reads its neighbour workgroup's word (PREFETCH 1: through a coherent alias),
// counting the words that do not match in outw[16];
// 7: a GEMV's reads without its arithmetic: groups of TPR threads, L rows a group
// (every row p.rounds * TPR blocks of 16 bytes, and a 16-bit scale a block when SCALES),
// one block a row a thread an iteration, from p.base (16-byte units); PATTERN 0 keeps
// each row's blocks together (the backend's row layout), 1 puts an iteration's blocks
// of a workgroup's rows together (tile-major), 2 is 0 over two matrices (a group's first
// L / 2 rows from the first half of the region, the others from the second, as gate/up's
// tasks read), 3 is 0 with each row's scales at its start (the backend's split rows:
// p.rounds * TPR / 8 units of scales, then the blocks); PREFETCH 1 issues the next
// iteration's loads before this one's arithmetic (two sets of registers).
layout(constant_id = 0) const int MODE = 0;
layout(constant_id = 1) const uint SMEM_WORDS = 1;
layout(constant_id = 2) const uint TAG = 0;  // distinct pipelines of the same code
layout(constant_id = 3) const uint L = 1;
layout(constant_id = 4) const uint PREFETCH = 0;
layout(constant_id = 5) const uint PATTERN = 0;
layout(constant_id = 6) const uint TPR = 16;
layout(constant_id = 7) const uint SCALES = 1;
layout(std430, binding = 0) volatile coherent buffer Sync { uint counter[]; };
layout(std430, binding = 1) readonly buffer W4 { uvec4 w4[]; };
layout(std430, binding = 1) readonly buffer W1 { uint w1[]; };
// MODE 7 with COHERENT: the same weights through `coherent` aliases (as the backend's
// GEMVs read them: NVIDIA's driver serves such loads from L2, not L1).
layout(constant_id = 9) const uint COHERENT = 0;
layout(std430, binding = 1) readonly coherent buffer W4C { uvec4 w4c[]; };
layout(std430, binding = 1) readonly coherent buffer W1C { uint w1c[]; };
uvec4 weight_unit(uint i) { return COHERENT != 0u ? w4c[i] : w4[i]; }
uint scale_word(uint i) { return SCALES == 0u ? 0u : COHERENT != 0u ? w1c[i] : w1[i]; }
layout(std430, binding = 2) buffer Out { uint outw[]; };
layout(std430, binding = 3) buffer Data { uint data[]; };
layout(std430, binding = 3) coherent buffer DataC { uint datac[]; };
layout(push_constant) uniform P {
  uint rounds, base;
} p;
shared uint sm[SMEM_WORDS];

// A grid-wide barrier that needs no reset (every workgroup resident): the last of the
// `groups` to arrive sets the arrival count (counter[3]) back to 0 and bumps the
// generation (counter[2]) that the others wait on. With fence_all every thread fences
// its writes before arriving (needed when they are read after); without, thread 0
// alone fences, as CUDA's grid sync does, so other threads' loads stay in flight.
shared uint gen_s;
void grid_sync(uint groups, bool fence_all) {
  if (fence_all) memoryBarrier();
  barrier();
  if (gl_LocalInvocationIndex == 0u) {
    memoryBarrier();
    const uint g = gen_s;
    if (atomicAdd(counter[3], 1u) == groups - 1u) {
      counter[3] = 0u;
      memoryBarrier();
      atomicAdd(counter[2], 1u);
    } else {
      // Bounded (a side effect, so compilers keep the loop): a wait past the bound
      // (workgroups not all resident) is counted in outw[17] and given up, so the
      // probe reports instead of hanging.
      uint spins = 0u;
      while (counter[2] == g) {
        if (++spins == (1u << 20)) {
          atomicAdd(outw[17], 1u);
          break;
        }
      }
    }
    memoryBarrier();
    gen_s = g + 1u;
  }
  barrier();
  if (fence_all) memoryBarrier();
}

uvec4 load_phase(uint phase, uint groups, uint w, uint t, uint k) {
  return w4[((phase * groups + w) * L + k) * WG + t];
}

// MODE 7, PATTERN 0-2: the 16-byte unit of row l's block of a thread's group in
// iteration it (its scale is the unit's index in 16-bit units past the scales' start).
uint gemv_unit(uint w, uint g, uint lane, uint it, uint l) {
  if (PATTERN == 0u) return ((w * (WG / TPR) + g) * L + l) * p.rounds * TPR + it * TPR + lane;
  if (PATTERN == 2u) {
    const uint h = L / 2u, second = l < h ? 0u : gl_NumWorkGroups.x * WG * h * p.rounds;
    return second + ((w * (WG / TPR) + g) * h + l % h) * p.rounds * TPR + it * TPR + lane;
  }
  return ((w * p.rounds + it) * L + l) * WG + g * TPR + lane;
}

// MODE 7: loads the block and the scale word of row l of a thread's group in iteration it
// (sbase: where the scales start in PATTERN 0-2, in 16-bit units).
void gemv_load(uint w, uint g, uint lane, uint it, uint l, uint sbase, out uvec4 v, out uint s) {
  if (PATTERN == 3u) {
    const uint nb = p.rounds * TPR, row_units = nb + nb / 8u;
    const uint row = p.base + ((w * (WG / TPR) + g) * L + l) * row_units, b = it * TPR + lane;
    v = weight_unit(row + nb / 8u + b);
    s = scale_word(row * 4u + b / 2u);
    return;
  }
  const uint u = gemv_unit(w, g, lane, it, l);
  v = weight_unit(p.base + u);
  s = scale_word((sbase + u) / 2u);
}

void main() {
  const uint G = gl_NumWorkGroups.x, w = gl_WorkGroupID.x, t = gl_LocalInvocationIndex;
  if (t == 0u) gen_s = counter[2];
  if (MODE == 0) {
    if (t == 0u) outw[w] = p.base;
  } else if (MODE == 1) {
    for (uint r = 0u; r < p.rounds; r++) grid_sync(G, false);
  } else if (MODE == 6) {
    uint bad = 0u;
    for (uint r = 0u; r < p.rounds; r++) {
      const uint slot = (r & 1u) * G * WG, want = r * 7u + 1u;
      if (PREFETCH == 1u)
        datac[slot + w * WG + t] = want + w;
      else
        data[slot + w * WG + t] = want + w;
      grid_sync(G, true);
      const uint nb = (w + 1u) % G;
      const uint v = PREFETCH == 1u ? datac[slot + nb * WG + t] : data[slot + nb * WG + t];
      if (v != want + nb) bad++;
    }
    if (bad != 0u) atomicAdd(outw[16], bad);
  } else if (MODE == 7) {
    const uint g = t / TPR, lane = t % TPR, iters = p.rounds;
    const uint sbase = (p.base + gl_NumWorkGroups.x * WG * L * iters) * 8u;  // halves
    uvec4 acc = uvec4(0u);
    uvec4 v[L], nv[L];
    uint s[L], ns[L];
    for (uint l = 0u; l < L; l++) gemv_load(w, g, lane, 0u, l, sbase, v[l], s[l]);
    for (uint it = 0u; it < iters; it++) {
      const bool more = it + 1u < iters;
      if (PREFETCH == 1u && more)
        for (uint l = 0u; l < L; l++) gemv_load(w, g, lane, it + 1u, l, sbase, nv[l], ns[l]);
      // About the integer-dot GEMV's arithmetic on a block (nibbles split, 8 products).
      for (uint l = 0u; l < L; l++)
        for (uint k = 0u; k < 4u; k++) {
          const uint a = v[l][k];
          acc.x += (a & 0x0f0f0f0fu) * (0x01010101u + s[l]);
          acc.y += ((a >> 4) & 0x0f0f0f0fu) * 0x01030507u;
          acc.z ^= acc.x + acc.y;
        }
      if (more) {
        if (PREFETCH == 1u)
          for (uint l = 0u; l < L; l++) {
            v[l] = nv[l];
            s[l] = ns[l];
          }
        else
          for (uint l = 0u; l < L; l++) gemv_load(w, g, lane, it + 1u, l, sbase, v[l], s[l]);
      }
    }
    if (acc.z == 0x12345678u && acc.x == 7u) outw[w] = acc.y;
  } else if (MODE == 3) {
    for (uint i = t; i < SMEM_WORDS; i += WG) sm[i] = i + TAG;
    barrier();
    if (t == 0u) outw[w] = sm[(w * 31u) % SMEM_WORDS] + p.base;
  } else {
    const uint phases = MODE == 4 ? 1u : p.rounds, first = MODE == 4 ? p.base : 0u;
    uvec4 acc = uvec4(0u), v[L];
    for (uint k = 0u; k < L; k++) v[k] = load_phase(first, G, w, t, k);
    for (uint ph = 0u; ph < phases; ph++) {
      for (uint k = 0u; k < L; k++) acc ^= v[k];
      if (MODE == 5) {
        const bool more = ph + 1u < phases;
        if (PREFETCH == 1u && more)
          for (uint k = 0u; k < L; k++) v[k] = load_phase(ph + 1u, G, w, t, k);
        grid_sync(G, false);
        if (PREFETCH == 0u && more)
          for (uint k = 0u; k < L; k++) v[k] = load_phase(ph + 1u, G, w, t, k);
      }
    }
    // A test the data never passes keeps the loads.
    if (acc.x == 0x12345678u && acc.y == 7u) outw[w] = acc.z;
  }
}
