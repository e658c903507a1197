// FleS (papers/fles-poster.md): phi(x) = k_ve rho(k_ho x) x with per-sample, per-channel coefficients computed
// from the positive channel means m = sum relu(x) / (count(x > 0) + eps). The whole op runs one sample at a time,
// so the second pass over a sample reads it from cache (the samples spread over the threads; a batch smaller than
// the thread count spreads each sample's rows or channels instead):
//   forward   stats (pos = sum relu(x), count = sum [x > 0]; 1 read), the coefficient MLP
//             [k_ve, k_ho] = 1 + tanh(fc2(relu(fc1(m)))), then y = k_ve rho(k_ho x) x (1 read + 1 write)
//   backward  d k_ve = sum g rho(u) x, d k_ho = sum g k_ve rho'(u) x^2 (u = k_ho x) and dx's first term
//             g k_ve (rho(u) + u rho'(u)) (2 reads + 1 write: into dx, or a per-thread float buffer for 16-bit x),
//             the MLP's backward to d m, then dx = that term + [x > 0] d m / denom (2 reads + 1 write, no rho)
// The weight gradients (two (hidden, C)-sized products over the batch) are left to PyTorch.
// x is viewed as (B, R, C, I): images (B, 1, C, H*W), tokens (B, N, C, 1); coefficients and statistics are (B, C).
// Loads and stores in x's dtype, arithmetic in float (double for double). The ReLUs let a NaN pass (relu_ in
// vec_math.h), as torch.relu does: a NaN input makes its sample's output NaN.
// The loops index local pointers (xs = x + off): through the pointers the lambdas capture by reference, GCC 12
// vectorised the reductions over H*W spans so poorly that they ran 3-15x slower (float32 and bfloat16).
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <type_traits>
#include <vector>

#include "vec_math.h"

namespace {

using namespace hf_acts;

enum Gate : int64_t { kSigmoid = 0, kNormalCdf = 1 };

template <int64_t G, typename T>
inline T gate(T u, T* grad) {
  if constexpr (G == kSigmoid) {
    const T s = sigmoid_(u);
    *grad = s * (T(1) - s);
    return s;
  } else {
    const auto [cdf, pdf] = normal_cdf_pdf(u);
    *grad = pdf;
    return cdf;
  }
}

// scale rho(u) for the forward (the sigmoid as one division)
template <int64_t G, typename T>
inline T scaled_gate(T u, T scale) {
  if constexpr (G == kSigmoid) {
    return scaled_sigmoid_(u, scale);
  } else {
    return scale * normal_cdf_pdf(u).cdf;
  }
}

struct Layout {
  int64_t B, R, C, I, H;  // H: the MLP's hidden width
  int64_t sample() const { return R * C * I; }
};

// A sample is a list of units: its (r, c) spans of I positions when I > 1, else its R rows of C channels.
inline int64_t units(const Layout& l) { return l.I > 1 ? l.R * l.C : l.R; }

// Runs fn(row, offset, n, c) over units [u0, u1), offsets from the sample's start: a span of I positions of channel
// c when I > 1 (row: std::false_type), else a row of C channels (row: std::true_type, c = 0), so that one generic
// lambda calls the Row or span instantiation of the loops below.
template <typename F>
void visit(const Layout& l, int64_t u0, int64_t u1, F fn) {
  for (int64_t u = u0; u < u1; ++u) {
    if (l.I > 1) {
      fn(std::false_type{}, u * l.I, l.I, u % l.C);
    } else {
      fn(std::true_type{}, u * l.C, l.C, 0);
    }
  }
}

// The loops below run over n values with one coefficient (an H*W span of one channel, sums into pos[0]) or, Row,
// one per value (a row of C channels, sums into pos[c]); float16 on float blocks (kStaged, vec_math.h).

// pos += sum relu(x), count += sum [x > 0].
template <bool Row, typename S, typename T = compute_t<S>>
void stats_values(const S* xs, int64_t n, T* pos, T* count) {
  if constexpr (kStaged<S>) {
    staged(n, [&](int64_t i0, int64_t m) {
      T xb[kStage];
      to_float(xb, xs + i0, m);
      const int64_t o = block_offset<Row>(i0);
      stats_values<Row>(xb, m, pos + o, count + o);
    });
  } else if constexpr (!Row) {
    T p = 0, c = 0;
#pragma omp simd reduction(+ : p, c)
    for (int64_t i = 0; i < n; ++i) {
      const T v = load(xs, i);
      p += relu_(v);
      c += v > T(0) ? T(1) : T(0);
    }
    *pos += p;
    *count += c;
  } else {
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) {
      const T v = load(xs, c);
      pos[c] += relu_(v);
      count[c] += v > T(0) ? T(1) : T(0);
    }
  }
}

