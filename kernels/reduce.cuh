// gpuvjp kernels: reductions' backward passes (same names and order as gpuvjp/ops/reduce.py).
namespace gv {

// logsumexp: y = log(sum(exp(x))), gx = g exp(x - y)
template <typename T> __device__ T logsumexp_bwd(T g, T x, T ans) { return g * exp(x - ans); }

// var: v = sum((x - mu)^2) / (N - correction), gx = g scale (x - mu), scale = 2 / (N - c)
template <typename T> __device__ T var_bwd(T g, T x, T mu, T scale) {
  return g * scale * (x - mu);
}

}  // namespace gv
