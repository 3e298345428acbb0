// gpuvjp kernels: reductions, forward (one-pass row states) and backward (same names and
// order as gpuvjp/ops/reduce.py).
namespace gv {

// logsumexp in one pass over x. The state (m, s) stands for s exp(m), with m the largest x seen,
// so exp never overflows and s <= the number of elements; states merge in any order, one exp per
// merge. The empty state (-inf, 0) gives log(0) = -inf, PyTorch's value for an empty row. A NaN
// makes the state NaN; +inf gives +inf, as PyTorch (which shifts by 0 where the max is infinite).
template <typename T> struct MaxSum { T m; T s; };

template <typename T> __device__ MaxSum<T> lse_empty() {
  MaxSum<T> r; r.m = T(-1) / T(0); r.s = T(0); return r;
}
template <typename T> __device__ MaxSum<T> lse_one(T x) {
  MaxSum<T> r; r.m = x; r.s = T(1); return r;
}
template <typename T> __device__ MaxSum<T> lse_merge(MaxSum<T> a, MaxSum<T> b) {
  if (a.s == T(0)) return b;
  if (b.s == T(0)) return a;
  MaxSum<T> r;
  if (a.m == b.m) { r.m = a.m; r.s = a.s + b.s; }            // equal, both +inf or both -inf
  else if (a.m > b.m) { r.m = a.m; r.s = a.s + b.s * exp(b.m - a.m); }
  else if (b.m > a.m) { r.m = b.m; r.s = b.s + a.s * exp(a.m - b.m); }
  else { r.m = a.m + b.m; r.s = r.m; }                       // a NaN: the state stays NaN
  return r;
}
template <typename T> __device__ T lse_value(MaxSum<T> a) { return a.m + log(a.s); }

// softmax's row statistics, as PyTorch takes them: the max m, and s = sum(exp(x - m)), which is
// NaN where m is infinite (inf - inf) or the row holds a NaN, and 0 for an empty row
template <typename T> __device__ T lse_max(MaxSum<T> a) { return a.m + (a.s - a.s); }
template <typename T> __device__ T lse_sum(MaxSum<T> a) {
  return a.s == T(0) ? a.s : (a.m - a.m == T(0) ? a.s : a.m - a.m);
}

// logsumexp: y = log(sum(exp(x))), gx = g exp(x - y)
template <typename T> __device__ T logsumexp_bwd(T g, T x, T ans) { return g * exp(x - ans); }

// var: v = sum((x - mu)^2) / (N - correction), gx = g scale (x - mu), scale = 2 / (N - c)
template <typename T> __device__ T var_bwd(T g, T x, T mu, T scale) {
  return g * scale * (x - mu);
}

}  // namespace gv
