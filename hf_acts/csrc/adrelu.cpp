// ADReLU (papers/adrelu.md, Eqs. 1-6), fused CPU forward and backward.
//
// One sample at a time, every step of tau = f(x) runs on that sample's (C, H*W) planes, which stay in
// cache: grouped 1x1 QKV conv -> per-head cosine-sigmoid attention (Eq. 2) -> depthwise conv (Eq. 3) ->
// GroupNorm (Eq. 4) -> grouped 1x1 conv (Eq. 5) -> GroupNorm (Eq. 6) -> y = max(x, tau) (Eq. 1).
// The backward recomputes the sample's forward from x and the parameters instead of storing it, so
// training saves only x. Samples (or runs of whole conv groups, heads and norm groups inside a sample: see Units) run
// in parallel (at::parallel_for); parameter gradients are summed per thread in double. Inner loops run along H*W and
// are left to the compiler's vectoriser.
// bfloat16 / float16 tensors are read and written in their dtype; each sample is converted to float in a per-thread
// buffer (in cache), so no whole tensor makes a float32 round trip.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <type_traits>
#include <vector>

#include "vec_math.h"

namespace {

using hf_acts::compute_t;
using hf_acts::sigmoid_;

struct Shape {
  int64_t C, H, W, P, G, Cg, dk, NG, KH, KW;
  double eps, eps1, eps2;
};

template <typename T>
struct Weights {
  const T *qkv, *dw, *g1w, *g1b, *proj, *g2w, *g2b;
};

// Q, K and V rows of channel c inside the grouped QKV output (group-major, Q|K|V within a group).
inline int64_t qrow(const Shape& s, int64_t c) { return (c / s.Cg) * 3 * s.Cg + c % s.Cg; }

// The target's vector register width in floats (what the loops below are vectorised to).
#if defined(__AVX512F__)
constexpr int64_t kVec = 16;
#elif defined(__AVX__)
constexpr int64_t kVec = 8;
#else
constexpr int64_t kVec = 4;
#endif

// out[o] = (accumulate ? out[o] : bias[o] or 0) + sum_i w[o, i] in[i] for rows of length P. Micro-kernel: kRows
// output rows x kLanes positions (two vector registers per row) accumulate in registers while the input rows stream
// through once: 12 independent sums keep both FMA pipes busy through the FMA latency, and with the two loaded input
// registers and the broadcast weight they fit AVX2's 16 registers. One thread of a Zen 3 VM, GFLOP/s of
// (768 x 256) x (256 x P) products, this kernel / the earlier 4 rows x 16 positions with a scalar loop for the last
// positions / MKL's sgemm: P = 192 63 / 40 / -, P = 196 58 / 25 / 66; (1536 x 512) x (512 x 49) 50 / 14 / 47.
constexpr int64_t kRows = 6, kLanes = 2 * kVec;

// One vector register of T (GCC / Clang vector extension), and its unaligned load and store. The micro-kernel keeps
// its sums in these, its loops over rows unrolled, so that they live in registers: written as arrays of T under
// `omp simd`, GCC 12 kept them on the stack and copied them out in 16-byte moves, which at 4 inputs per conv group
// (ResNet-32's 16 channels) took about as long as the products (this kernel against that one, same process, five
// shapes, four runs: 0.90-0.97 of its forward time, 0.92-1.05 of its backward).
template <typename T>
struct Reg {
  typedef T type __attribute__((vector_size(kVec * sizeof(T))));
};
template <typename T>
using reg_t = typename Reg<T>::type;

// (by reference: a vector passed or returned by value wider than the target's registers, float64's on AVX2, would
// draw GCC's ABI warning)
template <typename T>
inline void load_reg(reg_t<T>& v, const T* p) {
  __builtin_memcpy(&v, p, sizeof v);
}

template <typename T>
inline void store_reg(T* p, const reg_t<T>& v) {
  __builtin_memcpy(p, &v, sizeof v);
}

// R <= kRows rows of out (row stride ldo) over kLanes positions of the input rows (row stride ldi).
template <int64_t R, typename T>
inline void matmul_block(T* out, int64_t ldo, const T* w, int64_t n_in, const T* in, int64_t ldi, bool accumulate,
                         const T* bias) {
  using V = reg_t<T>;
  V lo[R], hi[R];
#pragma GCC unroll 16
  for (int64_t r = 0; r < R; ++r) {
    if (accumulate) {
      load_reg(lo[r], out + r * ldo), load_reg(hi[r], out + r * ldo + kVec);
    } else {
      lo[r] = hi[r] = V{} + (bias ? bias[r] : T(0));
    }
  }
  for (int64_t i = 0; i < n_in; ++i) {
    V a, b;
    load_reg(a, in + i * ldi), load_reg(b, in + i * ldi + kVec);
#pragma GCC unroll 16
    for (int64_t r = 0; r < R; ++r) {
      const T wi = w[r * n_in + i];
      lo[r] += wi * a, hi[r] += wi * b;
    }
  }
#pragma GCC unroll 16
  for (int64_t r = 0; r < R; ++r) store_reg(out + r * ldo, lo[r]), store_reg(out + r * ldo + kVec, hi[r]);
}

// All n_out rows over one strip of kLanes positions: blocks of kRows rows, then one block of the rows left.
template <int64_t R = kRows, typename T>
void matmul_strip(T* out, int64_t ldo, const T* w, int64_t n_out, int64_t n_in, const T* in, int64_t ldi,
                  bool accumulate, const T* bias) {
  int64_t o = 0;
  if constexpr (R == kRows)
    for (; o + kRows <= n_out; o += kRows)
      matmul_block<kRows>(out + o * ldo, ldo, w + o * n_in, n_in, in, ldi, accumulate, bias ? bias + o : nullptr);
  if (n_out - o == R)
    matmul_block<R>(out + o * ldo, ldo, w + o * n_in, n_in, in, ldi, accumulate, bias ? bias + o : nullptr);
  else if constexpr (R > 1)
    matmul_strip<R - 1>(out + o * ldo, ldo, w + o * n_in, n_out - o, n_in, in, ldi, accumulate,
                        bias ? bias + o : nullptr);
}

template <typename T>
void matmul_rows(T* out, const T* w, const T* in, int64_t n_out, int64_t n_in, int64_t P, bool accumulate,
                 const T* bias = nullptr) {
  const int64_t P_main = P / kLanes * kLanes, tail = P - P_main;
  for (int64_t p0 = 0; p0 < P_main; p0 += kLanes)
    matmul_strip(out + p0, P, w, n_out, n_in, in + p0, P, accumulate, bias);
  if (tail == 0) return;
  // The last positions (fewer than kLanes) run through the same micro-kernel on zero-padded copies of their
  // columns (a scalar loop over the last 4 of 196 positions took as long as the first 192).
  thread_local std::vector<T> pad;
  pad.assign((n_in + n_out) * kLanes, T(0));
  T *pin = pad.data(), *pout = pin + n_in * kLanes;
  for (int64_t i = 0; i < n_in; ++i) std::copy_n(in + i * P + P_main, tail, pin + i * kLanes);
  if (accumulate)
    for (int64_t o = 0; o < n_out; ++o) std::copy_n(out + o * P + P_main, tail, pout + o * kLanes);
  matmul_strip(pout, kLanes, w, n_out, n_in, pin, kLanes, accumulate, bias);
  for (int64_t o = 0; o < n_out; ++o) std::copy_n(pout + o * kLanes, tail, out + o * P + P_main);
}

// grad_w[o, i] += sum_p a[o, p] b[i, p]. Micro-kernel: a kGradRows x kGradCols block of grad_w in one vector register
// per entry (kGradLanes floats: the target's register width), added lane by lane into `lanes` ((n_out * n_in,
// kGradLanes); the caller sums them: once per thread by flush_lanes, per unit for the proj conv), no horizontal sums.
// The block leaves registers for the rows it loads: 8 accumulators + 6 loaded rows of AVX2's 16, 16 + 8 of AVX-512's
// 32. (A 4 x 4 block of 16 floats, 32 AVX2 registers, kept its sums on the stack: a load and a store beside every FMA;
// a 6 x 2 block, 12 sums and 8 loaded rows, ran at 0.7-0.8x of the 4 x 2 block's speed at CIFAR's sizes.)
constexpr int64_t kGradRows = 4, kGradLanes = kVec, kGradCols = kVec == 16 ? 4 : 2;

template <typename T>
void matmul_rows_grad(double* grad_w, T* lanes, const T* a, const T* b, int64_t n_out, int64_t n_in, int64_t P) {
  constexpr int64_t L = kGradLanes, Cb = kGradCols;
  const int64_t P_main = P / L * L, o_main = n_out / kGradRows * kGradRows, i_main = n_in / Cb * Cb;
  for (int64_t o0 = 0; o0 < o_main; o0 += kGradRows)
    for (int64_t i0 = 0; i0 < i_main; i0 += Cb) {
      T acc[kGradRows][Cb][L] = {};
      for (int64_t p0 = 0; p0 < P_main; p0 += L)
        for (int64_t r = 0; r < kGradRows; ++r)
          for (int64_t t = 0; t < Cb; ++t) {
            const T *ar = a + (o0 + r) * P + p0, *bt = b + (i0 + t) * P + p0;
#pragma omp simd
            for (int64_t q = 0; q < L; ++q) acc[r][t][q] += ar[q] * bt[q];
          }
      for (int64_t r = 0; r < kGradRows; ++r)
        for (int64_t t = 0; t < Cb; ++t) {
          T* lane = lanes + ((o0 + r) * n_in + i0 + t) * L;
#pragma omp simd
          for (int64_t q = 0; q < L; ++q) lane[q] += acc[r][t][q];
          T sum = 0;
          for (int64_t p = P_main; p < P; ++p) sum += a[(o0 + r) * P + p] * b[(i0 + t) * P + p];
          grad_w[(o0 + r) * n_in + i0 + t] += sum;
        }
    }
  for (int64_t o = 0; o < n_out; ++o)  // entries outside the blocks
    for (int64_t i = (o < o_main ? i_main : 0); i < n_in; ++i) {
      const T *ar = a + o * P, *bi = b + i * P;
      T sum = 0;
#pragma omp simd reduction(+ : sum)
      for (int64_t p = 0; p < P; ++p) sum += ar[p] * bi[p];
      grad_w[o * n_in + i] += sum;
    }
}

// The same sums for short rows (few positions: the lanes' flush and the blocks' set-up cost about as much as the
// products): b transposed into bt (P x ni, ni = n_in rounded up to kLanes, zero beyond n_in) makes them a product
// matmul_rows computes, out = a bt with a as its weights, kLanes entries of a grad_w row wide in registers over all P;
// each sum is complete (added to grad_w directly, no lanes).
// Backward time against the lanes alone (2-core Zen 3 VM, same process): 8 x 8 maps 0.84-0.93 (16, 32 channels per
// group), 10 x 10 0.97, 12 x 12 1.08, 16 x 16 1.16-1.42 (with the 6-row matmul_rows, at every P: 16 x 16 1.36 at 8
// channels per group, 64 x 64 1.06 at 16). At most half of the padded entries are zero (n_in >= kLanes / 2).
inline bool short_rows(int64_t P, int64_t n_in) { return P <= 100 && n_in >= kLanes / 2; }

template <typename T>
void matmul_rows_grad_short(double* grad_w, std::vector<T>& scratch, const T* a, const T* b, int64_t n_out,
                            int64_t n_in, int64_t P) {
  const int64_t ni = (n_in + kLanes - 1) / kLanes * kLanes;
  scratch.resize((P + n_out) * ni);
  T *bt = scratch.data(), *out = bt + P * ni;
  for (int64_t i = 0; i < ni; ++i)
    for (int64_t p = 0; p < P; ++p) bt[p * ni + i] = i < n_in ? b[i * P + p] : T(0);
  matmul_rows(out, a, bt, n_out, P, ni, false);
  for (int64_t o = 0; o < n_out; ++o)
    for (int64_t i = 0; i < n_in; ++i) grad_w[o * n_in + i] += out[o * ni + i];
}

template <typename T>
void flush_lanes(double* grad_w, std::vector<T>& lanes) {
  for (size_t k = 0; k < lanes.size() / kGradLanes; ++k)
    for (int64_t q = 0; q < kGradLanes; ++q) grad_w[k] += lanes[k * kGradLanes + q];
  std::fill(lanes.begin(), lanes.end(), T(0));
}

// A grouped 1x1 conv on one sample: out[(j, o)] = sum_i w[(j, o), i] in[(j, i)] per group j.
template <typename T>
void grouped_matmul(T* out, const T* w, const T* in, int64_t groups, int64_t opg, int64_t ipg, int64_t P) {
  for (int64_t j = 0; j < groups; ++j)
    matmul_rows(out + j * opg * P, w + j * opg * ipg, in + j * ipg * P, opg, ipg, P, false);
}

// Its backward: grad_in (+)= w^T grad_out (w_t: w transposed per group), grad_w += grad_out in^T.
template <typename T>
void grouped_matmul_backward(T* grad_in, double* grad_w, T* lanes, std::vector<T>& scratch, const T* w_t,
                             const T* grad_out, const T* in, int64_t groups, int64_t opg, int64_t ipg, int64_t P,
                             bool accumulate) {
  for (int64_t j = 0; j < groups; ++j) {
    matmul_rows(grad_in + j * ipg * P, w_t + j * opg * ipg, grad_out + j * opg * P, ipg, opg, P, accumulate);
    if (short_rows(P, ipg))
      matmul_rows_grad_short(grad_w + j * opg * ipg, scratch, grad_out + j * opg * P, in + j * ipg * P, opg, ipg, P);
    else
      matmul_rows_grad(grad_w + j * opg * ipg, lanes + j * opg * ipg * kGradLanes, grad_out + j * opg * P,
                       in + j * ipg * P, opg, ipg, P);
  }
}

// w (groups * opg, ipg) -> per group transposed (groups * ipg, opg)
template <typename T>
std::vector<T> transpose_groups(const T* w, int64_t groups, int64_t opg, int64_t ipg) {
  std::vector<T> t(groups * opg * ipg);
  for (int64_t j = 0; j < groups; ++j)
    for (int64_t o = 0; o < opg; ++o)
      for (int64_t i = 0; i < ipg; ++i) t[j * opg * ipg + i * opg + o] = w[j * opg * ipg + o * ipg + i];
  return t;
}

// The taps of a KHxKW depthwise conv with zero "same" padding, on flattened H*W planes: fn(off, mask, tap, p0, p1)
// for out[p] += k[tap] * in[p + off] * mask[p], p in [p0, p1). The range handles the rows outside the image,
// mask (one row of `masks` per horizontal shift, 1 where the shifted column is inside) the columns.
template <typename T, typename F>
void dw_taps(const Shape& s, const T* masks, F fn) {
  for (int64_t ky = 0; ky < s.KH; ++ky)
    for (int64_t kx = 0; kx < s.KW; ++kx) {
      const int64_t off = (ky - s.KH / 2) * s.W + (kx - s.KW / 2);
      fn(off, masks + kx * s.P, ky * s.KW + kx, std::max<int64_t>(0, -off), std::min(s.P, s.P - off));
    }
}

template <typename T>
std::vector<T> column_masks(const Shape& s) {
  std::vector<T> m(s.KW * s.P);
  for (int64_t kx = 0; kx < s.KW; ++kx)
    for (int64_t p = 0; p < s.P; ++p) {
      const int64_t col = p % s.W + kx - s.KW / 2;
      m[kx * s.P + p] = (col >= 0 && col < s.W) ? T(1) : T(0);
    }
  return m;
}

// The depthwise conv (Eq. 3) reads each channel from a per-channel buffer that its caller fills row by row, so that
// the conv's input (the attention output A, the gradient of Z) is made in cache and never written as a plane. For a 3x3
// kernel the buffer is a zero-padded copy ((H + 2) x (W + 2), borders written once per buffer), so that all nine taps
// of an output are summed in registers and written once, with no column masks and no edge cases; other kernel sizes
// use an unpadded buffer and go tap by tap over the flattened plane (one read-modify-write pass per tap).
inline bool is_3x3(const Shape& s) { return s.KH == 3 && s.KW == 3; }

template <typename T>
struct Padded {
  int64_t W, Wp, x0;  // row length, buffer row length, first image column of a buffer row
  std::vector<T> a, g;  // the channel's input and (backward) its output gradient
  Padded(const Shape& s, bool backward)
      : W(s.W), Wp(is_3x3(s) ? s.W + 2 : s.W), x0(is_3x3(s) ? Wp + 1 : 0),
        a(is_3x3(s) ? (s.H + 2) * (s.W + 2) : s.P), g(backward ? a.size() : 0) {}
  // dst's image rows = u * v (elementwise, H x W planes)
  void fill_product(std::vector<T>& dst, const T* u, const T* v, int64_t H) const {
    for (int64_t y = 0; y < H; ++y) {
      T* d = dst.data() + x0 + y * Wp;
      const T *uy = u + y * W, *vy = v + y * W;
#pragma omp simd
      for (int64_t x = 0; x < W; ++x) d[x] = uy[x] * vy[x];
    }
  }
  // dst's image rows = a u - b v + c
  void fill_affine(std::vector<T>& dst, const T* u, const T* v, T a, T b, T c, int64_t H) const {
    for (int64_t y = 0; y < H; ++y) {
      T* d = dst.data() + x0 + y * Wp;
      const T *uy = u + y * W, *vy = v + y * W;
#pragma omp simd
      for (int64_t x = 0; x < W; ++x) d[x] = a * uy[x] - b * vy[x] + c;
    }
  }
  // out[y, x] = sum_(ky, kx) k[ky, kx] src_pad[y + ky, x + kx] over the H image rows, from a padded plane
  void conv(T* out, const T* src_pad, const T* k, int64_t H) const {
    const T k0 = k[0], k1 = k[1], k2 = k[2], k3 = k[3], k4 = k[4], k5 = k[5], k6 = k[6], k7 = k[7], k8 = k[8];
    for (int64_t y = 0; y < H; ++y) {
      const T *r0 = src_pad + y * Wp, *r1 = r0 + Wp, *r2 = r1 + Wp;
      T* oy = out + y * W;
#pragma omp simd
      for (int64_t x = 0; x < W; ++x)
        oy[x] = k0 * r0[x] + k1 * r0[x + 1] + k2 * r0[x + 2] + k3 * r1[x] + k4 * r1[x + 1] + k5 * r1[x + 2] +
                k6 * r2[x] + k7 * r2[x + 1] + k8 * r2[x + 2];
    }
  }
};

// sum and sum of squares of n values, in double (the GroupNorm statistics' parts)
template <typename T>
void sums(const T* in, int64_t n, double* sum, double* sq) {
  double s = 0, q = 0;
#pragma omp simd reduction(+ : s, q)
  for (int64_t i = 0; i < n; ++i) {
    s += in[i];
    q += double(in[i]) * in[i];
  }
  *sum = s, *sq = q;
}

// Depthwise conv of channel c's input, which fill(c) has just written into pad.a; out_c's sums into sum[c], sq[c].
template <typename T, typename Fill>
void dw_forward(const Shape& s, T* out, const T* k, const T* masks, Padded<T>& pad, double* sum, double* sq,
                Fill fill) {
  for (int64_t c = 0; c < s.C; ++c) {
    T* z = out + c * s.P;
    const T* kc = k + c * s.KH * s.KW;
    fill(c);
    if (is_3x3(s)) {
      pad.conv(z, pad.a.data(), kc, s.H);
    } else {
      std::fill(z, z + s.P, T(0));
      dw_taps(s, masks, [&](int64_t off, const T* m, int64_t tap, int64_t p0, int64_t p1) {
        const T kt = kc[tap];
        T* zl = z;  // local copies: through the captured references GCC 12 vectorises these loops poorly
        const T* al = pad.a.data() + off;
#pragma omp simd
        for (int64_t p = p0; p < p1; ++p) zl[p] += kt * al[p] * m[p];
      });
    }
    sums(z, s.P, sum + c, sq + c);
  }
}

// Depthwise conv backward for channel c, whose input (pad.a) and output gradient (pad.g) fill(c) has just written:
// grad_in = transposed conv of the output gradient; grad_k += correlation of the output gradient and the input.
template <typename T, typename Fill>
void dw_backward(const Shape& s, T* grad_in, double* grad_k, const T* k, const T* masks, Padded<T>& pad, Fill fill) {
  for (int64_t c = 0; c < s.C; ++c) {
    T* gi = grad_in + c * s.P;
    const T* kc = k + c * s.KH * s.KW;
    double* gk = grad_k + c * s.KH * s.KW;
    fill(c);
    const T *pa = pad.a.data(), *pg = pad.g.data();
    if (is_3x3(s)) {
      const int64_t W = s.W, Wp = pad.Wp;
      // grad_k[ky, kx] = sum_(y, x) go[y, x] a_pad[y + ky, x + kx]: over the padded plane's image rows, whose zero
      // border columns of pg add nothing (first to last image element: every read stays inside the buffer)
      T s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0, s8 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3, s4, s5, s6, s7, s8)
      for (int64_t i = Wp + 1; i < s.H * Wp + W + 1; ++i) {
        const T g = pg[i];
        s0 += g * pa[i - Wp - 1];
        s1 += g * pa[i - Wp];
        s2 += g * pa[i - Wp + 1];
        s3 += g * pa[i - 1];
        s4 += g * pa[i];
        s5 += g * pa[i + 1];
        s6 += g * pa[i + Wp - 1];
        s7 += g * pa[i + Wp];
        s8 += g * pa[i + Wp + 1];
      }
      gk[0] += s0, gk[1] += s1, gk[2] += s2, gk[3] += s3, gk[4] += s4, gk[5] += s5, gk[6] += s6, gk[7] += s7,
          gk[8] += s8;
      // grad_in[y, x] = sum_(ky, kx) k[ky, kx] go_pad[y + 2 - ky, x + 2 - kx]: the same conv with the kernel flipped
      const T flipped[9] = {kc[8], kc[7], kc[6], kc[5], kc[4], kc[3], kc[2], kc[1], kc[0]};
      pad.conv(gi, pg, flipped, s.H);
      continue;
    }
    std::fill(gi, gi + s.P, T(0));
    dw_taps(s, masks, [&](int64_t off, const T* m, int64_t tap, int64_t p0, int64_t p1) {
      const T kt = kc[tap];
      const T* gol = pg;  // local copies, as in dw_forward
      const T* al = pa + off;
      T* gil = gi + off;
      T acc = 0;
#pragma omp simd reduction(+ : acc)
      for (int64_t p = p0; p < p1; ++p) {
        const T g = gol[p] * m[p];
        gil[p] += kt * g;
        acc += g * al[p];
      }
      gk[tap] += acc;
    });
  }
}

