// gpuvjp kernels: helpers of the generated fused kernels (gpuvjp/_plan.py, ops/_kernels.py),
// for the ufuncs whose NumPy meaning plain C does not give: nan in maximum/minimum, -0 in abs.
#ifndef GV_FUSE_CUH
#define GV_FUSE_CUH
#if !defined(__CUDACC__)
namespace gv {
using std::sin; using std::cos; using std::tan; using std::exp2; using std::log2;
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

}  // namespace gv
#endif  // GV_FUSE_CUH