// pos[c] += sum relu(x), count[c] += sum [x > 0] over units [u0, u1) of one sample.
template <typename S, typename T = compute_t<S>>
void sample_stats(const Layout& l, const S* x, T* pos, T* count, int64_t u0, int64_t u1) {
  visit(l, u0, u1, [&](auto row, int64_t off, int64_t n, int64_t c) {
    stats_values<decltype(row)::value>(x + off, n, pos + c, count + c);
  });
}

// The coefficient MLP of one sample: m = pos / denom (denom = count + eps), h = relu(w1 m + b1),
// t = tanh(w2 h + b2); m, pos share storage (pos in, m out), as do denom and count.
template <typename T>
void sample_mlp(const Layout& l, const T* w1, const T* b1, const T* w2, const T* b2, double eps, T* m, T* denom,
                T* h, T* t) {
  for (int64_t c = 0; c < l.C; ++c) {
    denom[c] += T(eps);
    m[c] /= denom[c];
  }
  for (int64_t j = 0; j < l.H; ++j) {
    const T* w = w1 + j * l.C;
    T acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t c = 0; c < l.C; ++c) acc += w[c] * m[c];
    acc += b1[j];
    h[j] = relu_(acc);
  }
  // The 2C dot products vectorised: without the reduction clause each ran one scalar add chain, two thirds of a
  // (1, 2048, 7, 7) forward at batch 1 (0.64x of that forward's time with it).
  for (int64_t k = 0; k < 2 * l.C; ++k) {
    const T* w = w2 + k * l.H;
    T acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t j = 0; j < l.H; ++j) acc += w[j] * h[j];
    t[k] = acc + b2[k];
  }
#pragma omp simd
  for (int64_t k = 0; k < 2 * l.C; ++k) t[k] = tanh_(t[k]);  // a separate loop: libmvec's vector tanh
}

// y = k_ve rho(k_ho x) x.
template <int64_t G, bool Row, typename S, typename T = compute_t<S>>
void apply_values(const S* xs, S* ys, int64_t n, const T* ve, const T* ho) {
  if constexpr (kStaged<S>) {
    staged(n, [&](int64_t i0, int64_t m) {
      T xb[kStage], yb[kStage];
      to_float(xb, xs + i0, m);
      const int64_t o = block_offset<Row>(i0);
      apply_values<G, Row>(xb, yb, m, ve + o, ho + o);
      from_float(ys + i0, yb, m);
    });
  } else if constexpr (!Row) {
    const T a = *ve, h = *ho;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const T v = load(xs, i);
      store(ys, i, scaled_gate<G>(h * v, a * v));
    }
  } else {
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) {
      const T v = load(xs, c);
      store(ys, c, scaled_gate<G>(ho[c] * v, ve[c] * v));
    }
  }
}

template <int64_t G, typename S, typename T = compute_t<S>>
void sample_apply(const Layout& l, const S* x, S* y, const T* ve, const T* ho, int64_t u0, int64_t u1) {
  visit(l, u0, u1, [&](auto row, int64_t off, int64_t n, int64_t c) {
    apply_values<G, decltype(row)::value>(x + off, y + off, n, ve + c, ho + c);
  });
}