// GroupNorm statistics (biased variance, as torch) of `groups` groups of consecutive channels, from the channels'
// sums (sums()) over their P positions.
inline void gn_stats(const double* sum, const double* sq, int64_t C, int64_t P, int64_t groups, double eps,
                     double* mean, double* rstd) {
  const int64_t cpg = C / groups;
  const double n = double(cpg * P);
  for (int64_t j = 0; j < groups; ++j) {
    double s = 0, q = 0;
    for (int64_t c = j * cpg; c < (j + 1) * cpg; ++c) s += sum[c], q += sq[c];
    mean[j] = s / n;
    rstd[j] = 1.0 / std::sqrt(std::max(q / n - mean[j] * mean[j], 0.0) + eps);
  }
}

// GroupNorm of channel c (in groups of cpg channels) as the affine map a x + b (Eqs. 4, 6).
template <typename T>
struct Affine {
  T a, b;
};

template <typename T>
Affine<T> gn_affine(int64_t c, int64_t cpg, const double* mean, const double* rstd, const T* gamma, const T* beta) {
  return {T(rstd[c / cpg] * gamma[c]), T(beta[c] - mean[c / cpg] * rstd[c / cpg] * gamma[c])};
}

// GroupNorm backward as a map per channel, grad_in = a grad_out - b in + d, from the channels' sums
// sg = sum_p grad_out, sgx = sum_p grad_out in; accumulates the gamma / beta gradients.
template <typename T>
struct NormGrad {
  T a, b, d;
};

