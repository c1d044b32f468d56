// Schemas of the cca custom ops. Kernels are registered per backend in cpu/ and cuda/;
// fake (meta) implementations and autograd are registered from Python
// (cca/ops/_registration.py).
#include <torch/library.h>

TORCH_LIBRARY(cca, m) {
  // 2D: query/key (N, C', H, W) -> affinity (N, H+W-1, H, W)
  m.def("ca_weight_2d(Tensor query, Tensor key) -> Tensor");
  m.def("ca_weight_2d_backward(Tensor grad, Tensor query, Tensor key) -> (Tensor, Tensor)");
  // 2D: attention (N, H+W-1, H, W), value (N, C, H, W) -> (N, C, H, W)
  m.def("ca_map_2d(Tensor attention, Tensor value) -> Tensor");
  m.def("ca_map_2d_backward(Tensor grad, Tensor attention, Tensor value) -> (Tensor, Tensor)");
  // 3D: query/key (N, C', T, H, W) -> affinity (N, T+H+W-2, T, H, W)
  m.def("ca_weight_3d(Tensor query, Tensor key) -> Tensor");
  m.def("ca_weight_3d_backward(Tensor grad, Tensor query, Tensor key) -> (Tensor, Tensor)");
  // 3D: attention (N, T+H+W-2, T, H, W), value (N, C, T, H, W) -> (N, C, T, H, W)
  m.def("ca_map_3d(Tensor attention, Tensor value) -> Tensor");
  m.def("ca_map_3d_backward(Tensor grad, Tensor attention, Tensor value) -> (Tensor, Tensor)");
}
