// Training-mode BatchNorm of an NHWC map seen as its (rows, channels) matrix, fused with what
// follows it in a ShuffleNet unit: ReLU, the residual add, the channel shuffle.
//
// PyTorch runs these as 5-7 separate passes over memory forward and 6 backward; here the
// forward is one statistics pass and one output pass, the backward one sums pass and one
// gradient pass. Column sums run in float over RUN rows at a time and accumulate in double, so
// the statistics are at least as accurate as PyTorch's cascaded float32 sums.
// Built once per machine by shufflenet_core/fused.py; the ops live in torch.ops.shufflenas_fused.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "running_stats.h"

namespace {

using at::Tensor;

constexpr int64_t BLOCK = 64;  // the fewest rows a thread sums; the shift is the mean of the first BLOCK rows
constexpr int64_t RUN = 16;    // rows summed in float (8 lanes a vector) before adding to the double sums

// Row chunks for a reduction: at most one per thread, at least BLOCK rows each.
int64_t chunk_count(int64_t rows) {
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), rows / BLOCK));
}

int64_t rows_grain(int64_t channels) {
  return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(channels, 1));
}

void check_rows(const Tensor& t, const char* name, int64_t rows, int64_t channels) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous() && t.dim() == 2 &&
                  t.size(0) == rows && t.size(1) == channels,
              name, " must be a contiguous float32 CPU matrix of ", rows, "x", channels);
}

void check_vector(const Tensor& t, const char* name, int64_t channels) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat && t.is_contiguous() && t.numel() == channels,
              name, " must be a contiguous float32 CPU vector of ", channels);
}

// Two column sums over all rows: add_row(r, s1, s2, work) adds row r's terms into float
// accumulators, which are flushed into double every RUN rows; chunks of rows run in parallel,
// each with its own accumulators and a 2 x channels work buffer.
template <typename AddRow>
void two_column_sums(int64_t rows, int64_t channels, double* sum1, double* sum2, const AddRow& add_row) {
  const int64_t chunks = chunk_count(rows);
  std::vector<double> partial(static_cast<size_t>(chunks * 2 * channels), 0.0);
  at::parallel_for(0, chunks, 1, [&](int64_t first_chunk, int64_t end_chunk) {
    std::vector<float> run(2 * channels), work(2 * channels);
    float* __restrict f1 = run.data();
    float* __restrict f2 = f1 + channels;
    for (int64_t chunk = first_chunk; chunk < end_chunk; ++chunk) {
      double* __restrict s1 = partial.data() + chunk * 2 * channels;
      double* __restrict s2 = s1 + channels;
      const int64_t begin = rows * chunk / chunks, end = rows * (chunk + 1) / chunks;
      for (int64_t start = begin; start < end; start += RUN) {
        std::fill(run.begin(), run.end(), 0.f);
        for (int64_t r = start; r < std::min(end, start + RUN); ++r) add_row(r, f1, f2, work.data());
        for (int64_t c = 0; c < channels; ++c) {
          s1[c] += f1[c];
          s2[c] += f2[c];
        }
      }
    }
  });
  for (int64_t chunk = 0; chunk < chunks; ++chunk) {
    for (int64_t c = 0; c < channels; ++c) {
      sum1[c] += partial[chunk * 2 * channels + c];
      sum2[c] += partial[chunk * 2 * channels + channels + c];
    }
  }
}

// Column sums of (x - shift) and of its square.
void shifted_sums(const float* x, int64_t rows, int64_t channels, const float* shift, double* sum, double* squares) {
  two_column_sums(rows, channels, sum, squares,
                  [&](int64_t r, float* __restrict f1, float* __restrict f2, float* /*work*/) {
                    const float* __restrict row = x + r * channels;
                    const float* __restrict k = shift;
                    for (int64_t c = 0; c < channels; ++c) {
                      const float d = row[c] - k[c];
                      f1[c] += d;
                      f2[c] += d * d;
                    }
                  });
}

