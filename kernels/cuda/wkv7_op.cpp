// Python binding of the CUDA WKV7 kernels: checks the tensors, allocates outputs, calls wkv7.cu.
// The autograd logic lives in kernels/wkv7_cuda.py, which also passes torch's current CUDA stream
// (as an integer), so this file needs no CUDA headers.
#include <torch/extension.h>

#include <vector>

int wkv7_cuda_chunk();
const char* wkv7_cuda_forward(void* stream, int dtype, int B, int T, int H, int N, const void* r, const void* w,
                              const void* k, const void* v, const void* a, const void* b, const float* s0, void* y,
                              float* s_out, float* checkpoints);
const char* wkv7_cuda_backward(void* stream, int dtype, int B, int T, int H, int N, const void* r, const void* w,
                               const void* k, const void* v, const void* a, const void* b, const void* dy,
                               const float* ds_out, const float* checkpoints, float* scratch, void* dr, void* dw,
                               void* dk, void* dv, void* da, void* db, float* ds0);

namespace {

void* as_stream(int64_t stream) { return reinterpret_cast<void*>(static_cast<intptr_t>(stream)); }

int dtype_code(const torch::Tensor& x) {
  if (x.scalar_type() == torch::kFloat32) return 0;
  if (x.scalar_type() == torch::kBFloat16) return 1;
  if (x.scalar_type() == torch::kFloat16) return 2;
  TORCH_CHECK(false, "the CUDA WKV7 kernel takes fp32, bf16 or fp16 inputs, got ", x.scalar_type());
}

void check_input(const torch::Tensor& x, const torch::Tensor& like, const char* name) {
  TORCH_CHECK(x.is_cuda(), name, " must be a CUDA tensor");
  TORCH_CHECK(x.is_contiguous(), name, " must be contiguous");
  TORCH_CHECK(x.sizes() == like.sizes(), name, " has shape ", x.sizes(), ", r has ", like.sizes());
  TORCH_CHECK(x.scalar_type() == like.scalar_type(), name, " is ", x.scalar_type(), ", r is ", like.scalar_type());
  TORCH_CHECK(x.device() == like.device(), name, " is on ", x.device(), ", r is on ", like.device());
}

void check_state(const c10::optional<torch::Tensor>& s, const torch::Tensor& r, const char* name) {
  if (!s) return;
  TORCH_CHECK(s->is_cuda() && s->is_contiguous() && s->scalar_type() == torch::kFloat32,
              name, " must be a contiguous fp32 CUDA tensor");
  TORCH_CHECK(s->sizes() == torch::IntArrayRef({r.size(0), r.size(2), r.size(3), r.size(3)}),
              name, " must be [B, H, N, N], got ", s->sizes());
}

// Returns y, the final state and the chunk checkpoints the backward pass needs.
std::vector<torch::Tensor> forward(int64_t stream, torch::Tensor r, torch::Tensor w, torch::Tensor k, torch::Tensor v,
                                   torch::Tensor a, torch::Tensor b, c10::optional<torch::Tensor> s0) {
  TORCH_CHECK(r.dim() == 4, "r must be [B, T, H, N]");
  check_input(r, r, "r");
  check_input(w, r, "w");
  check_input(k, r, "k");
  check_input(v, r, "v");
  check_input(a, r, "a");
  check_input(b, r, "b");
  check_state(s0, r, "initial state");
  const int B = r.size(0), T = r.size(1), H = r.size(2), N = r.size(3);
  const int chunks = (T + wkv7_cuda_chunk() - 1) / wkv7_cuda_chunk();
  auto f32 = r.options().dtype(torch::kFloat32);
  auto y = torch::empty_like(r);
  auto s_out = torch::empty({B, H, N, N}, f32);
  auto checkpoints = torch::empty({B * H, chunks, N, N}, f32);
  const char* error = wkv7_cuda_forward(
      as_stream(stream), dtype_code(r), B, T, H, N, r.data_ptr(), w.data_ptr(), k.data_ptr(), v.data_ptr(),
      a.data_ptr(), b.data_ptr(), s0 ? s0->data_ptr<float>() : nullptr, y.data_ptr(), s_out.data_ptr<float>(),
      checkpoints.data_ptr<float>());
  TORCH_CHECK(error == nullptr, "WKV7 CUDA forward: ", error);
  return {y, s_out, checkpoints};
}

// Returns dr, dw, dk, dv, da, db (input dtype) and the initial state's gradient (fp32).
std::vector<torch::Tensor> backward(int64_t stream, torch::Tensor r, torch::Tensor w, torch::Tensor k, torch::Tensor v,
                                    torch::Tensor a, torch::Tensor b, torch::Tensor dy,
                                    c10::optional<torch::Tensor> ds_out, torch::Tensor checkpoints) {
  check_input(dy, r, "dy");
  check_state(ds_out, r, "final state gradient");
  const int B = r.size(0), T = r.size(1), H = r.size(2), N = r.size(3);
  auto f32 = r.options().dtype(torch::kFloat32);
  auto scratch = torch::empty({B * H, wkv7_cuda_chunk() * (N * N + N)}, f32);
  std::vector<torch::Tensor> grads;
  for (int i = 0; i < 6; i++) grads.push_back(torch::empty_like(r));
  auto ds0 = torch::empty({B, H, N, N}, f32);
  const char* error = wkv7_cuda_backward(
      as_stream(stream), dtype_code(r), B, T, H, N, r.data_ptr(), w.data_ptr(), k.data_ptr(), v.data_ptr(),
      a.data_ptr(), b.data_ptr(), dy.data_ptr(), ds_out ? ds_out->data_ptr<float>() : nullptr,
      checkpoints.data_ptr<float>(), scratch.data_ptr<float>(), grads[0].data_ptr(), grads[1].data_ptr(),
      grads[2].data_ptr(), grads[3].data_ptr(), grads[4].data_ptr(), grads[5].data_ptr(), ds0.data_ptr<float>());
  TORCH_CHECK(error == nullptr, "WKV7 CUDA backward: ", error);
  grads.push_back(ds0);
  return grads;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "WKV7 forward (y, final state, checkpoints)");
  m.def("backward", &backward, "WKV7 backward (dr, dw, dk, dv, da, db, initial state gradient)");
}
