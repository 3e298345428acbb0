// gpuvjp kernels: elementwise binary ops (same names and order as gpuvjp/ops/binary.py).
namespace gv {

// div: z = x / y, gy = -g * x / y^2 = -g * z / y
template <typename T> __device__ T div_bwd_y(T g, T ans, T y) { return -g * ans / y; }

// pow: z = x^y, gx = g * y * x^(y-1), 0 where y == 0 (no 0 * inf at x == 0)
template <typename T> __device__ T pow_bwd_x(T g, T x, T y) {
  return y == T(0) ? T(0) : g * y * pow(x, y - T(1));
}
// pow: gy = g * z * log(x), 0 where x == 0 and y >= 0 (the limit PyTorch takes)
template <typename T> __device__ T pow_bwd_y(T g, T ans, T x, T y) {
  return (x == T(0) && y >= T(0)) ? T(0) : g * ans * log(x);
}

}  // namespace gv
