// FleS (papers/fles-poster.md): phi(x) = k_ve rho(k_ho x) x with per-sample, per-channel coefficients computed
// from the positive channel means m = sum relu(x) / (count(x > 0) + eps). Fused CPU passes over x:
//   stats       pos = sum relu(x), count = sum [x > 0]                  (forward, 1 read)
//   apply       y = k_ve rho(k_ho x) x                                   (forward, 1 read + 1 write)
//   coef_grads  d k_ve = sum g rho(u) x, d k_ho = sum g k_ve rho'(u) x^2 (backward, 2 reads)
//   input_grad  dx = g k_ve (rho(u) + u rho'(u)) + [x > 0] d pos         (backward, 2 reads + 1 write)
// The small coefficient MLP between them runs in PyTorch. x is viewed as (B, R, C, I): images (B, 1, C, H*W),
// tokens (B, N, C, 1), vectors (B, 1, C, 1); coefficients and statistics are (B, C).
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "vec_math.h"

namespace {

using namespace hf_acts;

enum Gate : int64_t { kSigmoid = 0, kNormalCdf = 1 };

constexpr double kSqrt1_2 = 0.70710678118654752440, kInvSqrt2Pi = 0.39894228040143267794;

template <int64_t G, typename T>
inline T gate(T u, T* grad) {
  if constexpr (G == kSigmoid) {
    const T s = sigmoid_(u);
    *grad = s * (T(1) - s);
    return s;
  } else {
    *grad = T(kInvSqrt2Pi) * exp_(T(-0.5) * u * u);
    return T(0.5) * (T(1) + erf_(u * T(kSqrt1_2)));
  }
}

struct Layout {
  int64_t B, R, C, I;
};

Layout layout_of(const at::Tensor& x, int64_t C, int64_t I) {
  TORCH_CHECK(x.device().is_cpu() && x.is_contiguous(), "fles: x must be a contiguous CPU tensor");
  TORCH_CHECK(x.dim() >= 2 && C > 0 && I > 0 && x.numel() % (x.size(0) * C * I) == 0, "fles: bad layout");
  return {x.size(0), x.numel() / (x.size(0) * C * I), C, I};
}

// Runs span(offset, n, c) over every (r, c) span of sample b when I > 1, else row(offset) over its R rows of C.
template <typename Span, typename Row>
void visit(const Layout& l, int64_t b, Span span, Row row) {
  for (int64_t r = 0; r < l.R; ++r) {
    const int64_t base = (b * l.R + r) * l.C * l.I;
    if (l.I > 1) {
      for (int64_t c = 0; c < l.C; ++c) span(base + c * l.I, l.I, c);
    } else {
      row(base);
    }
  }
}

// Sums run in the compute type within a sample (spans of H*W, or N rows) and are stored in double.
template <typename S>
void stats_impl(const Layout& l, const S* x, double* pos, double* count) {
  using T = compute_t<S>;
  at::parallel_for(0, l.B, 1, [&](int64_t b0, int64_t b1) {
    std::vector<T> sp(l.C), sn(l.C);
    for (int64_t b = b0; b < b1; ++b) {
      std::fill(sp.begin(), sp.end(), T(0));
      std::fill(sn.begin(), sn.end(), T(0));
      visit(
          l, b,
          [&](int64_t off, int64_t len, int64_t c) {
            T p = 0, n = 0;
#pragma omp simd reduction(+ : p, n)
            for (int64_t i = off; i < off + len; ++i) {
              const T v = load(x, i);
              p += v > T(0) ? v : T(0);
              n += v > T(0) ? T(1) : T(0);
            }
            sp[c] += p;
            sn[c] += n;
          },
          [&](int64_t off) {
#pragma omp simd
            for (int64_t c = 0; c < l.C; ++c) {
              const T v = load(x, off + c);
              sp[c] += v > T(0) ? v : T(0);
              sn[c] += v > T(0) ? T(1) : T(0);
            }
          });
      for (int64_t c = 0; c < l.C; ++c) {
        pos[b * l.C + c] = sp[c];
        count[b * l.C + c] = sn[c];
      }
    }
  });
}

template <int64_t G, typename S>
void apply_impl(const Layout& l, const S* x, S* y, const compute_t<S>* kve, const compute_t<S>* kho) {
  using T = compute_t<S>;
  at::parallel_for(0, l.B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const T *ve = kve + b * l.C, *ho = kho + b * l.C;
      visit(
          l, b,
          [&](int64_t off, int64_t len, int64_t c) {
            const T a = ve[c], h = ho[c];
#pragma omp simd
            for (int64_t i = off; i < off + len; ++i) {
              const T v = load(x, i);
              T unused;
              store(y, i, a * gate<G>(h * v, &unused) * v);
            }
          },
          [&](int64_t off) {
#pragma omp simd
            for (int64_t c = 0; c < l.C; ++c) {
              const T v = load(x, off + c);
              T unused;
              store(y, off + c, ve[c] * gate<G>(ho[c] * v, &unused) * v);
            }
          });
    }
  });
}