template <typename T>
void gn_backward(NormGrad<T>* out, double* grad_gamma, double* grad_beta, const double* sg, const double* sgx,
                 int64_t C, int64_t P, int64_t groups, const double* mean, const double* rstd, const T* gamma) {
  const int64_t cpg = C / groups;
  const double n = double(cpg * P);
  for (int64_t j = 0; j < groups; ++j) {
    double sum_gxhat = 0, sum_gxhat_xhat = 0;
    for (int64_t c = j * cpg; c < (j + 1) * cpg; ++c) {
      const double gx_hat = (sgx[c] - mean[j] * sg[c]) * rstd[j];  // sum_p g * xhat
      grad_beta[c] += sg[c];
      grad_gamma[c] += gx_hat;
      sum_gxhat += gamma[c] * sg[c];
      sum_gxhat_xhat += gamma[c] * gx_hat;
    }
    // grad_in = rstd * (gamma g - mean(gamma g) - xhat * mean(gamma g xhat))
    const double m1 = sum_gxhat / n, m2 = sum_gxhat_xhat / n;
    for (int64_t c = j * cpg; c < (j + 1) * cpg; ++c)
      out[c] = {T(rstd[j] * gamma[c]), T(rstd[j] * m2 * rstd[j]), T(-rstd[j] * m1 + rstd[j] * m2 * rstd[j] * mean[j])};
  }
}

