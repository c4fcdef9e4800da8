// Runs the CUDA WKV7 kernels (kernels/cuda/wkv7_kernels.cuh) on the CPU, so CI can check the
// kernel source itself on machines without a GPU: each block's N "CUDA threads" are std::threads
// meeting at a std::barrier for __syncthreads, and blocks run one after another, so a
// function-static array behaves like the block's shared memory. bf16 is emulated bit for bit
// (round to nearest even), as __float2bfloat16 does.
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include <math.h>  // expf, as in CUDA device code

namespace emu {
thread_local int thread_index = 0;
thread_local int block_index = 0;
std::barrier<>* block_barrier = nullptr;

// __shfl_xor_sync through memory: every thread of the block calls it together (as every lane
// of a warp must on the GPU), so two barriers make it exact.
float shfl_xor(float value, int lane_mask) {
  static float exchange[1024];
  exchange[thread_index] = value;
  block_barrier->arrive_and_wait();
  const float other = exchange[thread_index ^ lane_mask];
  block_barrier->arrive_and_wait();
  return other;
}
}  // namespace emu

#define WKV_GLOBAL
#define WKV_DEVICE inline
#define WKV_SHARED static
#define wkv_sync() emu::block_barrier->arrive_and_wait()
#define wkv_thread() emu::thread_index
#define wkv_block() emu::block_index
#define wkv_shfl_xor(value, lane_mask) emu::shfl_xor((value), (lane_mask))

struct bf16 {
  uint16_t bits;
};

inline float wkv_to_float(float x) { return x; }
inline float wkv_to_float(bf16 x) {
  uint32_t u = static_cast<uint32_t>(x.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
template <typename F> F wkv_from_float(float x);
template <> float wkv_from_float<float>(float x) { return x; }
template <> bf16 wkv_from_float<bf16>(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{static_cast<uint16_t>((u >> 16) | 0x40)};  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{static_cast<uint16_t>(u >> 16)};
}

#include "wkv7_kernels.cuh"

namespace {

using wkv7::kChunk;
using wkv7::kThreadsPerRow;

void launch(int blocks, int threads, const std::function<void()>& kernel) {
  for (int block = 0; block < blocks; block++) {
    std::barrier<> barrier(threads);
    emu::block_barrier = &barrier;
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; t++)
      pool.emplace_back([&, t] {
        emu::thread_index = t;
        emu::block_index = block;
        kernel();
      });
    for (auto& th : pool) th.join();
  }
}

template <typename F, int N>
void forward(int B, int T, int H, const void* r, const void* w, const void* k, const void* v, const void* a,
             const void* b, const float* s0, void* y, float* s_out, float* checkpoints) {
  launch(B * H, N * kThreadsPerRow, [&] {
    wkv7::forward_kernel<F, N, kChunk, kThreadsPerRow>(
        T, H, (const F*)r, (const F*)w, (const F*)k, (const F*)v, (const F*)a, (const F*)b, s0, (F*)y, s_out,
        checkpoints);
  });
}

template <typename F, int N>
void backward(int B, int T, int H, const void* r, const void* w, const void* k, const void* v, const void* a,
              const void* b, const void* dy, const float* ds_out, const float* checkpoints, float* scratch,
              void* dr, void* dw, void* dk, void* dv, void* da, void* db, float* ds0) {
  launch(B * H, N * kThreadsPerRow, [&] {
    wkv7::backward_kernel<F, N, kChunk, kThreadsPerRow>(
        T, H, (const F*)r, (const F*)w, (const F*)k, (const F*)v, (const F*)a, (const F*)b, (const F*)dy, ds_out,
        checkpoints, scratch, (F*)dr, (F*)dw, (F*)dk, (F*)dv, (F*)da, (F*)db, ds0);
  });
}

}  // namespace

extern "C" {

int wkv7_chunk() { return kChunk; }

// dtype: 0 fp32, 1 bf16 (uint16 bit patterns). Returns 0, or 1 for an unsupported head size.
int wkv7_forward(int dtype, int B, int T, int H, int N, const void* r, const void* w, const void* k,
                 const void* v, const void* a, const void* b, const float* s0, void* y, float* s_out,
                 float* checkpoints) {
  auto run = [&](auto tag) {
    using F = decltype(tag);
    return wkv7::with_head_size(N, [&](auto n) {
      forward<F, decltype(n)::value>(B, T, H, r, w, k, v, a, b, s0, y, s_out, checkpoints);
    });
  };
  return (dtype == 0 ? run(float{}) : run(bf16{})) ? 0 : 1;
}

int wkv7_backward(int dtype, int B, int T, int H, int N, const void* r, const void* w, const void* k,
                  const void* v, const void* a, const void* b, const void* dy, const float* ds_out,
                  const float* checkpoints, float* scratch, void* dr, void* dw, void* dk, void* dv, void* da,
                  void* db, float* ds0) {
  auto run = [&](auto tag) {
    using F = decltype(tag);
    return wkv7::with_head_size(N, [&](auto n) {
      backward<F, decltype(n)::value>(B, T, H, r, w, k, v, a, b, dy, ds_out, checkpoints, scratch, dr, dw, dk,
                                      dv, da, db, ds0);
    });
  };
  return (dtype == 0 ? run(float{}) : run(bf16{})) ? 0 : 1;
}
}
