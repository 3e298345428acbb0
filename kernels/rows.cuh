// gpuvjp kernels: row reductions and the row-broadcast backward as RawKernels (launched by
// gpuvjp/ops/_rows.py, which chooses the variant and geometry; reads kernels/reduce.cuh's MaxSum).
// The math (one element's state, the merge of two states, the values read from the final state)
// is plain C++ in namespace gv that the host compiler runs in CI; the __global__ templates below
// it compile only under NVRTC.
namespace gv {

// A row operation: `St` the state, `empty()` the state of no elements, `one(x)` the state of one
// element, `merge(a, b)` of two states (any order, any grouping), `value(a, n, k)` output k of a
// row of n elements; K the number of C numbers a state packs into (`store` / `load`, for the
// partial states of split rows), NOUT the number of outputs.

// sum: the running sum, in C (float for float16)
template <typename C> struct RowSum {
  typedef C St;
  static const int K = 1, NOUT = 1;
  static __device__ St empty() { return C(0); }
  static __device__ St one(C x) { return x; }
  static __device__ St merge(St a, St b) { return a + b; }
  static __device__ C value(St a, long long n, int k) { return a; }
  static __device__ void store(St a, C* p) { p[0] = a; }
  static __device__ St load(const C* p) { return p[0]; }
};

// mean = sum / n, rounded once (NaN for an empty row, as PyTorch)
template <typename C> struct RowMean {
  typedef C St;
  static const int K = 1, NOUT = 1;
  static __device__ St empty() { return C(0); }
  static __device__ St one(C x) { return x; }
  static __device__ St merge(St a, St b) { return a + b; }
  static __device__ C value(St a, long long n, int k) { return a / C(n); }
  static __device__ void store(St a, C* p) { p[0] = a; }
  static __device__ St load(const C* p) { return p[0]; }
};

// amax, amin: a NaN wins (PyTorch propagates it); the empty state is -inf / +inf
template <typename C> struct RowMax {
  typedef C St;
  static const int K = 1, NOUT = 1;
  static __device__ St empty() { return C(-1) / C(0); }
  static __device__ St one(C x) { return x; }
  static __device__ St merge(St a, St b) { return (a != a || a > b) ? a : b; }
  static __device__ C value(St a, long long n, int k) { return a; }
  static __device__ void store(St a, C* p) { p[0] = a; }
  static __device__ St load(const C* p) { return p[0]; }
};

template <typename C> struct RowMin {
  typedef C St;
  static const int K = 1, NOUT = 1;
  static __device__ St empty() { return C(1) / C(0); }
  static __device__ St one(C x) { return x; }
  static __device__ St merge(St a, St b) { return (a != a || a < b) ? a : b; }
  static __device__ C value(St a, long long n, int k) { return a; }
  static __device__ void store(St a, C* p) { p[0] = a; }
  static __device__ St load(const C* p) { return p[0]; }
};

// logsumexp and softmax's (max, sum(exp(x - max))): the one-pass MaxSum state of reduce.cuh
template <typename C> struct RowLse {
  typedef MaxSum<C> St;
  static const int K = 2, NOUT = 1;
  static __device__ St empty() { return lse_empty<C>(); }
  static __device__ St one(C x) { return lse_one<C>(x); }
  static __device__ St merge(St a, St b) { return lse_merge<C>(a, b); }
  static __device__ C value(St a, long long n, int k) { return lse_value<C>(a); }
  static __device__ void store(St a, C* p) { p[0] = a.m; p[1] = a.s; }
  static __device__ St load(const C* p) { St a; a.m = p[0]; a.s = p[1]; return a; }
};

template <typename C> struct RowStats {
  typedef MaxSum<C> St;
  static const int K = 2, NOUT = 2;
  static __device__ St empty() { return lse_empty<C>(); }
  static __device__ St one(C x) { return lse_one<C>(x); }
  static __device__ St merge(St a, St b) { return lse_merge<C>(a, b); }
  static __device__ C value(St a, long long n, int k) {
    return k == 0 ? lse_max<C>(a) : lse_sum<C>(a);
  }
  static __device__ void store(St a, C* p) { p[0] = a.m; p[1] = a.s; }
  static __device__ St load(const C* p) { St a; a.m = p[0]; a.s = p[1]; return a; }
};

}  // namespace gv

