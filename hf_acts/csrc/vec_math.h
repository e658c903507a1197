// Vectorisable math and element access for hf-acts' CPU kernels.
//
// glibc's vector math library (libmvec) declares SIMD variants of these functions only under -ffast-math;
// declaring them here lets the compiler vectorise loops that call them (inside `#pragma omp simd`) while every
// other operation keeps exact IEEE semantics. Elsewhere they are the scalar libm functions.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#if defined(__F16C__)
#include <immintrin.h>
#endif

#if defined(__GLIBC__) && defined(__x86_64__)
extern "C" float expf(float) __attribute__((simd("notinbranch")));
extern "C" double exp(double) __attribute__((simd("notinbranch")));
#if __GLIBC_PREREQ(2, 35)
extern "C" float tanhf(float) __attribute__((simd("notinbranch")));
extern "C" double tanh(double) __attribute__((simd("notinbranch")));
extern "C" float log1pf(float) __attribute__((simd("notinbranch")));
extern "C" double log1p(double) __attribute__((simd("notinbranch")));
#endif
#endif

namespace hf_acts {

// std::bit_cast for C++17 builds too (torch's extension builder passes -std=c++17 on older torch releases); the
// builtin (GCC >= 11, Clang >= 9) keeps the vectorised loops vectorised, a memcpy does not.
template <typename To, typename From>
inline To bit_cast_(From from) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast_: sizes differ");
  return __builtin_bit_cast(To, from);
}

// float exp inlined: Cephes-style range reduction, then exp(r) = 1 + r + r^2 p(r) on |r| <= ln 2 / 2 with p a
// degree-4 minimax fit (scripts/fit_exp_polynomial.py). Largest error 0.66 ulp over the normal range, as with the
// degree-5 Cephes p it replaced, and one dependent multiply-add shorter, which these loops feel. The
// compiler vectorises it in place, cheaper than a libmvec call in the hot loops. Arguments below -87.3 give the
// smallest normal float instead of a denormal or 0. NaN stays NaN with no select of its own: the clamps compare
// the bound against v, so a NaN (all comparisons false) passes both and propagates through the arithmetic.
// 2^n comes from the bits of t = x log2(e) + 1.5 2^23, whose low mantissa bits hold n once rounded: no float-to-int
// conversion (undefined for NaN).
inline float exp_(float v) {
  const float lo = -87.3365447f > v ? -87.3365447f : v;  // ternaries, not std::min/max: no addressed locals,
  const float x = 88.7228394f < lo ? 88.7228394f : lo;   // which would stop `omp simd` from vectorising
  const float t = x * 1.44269504088896341f + 12582912.0f;  // round to nearest, without a libm call
  const float n = t - 12582912.0f;
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.3814612757e-3f;
  p = p * r + 8.3687100559e-3f;
  p = p * r + 4.1668388993e-2f;
  p = p * r + 1.6666521132e-1f;
  p = p * r + 4.9999994040e-1f;
  p = p * (r * r) + r + 1.0f;
  return p * bit_cast_<float>((bit_cast_<uint32_t>(t) + 127u) << 23);
}
inline double exp_(double v) { return ::exp(v); }
inline float tanh_(float v) { return ::tanhf(v); }
inline double tanh_(double v) { return ::tanh(v); }
inline float log1p_(float v) { return ::log1pf(v); }
inline double log1p_(double v) { return ::log1p(v); }

// The standard normal CDF Phi(u) = (1 + erf(u / sqrt 2)) / 2 and density phi(u) = exp(-u^2 / 2) / sqrt(2 pi).
// float: erf by Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7; ATen's vectorised float erf, and so F.gelu, uses the
// same form), 1 - erf(|z|) = t (a1 + t (a2 + t (a3 + t (a4 + t a5)))) exp(-z^2) with t = 1 / (1 + p |z|), whose
// exp(-z^2) at z = u / sqrt 2 is the density's own exp: one exp for both. Phi(u) = 1 - q / 2 for u >= 0 and q / 2
// below, q = 1 - erf(|z|), so the left tail has no cancellation. double: the libm erf and exp.
template <typename T>
struct CdfPdf {
  T cdf, pdf;
};
constexpr double kSqrt1_2 = 0.70710678118654752440, kInvSqrt2Pi = 0.39894228040143267794;

