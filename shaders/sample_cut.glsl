// Op::Sample's cuts (top-k, top-p): the last kept token of the order by value
// (descending, equal values by index), found without sorting the row. Included by
// sample.comp after its buffers and WG; run by the one workgroup that draws the row.
//
// A token's order key is its value's bits mapped so that larger values have larger
// keys. select_boundary() narrows a range of keys to the bin where the prefix reaches
// the wanted count (top-k) or fixed-point mass (top-p): each round is a pass over the
// row that counts the tokens in the range, and their masses, in 64 bins of the key bits
// just below the range's common prefix. Once the bin holds at most CAP tokens they are
// copied to shared memory and sorted, so the boundary is exact; a bin of more than CAP
// tokens of one value (equal logits) is resolved by rank among them in index order.
// Masses are floor(w * 2^31) summed exactly in 64 bits (two words with a carry), so
// every device finds the same boundary for the same weights.
#define CAP 512u
#define BINS 64u
#define CUT_UNROLL 8u  // loads of the row in flight per thread in each pass

shared uint h_cnt[BINS], h_lo[BINS], h_hi[BINS];
shared uint sel_klo, sel_khi, sel_above_cnt, sel_bin_cnt;
shared uvec2 sel_above_mass, sel_want;
shared bool sel_done;
shared uint c_key[CAP], c_idx[CAP];
shared uint c_n;
shared uvec2 c_scan[WG];
shared uint t_scan[WG];
// The result: the boundary token's key and index, and the mass of the prefix through it.
shared uint b_key, b_idx;
shared uvec2 b_mass;

uint order_key(float v) {
  const uint b = floatBitsToUint(v);
  return (b & 0x80000000u) != 0u ? ~b : b | 0x80000000u;
}

// Whether v is a number whose key k lies in [klo, khi].
bool key_in(float v, uint klo, uint khi, out uint k) {
  k = order_key(v);
  return !isnan(v) && k >= klo && k <= khi;
}

// Element i0 + j * WG of the row for j < CUT_UNROLL, all loads issued first (NaN
// past the end): a pass waits on memory n / (WG * CUT_UNROLL) times, not n / WG.
void load_strided(uint base, uint n, uint i0, out float v[CUT_UNROLL]) {
  [[unroll]] for (uint j = 0u; j < CUT_UNROLL; j++) {
    const uint i = i0 + j * WG;
    v[j] = i < n ? x[base + i] : uintBitsToFloat(0x7fc00000u);
  }
}

float key_value(uint k) { return uintBitsToFloat((k & 0x80000000u) != 0u ? k & 0x7fffffffu : ~k); }

// floor(w * 2^31) with w = exp((v - m) / T) <= 1.
uint mass_fixed(float v, float m, float inv_t) { return uint(exp((v - m) * inv_t) * 2147483648.0); }

uvec2 add64(uvec2 a, uvec2 b) {
  uint carry;
  const uint lo = uaddCarry(a.x, b.x, carry);
  return uvec2(lo, a.y + b.y + carry);
}

bool ge64(uvec2 a, uvec2 b) { return a.y > b.y || (a.y == b.y && a.x >= b.x); }

uvec2 mul64(uint a, uint b) {
  uint hi, lo;
  umulExtended(a, b, hi, lo);
  return uvec2(lo, hi);
}

// floor(s * t / 2^24) for s < 2^56, t <= 2^24: Op::Sample's top-p target.
uvec2 top_p_target(uvec2 s, uint t) {
  const uvec2 a = mul64((s.x >> 24) | (s.y << 8), t);  // (s >> 24) * t
  const uvec2 b = mul64(s.x & 0xffffffu, t);           // (s mod 2^24) * t, then >> 24
  return add64(a, uvec2((b.x >> 24) | (b.y << 8), b.y >> 24));
}

// a (the prefix through it) reaches want.
bool reaches(uint cnt, uvec2 mass, bool by_mass, uvec2 want) {
  return by_mass ? ge64(mass, want) : cnt >= want.x;
}

// Sorts c_key / c_idx[0, n2) (n2 a power of two <= CAP) by key descending, index
// ascending (bitonic).
void sort_candidates(uint n2) {
  const uint tid = gl_LocalInvocationID.x;
  for (uint size = 2u; size <= n2; size <<= 1) {
    for (uint stride = size >> 1; stride > 0u; stride >>= 1) {
      for (uint t = tid; t < n2 / 2u; t += WG) {
        const uint i = 2u * t - (t & (stride - 1u));
        const uint j = i + stride;
        const bool down = (i & size) == 0u;  // this pair's run is sorted first-to-last
        const uint ki = c_key[i], kj = c_key[j], ii = c_idx[i], ij = c_idx[j];
        const bool j_first = kj > ki || (kj == ki && ij < ii);
        if (j_first == down) {
          c_key[i] = kj;
          c_key[j] = ki;
          c_idx[i] = ij;
          c_idx[j] = ii;
        }
      }
      barrier();
    }
  }
}

