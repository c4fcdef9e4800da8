// Launchers for the WKV7 kernels (wkv7_kernels.cuh): the CUDA side of the portability layer and
// a switch over head size and dtype. Free of torch headers on purpose (the caller passes torch's
// current stream and turns an error string into an exception), so nvcc alone can compile it.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#define WKV_GLOBAL __global__
#define WKV_DEVICE __device__ __forceinline__
#define WKV_SHARED __shared__
#define wkv_sync() __syncthreads()
#define wkv_thread() static_cast<int>(threadIdx.x)
#define wkv_block() static_cast<int>(blockIdx.x)
#define wkv_shfl_xor(value, lane_mask) __shfl_xor_sync(0xffffffffu, (value), (lane_mask))

__device__ __forceinline__ float wkv_to_float(float x) { return x; }
__device__ __forceinline__ float wkv_to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float wkv_to_float(__half x) { return __half2float(x); }
template <typename F> __device__ __forceinline__ F wkv_from_float(float x);
template <> __device__ __forceinline__ float wkv_from_float<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 wkv_from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16(x);
}
template <> __device__ __forceinline__ __half wkv_from_float<__half>(float x) { return __float2half(x); }

#include "wkv7_kernels.cuh"

namespace {

using wkv7::kChunk;
using wkv7::kThreadsPerRow;
using wkv7::with_head_size;

// dtype codes shared with wkv7_op.cpp: 0 fp32, 1 bf16, 2 fp16.
template <typename Fn>
void with_dtype(int dtype, Fn&& fn) {
  if (dtype == 0) fn(float{});
  else if (dtype == 1) fn(__nv_bfloat16{});
  else fn(__half{});
}

// Calls launch(integral_constant<int, N>, element tag) for the kernels' head size and dtype;
// nullptr, or what went wrong.
template <typename Launch>
const char* launch_for(int N, int dtype, Launch&& launch) {
  const bool supported = with_head_size(N, [&](auto n) { with_dtype(dtype, [&](auto tag) { launch(n, tag); }); });
  if (!supported) return "the CUDA WKV7 kernel supports head sizes 16, 32 and 64";
  cudaError_t error = cudaGetLastError();
  return error == cudaSuccess ? nullptr : cudaGetErrorString(error);
}

}  // namespace

int wkv7_cuda_chunk() { return kChunk; }

// Each launcher returns nullptr, or what went wrong.
const char* wkv7_cuda_forward(void* stream, int dtype, int B, int T, int H, int N, const void* r, const void* w,
                              const void* k, const void* v, const void* a, const void* b, const float* s0, void* y,
                              float* s_out, float* checkpoints) {
  return launch_for(N, dtype, [&](auto n, auto tag) {
    constexpr int HN = decltype(n)::value;
    using F = decltype(tag);
    wkv7::forward_kernel<F, HN, kChunk, kThreadsPerRow>
        <<<B * H, HN * kThreadsPerRow, 0, static_cast<cudaStream_t>(stream)>>>(
        T, H, static_cast<const F*>(r), static_cast<const F*>(w), static_cast<const F*>(k),
        static_cast<const F*>(v), static_cast<const F*>(a), static_cast<const F*>(b), s0,
        static_cast<F*>(y), s_out, checkpoints);
  });
}

const char* wkv7_cuda_backward(void* stream, int dtype, int B, int T, int H, int N, const void* r, const void* w,
                               const void* k, const void* v, const void* a, const void* b, const void* dy,
                               const float* ds_out, const float* checkpoints, float* scratch, void* dr, void* dw,
                               void* dk, void* dv, void* da, void* db, float* ds0) {
  return launch_for(N, dtype, [&](auto n, auto tag) {
    constexpr int HN = decltype(n)::value;
    using F = decltype(tag);
    wkv7::backward_kernel<F, HN, kChunk, kThreadsPerRow>
        <<<B * H, HN * kThreadsPerRow, 0, static_cast<cudaStream_t>(stream)>>>(
        T, H, static_cast<const F*>(r), static_cast<const F*>(w), static_cast<const F*>(k),
        static_cast<const F*>(v), static_cast<const F*>(a), static_cast<const F*>(b),
        static_cast<const F*>(dy), ds_out, checkpoints, scratch, static_cast<F*>(dr), static_cast<F*>(dw),
        static_cast<F*>(dk), static_cast<F*>(dv), static_cast<F*>(da), static_cast<F*>(db), ds0);
  });
}
