// gpuvjp kernels: gpuvjp.nn.functional (same names and order as gpuvjp/nn/functional.py).
namespace gv {

// gelu: y = x Phi(x) = 0.5 x (1 + erf(x / sqrt(2))), gx = g (Phi(x) + x phi(x))
template <typename T> __device__ T gelu_fwd(T x) {
  return T(0.5) * x * (T(1) + erf(x * T(0.70710678118654752440)));
}
template <typename T> __device__ T gelu_bwd(T g, T x) {
  T cdf = T(0.5) * (T(1) + erf(x * T(0.70710678118654752440)));
  T pdf = T(0.39894228040143267794) * exp(T(-0.5) * x * x);
  return g * (cdf + x * pdf);
}

// gelu, tanh approximation: y = 0.5 x (1 + t), t = tanh(u), u = k (x + c x^3),
// gx = g (0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 c x^2)), k = sqrt(2 / pi), c = 0.044715
template <typename T> __device__ T gelu_tanh_fwd(T x) {
  T u = T(0.79788456080286535588) * (x + T(0.044715) * x * x * x);
  return T(0.5) * x * (T(1) + tanh(u));
}
template <typename T> __device__ T gelu_tanh_bwd(T g, T x) {
  T u = T(0.79788456080286535588) * (x + T(0.044715) * x * x * x);
  T t = tanh(u);
  T du = T(0.79788456080286535588) * (T(1) + T(3) * T(0.044715) * x * x);
  return g * (T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * du);
}

// silu: y = x s, s = sigmoid(x), gx = g s (1 + x (1 - s))
template <typename T> __device__ T silu_fwd(T x) { return x / (T(1) + exp(-x)); }
template <typename T> __device__ T silu_bwd(T g, T x) {
  T s = T(1) / (T(1) + exp(-x));
  return g * s * (T(1) + x * (T(1) - s));
}

// softplus: z = beta x; y = x where z > threshold, else log(1 + exp(z)) / beta;
// gx = g where z > threshold, else g sigmoid(z)
template <typename T> __device__ T softplus_fwd(T x, T beta, T threshold) {
  T z = x * beta;
  return z > threshold ? x : log1p(exp(z)) / beta;
}
template <typename T> __device__ T softplus_bwd(T g, T x, T beta, T threshold) {
  T z = x * beta;
  return z > threshold ? g : g / (T(1) + exp(-z));
}

// softmax forward from the row's max m and s = sum(exp(x - m)): y = exp(x - m) / s
template <typename T> __device__ T softmax_fwd(T x, T m, T s) { return exp(x - m) / s; }
// log_softmax forward: y = (x - m) - log(s)
template <typename T> __device__ T log_softmax_fwd(T x, T m, T s) { return (x - m) - log(s); }

// softmax: gx = y (g - s), s = sum(g y) over the softmax dim
template <typename T> __device__ T softmax_bwd(T g, T ans, T s) { return ans * (g - s); }

// log_softmax: gx = g - exp(y) s, s = sum(g) over the softmax dim
template <typename T> __device__ T log_softmax_bwd(T g, T ans, T s) { return g - exp(ans) * s; }

// cross_entropy, class-index targets: nll = log(s) - (x_t - m), which is -log_softmax(x) at the
// target, from the row's max m and s = sum(exp(x - m))
template <typename T> __device__ T ce_fwd(T xt, T m, T s) { return log(s) - (xt - m); }
// and its gradient in one launch over the logits: gx = g (softmax(x) - [k == t]) at class k
template <typename T> __device__ T ce_bwd(T g, T x, T m, T s, long long t, long long k) {
  return g * (exp(x - m) / s - (k == t ? T(1) : T(0)));
}

}  // namespace gv