// Per-thread buffers for one sample. The planes: qkv (3 C x P); Z (Eq. 3's output) and T (Eq. 5's); in the
// backward, the gradient of Eq. 4's output (Zh) and, once Z, T and it are spent, the gradients of Q, K and V (g_qkv,
// over the three), and `grad`: the gradient of tau, then of A. Zh, A and tau are never written: Eq. 4 is folded into
// Eq. 5's weights, A is made channel by channel inside the depthwise conv, and Eq. 6 is applied inside the max of
// Eq. 1. The planes share one allocation, each starting 128 bytes further past a 4 KiB boundary than the one
// before: at H*W = 1024 (CIFAR's 32 x 32) rows of different planes would otherwise start at the same offset modulo
// 4 KiB, where the CPU's check of loads against earlier stores, which compares the low 12 address bits, stalls loads
// behind unrelated stores (4K aliasing; the attention backward took 14% of the backward at 32 x 32, 8% at 32 x 33).
template <typename T>
struct Buffers {
  static constexpr int64_t kPage = 4096 / sizeof(T), kStep = 128 / sizeof(T);
  int64_t n, row;  // plane size; stride of tmp's three rows
  std::vector<T> mem, masks, a1, b1, proj_s, proj_b, scratch;
  T *qkv, *Z, *Tt, *g_zh, *g_qkv, *grad, *score, *ratio, *qn, *kn, *tmp;
  std::vector<double> zsum, zsq, tsum, tsq, sg, sgx, mean1, rstd1, mean2, rstd2;
  std::vector<NormGrad<T>> ng;
  Padded<T> pad;
  Buffers(const Shape& s, bool backward = false)
      : n(s.C * s.P), row(s.P + kStep), masks(is_3x3(s) ? std::vector<T>() : column_masks<T>(s)), a1(s.C), b1(s.C),
        proj_s(s.C * s.Cg), proj_b(s.C), zsum(s.C), zsq(s.C), tsum(s.C), tsq(s.C), sg(s.C), sgx(s.C),
        mean1(s.NG), rstd1(s.NG), mean2(s.G), rstd2(s.G), ng(s.C), pad(s, backward) {
    const int64_t heads = s.C / s.dk * s.P;
    // sizes; Z, T and the gradient of Zh are one region (g_qkv covers it): n + kStep apart
    const int64_t size[] = {3 * n, (backward ? 3 : 2) * (n + kStep), backward ? n : 0, heads, heads, heads, heads,
                            3 * row};
    int64_t total = kPage;
    for (int64_t k : size) total += (k + kPage) / kPage * kPage + kPage;
    mem.resize(total);
    T* next = mem.data() + (kPage - reinterpret_cast<uintptr_t>(mem.data()) / sizeof(T) % kPage) % kPage;
    T** planes[] = {&qkv, &Z, &grad, &score, &ratio, &qn, &kn, &tmp};
    for (int k = 0; k < 8; ++k) {
      *planes[k] = next + k * kStep;
      next += (size[k] + k * kStep + kPage) / kPage * kPage;
    }
    Tt = Z + n + kStep, g_zh = Tt + n + kStep, g_qkv = Z;
  }
};