inline CdfPdf<float> normal_cdf_pdf(float u) {
  const float z = (u < 0.0f ? -u : u) * float(kSqrt1_2);
  const float e = exp_(-z * z);
  const float t = 1.0f / (1.0f + 0.3275911f * z);
  float p = 1.061405429f;
  p = p * t - 1.453152027f;
  p = p * t + 1.421413741f;
  p = p * t - 0.284496736f;
  p = p * t + 0.254829592f;
  const float half_q = 0.5f * p * t * e;
  return {u < 0.0f ? half_q : 1.0f - half_q, float(kInvSqrt2Pi) * e};
}
inline CdfPdf<double> normal_cdf_pdf(double u) {
  return {0.5 * (1.0 + ::erf(u * kSqrt1_2)), kInvSqrt2Pi * ::exp(-0.5 * u * u)};
}

// relu(v) and g relu'(v) as torch.relu and its backward give them: the tests read v <= 0, not v > 0, so that a NaN
// passes (relu(NaN) = NaN, and the gradient flows through it)
template <typename T>
inline T relu_(T v) {
  return v <= T(0) ? T(0) : v;
}
template <typename T>
inline T relu_grad_(T v, T g) {
  return v <= T(0) ? T(0) : g;
}

// scale sigmoid(v) as one division (no product with the sigmoid after it: one dependent operation shorter)
template <typename T>
inline T scaled_sigmoid_(T v, T scale) {
  return scale / (T(1) + exp_(-v));
}

template <typename T>
inline T sigmoid_(T v) {
  return scaled_sigmoid_(v, T(1));
}

template <typename S>
using compute_t = std::conditional_t<std::is_same_v<S, double>, double, float>;

// IEEE half <-> float from the bits, with selects only, so that `omp simd` loops vectorise them: GCC 12 converts
// `_Float16` one element at a time (scalar vcvtph2ps / vcvtps2ph), which made every float16 kernel 3-7x slower than
// with these. Exact: subnormals, infinities and signed zeros convert as IEEE says, NaN stays NaN (quiet 0x7E00 on
// the way to half, as c10::Half), and the rounding to half is to nearest, ties to even. The magnitudes are compared
// as signed int32 (AVX2 has no unsigned compares).
inline float half_bits_to_float(uint16_t h) {
  const int32_t em = h & 0x7FFF;  // exponent and mantissa bits
  // rebias the exponent by 127 - 15, and for infinity / NaN (exponent 31) once more to 255 (payload kept)
  const int32_t rebiased = (em << 13) + (em >= 0x7C00 ? 0x70000000 : 0x38000000);
  const float subnormal = float(em) * 5.9604644775390625e-8f;  // em * 2^-24, exact
  const float magnitude = em < 0x0400 ? subnormal : bit_cast_<float>(rebiased);
  return bit_cast_<float>(bit_cast_<uint32_t>(magnitude) | (uint32_t(h & 0x8000u) << 16));
}

inline uint16_t float_to_half_bits(float v) {
  const uint32_t u = bit_cast_<uint32_t>(v);
  const int32_t a = int32_t(u & 0x7FFFFFFFu);
  // |v| >= 2^-14 (a half normal): drop 13 mantissa bits, rounding to nearest even by adding 0xFFF plus the lowest
  // kept bit; a carry out of the mantissa raises the exponent. From 65520 up (and for infinity) the result is at
  // least 0x7C00, half's infinity, where the min below stops it.
  const int32_t normal = (a - 0x38000000 + 0xFFF + ((a >> 13) & 1)) >> 13;
  // |v| < 2^-14: adding 0.5 (2^-1) aligns the value's bits with half's subnormal step 2^-24, so the float addition
  // rounds to nearest even at that step and the sum's low bits are the half.
  const int32_t subnormal = bit_cast_<int32_t>(bit_cast_<float>(a) + 0.5f) - 0x3F000000;
  const int32_t finite = a < 0x38800000 ? subnormal : (normal < 0x7C00 ? normal : 0x7C00);
  const int32_t magnitude = a > 0x7F800000 ? 0x7E00 : finite;
  return uint16_t(uint32_t(magnitude) | ((u >> 16) & 0x8000u));
}

