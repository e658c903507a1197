// dynActivation (papers/dynactivation-abstract.md): f(x) = base(x) (alpha - beta) + beta x, fused CPU kernels.
//
// Forward: one pass. Backward: one pass giving dx = g ((alpha - beta) base'(x) + beta) and the sums
// dalpha = sum g base(x), dbeta = sum g x - dalpha, per channel or for the whole tensor.
// x is viewed as (outer, C, inner): C = 1 for one scalar pair; (B, C, H*W) for images; (B*N, C, 1) for tokens.
// Loads and stores are in x's dtype (float, double, bfloat16, half); arithmetic in float (double for double).
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cmath>
#include <vector>

#include "vec_math.h"

namespace {

using namespace hf_acts;

enum Base : int64_t { kRelu = 0, kLeakyRelu, kSilu, kGelu, kGeluTanh, kMish };

constexpr double kSqrt1_2 = 0.70710678118654752440, kInvSqrt2Pi = 0.39894228040143267794;
constexpr double kSqrt2OverPi = 0.79788456080286535588, kTanhCoef = 0.044715;

// base(x) and, when wanted, base'(x), for compute type T.
template <int64_t B, typename T>
inline T base_fn(T x, T* grad) {
  if constexpr (B == kRelu) {
    *grad = x > T(0) ? T(1) : T(0);
    return x > T(0) ? x : T(0);
  } else if constexpr (B == kLeakyRelu) {
    *grad = x > T(0) ? T(1) : T(0.01);
    return x > T(0) ? x : T(0.01) * x;
  } else if constexpr (B == kSilu) {
    const T s = sigmoid_(x);
    *grad = s * (T(1) + x * (T(1) - s));
    return x * s;
  } else if constexpr (B == kGelu) {
    const T cdf = T(0.5) * (T(1) + erf_(x * T(kSqrt1_2)));
    *grad = cdf + x * T(kInvSqrt2Pi) * exp_(T(-0.5) * x * x);
    return x * cdf;
  } else if constexpr (B == kGeluTanh) {
    const T t = tanh_(T(kSqrt2OverPi) * (x + T(kTanhCoef) * x * x * x));
    *grad = T(0.5) * (T(1) + t) +
            T(0.5) * x * (T(1) - t * t) * T(kSqrt2OverPi) * (T(1) + T(3 * kTanhCoef) * x * x);
    return T(0.5) * x * (T(1) + t);
  } else {  // mish: x tanh(softplus(x)), softplus(x) = max(x, 0) + log1p(exp(-|x|))
    const T t = tanh_(std::max(x, T(0)) + log1p_(exp_(-std::abs(x))));
    *grad = t + x * (T(1) - t * t) * sigmoid_(x);
    return x * t;
  }
}

template <int64_t B, typename S>
void forward_span(S* y, const S* x, int64_t n, compute_t<S> a_minus_b, compute_t<S> b) {
  using T = compute_t<S>;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const T v = load(x, i);
    T unused;
    store(y, i, base_fn<B>(v, &unused) * a_minus_b + b * v);
  }
}

// dx over one span of one channel; adds sum g base(x) and sum g x of the span to sums[0], sums[1].
template <int64_t B, typename S>
void backward_span(S* gx, const S* g, const S* x, int64_t n, compute_t<S> a_minus_b, compute_t<S> b, double* sums) {
  using T = compute_t<S>;
  constexpr int64_t kChunk = 4096;  // partial sums in T over at most kChunk terms, then in double
  for (int64_t i0 = 0; i0 < n; i0 += kChunk) {
    const int64_t i1 = std::min(n, i0 + kChunk);
    T s_f = 0, s_x = 0;
#pragma omp simd reduction(+ : s_f, s_x)
    for (int64_t i = i0; i < i1; ++i) {
      const T v = load(x, i), gi = load(g, i);
      T d;
      const T f = base_fn<B>(v, &d);
      store(gx, i, gi * (a_minus_b * d + b));
      s_f += gi * f;
      s_x += gi * v;
    }
    sums[0] += s_f;
    sums[1] += s_x;
  }
}

