// Shared by the fused kernels: nn.BatchNorm2d's running-statistics update, done where the
// batch statistics are computed (one call instead of four small PyTorch ops per BN).
#pragma once

#include <ATen/ATen.h>

namespace shufflenas {

// Channel c's running mean and variance moved towards the batch's by `momentum` (the batch
// variance made unbiased, as nn.BatchNorm2d does); count >= 2 values per channel.
inline void update_running(const at::Tensor& running_mean, const at::Tensor& running_var, int64_t c, double mean,
                           double variance, int64_t count, double momentum) {
  float* m = running_mean.data_ptr<float>() + c;
  float* v = running_var.data_ptr<float>() + c;
  *m = static_cast<float>((1.0 - momentum) * *m + momentum * mean);
  *v = static_cast<float>((1.0 - momentum) * *v + momentum * variance * static_cast<double>(count) / (count - 1));
}

}  // namespace shufflenas
