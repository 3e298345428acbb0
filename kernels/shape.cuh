// gpuvjp kernels: the index arithmetic of the shape ops' backward scatters (same names and order
// as gpuvjp/ops/shape.py). Each ElementwiseKernel body is one atomicAdd at the slot computed here.
namespace gv {

// index_select's backward: element i of the gradient, laid out as (outer, n, inner) around dim,
// came from position j = (i / inner) % n of the index vector
__device__ inline long long select_pos(long long i, long long n, long long inner) {
  return (i / inner) % n;
}

// gather's backward (and index_select's, with idx read at select_pos): element i of an array
// laid out as (outer, n, inner) around dim, whose index is idx, adds into flat position
// (o * d + idx) * inner + r of the (outer, d, inner) input gradient, with o = i / (n inner) and
// r = i % inner
__device__ inline long long gather_slot(long long i, long long idx, long long n, long long inner,
                                        long long d) {
  return ((i / (n * inner)) * d + idx) * inner + i % inner;
}

}  // namespace gv
