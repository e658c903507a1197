// Vectorisable math and element access for hf-acts' CPU kernels.
//
// glibc's vector math library (libmvec) declares SIMD variants of these functions only under -ffast-math;
// declaring them here lets the compiler vectorise loops that call them (inside `#pragma omp simd`) while every
// other operation keeps exact IEEE semantics. Elsewhere they are the scalar libm functions.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <type_traits>

#if defined(__GLIBC__) && defined(__x86_64__)
extern "C" float expf(float) __attribute__((simd("notinbranch")));
extern "C" double exp(double) __attribute__((simd("notinbranch")));
#if __GLIBC_PREREQ(2, 35)
extern "C" float erff(float) __attribute__((simd("notinbranch")));
extern "C" double erf(double) __attribute__((simd("notinbranch")));
extern "C" float tanhf(float) __attribute__((simd("notinbranch")));
extern "C" double tanh(double) __attribute__((simd("notinbranch")));
extern "C" float log1pf(float) __attribute__((simd("notinbranch")));
extern "C" double log1p(double) __attribute__((simd("notinbranch")));
#endif
#endif

namespace hf_acts {

inline float exp_(float v) { return ::expf(v); }
inline double exp_(double v) { return ::exp(v); }
inline float erf_(float v) { return ::erff(v); }
inline double erf_(double v) { return ::erf(v); }
inline float tanh_(float v) { return ::tanhf(v); }
inline double tanh_(double v) { return ::tanh(v); }
inline float log1p_(float v) { return ::log1pf(v); }
inline double log1p_(double v) { return ::log1p(v); }

template <typename T>
inline T sigmoid_(T v) {
  return T(1) / (T(1) + exp_(-v));
}

template <typename S>
using compute_t = std::conditional_t<std::is_same_v<S, double>, double, float>;

// Element loads and stores in the storage type, written so that the compiler vectorises them: bfloat16 by bit
// shifts (round to nearest even, NaN kept quiet, as c10::BFloat16), half through the compiler's _Float16.
template <typename S>
inline compute_t<S> load(const S* p, int64_t i) {
  if constexpr (std::is_same_v<S, c10::BFloat16>) {
    return std::bit_cast<float>(uint32_t(reinterpret_cast<const uint16_t*>(p)[i]) << 16);
  } else if constexpr (std::is_same_v<S, c10::Half>) {
    return float(reinterpret_cast<const _Float16*>(p)[i]);
  } else {
    return p[i];
  }
}

template <typename S>
inline void store(S* p, int64_t i, compute_t<S> v) {
  if constexpr (std::is_same_v<S, c10::BFloat16>) {
    const uint32_t u = std::bit_cast<uint32_t>(v);
    const uint16_t rounded = uint16_t((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
    reinterpret_cast<uint16_t*>(p)[i] = v != v ? uint16_t(0x7FC0) : rounded;
  } else if constexpr (std::is_same_v<S, c10::Half>) {
    reinterpret_cast<_Float16*>(p)[i] = _Float16(v);
  } else {
    p[i] = v;
  }
}

}  // namespace hf_acts