template <int64_t G, typename S>
void coef_grads_impl(const Layout& l, const S* g, const S* x, const compute_t<S>* kve, const compute_t<S>* kho,
                     double* d_ve, double* d_ho) {
  using T = compute_t<S>;
  at::parallel_for(0, l.B, 1, [&](int64_t b0, int64_t b1) {
    std::vector<T> sv(l.C), sh(l.C);
    for (int64_t b = b0; b < b1; ++b) {
      const T *ve = kve + b * l.C, *ho = kho + b * l.C;
      std::fill(sv.begin(), sv.end(), T(0));
      std::fill(sh.begin(), sh.end(), T(0));
      visit(
          l, b,
          [&](int64_t off, int64_t len, int64_t c) {
            const T h = ho[c];
            T a = 0, d = 0;
#pragma omp simd reduction(+ : a, d)
            for (int64_t i = off; i < off + len; ++i) {
              const T v = load(x, i), gi = load(g, i);
              T dgate;
              const T rho = gate<G>(h * v, &dgate);
              a += gi * rho * v;
              d += gi * dgate * v * v;
            }
            sv[c] += a;
            sh[c] += d;
          },
          [&](int64_t off) {
#pragma omp simd
            for (int64_t c = 0; c < l.C; ++c) {
              const T v = load(x, off + c), gi = load(g, off + c);
              T dgate;
              const T rho = gate<G>(ho[c] * v, &dgate);
              sv[c] += gi * rho * v;
              sh[c] += gi * dgate * v * v;
            }
          });
      for (int64_t c = 0; c < l.C; ++c) {
        d_ve[b * l.C + c] = sv[c];
        d_ho[b * l.C + c] = double(sh[c]) * ve[c];
      }
    }
  });
}

template <int64_t G, typename S>
void input_grad_impl(const Layout& l, const S* g, const S* x, S* gx, const compute_t<S>* kve,
                     const compute_t<S>* kho, const compute_t<S>* dpos) {
  using T = compute_t<S>;
  at::parallel_for(0, l.B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const T *ve = kve + b * l.C, *ho = kho + b * l.C, *dp = dpos + b * l.C;
      visit(
          l, b,
          [&](int64_t off, int64_t len, int64_t c) {
            const T a = ve[c], h = ho[c], d = dp[c];
#pragma omp simd
            for (int64_t i = off; i < off + len; ++i) {
              const T v = load(x, i), u = h * v;
              T dgate;
              const T rho = gate<G>(u, &dgate);
              store(gx, i, load(g, i) * a * (rho + u * dgate) + (v > 0 ? d : T(0)));
            }
          },
          [&](int64_t off) {
#pragma omp simd
            for (int64_t c = 0; c < l.C; ++c) {
              const T v = load(x, off + c), u = ho[c] * v;
              T dgate;
              const T rho = gate<G>(u, &dgate);
              store(gx, off + c, load(g, off + c) * ve[c] * (rho + u * dgate) + (v > 0 ? dp[c] : T(0)));
            }
          });
    }
  });
}

#define HF_ACTS_DISPATCH_GATE(gate_id, ...)                                     \
  switch (gate_id) {                                                            \
    case kSigmoid: { constexpr int64_t G = kSigmoid; __VA_ARGS__(); break; }    \
    case kNormalCdf: { constexpr int64_t G = kNormalCdf; __VA_ARGS__(); break; } \
    default: TORCH_CHECK(false, "fles: unknown gate ", gate_id);                \
  }

