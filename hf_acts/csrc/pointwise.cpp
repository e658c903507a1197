// Pointwise activations with learned per-channel (or per-tensor) coefficients, fused CPU kernels:
//   dynActivation (papers/dynactivation-abstract.md): f(x) = base(x) (alpha - beta) + beta x
//   Swish-beta (papers/swish-citations.md):           f(x) = x sigmoid(beta x)
//   dynActGLU's gated product (project definition):  y = dynact(gate) up
// Forward: one pass. Backward: one pass giving dx and the coefficient gradients (dynActivation: d alpha =
// sum g base(x), d beta = sum g x - d alpha; Swish-beta: d beta = sum g x^2 sigmoid'(beta x)), per channel or in all
// (and for the gated product d up = g dynact(gate), with g up in place of g for the rest).
// x is viewed as (outer, C, inner): C = 1 for one scalar pair; (B, C, H*W) for images; (B*N, C, 1) for tokens.
// Loads and stores are in x's dtype (float, double, bfloat16, half); arithmetic in float (double for double), on
// float blocks for half where the target has F16C.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cmath>
#include <optional>
#include <vector>

#include "vec_math.h"

namespace {

using namespace hf_acts;

enum Base : int64_t { kRelu = 0, kLeakyRelu, kSilu, kGelu, kGeluTanh, kMish };

constexpr double kSqrt2OverPi = 0.79788456080286535588, kTanhCoef = 0.044715;

// base(x) and base'(x), for compute type T; returned by value (no addressed locals: they stop `omp simd` from
// vectorising), so a caller that uses only .f lets the compiler drop the derivative.
template <typename T>
struct ValueGrad {
  T f, d;
};

template <int64_t B, typename T>
inline ValueGrad<T> base_fn(T x) {
  if constexpr (B == kRelu) {
    return {relu_(x), relu_grad_(x, T(1))};
  } else if constexpr (B == kLeakyRelu) {
    return {x > T(0) ? x : T(0.01) * x, x > T(0) ? T(1) : T(0.01)};
  } else if constexpr (B == kSilu) {
    const T s = sigmoid_(x), f = x * s;
    return {f, f * (T(1) - s) + s};  // s (1 + x (1 - s)), one dependent operation shorter
  } else if constexpr (B == kGelu) {
    const auto [cdf, pdf] = normal_cdf_pdf(x);
    return {x * cdf, cdf + x * pdf};
  } else if constexpr (B == kGeluTanh) {
    const T t = tanh_(T(kSqrt2OverPi) * (x + T(kTanhCoef) * x * x * x));
    return {T(0.5) * x * (T(1) + t),
            T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * T(kSqrt2OverPi) * (T(1) + T(3 * kTanhCoef) * x * x)};
  } else {  // mish: x tanh(softplus(x)), softplus(x) = max(x, 0) + log1p(exp(-|x|))
    const T t = tanh_(std::max(x, T(0)) + log1p_(exp_(-std::abs(x))));
    return {x * t, t + x * (T(1) - t * t) * sigmoid_(x)};
  }
}

// An op: forward(v, p, q), the forward pass's f(v); value(v, p, q), the same f(v) from the terms backward computes
// (the gated product's backward takes f(v) and f'(v) of one sigmoid); backward(v, g, p, q, &s0, &s1) -> dx, with p, q
// the channel's two coefficients and s0, s1 this element's terms of the two sums.
template <int64_t Base>
struct DynAct {  // p = alpha - beta, q = beta; sums g base(x) and g x
  template <typename T>
  static T value(T v, T p, T q) {
    return base_fn<Base>(v).f * p + q * v;
  }
  template <typename T>
  static T forward(T v, T p, T q) {
    if constexpr (Base == kSilu) {  // silu(v) p = (p v) sigmoid(v)
      return scaled_sigmoid_(v, p * v) + q * v;
    } else {
      return value(v, p, q);
    }
  }
  template <typename T>
  static T backward(T v, T g, T p, T q, T* s0, T* s1) {
    const auto [f, d] = base_fn<Base>(v);
    *s0 = g * f;
    *s1 = g * v;
    return (g * p) * d + g * q;  // g (p d + q), with g p and g q off the chain through d
  }
};

struct Swish {  // p = beta; sum g x^2 sigmoid'(beta x)
  template <typename T>
  static T value(T v, T p, T) {
    return v * sigmoid_(p * v);
  }
  template <typename T>
  static T forward(T v, T p, T) {
    return scaled_sigmoid_(p * v, v);
  }
  template <typename T>
  static T backward(T v, T g, T p, T, T* s0, T* s1) {
    const T s = sigmoid_(p * v), ds = s * (T(1) - s);
    *s0 = g * v * v * ds;
    *s1 = T(0);
    return g * (s + p * v * ds);
  }
};

// float16 runs the loops below on float blocks (kStaged, vec_math.h): 0.48-0.68x of the time with the (bit
// arithmetic) conversions inside them. bfloat16 staged the same way took 1.00-1.36x as long (its in-loop conversion
// is a shift and a rounding), so it is not (scripts/bench_kernel_ab.py, one process each).

// Glu: the gated product of dynActGLU, y = f(x) up, whose backward gives dx = f'(x) g up (the sums taken with
// g up for g) and d up = g f(x); without Glu, up and gup are unused (null). p, q: one coefficient pair, or with Row
// one per value (a channels-last row; block_offset in vec_math.h).
template <typename Op, bool Glu, bool Row, typename S, typename T = compute_t<S>>
void forward_values(S* y, const S* x, const S* up, int64_t n, const T* p, const T* q) {
  if constexpr (kStaged<S>) {
    staged(n, [&](int64_t i0, int64_t m) {
      T xb[kStage], ub[kStage], yb[kStage];
      to_float(xb, x + i0, m);
      if constexpr (Glu) to_float(ub, up + i0, m);
      const int64_t o = block_offset<Row>(i0);
      forward_values<Op, Glu, Row>(yb, xb, ub, m, p + o, q + o);
      from_float(y + i0, yb, m);
    });
  } else if constexpr (!Row) {
    const T p0 = *p, q0 = *q;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const T f = Op::forward(load(x, i), p0, q0);
      store(y, i, Glu ? f * load(up, i) : f);
    }
  } else {
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) {
      const T f = Op::forward(load(x, c), p[c], q[c]);
      store(y, c, Glu ? f * load(up, c) : f);
    }
  }
}