// Channels-last rows (inner == 1): dx of one row of C channels; per-channel sums into sums[c], sums[C + c]
// (compute type; the caller flushes them to double every kRowsPerFlush rows).
template <int64_t B, typename S>
void backward_row(S* gx, const S* g, const S* x, int64_t C, const compute_t<S>* a_minus_b, const compute_t<S>* b,
                  compute_t<S>* sums) {
  using T = compute_t<S>;
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) {
    const T v = load(x, c), gi = load(g, c);
    T d;
    const T f = base_fn<B>(v, &d);
    store(gx, c, gi * (a_minus_b[c] * d + b[c]));
    sums[c] += gi * f;
    sums[C + c] += gi * v;
  }
}

template <int64_t B, typename S>
void forward_row(S* y, const S* x, int64_t C, const compute_t<S>* a_minus_b, const compute_t<S>* b) {
  using T = compute_t<S>;
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) {
    const T v = load(x, c);
    T unused;
    store(y, c, base_fn<B>(v, &unused) * a_minus_b[c] + b[c] * v);
  }
}

constexpr int64_t kGrain = 32768;

// Visits [begin, end) of a flat (outer, C, inner) tensor as spans of one channel: fn(start, length, channel).
template <typename F>
void for_spans(int64_t begin, int64_t end, int64_t C, int64_t inner, F fn) {
  for (int64_t i = begin; i < end;) {
    const int64_t stop = std::min(end, (i / inner + 1) * inner);
    fn(i, stop - i, (i / inner) % C);
    i = stop;
  }
}

template <int64_t B, typename S>
void forward_impl(S* y, const S* x, int64_t numel, int64_t C, int64_t inner, const std::vector<compute_t<S>>& amb,
                  const std::vector<compute_t<S>>& b) {
  if (inner == 1 && C > 1) {
    at::parallel_for(0, numel / C, std::max<int64_t>(1, kGrain / C), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) forward_row<B>(y + r * C, x + r * C, C, amb.data(), b.data());
    });
    return;
  }
  at::parallel_for(0, numel, kGrain, [&](int64_t begin, int64_t end) {
    for_spans(begin, end, C, inner, [&](int64_t i, int64_t n, int64_t c) { forward_span<B>(y + i, x + i, n, amb[c], b[c]); });
  });
}

template <int64_t B, typename S>
void backward_impl(S* gx, const S* g, const S* x, int64_t numel, int64_t C, int64_t inner,
                   const std::vector<compute_t<S>>& amb, const std::vector<compute_t<S>>& b, std::vector<double>& acc) {
  const int64_t nthreads = at::get_num_threads();
  auto sums_of = [&]() {
    TORCH_CHECK(at::get_thread_num() < nthreads, "dynact: unexpected thread id");
    return acc.data() + at::get_thread_num() * 2 * C;
  };
  if (inner == 1 && C > 1) {
    constexpr int64_t kRowsPerFlush = 256;
    at::parallel_for(0, numel / C, std::max<int64_t>(1, kGrain / C), [&](int64_t r0, int64_t r1) {
      double* sums = sums_of();
      std::vector<compute_t<S>> part(2 * C);
      for (int64_t r = r0; r < r1; r += kRowsPerFlush) {
        std::fill(part.begin(), part.end(), compute_t<S>(0));
        for (int64_t q = r; q < std::min(r1, r + kRowsPerFlush); ++q)
          backward_row<B>(gx + q * C, g + q * C, x + q * C, C, amb.data(), b.data(), part.data());
        for (int64_t c = 0; c < 2 * C; ++c) sums[c] += part[c];
      }
    });
    return;
  }
  at::parallel_for(0, numel, kGrain, [&](int64_t begin, int64_t end) {
    double* sums = sums_of();
    for_spans(begin, end, C, inner, [&](int64_t i, int64_t n, int64_t c) {
      double part[2] = {0, 0};
      backward_span<B>(gx + i, g + i, x + i, n, amb[c], b[c], part);
      sums[c] += part[0];
      sums[C + c] += part[1];
    });
  });
}