#if defined(__CUDACC__)
#include <cuda_fp16.h>
namespace gv {

// ----- loads, stores and shuffles in the compute type C ----------------------------------------
__device__ inline float to_c(__half v) { return __half2float(v); }
__device__ inline float to_c(float v) { return v; }
__device__ inline double to_c(double v) { return v; }
__device__ inline void put(__half* p, float v) { *p = __float2half_rn(v); }
__device__ inline void put(float* p, float v) { *p = v; }
__device__ inline void put(double* p, double v) { *p = v; }

__device__ inline float shfl_xor(float v, int o) { return __shfl_xor_sync(0xffffffffu, v, o); }
__device__ inline double shfl_xor(double v, int o) { return __shfl_xor_sync(0xffffffffu, v, o); }
template <typename C> __device__ MaxSum<C> shfl_xor(MaxSum<C> v, int o) {
  v.m = shfl_xor(v.m, o);
  v.s = shfl_xor(v.s, o);
  return v;
}

template <typename T, int V> struct alignas(V * sizeof(T)) Vec { T v[V]; };

// ----- one worker's share of a row ------------------------------------------------------------
// Worker w of P over the row of n elements at p: the `head` elements before the first
// V-element boundary one each by workers 0.., then the V-element vectors c = w, w + P, ... (U of
// them loaded before any is merged, so U loads are in flight), then the tail one each by workers
// 0..; merged in that order. With V = 1 there is no head or tail.
template <typename Op, typename T, int V, int U>
__device__ typename Op::St row_worker(const T* p, long long n, long long w, long long P) {
  typedef typename Op::St St;
  St s = Op::empty();
  const unsigned long long bytes = V * sizeof(T);
  long long head = (long long)(((bytes - (unsigned long long)p % bytes) % bytes) / sizeof(T));
  if (head > n) head = n;
  const long long nvec = (n - head) / V;
  const long long tail = head + nvec * V;
  if (w < head) s = Op::merge(s, Op::one(to_c(p[w])));
  const Vec<T, V>* q = reinterpret_cast<const Vec<T, V>*>(p + head);
  long long c = w;
  for (; c + (U - 1) * P < nvec; c += U * P) {
    Vec<T, V> r[U];
#pragma unroll
    for (int u = 0; u < U; ++u) r[u] = q[c + u * P];
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int j = 0; j < V; ++j) s = Op::merge(s, Op::one(to_c(r[u].v[j])));
  }
  for (; c < nvec; c += P) {
    Vec<T, V> r = q[c];
#pragma unroll
    for (int j = 0; j < V; ++j) s = Op::merge(s, Op::one(to_c(r.v[j])));
  }
  if (w < n - tail) s = Op::merge(s, Op::one(to_c(p[tail + w])));
  return s;
}

// ----- merging the workers' states --------------------------------------------------------------
// a butterfly over the 32 lanes: every lane ends with lane-order merge(own, partner) at each step
template <typename Op> __device__ typename Op::St warp_merge(typename Op::St s) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) s = Op::merge(s, shfl_xor(s, o));
  return s;
}

// all B threads of the block call it once; thread 0 ends with the block's state
template <typename Op, int B> __device__ typename Op::St block_merge(typename Op::St s) {
  __shared__ typename Op::St part[B / 32];
  s = warp_merge<Op>(s);
  if (B == 32) return s;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) part[warp] = s;
  __syncthreads();
  if (warp == 0) s = warp_merge<Op>(lane < B / 32 ? part[lane] : Op::empty());
  return s;
}

template <typename Op, typename O>
__device__ void row_write(typename Op::St s, O* out0, O* out1, long long r, long long n) {
  put(out0 + r, Op::value(s, n, 0));
  if (Op::NOUT > 1) put(out1 + r, Op::value(s, n, 1));
}

// ----- the variants ---------------------------------------------------------------------------
// warp: a (32, W) block, one warp per row (short rows)
template <typename Op, typename T, typename O, int V, int U>
__device__ void rows_warp(const T* x, O* out0, O* out1, long long rows, long long n,
                          long long ld) {
  const long long r = (long long)blockIdx.x * blockDim.y + threadIdx.y;
  if (r >= rows) return;                       // the whole warp leaves together
  typename Op::St s = row_worker<Op, T, V, U>(x + r * ld, n, threadIdx.x, 32);
  s = warp_merge<Op>(s);
  if (threadIdx.x == 0) row_write<Op, O>(s, out0, out1, r, n);
}

// block: one block of B threads per row
template <typename Op, typename T, typename O, int V, int U, int B>
__device__ void rows_block(const T* x, O* out0, O* out1, long long rows, long long n,
                           long long ld) {
  const long long r = blockIdx.x;
  if (r >= rows) return;                       // the whole block leaves together
  typename Op::St s = row_worker<Op, T, V, U>(x + r * ld, n, threadIdx.x, B);
  s = block_merge<Op, B>(s);
  if (threadIdx.x == 0) row_write<Op, O>(s, out0, out1, r, n);
}

// split: gridDim.x blocks per row (blockIdx.y the row), each writing its partial state, K numbers,
// to part[(r * gridDim.x + blockIdx.x) * K]; rows_finish merges them
template <typename Op, typename T, typename C, int V, int U, int B>
__device__ void rows_split(const T* x, C* part, long long rows, long long n, long long ld) {
  const long long r = blockIdx.y, parts = gridDim.x;
  if (r >= rows) return;
  typename Op::St s = row_worker<Op, T, V, U>(x + r * ld, n,
                                              (long long)blockIdx.x * B + threadIdx.x, parts * B);
  s = block_merge<Op, B>(s);
  if (threadIdx.x == 0) Op::store(s, part + (r * parts + blockIdx.x) * Op::K);
}

// the second pass of split rows: a (32, W) block, one warp per row, lane l merging the partial
// states l, l + 32, ... in order
template <typename Op, typename C, typename O>
__device__ void rows_finish(const C* part, O* out0, O* out1, long long rows, long long parts,
                            long long n) {
  const long long r = (long long)blockIdx.x * blockDim.y + threadIdx.y;
  if (r >= rows) return;
  typename Op::St s = Op::empty();
  for (long long k = threadIdx.x; k < parts; k += 32)
    s = Op::merge(s, Op::load(part + (r * parts + k) * Op::K));
  s = warp_merge<Op>(s);
  if (threadIdx.x == 0) row_write<Op, O>(s, out0, out1, r, n);
}

}  // namespace gv
#endif  // __CUDACC__