// The upstream gradient at f's output: g, or g up for the gated product (whose d up = g f(x) is stored in gup).
template <typename Op, bool Glu, typename S, typename T = compute_t<S>>
inline T gated_grad(T v, const S* g, const S* up, S* gup, int64_t i, T p, T q) {
  const T gi = load(g, i);
  if constexpr (Glu) {
    store(gup, i, gi * Op::value(v, p, q));
    return gi * load(up, i);
  } else {
    return gi;
  }
}

// dx (and d up) over n values, adding their terms of the two sums to s0, s1: with one coefficient pair to s0[0],
// s1[0] in double (partial sums over at most kChunk values in T first); with Row, one pair per value, to s0[c],
// s1[c] in T (the caller flushes them to double).
template <typename Op, bool Glu, bool Row, typename S, typename T = compute_t<S>, typename A>
void backward_values(S* gx, S* gup, const S* g, const S* x, const S* up, int64_t n, const T* p, const T* q, A* s0,
                     A* s1) {
  if constexpr (kStaged<S>) {
    staged(n, [&](int64_t i0, int64_t m) {
      T gb[kStage], xb[kStage], ub[kStage], gxb[kStage], gub[kStage];
      to_float(gb, g + i0, m);
      to_float(xb, x + i0, m);
      if constexpr (Glu) to_float(ub, up + i0, m);
      const int64_t o = block_offset<Row>(i0);
      backward_values<Op, Glu, Row>(gxb, gub, gb, xb, ub, m, p + o, q + o, s0 + o, s1 + o);
      from_float(gx + i0, gxb, m);
      if constexpr (Glu) from_float(gup + i0, gub, m);
    });
  } else if constexpr (!Row) {
    constexpr int64_t kChunk = 4096;
    const T p0 = *p, q0 = *q;
    for (int64_t i0 = 0; i0 < n; i0 += kChunk) {
      const int64_t i1 = std::min(n, i0 + kChunk);
      T sum0 = 0, sum1 = 0;
#pragma omp simd reduction(+ : sum0, sum1)
      for (int64_t i = i0; i < i1; ++i) {
        T t0, t1;
        const T v = load(x, i);
        store(gx, i, Op::backward(v, gated_grad<Op, Glu>(v, g, up, gup, i, p0, q0), p0, q0, &t0, &t1));
        sum0 += t0;
        sum1 += t1;
      }
      *s0 += sum0;
      *s1 += sum1;
    }
  } else {
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) {
      T t0, t1;
      const T v = load(x, c);
      store(gx, c, Op::backward(v, gated_grad<Op, Glu>(v, g, up, gup, c, p[c], q[c]), p[c], q[c], &t0, &t1));
      s0[c] += t0;
      s1[c] += t1;
    }
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

// up (Glu only): the second factor of the gated product, laid out like x.
template <typename Op, bool Glu, typename S>
void forward_impl(S* y, const S* x, const S* up, int64_t numel, int64_t C, int64_t inner,
                  const std::vector<compute_t<S>>& p, const std::vector<compute_t<S>>& q) {
  if (inner == 1 && C > 1) {
    at::parallel_for(0, numel / C, std::max<int64_t>(1, kGrain / C), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r)
        forward_values<Op, Glu, true>(y + r * C, x + r * C, Glu ? up + r * C : up, C, p.data(), q.data());
    });
    return;
  }
  at::parallel_for(0, numel, kGrain, [&](int64_t begin, int64_t end) {
    for_spans(begin, end, C, inner, [&](int64_t i, int64_t n, int64_t c) {
      forward_values<Op, Glu, false>(y + i, x + i, Glu ? up + i : up, n, &p[c], &q[c]);
    });
  });
}

