// gpuvjp kernels: elementwise unary ops (same names and order as gpuvjp/ops/unary.py).
namespace gv {

// exp: y = exp(x), gx = g * exp(x), recomputed so the forward output need not be kept
template <typename T> __device__ T exp_fwd(T x) { return exp(x); }
template <typename T> __device__ T exp_bwd(T g, T x) { return g * exp(x); }

// tanh: y = tanh(x), gx = g * (1 - y*y)
template <typename T> __device__ T tanh_bwd(T g, T ans) { return g * (T(1) - ans * ans); }
// d(tanh_bwd)/d(ans) = -2 * g * ans
template <typename T> __device__ T tanh_bwd2(T gg, T g, T ans) { return T(-2) * gg * g * ans; }

// sigmoid: y = 1 / (1 + exp(-x)), gx = g * y * (1 - y)
template <typename T> __device__ T sigmoid_fwd(T x) {
  return x >= T(0) ? T(1) / (T(1) + exp(-x)) : exp(x) / (T(1) + exp(x));
}
template <typename T> __device__ T sigmoid_bwd(T g, T ans) { return g * ans * (T(1) - ans); }
// d(sigmoid_bwd)/d(ans) = g * (1 - 2 y)
template <typename T> __device__ T sigmoid_bwd2(T gg, T g, T ans) {
  return gg * g * (T(1) - T(2) * ans);
}

// relu: y = max(x, 0), gx = g where x > 0 else 0 (0 at x == 0, as PyTorch)
template <typename T> __device__ T relu_bwd(T g, T x) { return x > T(0) ? g : T(0); }

}  // namespace gv