// Column j of the shuffled map is column (j % g) * n + j / g of the unshuffled one; `Back`
// undoes the shuffle. With the group count a compile-time constant the compiler vectorizes
// these interleaving copies.
template <bool Back, int64_t G>
void permute_row_of(const float* __restrict from, float* __restrict to, int64_t groups, int64_t per_group) {
  const int64_t g = G > 0 ? G : groups;
  for (int64_t i = 0; i < per_group; ++i)
    for (int64_t k = 0; k < g; ++k) {
      if (Back)
        to[k * per_group + i] = from[i * g + k];
      else
        to[i * g + k] = from[k * per_group + i];
    }
}

template <bool Back>
void permute_row(const float* __restrict from, float* __restrict to, int64_t groups, int64_t per_group) {
  switch (groups) {
    case 2: return permute_row_of<Back, 2>(from, to, groups, per_group);
    case 3: return permute_row_of<Back, 3>(from, to, groups, per_group);
    case 4: return permute_row_of<Back, 4>(from, to, groups, per_group);
    case 8: return permute_row_of<Back, 8>(from, to, groups, per_group);
    default: return permute_row_of<Back, 0>(from, to, groups, per_group);
  }
}

// out = act(shuffle(bn(rows)) + residual): act is ReLU or identity; residual and shuffle optional
// (not both). Returns out, the batch mean and the biased batch variance; with running statistics
// given, moves them towards the batch's by `momentum` (the variance unbiased), as
// nn.BatchNorm2d does: one call instead of four small ops per BN.
std::tuple<Tensor, Tensor, Tensor> forward(const Tensor& rows, const Tensor& weight, const Tensor& bias, double eps,
                                           bool relu, const std::optional<Tensor>& residual, int64_t shuffle_groups,
                                           const std::optional<Tensor>& running_mean,
                                           const std::optional<Tensor>& running_var, double momentum) {
  TORCH_CHECK(rows.dim() == 2 && rows.size(0) >= 1, "rows must be a non-empty matrix");
  const int64_t count = rows.size(0), channels = rows.size(1);
  check_rows(rows, "rows", count, channels);
  check_vector(weight, "weight", channels);
  check_vector(bias, "bias", channels);
  TORCH_CHECK(shuffle_groups >= 1 && channels % shuffle_groups == 0, "shuffle_groups must divide the channels");
  TORCH_CHECK(!(residual.has_value() && shuffle_groups > 1), "a residual and a shuffle are not fused together");
  if (residual.has_value()) check_rows(*residual, "residual", count, channels);
  TORCH_CHECK(running_mean.has_value() == running_var.has_value(), "running_mean and running_var go together");
  if (running_mean.has_value()) {
    check_vector(*running_mean, "running_mean", channels);
    check_vector(*running_var, "running_var", channels);
    TORCH_CHECK(count >= 2, "running statistics need at least 2 values per channel");
  }

  const float* x = rows.data_ptr<float>();
  // Sums are taken around a shift near the mean (that of the first rows), so the variance as
  // E[d^2] - E[d]^2 loses no digits to a large mean.
  std::vector<double> first_sum(channels, 0.0), first_squares(channels, 0.0);
  const std::vector<float> zeros(channels, 0.f);
  const int64_t first_rows = std::min(count, BLOCK);
  shifted_sums(x, first_rows, channels, zeros.data(), first_sum.data(), first_squares.data());
  std::vector<float> shift_by(channels);
  for (int64_t c = 0; c < channels; ++c) shift_by[c] = static_cast<float>(first_sum[c] / first_rows);
  std::vector<double> sum(channels, 0.0), squares(channels, 0.0);
  shifted_sums(x, count, channels, shift_by.data(), sum.data(), squares.data());

  Tensor mean = at::empty({channels}, rows.options()), var = at::empty({channels}, rows.options());
  std::vector<float> scale(channels), shift(channels);
  const float* w = weight.data_ptr<float>();
  const float* b = bias.data_ptr<float>();
  for (int64_t c = 0; c < channels; ++c) {
    const double offset = sum[c] / count;
    const double variance = std::max(0.0, squares[c] / count - offset * offset);
    const double mu = shift_by[c] + offset;
    const double invstd = 1.0 / std::sqrt(variance + eps);
    mean.data_ptr<float>()[c] = static_cast<float>(mu);
    var.data_ptr<float>()[c] = static_cast<float>(variance);
    if (running_mean.has_value()) shufflenas::update_running(*running_mean, *running_var, c, mu, variance, count, momentum);
    scale[c] = static_cast<float>(w[c] * invstd);
    shift[c] = static_cast<float>(b[c] - mu * w[c] * invstd);
  }

  Tensor out = at::empty({count, channels}, rows.options());
  float* y = out.data_ptr<float>();
  const float* res = residual.has_value() ? residual->data_ptr<float>() : nullptr;
  const int64_t per_group = channels / shuffle_groups;
  at::parallel_for(0, count, rows_grain(channels), [&](int64_t begin, int64_t end) {
    std::vector<float> unshuffled(shuffle_groups > 1 ? channels : 0);
    const float* __restrict a = scale.data();
    const float* __restrict s = shift.data();
    for (int64_t r = begin; r < end; ++r) {
      const float* __restrict row = x + r * channels;
      float* __restrict dst = y + r * channels;
      float* __restrict normed = shuffle_groups > 1 ? unshuffled.data() : dst;
      for (int64_t c = 0; c < channels; ++c) normed[c] = row[c] * a[c] + s[c];
      if (shuffle_groups > 1) permute_row<false>(normed, dst, shuffle_groups, per_group);
      if (res != nullptr) {
        const float* __restrict add = res + r * channels;
        for (int64_t c = 0; c < channels; ++c) dst[c] += add[c];
      }
      if (relu)
        for (int64_t c = 0; c < channels; ++c) dst[c] = dst[c] > 0.f ? dst[c] : 0.f;
    }
  });
  return {out, mean, var};
}