// acc: per thread, the C first sums then the C second sums, in double.
// gup, up: Glu only (d up out, up in), laid out like x.
template <typename Op, bool Glu, typename S>
void backward_impl(S* gx, S* gup, const S* g, const S* x, const S* up, int64_t numel, int64_t C, int64_t inner,
                   const std::vector<compute_t<S>>& p, const std::vector<compute_t<S>>& q, std::vector<double>& acc) {
  const int64_t nthreads = at::get_num_threads();
  auto sums_of = [&]() {
    TORCH_CHECK(at::get_thread_num() < nthreads, "pointwise: unexpected thread id");
    return acc.data() + at::get_thread_num() * 2 * C;
  };
  if (inner == 1 && C > 1) {
    constexpr int64_t kRowsPerFlush = 256;
    at::parallel_for(0, numel / C, std::max<int64_t>(1, kGrain / C), [&](int64_t r0, int64_t r1) {
      double* sums = sums_of();
      std::vector<compute_t<S>> part(2 * C);
      for (int64_t r = r0; r < r1; r += kRowsPerFlush) {
        std::fill(part.begin(), part.end(), compute_t<S>(0));
        for (int64_t row = r; row < std::min(r1, r + kRowsPerFlush); ++row) {
          const int64_t o = row * C;
          backward_values<Op, Glu, true>(gx + o, Glu ? gup + o : gup, g + o, x + o, Glu ? up + o : up, C, p.data(),
                                         q.data(), part.data(), part.data() + C);
        }
        for (int64_t c = 0; c < 2 * C; ++c) sums[c] += part[c];
      }
    });
    return;
  }
  at::parallel_for(0, numel, kGrain, [&](int64_t begin, int64_t end) {
    double* sums = sums_of();
    for_spans(begin, end, C, inner, [&](int64_t i, int64_t n, int64_t c) {
      backward_values<Op, Glu, false>(gx + i, Glu ? gup + i : gup, g + i, x + i, Glu ? up + i : up, n, &p[c], &q[c],
                                      &sums[c], &sums[C + c]);
    });
  });
}