template <typename T>
void coefficients(const at::Tensor& alpha, const at::Tensor& beta, std::vector<T>& amb, std::vector<T>& b) {
  const at::Tensor a64 = alpha.to(at::kDouble).contiguous(), b64 = beta.to(at::kDouble).contiguous();
  for (int64_t c = 0; c < alpha.numel(); ++c) {
    amb.push_back(T(a64.const_data_ptr<double>()[c] - b64.const_data_ptr<double>()[c]));
    b.push_back(T(b64.const_data_ptr<double>()[c]));
  }
}

#define HF_ACTS_DISPATCH_BASE(base, ...)              \
  switch (base) {                                     \
    case kRelu: { constexpr int64_t B = kRelu; __VA_ARGS__(); break; }           \
    case kLeakyRelu: { constexpr int64_t B = kLeakyRelu; __VA_ARGS__(); break; } \
    case kSilu: { constexpr int64_t B = kSilu; __VA_ARGS__(); break; }           \
    case kGelu: { constexpr int64_t B = kGelu; __VA_ARGS__(); break; }           \
    case kGeluTanh: { constexpr int64_t B = kGeluTanh; __VA_ARGS__(); break; }   \
    case kMish: { constexpr int64_t B = kMish; __VA_ARGS__(); break; }           \
    default: TORCH_CHECK(false, "dynact: unknown base ", base);                  \
  }

void check(const at::Tensor& x, const at::Tensor& alpha, int64_t inner) {
  TORCH_CHECK(x.device().is_cpu() && x.is_contiguous(), "dynact: x must be a contiguous CPU tensor");
  TORCH_CHECK(inner >= 1 && x.numel() % (alpha.numel() * inner) == 0, "dynact: alpha does not fit x's layout");
}

at::Tensor dynact_forward(const at::Tensor& x, const at::Tensor& alpha, const at::Tensor& beta, int64_t base,
                          int64_t inner) {
  check(x, alpha, inner);
  at::Tensor y = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "dynact_forward", [&] {
    std::vector<compute_t<scalar_t>> amb, b;
    coefficients(alpha, beta, amb, b);
    HF_ACTS_DISPATCH_BASE(base, [&] {
      forward_impl<B>(y.mutable_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), x.numel(), alpha.numel(), inner,
                      amb, b);
    });
  });
  return y;
}

// Returns dx, dalpha, dbeta (the last two in float64, alpha's shape).
std::vector<at::Tensor> dynact_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& alpha,
                                        const at::Tensor& beta, int64_t base, int64_t inner) {
  check(x, alpha, inner);
  TORCH_CHECK(grad.sizes() == x.sizes() && grad.is_contiguous() && grad.scalar_type() == x.scalar_type(),
              "dynact: grad must be contiguous like x");
  const int64_t C = alpha.numel();
  at::Tensor grad_x = at::empty_like(x);
  std::vector<double> acc(at::get_num_threads() * 2 * C, 0.0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "dynact_backward", [&] {
    std::vector<compute_t<scalar_t>> amb, b;
    coefficients(alpha, beta, amb, b);
    HF_ACTS_DISPATCH_BASE(base, [&] {
      backward_impl<B>(grad_x.mutable_data_ptr<scalar_t>(), grad.const_data_ptr<scalar_t>(),
                       x.const_data_ptr<scalar_t>(), x.numel(), C, inner, amb, b, acc);
    });
  });
  at::Tensor ga = at::zeros({C}, at::kDouble), gb = at::zeros({C}, at::kDouble);
  double *pa = ga.mutable_data_ptr<double>(), *pb = gb.mutable_data_ptr<double>();
  for (size_t t = 0; t < acc.size() / (2 * C); ++t)
    for (int64_t c = 0; c < C; ++c) {
      pa[c] += acc[t * 2 * C + c];
      pb[c] += acc[t * 2 * C + C + c];
    }
  return {grad_x, ga.view(alpha.sizes()), (gb - ga).view(alpha.sizes())};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &dynact_forward, "dynActivation forward (CPU, fused)");
  m.def("backward", &dynact_backward, "dynActivation backward (CPU, fused)");
}
