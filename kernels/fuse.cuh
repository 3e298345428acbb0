// gpuvjp kernels: helpers of the generated fused kernels (gpuvjp/_plan.py, ops/_kernels.py),
// for the ufuncs whose NumPy meaning plain C does not give: nan in maximum/minimum, -0 in abs.
#ifndef GV_FUSE_CUH
#define GV_FUSE_CUH
#if !defined(__CUDACC__)
namespace gv {
using std::sin; using std::cos; using std::tan; using std::exp2; using std::log2;
using std::sinh; using std::cosh; using std::asinh; using std::atanh; using std::asin;
using std::acos; using std::atan; using std::floor; using std::ceil; using std::trunc;
using std::rint; using std::hypot; using std::fmod; using std::copysign;
}  // namespace gv
#endif
namespace gv {

// maximum / minimum: nan if either operand is nan (NumPy and PyTorch)
template <typename T> __device__ T fz_max(T a, T b) { return (a > b || a != a) ? a : b; }
template <typename T> __device__ T fz_min(T a, T b) { return (a < b || a != a) ? a : b; }

// abs: |x|, +0 for -0, nan stays nan
template <typename T> __device__ T fz_abs(T x) { return x < T(0) ? T(-x) : (x == T(0) ? T(0) : x); }

// relu: max(x, 0) as np.maximum(x, 0): nan stays nan
template <typename T> __device__ T fz_relu(T x) { return (x > T(0) || x != x) ? x : T(0); }

// sign: -1, 0, 1; sign(nan) = 0, as PyTorch
template <typename T> __device__ T fz_sign(T x) {
  return x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0));
}

// logaddexp: log(exp(a) + exp(b)) = max + log1p(exp(-|a - b|)); equal infinities stay
// infinite (NumPy's npy_logaddexp)
template <typename T> __device__ T fz_logaddexp(T a, T b) {
  if (a == b) return a + T(0.6931471805599453);
  const T d = a - b;
  return d > T(0) ? a + log1p(exp(-d)) : (d <= T(0) ? b + log1p(exp(d)) : d);
}

// fmod: the remainder with the sign of a; integer modulo by zero gives 0, as NumPy
template <typename T> __device__ T fz_fmod(T a, T b) { return fmod(a, b); }
__device__ inline long long fz_fmod(long long a, long long b) { return b == 0 ? 0 : a % b; }
__device__ inline int fz_fmod(int a, int b) { return b == 0 ? 0 : a % b; }

// remainder: the remainder with the sign of b (Python's %); a zero takes b's sign, as NumPy
template <typename T> __device__ T fz_remainder(T a, T b) {
  T m = fmod(a, b);
  if (m == T(0)) return copysign(T(0), b);
  return ((b < T(0)) != (m < T(0))) ? T(m + b) : m;
}
__device__ inline long long fz_remainder(long long a, long long b) {
  if (b == 0) return 0;
  const long long m = a % b;
  return (m != 0 && ((b < 0) != (m < 0))) ? m + b : m;
}
__device__ inline int fz_remainder(int a, int b) {
  if (b == 0) return 0;
  const int m = a % b;
  return (m != 0 && ((b < 0) != (m < 0))) ? m + b : m;
}

}  // namespace gv
#endif  // GV_FUSE_CUH