// sum_a += sum g rho(u) x, sum_d += sum g rho'(u) x^2 (u = k_ho x), and dx's part that needs no sum,
// g k_ve (rho(u) + u rho'(u)), into `first` (in the compute type).
template <int64_t G, bool Row, typename S, typename T = compute_t<S>>
void coef_sums_values(const S* gs, const S* xs, T* fs, int64_t n, const T* ve, const T* ho, T* sum_a, T* sum_d) {
  if constexpr (kStaged<S>) {
    staged(n, [&](int64_t i0, int64_t m) {
      T gb[kStage], xb[kStage];
      to_float(gb, gs + i0, m);
      to_float(xb, xs + i0, m);
      const int64_t o = block_offset<Row>(i0);
      coef_sums_values<G, Row>(gb, xb, fs + i0, m, ve + o, ho + o, sum_a + o, sum_d + o);
    });
  } else if constexpr (!Row) {
    const T k = *ve, h = *ho;
    T a = 0, d = 0;
#pragma omp simd reduction(+ : a, d)
    for (int64_t i = 0; i < n; ++i) {
      const T v = load(xs, i), gi = load(gs, i), u = h * v;
      T dgate;
      const T rho = gate<G>(u, &dgate);
      a += gi * rho * v;
      d += gi * dgate * v * v;
      fs[i] = gi * k * (rho + u * dgate);
    }
    *sum_a += a;
    *sum_d += d;
  } else {
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) {
      const T v = load(xs, c), gi = load(gs, c), u = ho[c] * v;
      T dgate;
      const T rho = gate<G>(u, &dgate);
      sum_a[c] += gi * rho * v;
      sum_d[c] += gi * dgate * v * v;
      fs[c] = gi * ve[c] * (rho + u * dgate);
    }
  }
}

// The backward's first pass over units [u0, u1) of one sample (first: laid out like x), so that rho is evaluated
// once per element in the backward.
template <int64_t G, typename S, typename T = compute_t<S>>
void sample_coef_sums(const Layout& l, const S* g, const S* x, const T* ve, const T* ho, T* first, T* sum_a,
                      T* sum_d, int64_t u0, int64_t u1) {
  visit(l, u0, u1, [&](auto row, int64_t off, int64_t n, int64_t c) {
    coef_sums_values<G, decltype(row)::value>(g + off, x + off, first + off, n, ve + c, ho + c, sum_a + c, sum_d + c);
  });
}

// The MLP's backward for one sample, from the coefficient sums to d pos = d m / denom (written over sum_a):
// d pre2 = [d k_ve, d k_ho] (1 - t^2), d pre1 = (w2^T d pre2) [h > 0], d m = w1^T d pre1.
template <typename T>
void sample_mlp_backward(const Layout& l, const T* w1, const T* w2, const T* denom, const T* h, const T* t,
                         const T* ve, T* sum_a, const T* sum_d, T* d_pre1, T* d_pre2) {
  for (int64_t c = 0; c < l.C; ++c) {
    d_pre2[c] = sum_a[c] * (T(1) - t[c] * t[c]);
    d_pre2[l.C + c] = sum_d[c] * ve[c] * (T(1) - t[l.C + c] * t[l.C + c]);
  }
  std::fill(d_pre1, d_pre1 + l.H, T(0));
  for (int64_t k = 0; k < 2 * l.C; ++k) {
    const T* w = w2 + k * l.H;
    const T d = d_pre2[k];
    for (int64_t j = 0; j < l.H; ++j) d_pre1[j] += d * w[j];
  }
  for (int64_t j = 0; j < l.H; ++j) d_pre1[j] = relu_grad_(h[j], d_pre1[j]);
  T* dpos = sum_a;
  std::fill(dpos, dpos + l.C, T(0));
  for (int64_t j = 0; j < l.H; ++j) {
    const T* w = w1 + j * l.C;
    const T d = d_pre1[j];
#pragma omp simd
    for (int64_t c = 0; c < l.C; ++c) dpos[c] += d * w[c];
  }
  for (int64_t c = 0; c < l.C; ++c) dpos[c] /= denom[c];
}