// Eqs. 2-5 and Eq. 6's statistics for one sample: T (Eq. 6's input) in b.Tt, its statistics in b.mean2, b.rstd2;
// every intermediate the backward needs stays in `b`.
template <typename T>
void pre_norm(const Shape& s, const Weights<T>& w, const T* x, Buffers<T>& b) {
  const int64_t P = s.P;
  grouped_matmul(b.qkv, w.qkv, x, s.G, 3 * s.Cg, s.Cg, P);
  const T eps = T(s.eps);
  for (int64_t h = 0; h < s.C / s.dk; ++h) {  // Eq. 2's score, one head at a time
    T *qk = b.tmp, *qq = qk + b.row, *kk = qq + b.row;
    for (int64_t c = h * s.dk; c < (h + 1) * s.dk; ++c) {  // the head's first channel starts the sums
      const T* q = b.qkv + qrow(s, c) * P;
      const T* k = q + s.Cg * P;
      const bool first = c == h * s.dk;
      for (int64_t p = 0; p < P; ++p) {
        qk[p] = (first ? T(0) : qk[p]) + q[p] * k[p];
        qq[p] = (first ? T(0) : qq[p]) + q[p] * q[p];
        kk[p] = (first ? T(0) : kk[p]) + k[p] * k[p];
      }
    }
    T *score = b.score + h * P, *ratio = b.ratio + h * P;
    T *qn = b.qn + h * P, *kn = b.kn + h * P;
#pragma omp simd
    for (int64_t p = 0; p < P; ++p) {
      qn[p] = std::sqrt(qq[p]);
      kn[p] = std::sqrt(kk[p]);
      ratio[p] = qk[p] / ((qn[p] + eps) * (kn[p] + eps));
      score[p] = sigmoid_(ratio[p]);
    }
  }
  // Eq. 3 on A = score * V (Eq. 2), made channel by channel
  dw_forward(s, b.Z, w.dw, b.masks.data(), b.pad, b.zsum.data(), b.zsq.data(), [&](int64_t c) {
    b.pad.fill_product(b.pad.a, b.score + c / s.dk * P, b.qkv + (qrow(s, c) + 2 * s.Cg) * P, s.H);
  });
  gn_stats(b.zsum.data(), b.zsq.data(), s.C, P, s.NG, s.eps1, b.mean1.data(), b.rstd1.data());  // Eq. 4
  // Eq. 5 of Eq. 4's output a1 Z + b1: T = (W diag(a1)) Z + W b1 per conv group
  for (int64_t c = 0; c < s.C; ++c) {
    const auto [a, bb] = gn_affine(c, s.C / s.NG, b.mean1.data(), b.rstd1.data(), w.g1w, w.g1b);
    b.a1[c] = a, b.b1[c] = bb;
  }
  for (int64_t o = 0; o < s.C; ++o) {
    const int64_t i0 = o / s.Cg * s.Cg;  // the group's first input channel
    double bias = 0;
    for (int64_t i = 0; i < s.Cg; ++i) {
      b.proj_s[o * s.Cg + i] = w.proj[o * s.Cg + i] * b.a1[i0 + i];
      bias += double(w.proj[o * s.Cg + i]) * b.b1[i0 + i];
    }
    b.proj_b[o] = T(bias);
  }
  for (int64_t j = 0; j < s.G; ++j) {
    const int64_t o = j * s.Cg;
    matmul_rows(b.Tt + o * P, b.proj_s.data() + o * s.Cg, b.Z + o * P, s.Cg, s.Cg, P, false, b.proj_b.data() + o);
    for (int64_t c = o; c < o + s.Cg; ++c) sums(b.Tt + c * P, P, &b.tsum[c], &b.tsq[c]);  // in cache
  }
  gn_stats(b.tsum.data(), b.tsq.data(), s.C, P, s.G, s.eps2, b.mean2.data(), b.rstd2.data());  // Eq. 6
}

