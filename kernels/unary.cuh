// gpuvjp kernels: elementwise unary ops (same names and order as gpuvjp/ops/unary.py).
namespace gv {

// exp: y = exp(x), gx = g * exp(x), recomputed so the forward output need not be kept
template <typename T> __device__ T exp_fwd(T x) { return exp(x); }
template <typename T> __device__ T exp_bwd(T g, T x) { return g * exp(x); }

// tanh: y = tanh(x), gx = g * (1 - y*y)
template <typename T> __device__ T tanh_bwd(T g, T ans) { return g * (T(1) - ans * ans); }

// sigmoid: y = 1 / (1 + exp(-x)), gx = g * y * (1 - y)
template <typename T> __device__ T sigmoid_fwd(T x) {
  return x >= T(0) ? T(1) / (T(1) + exp(-x)) : exp(x) / (T(1) + exp(x));
}
template <typename T> __device__ T sigmoid_bwd(T g, T ans) { return g * ans * (T(1) - ans); }

// relu: y = max(x, 0), gx = 0 where y <= 0 else g (0 at x == 0; nan passes g, as PyTorch)
template <typename T> __device__ T relu_bwd(T g, T ans) { return ans <= T(0) ? T(0) : g; }

// rsqrt: y = 1 / sqrt(x) in one launch (the gradient -y^3 / 2 is composed from ops)
template <typename T> __device__ T rsqrt_fwd(T x) { return T(1) / sqrt(x); }

// erf: y = erf(x), gx = g * 2/sqrt(pi) * exp(-x*x)
template <typename T> __device__ T erf_fwd(T x) { return erf(x); }
template <typename T> __device__ T erf_bwd(T g, T x) {
  return g * (T(1.1283791670955126) * exp(-x * x));
}

}  // namespace gv