// The second pass: dx = first + [x > 0] d m / denom (dpos), stored in x's dtype; `first` may be gx itself.
template <bool Row, typename S, typename T = compute_t<S>>
void input_grad_values(const S* xs, const T* fs, S* out, int64_t n, const T* dpos) {
  if constexpr (kStaged<S>) {
    staged(n, [&](int64_t i0, int64_t m) {
      T xb[kStage], gb[kStage];
      to_float(xb, xs + i0, m);
      input_grad_values<Row>(xb, fs + i0, gb, m, dpos + block_offset<Row>(i0));
      from_float(out + i0, gb, m);
    });
  } else if constexpr (!Row) {
    const T d = *dpos;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) store(out, i, fs[i] + relu_grad_(load(xs, i), d));
  } else {
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) store(out, c, fs[c] + relu_grad_(load(xs, c), dpos[c]));
  }
}

template <typename S, typename T = compute_t<S>>
void sample_input_grad(const Layout& l, const S* x, const T* first, S* gx, const T* dpos, int64_t u0, int64_t u1) {
  visit(l, u0, u1, [&](auto row, int64_t off, int64_t n, int64_t c) {
    input_grad_values<decltype(row)::value>(x + off, first + off, gx + off, n, dpos + c);
  });
}

// k_ve = 1 + t[:C], k_ho = 1 + t[C:] of one sample.
template <typename T>
void coefficients(const Layout& l, const T* t, T* ve, T* ho) {
  for (int64_t c = 0; c < l.C; ++c) {
    ve[c] = T(1) + t[c];
    ho[c] = T(1) + t[l.C + c];
  }
}

// Units per task when one sample is split over the threads: at least 32K elements.
inline int64_t grain(const Layout& l) { return std::max<int64_t>(1, 32768 / (l.I > 1 ? l.I : l.C)); }

// fn(u0, u1) over a sample's units: in one call where the samples are spread over the threads, else split over
// the threads (batches smaller than the thread count).
template <typename F>
void for_units(const Layout& l, bool split, F fn) {
  if (split) {
    at::parallel_for(0, units(l), grain(l), fn);
  } else {
    fn(0, units(l));
  }
}

// Two C-sized sums over one sample into a and b, add(a, b, u0, u1) adding a range of units. Split over the threads,
// each thread adds into its own copy, and the copies are added afterwards.
template <typename T, typename Add>
void sample_sums(const Layout& l, bool split, T* a, T* b, Add add) {
  std::fill(a, a + l.C, T(0));
  std::fill(b, b + l.C, T(0));
  if (!split) {
    add(a, b, 0, units(l));
    return;
  }
  const int64_t nthreads = at::get_num_threads();
  std::vector<T> part(nthreads * 2 * l.C, T(0));
  at::parallel_for(0, units(l), grain(l), [&](int64_t u0, int64_t u1) {
    TORCH_CHECK(at::get_thread_num() < nthreads, "fles: unexpected thread id");
    T* p = part.data() + at::get_thread_num() * 2 * l.C;
    add(p, p + l.C, u0, u1);
  });
  for (int64_t k = 0; k < nthreads; ++k)
    for (int64_t c = 0; c < l.C; ++c) {
      a[c] += part[k * 2 * l.C + c];
      b[c] += part[k * 2 * l.C + l.C + c];
    }
}

#define HF_ACTS_DISPATCH_GATE(gate_id, ...)                                     \
  switch (gate_id) {                                                            \
    case kSigmoid: { constexpr int64_t G = kSigmoid; __VA_ARGS__(); break; }    \
    case kNormalCdf: { constexpr int64_t G = kNormalCdf; __VA_ARGS__(); break; } \
    default: TORCH_CHECK(false, "fles: unknown gate ", gate_id);                \
  }