// Gradients of one sample (or unit, see Units): grad_x into gx; parameter gradients added to grads[0..6] (the params'
// order), the QKV conv's through its lanes (flush_lanes). The proj conv's weight gradient, sum_p g_T Zh^T with
// Zh = a1 Z + b1 (Eq. 4), is a1 (sum_p g_T Z^T) + b1 (sum_p g_T): the sample's sums go through proj_sum and
// proj_lanes (zero on entry, left zero).
template <typename T>
void sample_backward(const Shape& s, const Weights<T>& w, const T* qkv_t, const T* proj_t, const T* xb, const T* gy,
                     T* gx, double* const* grads, T* lanes_qkv, double* proj_sum, std::vector<T>& proj_lanes,
                     Buffers<T>& buf) {
  const int64_t P = s.P;
  double *g_qkv = grads[0], *g_dw = grads[1], *g_g1w = grads[2], *g_g1b = grads[3], *g_proj = grads[4],
         *g_g2w = grads[5], *g_g2b = grads[6];
  pre_norm(s, w, xb, buf);
  T *Z = buf.Z, *Tt = buf.Tt, *g_zh = buf.g_zh, *g_tau = buf.grad;
  // Eq. 1: the gradient goes to x where x > tau, else to tau = a T + b (Eq. 6, never written); with the sums of
  // Eq. 6's backward
  for (int64_t c = 0; c < s.C; ++c) {
    const auto [a, b] = gn_affine(c, s.C / s.G, buf.mean2.data(), buf.rstd2.data(), w.g2w, w.g2b);
    const int64_t o = c * P;
    const T *xc = xb + o, *gc = gy + o, *tc = Tt + o;
    T *gxc = gx + o, *gtc = g_tau + o;
    double sg = 0, sgx = 0;
#pragma omp simd reduction(+ : sg, sgx)
    for (int64_t p = 0; p < P; ++p) {
      const bool above = xc[p] > a * tc[p] + b;
      const T gt = above ? T(0) : gc[p];
      gxc[p] = above ? gc[p] : T(0);
      gtc[p] = gt;
      sg += gt;
      sgx += double(gt) * tc[p];
    }
    buf.sg[c] = sg, buf.sgx[c] = sgx;
  }
  gn_backward(buf.ng.data(), g_g2w, g_g2b, buf.sg.data(), buf.sgx.data(), s.C, P, s.G, buf.mean2.data(),
              buf.rstd2.data(), w.g2w);
  for (int64_t c = 0; c < s.C; ++c) {  // the gradient of T overwrites T
    const auto [a, b, d] = buf.ng[c];
    T *tc = Tt + c * P;
    const T* gtc = g_tau + c * P;
#pragma omp simd
    for (int64_t p = 0; p < P; ++p) tc[p] = a * gtc[p] - b * tc[p] + d;
    buf.sg[c] = a * buf.sg[c] - b * buf.tsum[c] + double(P) * d;  // sum_p g_T, from the sums already at hand
  }
  // Eq. 5: gradient of Zh = W^T g_T; the weight gradient through Z, scaled at the flush
  grouped_matmul_backward(g_zh, proj_sum, proj_lanes.data(), buf.scratch, proj_t, Tt, Z, s.G, s.Cg, s.Cg, P, false);
  const bool lanes_used = !short_rows(P, s.Cg);
  for (int64_t o = 0; o < s.C; ++o) {
    const int64_t i0 = o / s.Cg * s.Cg;
    for (int64_t i = 0; i < s.Cg; ++i) {
      const int64_t e = o * s.Cg + i;
      double sum = proj_sum[e];
      if (lanes_used)
        for (int64_t q = 0; q < kGradLanes; ++q) sum += proj_lanes[e * kGradLanes + q];
      g_proj[e] += buf.a1[i0 + i] * sum + buf.b1[i0 + i] * buf.sg[o];
      proj_sum[e] = 0;
    }
  }
  if (lanes_used) std::fill(proj_lanes.begin(), proj_lanes.end(), T(0));
  // Eq. 4's backward sums
  for (int64_t c = 0; c < s.C; ++c) {
    const T *gc = g_zh + c * P, *zc = Z + c * P;
    double sg = 0, sgx = 0;
#pragma omp simd reduction(+ : sg, sgx)
    for (int64_t p = 0; p < P; ++p) {
      sg += gc[p];
      sgx += double(gc[p]) * zc[p];
    }
    buf.sg[c] = sg, buf.sgx[c] = sgx;
  }
  gn_backward(buf.ng.data(), g_g1w, g_g1b, buf.sg.data(), buf.sgx.data(), s.C, P, s.NG, buf.mean1.data(),
              buf.rstd1.data(), w.g1w);
  // Eq. 3: the gradient of A (into buf.grad) from the gradient of Z (Eq. 4's backward, made channel by channel) and A
  T* g_a = buf.grad;
  dw_backward(s, g_a, g_dw, w.dw, buf.masks.data(), buf.pad, [&](int64_t c) {
    const auto [a, b, d] = buf.ng[c];
    buf.pad.fill_affine(buf.pad.g, g_zh + c * P, Z + c * P, a, b, d, s.H);
    buf.pad.fill_product(buf.pad.a, buf.score + c / s.dk * P, buf.qkv + (qrow(s, c) + 2 * s.Cg) * P,
                         s.H);
  });
  // Eq. 2: grad of A -> grads of Q, K, V (over Z, T and the gradient of Zh, which are spent)
  T* g_qkvb = buf.g_qkv;
  const T eps_t = T(s.eps);
  for (int64_t h = 0; h < s.C / s.dk; ++h) {
    T *g_score = buf.tmp, *coef_q = g_score + buf.row, *coef_k = coef_q + buf.row;
    for (int64_t c = h * s.dk; c < (h + 1) * s.dk; ++c) {  // the head's first channel starts the sum
      const T* v = buf.qkv + (qrow(s, c) + 2 * s.Cg) * P;
      const T* ga = g_a + c * P;
      const bool first = c == h * s.dk;
      for (int64_t p = 0; p < P; ++p) g_score[p] = (first ? T(0) : g_score[p]) + ga[p] * v[p];
    }
    const T *score = buf.score + h * P, *ratio = buf.ratio + h * P;
    const T *qn = buf.qn + h * P, *kn = buf.kn + h * P;
    // r = qk / ((|q| + eps)(|k| + eps)): dr/dq = k / den - r q / (|q| (|q| + eps)), same for k
#pragma omp simd
    for (int64_t p = 0; p < P; ++p) {
      const T den = (qn[p] + eps_t) * (kn[p] + eps_t);
      const T g_r = g_score[p] * score[p] * (T(1) - score[p]);
      const T r = ratio[p];
      g_score[p] = g_r / den;  // coefficient of the other vector
      coef_q[p] = qn[p] > 0 ? -g_r * r / (qn[p] * (qn[p] + eps_t)) : T(0);
      coef_k[p] = kn[p] > 0 ? -g_r * r / (kn[p] * (kn[p] + eps_t)) : T(0);
    }
    for (int64_t c = h * s.dk; c < (h + 1) * s.dk; ++c) {
      const int64_t rq = qrow(s, c);
      const T *q = buf.qkv + rq * P, *k = q + s.Cg * P;
      const T* ga = g_a + c * P;
      T *gq = g_qkvb + rq * P, *gk = gq + s.Cg * P, *gv = gk + s.Cg * P;
#pragma omp simd
      for (int64_t p = 0; p < P; ++p) {
        gq[p] = g_score[p] * k[p] + coef_q[p] * q[p];
        gk[p] = g_score[p] * q[p] + coef_k[p] * k[p];
        gv[p] = score[p] * ga[p];
      }
    }
  }
  grouped_matmul_backward(gx, g_qkv, lanes_qkv, buf.scratch, qkv_t, g_qkvb, xb, s.G, 3 * s.Cg, s.Cg, P, true);
}