at::ScalarType coef_type(const at::Tensor& x) { return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat; }

void check_coef(const at::Tensor& k, const at::Tensor& x, const Layout& l) {
  TORCH_CHECK(k.scalar_type() == coef_type(x) && k.is_contiguous() && k.numel() == l.B * l.C,
              "fles: coefficients must be contiguous (B, C) in float32 (float64 for float64 x)");
}

void check_grad(const at::Tensor& g, const at::Tensor& x) {
  TORCH_CHECK(g.sizes() == x.sizes() && g.is_contiguous() && g.scalar_type() == x.scalar_type(),
              "fles: grad must be contiguous like x");
}

// Returns (sum relu(x), count(x > 0)), each (B, C) in float64.
std::vector<at::Tensor> stats(const at::Tensor& x, int64_t C, int64_t I) {
  const Layout l = layout_of(x, C, I);
  at::Tensor pos = at::zeros({l.B, C}, at::kDouble), count = at::zeros({l.B, C}, at::kDouble);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "fles_stats", [&] {
    stats_impl(l, x.const_data_ptr<scalar_t>(), pos.mutable_data_ptr<double>(), count.mutable_data_ptr<double>());
  });
  return {pos, count};
}

at::Tensor apply(const at::Tensor& x, const at::Tensor& kve, const at::Tensor& kho, int64_t gate_id, int64_t I) {
  const Layout l = layout_of(x, kve.size(-1), I);
  check_coef(kve, x, l);
  check_coef(kho, x, l);
  at::Tensor y = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "fles_apply", [&] {
    using T = compute_t<scalar_t>;
    HF_ACTS_DISPATCH_GATE(gate_id, [&] {
      apply_impl<G>(l, x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), kve.const_data_ptr<T>(),
                    kho.const_data_ptr<T>());
    });
  });
  return y;
}

// Returns (d k_ve, d k_ho), each (B, C) in float64.
std::vector<at::Tensor> coef_grads(const at::Tensor& g, const at::Tensor& x, const at::Tensor& kve,
                                   const at::Tensor& kho, int64_t gate_id, int64_t I) {
  const Layout l = layout_of(x, kve.size(-1), I);
  check_coef(kve, x, l);
  check_coef(kho, x, l);
  check_grad(g, x);
  at::Tensor d_ve = at::zeros({l.B, l.C}, at::kDouble), d_ho = at::zeros({l.B, l.C}, at::kDouble);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "fles_coef_grads", [&] {
    using T = compute_t<scalar_t>;
    HF_ACTS_DISPATCH_GATE(gate_id, [&] {
      coef_grads_impl<G>(l, g.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), kve.const_data_ptr<T>(),
                         kho.const_data_ptr<T>(), d_ve.mutable_data_ptr<double>(), d_ho.mutable_data_ptr<double>());
    });
  });
  return {d_ve, d_ho};
}

at::Tensor input_grad(const at::Tensor& g, const at::Tensor& x, const at::Tensor& kve, const at::Tensor& kho,
                      const at::Tensor& dpos, int64_t gate_id, int64_t I) {
  const Layout l = layout_of(x, kve.size(-1), I);
  check_coef(kve, x, l);
  check_coef(kho, x, l);
  check_coef(dpos, x, l);
  check_grad(g, x);
  at::Tensor gx = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "fles_input_grad", [&] {
    using T = compute_t<scalar_t>;
    HF_ACTS_DISPATCH_GATE(gate_id, [&] {
      input_grad_impl<G>(l, g.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                         gx.mutable_data_ptr<scalar_t>(), kve.const_data_ptr<T>(), kho.const_data_ptr<T>(),
                         dpos.const_data_ptr<T>());
    });
  });
  return gx;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("stats", &stats, "FleS positive channel sums and counts (CPU, fused)");
  m.def("apply", &apply, "FleS phi(x) (CPU, fused)");
  m.def("coef_grads", &coef_grads, "FleS coefficient gradients (CPU, fused)");
  m.def("input_grad", &input_grad, "FleS input gradient (CPU, fused)");
}
