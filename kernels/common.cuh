// gpuvjp kernels: shared prelude. Every kernel file is plain C++ templated on T, so the same
// text compiles through NVRTC (inside CuPy's ElementwiseKernel/ReductionKernel) and, with
// __device__ defined away, through the host C++ compiler for the CPU math check.
#ifndef GV_COMMON_CUH
#define GV_COMMON_CUH
#if !defined(__CUDACC__)
#include <cmath>
#define __device__
namespace gv {
using std::exp; using std::log; using std::tanh; using std::sqrt; using std::pow;
using std::fabs; using std::erf; using std::log1p; using std::expm1;
}  // namespace gv
#endif
#endif  // GV_COMMON_CUH