// Element loads and stores in the storage type, written so that the compiler vectorises them: bfloat16 by bit
// shifts (round to nearest even, NaN kept quiet, as c10::BFloat16), half by the two functions above.
template <typename S>
inline compute_t<S> load(const S* p, int64_t i) {
  if constexpr (std::is_same_v<S, c10::BFloat16>) {
    return bit_cast_<float>(uint32_t(reinterpret_cast<const uint16_t*>(p)[i]) << 16);
  } else if constexpr (std::is_same_v<S, c10::Half>) {
    return half_bits_to_float(reinterpret_cast<const uint16_t*>(p)[i]);
  } else {
    return p[i];
  }
}

template <typename S>
inline void store(S* p, int64_t i, compute_t<S> v) {
  if constexpr (std::is_same_v<S, c10::BFloat16>) {
    const uint32_t u = bit_cast_<uint32_t>(v);
    const uint16_t rounded = uint16_t((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
    reinterpret_cast<uint16_t*>(p)[i] = v != v ? uint16_t(0x7FC0) : rounded;
  } else if constexpr (std::is_same_v<S, c10::Half>) {
    reinterpret_cast<uint16_t*>(p)[i] = float_to_half_bits(v);
  } else {
    p[i] = v;
  }
}

// Bulk conversions between a half-precision storage type and float, for kernels that compute on float blocks
// (`staged`): half by F16C's vcvtph2ps / vcvtps2ph, 8 values an instruction, where the target has it (x86-64-v3 and
// up), else by the bit functions above, as bfloat16 always is; either way the loops are vectorised.
template <typename S>
inline void to_float(float* dst, const S* src, int64_t n) {
  int64_t i = 0;
#if defined(__F16C__)
  if constexpr (std::is_same_v<S, c10::Half>) {
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  }
#endif
#pragma omp simd
  for (int64_t j = i; j < n; ++j) dst[j] = load(src, j);
}

template <typename S>
inline void from_float(S* dst, const float* src, int64_t n) {
  int64_t i = 0;
#if defined(__F16C__)
  if constexpr (std::is_same_v<S, c10::Half>) {  // rounding to nearest even, as float_to_half_bits
    for (; i + 8 <= n; i += 8)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                       _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
  }
#endif
#pragma omp simd
  for (int64_t j = i; j < n; ++j) store(dst, j, src[j]);
}

// The block length of staged loops: a few float buffers of kStage values stay in L1 beside the streams.
constexpr int64_t kStage = 512;

// Whether loops over storage type S compute on float blocks (`staged`): float16 where F16C converts them.
template <typename S>
#if defined(__F16C__)
constexpr bool kStaged = std::is_same_v<S, c10::Half>;
#else
constexpr bool kStaged = false;
#endif

// Runs body(i0, m) over [0, n) in blocks of at most kStage values.
template <typename F>
inline void staged(int64_t n, F body) {
  for (int64_t i0 = 0; i0 < n; i0 += kStage) body(i0, std::min(kStage, n - i0));
}

// The kernels' loops run over a span of one channel (one coefficient, one sum) or, Row, a channels-last row (one
// coefficient and one sum per value). A staged block at i0 starts at i0 in a row's per-channel arrays, at 0 in a
// span's. Row is a template argument, not a runtime one: with both loops in one function GCC did not inline it into
// FleS' per-span calls, which made its forward 1.08-1.10x slower at (N, 2048, 7, 7).
template <bool Row>
inline int64_t block_offset(int64_t i0) { return Row ? i0 : 0; }

}  // namespace hf_acts