Shape make_shape(const at::Tensor& x, const at::Tensor& dw, int64_t groups, int64_t head_dim, int64_t norm_groups,
                 double eps, double eps1, double eps2) {
  TORCH_CHECK(x.dim() == 4 && x.is_contiguous() && x.device().is_cpu(), "adrelu: x must be a contiguous CPU NCHW tensor");
  Shape s{x.size(1), x.size(2), x.size(3), x.size(2) * x.size(3), groups, x.size(1) / groups, head_dim,
          norm_groups, dw.size(2), dw.size(3), eps, eps1, eps2};
  TORCH_CHECK(s.C % s.G == 0 && s.C % s.dk == 0 && s.C % s.NG == 0, "adrelu: channels not divisible");
  return s;
}

template <typename T>
Weights<T> weights(const std::vector<at::Tensor>& p) {
  return {p[0].const_data_ptr<T>(), p[1].const_data_ptr<T>(), p[2].const_data_ptr<T>(), p[3].const_data_ptr<T>(),
          p[4].const_data_ptr<T>(), p[5].const_data_ptr<T>(), p[6].const_data_ptr<T>()};
}

// Units of work: every stage of f stays inside its conv groups (Eqs. 5, 6), its attention heads (Eq. 2) and its first
// GroupNorm's groups (Eq. 4), so the smallest run of channels holding whole ones of each (their least common multiple,
// e.g. one conv group where heads and norm groups nest in it) is an ADReLU of its own: on its contiguous
// (channels, H*W) slice of the sample, with its own slices of every parameter (all stored group-major). Running such
// units rather than whole samples gives batches smaller than the thread count (batch-1 inference) parallel work, and
// each unit a working set that is a fraction of a sample's. Where the batch alone fills the threads and a sample's
// planes (counted as 12: the backward's 7 and its maps x, grad_y, grad_x, with room) fit in about an L2 cache, whole
// samples stay the units: splitting them there cost 1-5% (2-core Zen 3 VM, (128, 16, 32, 32); 5% again after the
// backward dropped from 13 planes to 7) and gained nothing at (128, 32, 16, 16) or (128, 64, 8, 8), while at
// (8, 64, 128, 128) it gained 7-14%.
struct Units {
  Shape unit;          // the shape each unit runs with
  int64_t per_sample;  // units per sample
  int64_t n;           // elements per sample
  Units(const Shape& s, int64_t batch) : unit(s), per_sample(1), n(s.C * s.P) {
    const int64_t per_norm_group = s.C / s.NG, cu = std::lcm(std::lcm(s.Cg, s.dk), per_norm_group);
    const bool wanted = batch < at::get_num_threads() || 12 * s.C * s.P * int64_t(sizeof(float)) > (int64_t(1) << 20);
    if (wanted && cu < s.C && s.C % cu == 0) {
      unit.C = cu;
      unit.G = cu / s.Cg;
      unit.NG = cu / per_norm_group;
      per_sample = s.C / cu;
    }
  }
  // element offset of unit j's slice (j-th unit of a sample) in each of the 7 parameters (the params' order)
  int64_t param(int i, int64_t j) const {
    const int64_t per_channel[7] = {3 * unit.Cg, unit.KH * unit.KW, 1, 1, unit.Cg, 1, 1};
    return j * unit.C * per_channel[i];
  }
  // where unit u (of all the batch's units) starts in the batch
  int64_t element(int64_t u) const { return u / per_sample * n + u % per_sample * unit.C * unit.P; }
};

template <typename T>
Weights<T> unit_weights(const Weights<T>& w, const Units& u, int64_t j) {
  return {w.qkv + u.param(0, j), w.dw + u.param(1, j), w.g1w + u.param(2, j), w.g1b + u.param(3, j),
          w.proj + u.param(4, j), w.g2w + u.param(5, j), w.g2b + u.param(6, j)};
}

// x: one sample's n values in the compute type: x itself, or its conversion into `buffer`.
template <typename S, typename T = compute_t<S>>
const T* in_compute_type(const S* x, int64_t n, std::vector<T>& buffer) {
  if constexpr (std::is_same_v<S, T>) {
    return x;
  } else {
    buffer.resize(n);
    hf_acts::to_float(buffer.data(), x, n);
    return buffer.data();
  }
}

// Where a sample's output of n values is computed: `out` itself, or `buffer` (in the compute type) that
// `write_back` then stores into `out`.
template <typename S, typename T = compute_t<S>>
T* out_compute_type(S* out, int64_t n, std::vector<T>& buffer) {
  if constexpr (std::is_same_v<S, T>) {
    return out;
  } else {
    buffer.resize(n);
    return buffer.data();
  }
}