// The op's per-channel (p, q) from the module's coefficients (c0, c1): dynActivation (alpha, beta) -> (alpha - beta,
// beta); Swish-beta (beta, unused) -> (beta, 0). Read in their own dtype (no double copies: two allocations and
// conversions a call, ~2 us at a decoding step's size), the difference taken in double.
template <typename T>
void op_coefficients(const at::Tensor& c0, const at::Tensor& c1, bool swish, std::vector<T>& p, std::vector<T>& q) {
  const at::Tensor a = c0.contiguous(), b = c1.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, a.scalar_type(), "op_coefficients", [&] {
    const scalar_t *pa = a.const_data_ptr<scalar_t>(), *pb = b.const_data_ptr<scalar_t>();
    for (int64_t c = 0; c < a.numel(); ++c) {
      const double x = static_cast<double>(pa[c]), y = static_cast<double>(pb[c]);
      p.push_back(T(swish ? x : x - y));
      q.push_back(T(swish ? 0.0 : y));
    }
  });
}

// Op ids: 0-5 dynActivation with base relu, leaky_relu, silu, gelu, gelu_tanh, mish; 6 Swish-beta.
constexpr int64_t kSwish = 6;

#define HF_ACTS_DISPATCH_OP(op, ...)                                                          \
  switch (op) {                                                                               \
    case kRelu: { using Op = DynAct<kRelu>; __VA_ARGS__(); break; }                           \
    case kLeakyRelu: { using Op = DynAct<kLeakyRelu>; __VA_ARGS__(); break; }                 \
    case kSilu: { using Op = DynAct<kSilu>; __VA_ARGS__(); break; }                           \
    case kGelu: { using Op = DynAct<kGelu>; __VA_ARGS__(); break; }                           \
    case kGeluTanh: { using Op = DynAct<kGeluTanh>; __VA_ARGS__(); break; }                   \
    case kMish: { using Op = DynAct<kMish>; __VA_ARGS__(); break; }                           \
    case kSwish: { using Op = Swish; __VA_ARGS__(); break; }                                  \
    default: TORCH_CHECK(false, "pointwise: unknown op ", op);                               \
  }

void check(const at::Tensor& x, const at::Tensor& c0, const at::Tensor& c1, int64_t inner) {
  TORCH_CHECK(x.device().is_cpu() && x.is_contiguous(), "pointwise: x must be a contiguous CPU tensor");
  TORCH_CHECK(c0.numel() == c1.numel() && c0.scalar_type() == c1.scalar_type(),
              "pointwise: both coefficients must have one value per channel and one dtype");
  TORCH_CHECK(inner >= 1 && x.numel() % (c0.numel() * inner) == 0, "pointwise: the coefficients do not fit x's layout");
}

void check_up(const std::optional<at::Tensor>& up, const at::Tensor& x) {
  TORCH_CHECK(!up || (up->sizes() == x.sizes() && up->is_contiguous() && up->scalar_type() == x.scalar_type()),
              "pointwise: up must be contiguous like x");
}

#define HF_ACTS_DISPATCH_GLU(glu, ...)                            \
  if (glu) {                                                      \
    constexpr bool Glu = true;                                    \
    __VA_ARGS__();                                                \
  } else {                                                        \
    constexpr bool Glu = false;                                   \
    __VA_ARGS__();                                                \
  }