at::ScalarType compute_type(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

Layout layout_of(const at::Tensor& x, const at::Tensor& w1, int64_t I) {
  TORCH_CHECK(x.device().is_cpu() && x.is_contiguous(), "fles: x must be a contiguous CPU tensor");
  const int64_t C = w1.size(1);
  TORCH_CHECK(x.dim() >= 2 && C > 0 && I > 0 && x.numel() % (x.size(0) * C * I) == 0, "fles: bad layout");
  return {x.size(0), x.numel() / (x.size(0) * C * I), C, I, w1.size(0)};
}

void check_small(const at::Tensor& t, const at::Tensor& x, int64_t numel, const char* what) {
  TORCH_CHECK(t.scalar_type() == compute_type(x) && t.is_contiguous() && t.numel() == numel, "fles: ", what,
              " must be contiguous with ", numel, " elements in float32 (float64 for float64 x)");
}

// Returns (y, m, denom, h, t): y like x; m, denom (B, C); h (B, hidden); t (B, 2C) in the compute type.
std::vector<at::Tensor> forward(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1,
                                const at::Tensor& w2, const at::Tensor& b2, int64_t gate_id, int64_t I, double eps) {
  const Layout l = layout_of(x, w1, I);
  check_small(w1, x, l.H * l.C, "w1");
  check_small(b1, x, l.H, "b1");
  check_small(w2, x, 2 * l.C * l.H, "w2");
  check_small(b2, x, 2 * l.C, "b2");
  const auto opts = x.options().dtype(compute_type(x));
  at::Tensor y = at::empty_like(x), m = at::empty({l.B, l.C}, opts), denom = at::empty({l.B, l.C}, opts),
             h = at::empty({l.B, l.H}, opts), t = at::empty({l.B, 2 * l.C}, opts);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "fles_forward", [&] {
    using T = compute_t<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    const T *w1p = w1.const_data_ptr<T>(), *b1p = b1.const_data_ptr<T>(), *w2p = w2.const_data_ptr<T>(),
            *b2p = b2.const_data_ptr<T>();
    T *mp = m.mutable_data_ptr<T>(), *dp = denom.mutable_data_ptr<T>(), *hp = h.mutable_data_ptr<T>(),
      *tp = t.mutable_data_ptr<T>();
    HF_ACTS_DISPATCH_GATE(gate_id, [&] {
      // per sample: statistics, MLP, apply; the samples over the threads, or each sample's units where the batch
      // is smaller than the thread count (batch 1 inference, one long sequence)
      const bool split = l.B < at::get_num_threads();
      at::parallel_for(0, l.B, split ? l.B : 1, [&](int64_t b0, int64_t b1_) {  // split: one task, run inline
        std::vector<T> ve(l.C), ho(l.C);
        for (int64_t b = b0; b < b1_; ++b) {
          const scalar_t* xb = xp + b * l.sample();
          scalar_t* yb = yp + b * l.sample();
          T *mb = mp + b * l.C, *db = dp + b * l.C, *hb = hp + b * l.H, *tb = tp + b * 2 * l.C;
          const auto stats = [&](T* pos, T* count, int64_t u0, int64_t u1) {
            sample_stats(l, xb, pos, count, u0, u1);
          };
          sample_sums(l, split, mb, db, stats);
          sample_mlp(l, w1p, b1p, w2p, b2p, eps, mb, db, hb, tb);
          coefficients(l, tb, ve.data(), ho.data());
          const T *vep = ve.data(), *hop = ho.data();
          for_units(l, split, [&](int64_t u0, int64_t u1) { sample_apply<G>(l, xb, yb, vep, hop, u0, u1); });
        }
      });
    });
  });
  return {y, m, denom, h, t};
}