// The gradient reaching bn(rows), in the unshuffled column order: grad where out > 0 if relu.
inline void branch_grad(const float* __restrict grad, const float* __restrict out, float* __restrict to,
                        float* __restrict scratch, int64_t channels, int64_t groups, int64_t per_group) {
  float* __restrict masked = groups > 1 ? scratch : to;
  if (out != nullptr) {
    for (int64_t c = 0; c < channels; ++c) masked[c] = out[c] > 0.f ? grad[c] : 0.f;
  } else {
    for (int64_t c = 0; c < channels; ++c) masked[c] = grad[c];
  }
  if (groups > 1) permute_row<true>(masked, to, groups, per_group);
}

// Gradients of forward() for rows, weight, bias and the residual (undefined without one).
std::tuple<Tensor, Tensor, Tensor, Tensor> backward(const Tensor& grad_out, const Tensor& rows,
                                                    const std::optional<Tensor>& out, const Tensor& mean,
                                                    const Tensor& var, const Tensor& weight, double eps,
                                                    bool residual, int64_t shuffle_groups) {
  const int64_t count = rows.size(0), channels = rows.size(1);
  check_rows(rows, "rows", count, channels);
  const Tensor grad = grad_out.contiguous();
  check_rows(grad, "grad", count, channels);
  if (out.has_value()) check_rows(*out, "out", count, channels);
  check_vector(mean, "mean", channels);
  check_vector(var, "var", channels);
  check_vector(weight, "weight", channels);
  TORCH_CHECK(shuffle_groups >= 1 && channels % shuffle_groups == 0, "shuffle_groups must divide the channels");

  const float* x = rows.data_ptr<float>();
  const float* g = grad.data_ptr<float>();
  const float* o = out.has_value() ? out->data_ptr<float>() : nullptr;
  const float* mu = mean.data_ptr<float>();
  const int64_t per_group = channels / shuffle_groups;
  Tensor grad_residual = residual ? at::empty({count, channels}, rows.options()) : Tensor();
  float* grad_res = residual ? grad_residual.data_ptr<float>() : nullptr;

  // Pass 1: column sums of the branch gradient and of it times (x - mean).
  std::vector<double> sum(channels, 0.0), dot(channels, 0.0);
  two_column_sums(count, channels, sum.data(), dot.data(),
                  [&](int64_t r, float* __restrict f1, float* __restrict f2, float* work) {
                    float* __restrict branch = work;
                    branch_grad(g + r * channels, o ? o + r * channels : nullptr, branch, work + channels, channels,
                                shuffle_groups, per_group);
                    if (grad_res != nullptr) std::copy(branch, branch + channels, grad_res + r * channels);
                    const float* __restrict row = x + r * channels;
                    for (int64_t c = 0; c < channels; ++c) {
                      f1[c] += branch[c];
                      f2[c] += branch[c] * (row[c] - mu[c]);
                    }
                  });

  // d/dx = scale * (g - mean(g)) - (x - mean) * scale * invstd^2 * mean(g * (x - mean))
  Tensor grad_weight = at::empty({channels}, rows.options()), grad_bias = at::empty({channels}, rows.options());
  std::vector<float> k_grad(channels), k_const(channels), k_centred(channels);
  const float* w = weight.data_ptr<float>();
  const float* v = var.data_ptr<float>();
  for (int64_t c = 0; c < channels; ++c) {
    const double invstd = 1.0 / std::sqrt(static_cast<double>(v[c]) + eps);
    const double scale = w[c] * invstd;
    grad_weight.data_ptr<float>()[c] = static_cast<float>(dot[c] * invstd);
    grad_bias.data_ptr<float>()[c] = static_cast<float>(sum[c]);
    k_grad[c] = static_cast<float>(scale);
    k_const[c] = static_cast<float>(-scale * sum[c] / count);
    k_centred[c] = static_cast<float>(-scale * invstd * invstd * dot[c] / count);
  }

  // Pass 2: the input gradient (the branch gradient recomputed: cheaper than storing it).
  Tensor grad_rows = at::empty({count, channels}, rows.options());
  float* gx = grad_rows.data_ptr<float>();
  at::parallel_for(0, count, rows_grain(channels), [&](int64_t begin, int64_t end) {
    std::vector<float> branch(channels), scratch(channels);
    const float* __restrict gb = branch.data();
    const float* __restrict k0 = k_grad.data();
    const float* __restrict k1 = k_const.data();
    const float* __restrict k2 = k_centred.data();
    for (int64_t r = begin; r < end; ++r) {
      const float* __restrict branch_source = grad_res != nullptr ? grad_res + r * channels : nullptr;
      if (branch_source == nullptr)
        branch_grad(g + r * channels, o ? o + r * channels : nullptr, branch.data(), scratch.data(), channels,
                    shuffle_groups, per_group);
      const float* __restrict gr = branch_source != nullptr ? branch_source : gb;
      const float* __restrict row = x + r * channels;
      float* __restrict dst = gx + r * channels;
      for (int64_t c = 0; c < channels; ++c) dst[c] = k0[c] * gr[c] + k1[c] + k2[c] * (row[c] - mu[c]);
    }
  });
  return {grad_rows, grad_weight, grad_bias, grad_residual};
}

}  // namespace

TORCH_LIBRARY(shufflenas_fused, m) {
  m.def("batch_norm_act(Tensor rows, Tensor weight, Tensor bias, float eps, bool relu, Tensor? residual, "
        "int shuffle_groups, Tensor(a!)? running_mean, Tensor(b!)? running_var, float momentum) -> "
        "(Tensor, Tensor, Tensor)");
  m.def("batch_norm_act_backward(Tensor grad, Tensor rows, Tensor? out, Tensor mean, Tensor var, Tensor weight, "
        "float eps, bool residual, int shuffle_groups) -> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(shufflenas_fused, CPU, m) {
  m.impl("batch_norm_act", forward);
  m.impl("batch_norm_act_backward", backward);
}