// c0, c1: the module's coefficients (dynActivation: alpha, beta; Swish-beta: beta, beta), one per channel or one.
// With up: the gated product f(x) up (dynActGLU).
at::Tensor pointwise_forward(const at::Tensor& x, const at::Tensor& c0, const at::Tensor& c1, int64_t op,
                             int64_t inner, const std::optional<at::Tensor>& up) {
  check(x, c0, c1, inner);
  check_up(up, x);
  at::Tensor y = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "pointwise_forward", [&] {
    std::vector<compute_t<scalar_t>> p, q;
    op_coefficients(c0, c1, op == kSwish, p, q);
    const scalar_t* up_p = up ? up->const_data_ptr<scalar_t>() : nullptr;
    HF_ACTS_DISPATCH_OP(op, [&] {
      HF_ACTS_DISPATCH_GLU(up.has_value(), [&] {
        forward_impl<Op, Glu>(y.mutable_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), up_p, x.numel(),
                              c0.numel(), inner, p, q);
      });
    });
  });
  return y;
}

// Returns dx and the gradients of c0 and c1 (c0's dtype and shape; Swish-beta's second is zero); with up, also
// d up = g f(x).
std::vector<at::Tensor> pointwise_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& c0,
                                           const at::Tensor& c1, int64_t op, int64_t inner,
                                           const std::optional<at::Tensor>& up) {
  check(x, c0, c1, inner);
  check_up(up, x);
  TORCH_CHECK(grad.sizes() == x.sizes() && grad.is_contiguous() && grad.scalar_type() == x.scalar_type(),
              "pointwise: grad must be contiguous like x");
  const int64_t C = c0.numel();
  at::Tensor grad_x = at::empty_like(x), grad_up = up ? at::empty_like(x) : at::Tensor();
  std::vector<double> acc(at::get_num_threads() * 2 * C, 0.0);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "pointwise_backward", [&] {
    std::vector<compute_t<scalar_t>> p, q;
    op_coefficients(c0, c1, op == kSwish, p, q);
    const scalar_t* up_p = up ? up->const_data_ptr<scalar_t>() : nullptr;
    scalar_t* gup_p = up ? grad_up.mutable_data_ptr<scalar_t>() : nullptr;
    HF_ACTS_DISPATCH_OP(op, [&] {
      HF_ACTS_DISPATCH_GLU(up.has_value(), [&] {
        backward_impl<Op, Glu>(grad_x.mutable_data_ptr<scalar_t>(), gup_p, grad.const_data_ptr<scalar_t>(),
                               x.const_data_ptr<scalar_t>(), up_p, x.numel(), C, inner, p, q, acc);
      });
    });
  });
  // dynActivation: d alpha = sum g base(x), d beta = sum g x - d alpha; Swish-beta: d beta = the first sum
  at::Tensor g0 = at::zeros({C}, at::kDouble), g1 = at::zeros({C}, at::kDouble);
  double *p0 = g0.mutable_data_ptr<double>(), *p1 = g1.mutable_data_ptr<double>();
  for (size_t t = 0; t < acc.size() / (2 * C); ++t)
    for (int64_t c = 0; c < C; ++c) {
      p0[c] += acc[t * 2 * C + c];
      p1[c] += acc[t * 2 * C + C + c];
    }
  for (int64_t c = 0; c < C; ++c) p1[c] = op == kSwish ? 0.0 : p1[c] - p0[c];
  std::vector<at::Tensor> out{grad_x, g0.view(c0.sizes()).to(c0.scalar_type()), g1.view(c1.sizes()).to(c1.scalar_type())};
  if (up) out.push_back(grad_up);
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &pointwise_forward, "pointwise activation forward, or with up the gated product (CPU, fused)",
        py::arg("x"), py::arg("c0"), py::arg("c1"), py::arg("op"), py::arg("inner"), py::arg("up") = py::none());
  m.def("backward", &pointwise_backward, "pointwise activation backward and coefficient sums (CPU, fused)",
        py::arg("grad"), py::arg("x"), py::arg("c0"), py::arg("c1"), py::arg("op"), py::arg("inner"),
        py::arg("up") = py::none());
}