// Returns (dx, d pre1, d pre2): dx like x; d pre1 (B, hidden) and d pre2 (B, 2C), the gradients at fc1's and fc2's
// outputs, from which the caller forms the weight gradients.
std::vector<at::Tensor> backward(const at::Tensor& g, const at::Tensor& x, const at::Tensor& w1,
                                 const at::Tensor& w2, const at::Tensor& denom, const at::Tensor& h,
                                 const at::Tensor& t, int64_t gate_id, int64_t I) {
  const Layout l = layout_of(x, w1, I);
  TORCH_CHECK(g.sizes() == x.sizes() && g.is_contiguous() && g.scalar_type() == x.scalar_type(),
              "fles: grad must be contiguous like x");
  check_small(w1, x, l.H * l.C, "w1");
  check_small(w2, x, 2 * l.C * l.H, "w2");
  check_small(denom, x, l.B * l.C, "denom");
  check_small(h, x, l.B * l.H, "h");
  check_small(t, x, l.B * 2 * l.C, "t");
  const auto opts = x.options().dtype(compute_type(x));
  at::Tensor gx = at::empty_like(x), d_pre1 = at::empty({l.B, l.H}, opts), d_pre2 = at::empty({l.B, 2 * l.C}, opts);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "fles_backward", [&] {
    using T = compute_t<scalar_t>;
    const scalar_t *xp = x.const_data_ptr<scalar_t>(), *gp = g.const_data_ptr<scalar_t>();
    scalar_t* gxp = gx.mutable_data_ptr<scalar_t>();
    const T *w1p = w1.const_data_ptr<T>(), *w2p = w2.const_data_ptr<T>(), *dp = denom.const_data_ptr<T>(),
            *hp = h.const_data_ptr<T>(), *tp = t.const_data_ptr<T>();
    T *d1p = d_pre1.mutable_data_ptr<T>(), *d2p = d_pre2.mutable_data_ptr<T>();
    HF_ACTS_DISPATCH_GATE(gate_id, [&] {
      const bool split = l.B < at::get_num_threads();  // as in the forward
      at::parallel_for(0, l.B, split ? l.B : 1, [&](int64_t b0, int64_t b1) {
        std::vector<T> ve(l.C), ho(l.C), sum_a(l.C), sum_d(l.C);
        // dx's first term: in gx itself for float32/64, else in a float buffer (new T[]: uninitialised, it is
        // written first; std::make_unique_for_overwrite is C++20, and older torch builds extensions as C++17)
        const std::unique_ptr<T[]> first_buffer(std::is_same_v<scalar_t, T> ? nullptr : new T[l.sample()]);
        for (int64_t b = b0; b < b1; ++b) {
          const int64_t off = b * l.sample();
          const scalar_t *xb = xp + off, *gb = gp + off;
          scalar_t* gxb = gxp + off;
          T* first = first_buffer ? first_buffer.get() : reinterpret_cast<T*>(gxb);
          const T* tb = tp + b * 2 * l.C;
          coefficients(l, tb, ve.data(), ho.data());
          const T *vep = ve.data(), *hop = ho.data();
          const auto sums = [&](T* a, T* d, int64_t u0, int64_t u1) {
            sample_coef_sums<G>(l, gb, xb, vep, hop, first, a, d, u0, u1);
          };
          sample_sums(l, split, sum_a.data(), sum_d.data(), sums);
          sample_mlp_backward(l, w1p, w2p, dp + b * l.C, hp + b * l.H, tb, vep, sum_a.data(), sum_d.data(),
                              d1p + b * l.H, d2p + b * 2 * l.C);
          const T* dpos = sum_a.data();
          for_units(l, split, [&](int64_t u0, int64_t u1) {
            sample_input_grad(l, xb, first, gxb, dpos, u0, u1);
          });
        }
      });
    });
  });
  return {gx, d_pre1, d_pre2};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "FleS forward: statistics, coefficient MLP and phi(x), per sample (CPU, fused)");
  m.def("backward", &backward, "FleS backward: input gradient and the MLP's pre-activation gradients (CPU, fused)");
}
