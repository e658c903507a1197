// Vectorisable math for hf-acts' CPU kernels.
//
// glibc's vector math library (libmvec) declares SIMD variants of these functions only under -ffast-math;
// declaring them here lets the compiler vectorise loops that call them (inside `#pragma omp simd`) while every
// other operation keeps exact IEEE semantics. Elsewhere they are the scalar libm functions.
#pragma once

#include <cmath>

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

}  // namespace hf_acts