template <typename S, typename T = compute_t<S>>
void write_back(S* out, const T* computed, int64_t n) {
  if constexpr (!std::is_same_v<S, T>) hf_acts::from_float(out, computed, n);
}

// Eqs. 6 and 1 in one pass: y = max(x, tau) with tau = GroupNorm(T) computed on the fly (never written), stored in
// y's dtype.
template <typename S, typename T = compute_t<S>>
void store_norm_max(S* y, const T* x, const T* t, const Shape& s, const double* mean, const double* rstd,
                    const T* gamma, const T* beta) {
  for (int64_t c = 0; c < s.C; ++c) {
    const auto [a, b] = gn_affine(c, s.C / s.G, mean, rstd, gamma, beta);
    const int64_t o = c * s.P;
#pragma omp simd
    for (int64_t p = 0; p < s.P; ++p) {
      const T tau = a * t[o + p] + b;
      hf_acts::store(y, o + p, x[o + p] > tau ? x[o + p] : tau);
    }
  }
}

// params: qkv weight (3C, C/g, 1, 1), dw weight (C, 1, KH, KW), GN1 weight, GN1 bias, proj weight (C, C/g, 1, 1),
// GN2 weight, GN2 bias; all contiguous, in the compute type (float32; float64 for float64 x).
at::Tensor adrelu_forward(const at::Tensor& x, const std::vector<at::Tensor>& params, int64_t groups,
                          int64_t head_dim, int64_t norm_groups, double eps, double eps1, double eps2) {
  const Shape s = make_shape(x, params[1], groups, head_dim, norm_groups, eps, eps1, eps2);
  at::Tensor y = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "adrelu_forward", [&] {
    using T = compute_t<scalar_t>;
    const Weights<T> w = weights<T>(params);
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    const Units units(s, x.size(0));
    const Shape& us = units.unit;
    const int64_t un = us.C * us.P, per = units.per_sample;
    at::parallel_for(0, x.size(0) * per, 1, [&](int64_t u0, int64_t u1) {
      Buffers<T> buf(us);
      std::vector<T> convert;
      for (int64_t u = u0; u < u1; ++u) {
        const int64_t off = units.element(u);
        const T* xb = in_compute_type(xp + off, un, convert);
        const Weights<T> uw = unit_weights(w, units, u % per);
        pre_norm(us, uw, xb, buf);
        store_norm_max(yp + off, xb, buf.Tt, us, buf.mean2.data(), buf.rstd2.data(), uw.g2w, uw.g2b);
      }
    });
  });
  return y;
}

// Returns grad_x followed by the gradients of `params` (same order and shapes).
std::vector<at::Tensor> adrelu_backward(const at::Tensor& grad_y, const at::Tensor& x,
                                        const std::vector<at::Tensor>& params, int64_t groups, int64_t head_dim,
                                        int64_t norm_groups, double eps, double eps1, double eps2) {
  const Shape s = make_shape(x, params[1], groups, head_dim, norm_groups, eps, eps1, eps2);
  TORCH_CHECK(grad_y.sizes() == x.sizes() && grad_y.is_contiguous(), "adrelu: grad must be contiguous like x");
  at::Tensor grad_x = at::empty_like(x);
  // per-thread sums of the parameter gradients, in double
  std::vector<int64_t> offsets{0};
  for (const auto& p : params) offsets.push_back(offsets.back() + p.numel());
  const int64_t nthreads = at::get_num_threads();
  std::vector<double> acc(nthreads * offsets.back(), 0.0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "adrelu_backward", [&] {
    using T = compute_t<scalar_t>;
    const Weights<T> w = weights<T>(params);
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* gp = grad_y.const_data_ptr<scalar_t>();
    scalar_t* gxp = grad_x.mutable_data_ptr<scalar_t>();
    const std::vector<T> qkv_t = transpose_groups(w.qkv, s.G, 3 * s.Cg, s.Cg);
    const std::vector<T> proj_t = transpose_groups(w.proj, s.G, s.Cg, s.Cg);
    const Units units(s, x.size(0));
    const Shape& us = units.unit;
    const int64_t un = us.C * us.P, per = units.per_sample;
    at::parallel_for(0, x.size(0) * per, 1, [&](int64_t u0, int64_t u1) {
      TORCH_CHECK(at::get_thread_num() < nthreads, "adrelu: unexpected thread id");
      double* g = acc.data() + at::get_thread_num() * offsets.back();
      Buffers<T> buf(us, true);
      // the QKV conv's lane sums, for every group of the parameter (units of any group add into their slice); the
      // proj conv's, one unit's (scaled per sample: see sample_backward); none where the short-row path sums
      const int64_t lanes = short_rows(us.P, s.Cg) ? 0 : kGradLanes;
      std::vector<T> lanes_qkv(3 * s.C * s.Cg * lanes), proj_lanes(us.C * us.Cg * lanes);
      std::vector<double> proj_sum(us.C * us.Cg);
      std::vector<T> convert_x, convert_g, convert_gx;
      for (int64_t u = u0; u < u1; ++u) {
        const int64_t j = u % per, off = units.element(u);
        double* grads[7];
        for (int i = 0; i < 7; ++i) grads[i] = g + offsets[i] + units.param(i, j);
        const T* xb = in_compute_type(xp + off, un, convert_x);
        const T* gb = in_compute_type(gp + off, un, convert_g);
        T* gxb = out_compute_type(gxp + off, un, convert_gx);
        sample_backward(us, unit_weights(w, units, j), qkv_t.data() + units.param(0, j),
                        proj_t.data() + units.param(4, j), xb, gb, gxb, grads,
                        lanes_qkv.data() + units.param(0, j) * lanes, proj_sum.data(), proj_lanes, buf);
        write_back(gxp + off, gxb, un);
      }
      flush_lanes(g + offsets[0], lanes_qkv);
    });
  });
  std::vector<at::Tensor> grads{grad_x};
  for (size_t i = 0; i < params.size(); ++i) {
    at::Tensor g = at::zeros({params[i].numel()}, at::kDouble);
    double* gp = g.mutable_data_ptr<double>();
    for (int64_t t = 0; t < nthreads; ++t)
      for (int64_t j = 0; j < params[i].numel(); ++j) gp[j] += acc[t * offsets.back() + offsets[i] + j];
    grads.push_back(g.view(params[i].sizes()).to(params[i].scalar_type()));
  }
  return grads;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &adrelu_forward, "ADReLU forward (CPU, fused)");
  m.def("backward", &adrelu_backward, "ADReLU backward (CPU, fused)");
}
