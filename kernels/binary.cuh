// gpuvjp kernels: elementwise binary ops (same names and order as gpuvjp/ops/binary.py).
namespace gv {

// div: z = x / y, gy = -g * x / y^2 = -g * z / y
template <typename T> __device__ T div_bwd_y(T g, T ans, T y) { return -g * ans / y; }

// x^e with PyTorch's special cases: e = 1/2 is sqrt(x) and e = -1/2 is 1 / sqrt(x), which
// differ from pow at -0 and -inf
template <typename T> __device__ T pow_exact(T x, T e) {
  return e == T(0.5) ? sqrt(x) : (e == T(-0.5) ? T(1) / sqrt(x) : pow(x, e));
}

// pow: z = x^y, gx = g * y * x^(y-1), 0 where y == 0 (no 0 * inf at x == 0)
template <typename T> __device__ T pow_bwd_x(T g, T x, T y) {
  return y == T(0) ? T(0) : g * y * pow_exact(x, y - T(1));
}
// pow: gy = g * z * log(x), 0 where x == 0 and y >= 0 (the limit PyTorch takes)
template <typename T> __device__ T pow_bwd_y(T g, T ans, T x, T y) {
  return (x == T(0) && y >= T(0)) ? T(0) : g * ans * log(x);
}

}  // namespace gv