// The boundary of the order where the prefix first reaches `want` tokens (by_mass
// false) or fixed-point mass (by_mass true; with want_top_p, want.x is t =
// floor(top_p * 2^24) and the target is taken from the row's whole mass) into b_key,
// b_idx, b_mass. want must be reachable: at most the row's count, or its mass.
void select_boundary(uint base, uint n, float m, float inv_t, bool by_mass, bool want_top_p,
                     uvec2 want) {
  const uint tid = gl_LocalInvocationID.x;
  if (tid == 0u) {
    sel_klo = 0u;
    sel_khi = 0xffffffffu;
    sel_above_cnt = 0u;
    sel_above_mass = uvec2(0u);
    sel_want = want;
    sel_done = false;
  }
  barrier();
  bool first = true;
  while (true) {
    const uint klo = sel_klo, khi = sel_khi;
    const int msb = findMSB(klo ^ khi);
    if (msb < 0 || sel_done) break;  // one key left, or the bin fits in shared memory
    const uint shift = uint(max(msb - 5, 0));
    if (tid < BINS) h_cnt[tid] = h_lo[tid] = h_hi[tid] = 0u;
    barrier();
    for (uint i0 = tid; i0 < n; i0 += WG * CUT_UNROLL) {
      float v[CUT_UNROLL];
      load_strided(base, n, i0, v);
      [[unroll]] for (uint j = 0u; j < CUT_UNROLL; j++) {
        uint k;
        if (!key_in(v[j], klo, khi, k)) continue;
        const uint b = (k >> shift) & (BINS - 1u);
        // Masses in count mode too: the prefix's mass through the boundary is wanted.
        atomicAdd(h_cnt[b], 1u);
        const uint w = mass_fixed(v[j], m, inv_t);
        const uint old = atomicAdd(h_lo[b], w);
        if (old + w < old) atomicAdd(h_hi[b], 1u);
      }
    }
    barrier();
    if (tid == 0u) {
      if (first && want_top_p) {
        uvec2 total = uvec2(0u);
        for (uint b = 0u; b < BINS; b++) total = add64(total, uvec2(h_lo[b], h_hi[b]));
        sel_want = top_p_target(total, want.x);
      }
      // Bins from the largest keys down: the first whose end reaches want.
      uint cnt = sel_above_cnt;
      uvec2 mass = sel_above_mass;
      uint pick = 0u;
      bool found = false;
      for (int b = int(BINS) - 1; b >= 0 && !found; b--) {
        const uint c = h_cnt[b];
        const uvec2 w = uvec2(h_lo[b], h_hi[b]);
        if (c > 0u && reaches(cnt + c, add64(mass, w), by_mass, sel_want)) {
          pick = uint(b);
          found = true;
        } else {
          cnt += c;
          mass = add64(mass, w);
        }
      }
      if (!found) {
        // want past the range (a top_k beyond the row's numbers): its last nonempty bin,
        // whose last token then ends the order.
        while (pick < BINS - 1u && h_cnt[pick] == 0u) pick++;
        cnt = sel_above_cnt;
        mass = sel_above_mass;
        for (uint b = pick + 1u; b < BINS; b++) {
          cnt += h_cnt[b];
          mass = add64(mass, uvec2(h_lo[b], h_hi[b]));
        }
      }
      sel_above_cnt = cnt;
      sel_above_mass = mass;
      sel_bin_cnt = h_cnt[pick];
      const uint span = shift + 6u >= 32u ? 0xffffffffu : (64u << shift) - 1u;
      const uint lo = (klo & ~span) | (pick << shift);
      const uint hi = shift == 0u ? lo : lo | ((1u << shift) - 1u);
      sel_klo = max(klo, lo);
      sel_khi = min(khi, hi);
      sel_done = h_cnt[pick] <= CAP;
    }
    first = false;
    barrier();
  }
  const uint klo = sel_klo, khi = sel_khi, above_cnt = sel_above_cnt;
  const uvec2 above_mass = sel_above_mass, target = sel_want;
  if (sel_bin_cnt <= CAP) {
    // The bin's tokens into shared memory, sorted; then a scan of their masses (a
    // count is its own position).
    if (tid == 0u) c_n = 0u;
    barrier();
    for (uint i0 = tid; i0 < n; i0 += WG * CUT_UNROLL) {
      float v[CUT_UNROLL];
      load_strided(base, n, i0, v);
      [[unroll]] for (uint j = 0u; j < CUT_UNROLL; j++) {
        uint k;
        if (!key_in(v[j], klo, khi, k)) continue;
        const uint at = atomicAdd(c_n, 1u);
        if (at < CAP) {
          c_key[at] = k;
          c_idx[at] = i0 + j * WG;
        }
      }
    }
    barrier();
    const uint cn = min(c_n, CAP);
    uint n2 = 1u;
    while (n2 < cn) n2 <<= 1;
    for (uint j = cn + tid; j < n2; j += WG) {
      c_key[j] = 0u;  // after every real token
      c_idx[j] = 0xffffffffu;
    }
    barrier();
    sort_candidates(n2);
    // Each thread sums CAP / WG consecutive tokens; an inclusive scan places them.
    const uint per = CAP / WG, lo = tid * per;
    uvec2 own = uvec2(0u);
    for (uint j = lo; j < lo + per && j < cn; j++)
      own = add64(own, uvec2(mass_fixed(key_value(c_key[j]), m, inv_t), 0u));
    c_scan[tid] = own;
    barrier();
    for (uint o = 1u; o < WG; o <<= 1) {
      const uvec2 add = tid >= o ? c_scan[tid - o] : uvec2(0u);
      barrier();
      c_scan[tid] = add64(c_scan[tid], add);
      barrier();
    }
    // The prefix reaches want from the boundary on (counts and masses only grow), and
    // not before the bin: the thread whose tokens hold the first that reaches records
    // it. If none does (want past the row), the bin's last token stands.
    if (tid == 0u) {
      b_key = c_key[cn - 1u];
      b_idx = c_idx[cn - 1u];
      b_mass = add64(above_mass, c_scan[WG - 1u]);
    }
    barrier();
    uvec2 run = add64(above_mass, tid > 0u ? c_scan[tid - 1u] : uvec2(0u));
    if (lo < cn && !reaches(above_cnt + lo, run, by_mass, target)) {
      for (uint j = lo; j < lo + per && j < cn; j++) {
        run = add64(run, uvec2(mass_fixed(key_value(c_key[j]), m, inv_t), 0u));
        if (reaches(above_cnt + j + 1u, run, by_mass, target)) {
          b_key = c_key[j];
          b_idx = c_idx[j];
          b_mass = run;
          break;
        }
      }
    }
    barrier();
  } else {
    // More than CAP tokens of one value: the boundary is the r-th of them in index
    // order, r from the count or the mass still wanted.
    const uint kv = klo;
    const uint w = mass_fixed(key_value(kv), m, inv_t);
    if (tid == 0u) {
      uint r = sel_bin_cnt;
      if (reaches(above_cnt, above_mass, by_mass, target)) {
        r = 1u;
      } else if (!by_mass) {
        r = min(target.x - above_cnt, sel_bin_cnt);
      } else if (w > 0u) {
        // The smallest r with above + r * w >= target (binary search: no 64-bit divide).
        uint lo_r = 1u, hi_r = sel_bin_cnt;
        while (lo_r < hi_r) {
          const uint mid = (lo_r + hi_r) / 2u;
          if (ge64(add64(above_mass, mul64(mid, w)), target))
            hi_r = mid;
          else
            lo_r = mid + 1u;
        }
        r = lo_r;
      }
      c_n = max(r, 1u);
      b_key = kv;
      b_mass = add64(above_mass, mul64(c_n, w));
    }
    barrier();
    const uint r = c_n;
    // Ties counted in contiguous chunks, a scan, then the chunk holding the r-th walks.
    const uint chunk = (n + WG - 1u) / WG;
    const uint lo = min(n, tid * chunk), hi = min(n, lo + chunk);
    uint own = 0u;
    for (uint i = lo; i < hi; i++)
      if (!isnan(x[base + i]) && order_key(x[base + i]) == kv) own++;
    t_scan[tid] = own;
    barrier();
    for (uint o = 1u; o < WG; o <<= 1) {
      const uint add = tid >= o ? t_scan[tid - o] : 0u;
      barrier();
      t_scan[tid] += add;
      barrier();
    }
    const uint excl = t_scan[tid] - own;
    if (excl < r && r <= t_scan[tid]) {
      uint seen = excl;
      for (uint i = lo; i < hi; i++) {
        if (!isnan(x[base + i]) && order_key(x[base + i]) == kv && ++seen == r) {
          b_idx = i;
          break;
        }
      }
    }
    barrier();
  }
}
