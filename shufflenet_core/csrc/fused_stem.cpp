// The ShuffleNet stem in training, conv 3x3/2 (no bias) -> BatchNorm -> ReLU -> max pool 3x3/2,
// forward and backward without ever storing the conv's full-resolution output.
//
// The conv is linear in its input patches (K = 9 * in_channels values each), so each output
// channel's batch mean and variance follow from the patches' mean vector m and covariance
// matrix S, whatever the channel count: mean_c = W_c . m, var_c = W_c' S W_c. The forward
// takes m and S in one pass over the (small) input, then runs conv, BN, ReLU and the pool
// image by image in a cache-sized buffer and writes only the pooled map and, per pooled value,
// which of its 9 window positions won (one byte).
//
// The backward needs only sums over the winning positions. With g the gradient at the conv's
// output after the ReLU (nonzero only where a window's winner was positive), d = sum_p g_p and
// A = sum_p g_p * patch_p (a K-vector per channel), and xhat = invstd * W_c . (patch - m):
//   dbeta  = d
//   dgamma = sum_p g_p xhat_p = invstd * (W_c . A - d * W_c . m)
//   dW_c   = sum_p gamma * invstd * (g_p - d / P - xhat_p * dgamma / P) * patch_p
//          = gamma * invstd * (A - d * m - dgamma * invstd * S W_c)
// since sum_p patch_p = P m and sum_p xhat_p patch_p = invstd * P * S W_c.
// PyTorch's ops write and re-read the conv-resolution map about five times each way.
// Patches are taken around a shift per tap (its mean over the first images): S is the same, and
// the sums lose no digits to taps far from zero. Loaded with fused_batch_norm.cpp by
// shufflenet_core/fused.py.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "running_stats.h"

namespace {

using at::Tensor;

constexpr int64_t TAPS = 9;   // a 3x3 window
constexpr int64_t RUN = 64;   // positions summed in float before adding to the double sums
constexpr int64_t LANES = 8;  // floats in a vector register (AVX2)
constexpr int64_t BLOCK = 4;  // conv positions computed together
constexpr int64_t SHIFT_IMAGES = 8;  // images whose mean patch is the shift

int64_t padded(int64_t size) { return (size + LANES - 1) / LANES * LANES; }

// A vector of LANES floats (GCC/Clang vector extension: one register where the target has it,
// plain code elsewhere); memcpy loads and stores compile to unaligned vector moves.
typedef float floats __attribute__((vector_size(LANES * sizeof(float))));
typedef int32_t ints __attribute__((vector_size(LANES * sizeof(int32_t))));

inline floats load(const float* from) {
  floats v;
  std::memcpy(&v, from, sizeof v);
  return v;
}

inline void store(float* to, floats v) { std::memcpy(to, &v, sizeof v); }

inline floats splat(float value) {
  static_assert(LANES == 8, "splat lists the lanes");
  return floats{value, value, value, value, value, value, value, value};
}

// 3x3 window, stride 2, padding 1: the conv and the pool alike.
int64_t halved(int64_t size) { return (size - 1) / 2 + 1; }

struct Geometry {
  int64_t batch, in_channels, height, width;
  int64_t conv_h, conv_w, pool_h, pool_w;
  int64_t taps;          // patch length: in_channels * 9
  int64_t patch_stride;  // taps rounded up to whole vectors (the tail is zeros)
  int64_t stride_n, stride_c, stride_h, stride_w;
  int64_t positions() const { return conv_h * conv_w; }
};

Geometry geometry_of(const Tensor& x) {
  TORCH_CHECK(x.dim() == 4 && x.device().is_cpu() && x.scalar_type() == at::kFloat && x.numel() > 0,
              "x must be a non-empty float32 CPU batch of images (N, C, H, W)");
  Geometry g{};
  g.batch = x.size(0);
  g.in_channels = x.size(1);
  g.height = x.size(2);
  g.width = x.size(3);
  g.conv_h = halved(g.height);
  g.conv_w = halved(g.width);
  g.pool_h = halved(g.conv_h);
  g.pool_w = halved(g.conv_w);
  g.taps = g.in_channels * TAPS;
  g.patch_stride = padded(g.taps);
  g.stride_n = x.stride(0);
  g.stride_c = x.stride(1);
  g.stride_h = x.stride(2);
  g.stride_w = x.stride(3);
  return g;
}

void check_vector(const Tensor& t, const char* name, int64_t size, at::ScalarType type = at::kFloat) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == type && t.is_contiguous() && t.numel() == size, name,
              " must be a contiguous CPU vector of ", size);
}

// Image n's conv patches minus `shift` (per tap), padding included (as 0 - shift):
// patches[p * patch_stride + k], p = row * conv_w + column, k = input channel * 9 + ky * 3 + kx
// (the weight's own layout), zeros after the last tap.
void image_patches(const float* x, const Geometry& g, int64_t n, const float* shift, float* patches) {
  const float* image = x + n * g.stride_n;
  for (int64_t i = 0; i < g.conv_h; ++i)
    for (int64_t j = 0; j < g.conv_w; ++j) {
      float* __restrict patch = patches + (i * g.conv_w + j) * g.patch_stride;
      const int64_t top = 2 * i - 1, left = 2 * j - 1;
      const bool inside = top >= 0 && top + 2 < g.height && left >= 0 && left + 2 < g.width;
      for (int64_t ci = 0; ci < g.in_channels; ++ci) {
        const float* plane = image + ci * g.stride_c;
        for (int64_t ky = 0; ky < 3; ++ky)
          for (int64_t kx = 0; kx < 3; ++kx) {
            const int64_t y = top + ky, z = left + kx;
            const float value = inside || (y >= 0 && y < g.height && z >= 0 && z < g.width)
                                    ? plane[y * g.stride_h + z * g.stride_w]
                                    : 0.f;
            patch[ci * TAPS + ky * 3 + kx] = value - shift[ci * TAPS + ky * 3 + kx];
          }
      }
      std::fill(patch + g.taps, patch + g.patch_stride, 0.f);
    }
}

// Sums over every image of the batch, in `size` doubles: for each image n, start(n, patches,
// work) runs once with its shifted patches and a per-thread buffer of `work_size` floats, then
// add(n, patches, begin, end, work, sums) adds the terms of conv positions [begin, end) into float
// sums that are flushed into double every RUN positions. Images run in parallel chunks with their
// own double partials, added in chunk order.
template <typename StartImage, typename AddRun>
std::vector<double> image_sums(const float* x, const Geometry& g, const float* shift, int64_t size,
                               int64_t work_size, const StartImage& start, const AddRun& add) {
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), g.batch));
  std::vector<double> partial(static_cast<size_t>(chunks * size), 0.0);
  at::parallel_for(0, chunks, 1, [&](int64_t first, int64_t end_chunk) {
    std::vector<float> patches(static_cast<size_t>(g.positions() * g.patch_stride)), sums(static_cast<size_t>(size));
    std::vector<float> work(static_cast<size_t>(work_size));
    for (int64_t chunk = first; chunk < end_chunk; ++chunk) {
      double* __restrict total = partial.data() + chunk * size;
      for (int64_t n = g.batch * chunk / chunks; n < g.batch * (chunk + 1) / chunks; ++n) {
        image_patches(x, g, n, shift, patches.data());
        start(n, patches.data(), work.data());
        for (int64_t begin = 0; begin < g.positions(); begin += RUN) {
          std::fill(sums.begin(), sums.end(), 0.f);
          add(n, patches.data(), begin, std::min(g.positions(), begin + RUN), work.data(), sums.data());
          for (int64_t i = 0; i < size; ++i) total[i] += sums[i];
        }
      }
    }
  });
  std::vector<double> result(static_cast<size_t>(size), 0.0);
  for (int64_t chunk = 0; chunk < chunks; ++chunk)
    for (int64_t i = 0; i < size; ++i) result[i] += partial[chunk * size + i];
  return result;
}

// Per tap, its mean over the first SHIFT_IMAGES images: the patches' shift, so that the sums
// of products below lose no digits to taps far from zero (padding taps are 0 everywhere).
std::vector<float> tap_shift(const float* x, const Geometry& g) {
  const int64_t images = std::min<int64_t>(g.batch, SHIFT_IMAGES);
  std::vector<float> zeros(static_cast<size_t>(g.patch_stride), 0.f), patches(static_cast<size_t>(g.positions() * g.patch_stride));
  std::vector<double> sum(static_cast<size_t>(g.taps), 0.0);
  for (int64_t n = 0; n < images; ++n) {
    image_patches(x, g, n, zeros.data(), patches.data());
    for (int64_t p = 0; p < g.positions(); ++p)
      for (int64_t k = 0; k < g.taps; ++k) sum[k] += patches[p * g.patch_stride + k];
  }
  std::vector<float> shift(static_cast<size_t>(g.patch_stride), 0.f);
  for (int64_t k = 0; k < g.taps; ++k) shift[k] = static_cast<float>(sum[k] / static_cast<double>(images * g.positions()));
  return shift;
}

// The shifted patches' mean m (taps) and covariance S (taps x taps), in double.
void patch_moments(const float* x, const Geometry& g, const float* shift, double* mean, double* covariance) {
  const int64_t k_all = g.taps, stride = g.patch_stride;
  // Sums: stride values, then a taps x stride block of products.
  const std::vector<double> sums =
      image_sums(x, g, shift, stride + k_all * stride, 0, [](int64_t, const float*, float*) {},
                 [&](int64_t, const float* patches, int64_t begin, int64_t end, float*, float* s) {
                   for (int64_t l0 = 0; l0 < stride; l0 += LANES) {
                     floats total = load(s + l0);
                     for (int64_t p = begin; p < end; ++p) total += load(patches + p * stride + l0);
                     store(s + l0, total);
                   }
                   // Row k of the products, one vector of columns at a time, two rows together
                   // (independent chains; a zero tap pads an odd count).
                   float* products = s + stride;
                   for (int64_t k = 0; k < k_all; k += 2)
                     for (int64_t l0 = 0; l0 < stride; l0 += LANES) {
                       const bool pair = k + 1 < k_all;
                       floats first = load(products + k * stride + l0);
                       floats second = pair ? load(products + (k + 1) * stride + l0) : splat(0.f);
                       for (int64_t p = begin; p < end; ++p) {
                         const float* patch = patches + p * stride;
                         const floats columns = load(patch + l0);
                         first += splat(patch[k]) * columns;
                         second += splat(pair ? patch[k + 1] : 0.f) * columns;
                       }
                       store(products + k * stride + l0, first);
                       if (pair) store(products + (k + 1) * stride + l0, second);
                     }
                 });
  const double count = static_cast<double>(g.batch * g.positions());
  for (int64_t k = 0; k < k_all; ++k) mean[k] = sums[k] / count;
  for (int64_t k = 0; k < k_all; ++k)
    for (int64_t l = 0; l < k_all; ++l)
      covariance[k * k_all + l] = sums[stride + k * stride + l] / count - mean[k] * mean[l];
}

// The stem's forward; moves the BN's running statistics towards the batch's by `momentum`
// (shufflenas::update_running). Returns the pooled map (N, C, PH, PW) in channels_last, the
// winning window position (0-8, row-major) per pooled value (N, PH, PW, C), the biased batch
// variance of the conv's output, and the patch statistics the backward needs (double: the
// shift per tap, the shifted patches' mean m, their covariance S).
std::tuple<Tensor, Tensor, Tensor, Tensor> forward(const Tensor& x, const Tensor& weight, const Tensor& gamma,
                                                   const Tensor& beta, double eps, const Tensor& running_mean,
                                                   const Tensor& running_var, double momentum) {
  const Geometry g = geometry_of(x);
  const int64_t channels = weight.size(0), k_all = g.taps;
  TORCH_CHECK(weight.dim() == 4 && weight.size(1) == g.in_channels && weight.size(2) == 3 && weight.size(3) == 3,
              "weight must be (C, in_channels, 3, 3)");
  check_vector(weight, "weight", channels * k_all);
  check_vector(gamma, "gamma", channels);
  check_vector(beta, "beta", channels);
  check_vector(running_mean, "running_mean", channels);
  check_vector(running_var, "running_var", channels);
  const int64_t count = g.batch * g.positions();
  TORCH_CHECK(count >= 2, "BatchNorm needs at least 2 values per channel");
  const float* xs = x.data_ptr<float>();
  const float* w = weight.data_ptr<float>();

  const std::vector<float> shift = tap_shift(xs, g);
  Tensor stats = at::empty({2 * k_all + k_all * k_all}, x.options().dtype(at::kDouble));
  double* shift_d = stats.data_ptr<double>();
  double* m = shift_d + k_all;
  double* cov = m + k_all;
  for (int64_t k = 0; k < k_all; ++k) shift_d[k] = shift[k];
  patch_moments(xs, g, shift.data(), m, cov);

  // Per channel: the conv's batch mean and variance, and the BN folded into the conv:
  // y = scaled_w . (patch - shift) + offset. Channels are padded to whole vectors (LANES) in
  // the buffers below, so the inner loops have a fixed length the compiler keeps in registers.
  const int64_t channel_stride = padded(channels);
  Tensor var = at::empty({channels}, x.options());
  std::vector<float> scaled_w(static_cast<size_t>(k_all * channel_stride), 0.f), offset(static_cast<size_t>(channel_stride), 0.f);
  for (int64_t c = 0; c < channels; ++c) {
    const float* wc = w + c * k_all;
    double shifted_mean = 0.0, unshift = 0.0, variance = 0.0;
    for (int64_t k = 0; k < k_all; ++k) {
      shifted_mean += wc[k] * m[k];
      unshift += wc[k] * shift_d[k];
      double row = 0.0;
      for (int64_t l = 0; l < k_all; ++l) row += cov[k * k_all + l] * wc[l];
      variance += wc[k] * row;
    }
    variance = std::max(0.0, variance);
    const double invstd = 1.0 / std::sqrt(variance + eps);
    const double scale = gamma.data_ptr<float>()[c] * invstd;
    var.data_ptr<float>()[c] = static_cast<float>(variance);
    shufflenas::update_running(running_mean, running_var, c, shifted_mean + unshift, variance, count, momentum);
    for (int64_t k = 0; k < k_all; ++k) scaled_w[k * channel_stride + c] = static_cast<float>(wc[k] * scale);
    offset[c] = static_cast<float>(beta.data_ptr<float>()[c] - scale * shifted_mean);
  }

  Tensor out = at::empty({g.batch, g.pool_h, g.pool_w, channels}, x.options());
  Tensor winners = at::empty({g.batch, g.pool_h, g.pool_w, channels}, x.options().dtype(at::kByte));
  float* o = out.data_ptr<float>();
  uint8_t* won = winners.data_ptr<uint8_t>();
  at::parallel_for(0, g.batch, 1, [&](int64_t first, int64_t end) {
    std::vector<float> patches(static_cast<size_t>((g.positions() + BLOCK) * g.patch_stride), 0.f);
    std::vector<float> normed(static_cast<size_t>(g.positions() * channel_stride));
    std::vector<float> best(static_cast<size_t>(channel_stride)), which(static_cast<size_t>(channel_stride));
    for (int64_t n = first; n < end; ++n) {
      image_patches(xs, g, n, shift.data(), patches.data());
      // The conv, BLOCK positions at a time: independent accumulators hide the FMA latency.
      for (int64_t p0 = 0; p0 < g.positions(); p0 += BLOCK) {
        const int64_t count = std::min(BLOCK, g.positions() - p0);
        const float* patch = patches.data() + p0 * g.patch_stride;
        for (int64_t c0 = 0; c0 < channel_stride; c0 += LANES) {
          floats acc[BLOCK];
#pragma GCC unroll 4
          for (int64_t b = 0; b < BLOCK; ++b) acc[b] = load(offset.data() + c0);
          for (int64_t k = 0; k < k_all; ++k) {
            const floats wk = load(scaled_w.data() + k * channel_stride + c0);
#pragma GCC unroll 4
            for (int64_t b = 0; b < BLOCK; ++b) acc[b] += splat(patch[b * g.patch_stride + k]) * wk;
          }
          for (int64_t b = 0; b < count; ++b) store(normed.data() + (p0 + b) * channel_stride + c0, acc[b]);
        }
      }
      for (int64_t i = 0; i < g.pool_h; ++i)
        for (int64_t j = 0; j < g.pool_w; ++j) {
          for (int64_t c0 = 0; c0 < channel_stride; c0 += LANES) {
            floats b = splat(-std::numeric_limits<float>::infinity()), t = splat(0.f);
            // PyTorch's order and rule: row-major over the window, a later value wins only if
            // larger (the first of equal maxima stays) or NaN.
            for (int64_t ky = 0; ky < 3; ++ky) {
              const int64_t y = 2 * i - 1 + ky;
              if (y < 0 || y >= g.conv_h) continue;
              for (int64_t kx = 0; kx < 3; ++kx) {
                const int64_t z = 2 * j - 1 + kx;
                if (z < 0 || z >= g.conv_w) continue;
                const floats v = load(normed.data() + (y * g.conv_w + z) * channel_stride + c0);
                const ints wins = (v > b) | (v != v);
                b = wins ? v : b;
                t = wins ? splat(static_cast<float>(ky * 3 + kx)) : t;
              }
            }
            const ints keep = (b > splat(0.f)) | (b != b);  // the ReLU (NaN stays NaN)
            store(best.data() + c0, keep ? b : splat(0.f));
            store(which.data() + c0, t);
          }
          const int64_t at_out = ((n * g.pool_h + i) * g.pool_w + j) * channels;
          std::copy(best.begin(), best.begin() + channels, o + at_out);
          for (int64_t c = 0; c < channels; ++c) won[at_out + c] = static_cast<uint8_t>(which[c]);
        }
    }
  });
  return {out.permute({0, 3, 1, 2}), winners, var, stats};
}

// Gradients of forward() for the conv weight, gamma and beta (the images take none).
std::tuple<Tensor, Tensor, Tensor> backward(const Tensor& grad_out, const Tensor& x, const Tensor& out,
                                            const Tensor& winners, const Tensor& weight, const Tensor& gamma,
                                            const Tensor& var, const Tensor& stats, double eps) {
  const Geometry g = geometry_of(x);
  const int64_t channels = weight.size(0), k_all = g.taps;
  check_vector(weight, "weight", channels * k_all);
  check_vector(gamma, "gamma", channels);
  check_vector(var, "var", channels);
  check_vector(stats, "stats", 2 * k_all + k_all * k_all, at::kDouble);
  // (N, C, PH, PW) tensors stored as (N, PH, PW, C):
  const Tensor grad = grad_out.permute({0, 2, 3, 1}).contiguous();
  const Tensor pooled = out.permute({0, 2, 3, 1});
  const std::vector<int64_t> pooled_shape{g.batch, g.pool_h, g.pool_w, channels};
  TORCH_CHECK(grad.sizes() == pooled_shape && pooled.is_contiguous() && pooled.sizes() == pooled_shape &&
                  winners.is_contiguous() && winners.sizes() == pooled_shape && winners.scalar_type() == at::kByte,
              "grad, out and winners must match the pooled map");
  const float* xs = x.data_ptr<float>();
  const float* gp = grad.data_ptr<float>();
  const float* o = pooled.data_ptr<float>();
  const uint8_t* won = winners.data_ptr<uint8_t>();
  const double* shift_d = stats.data_ptr<double>();
  const double* forward_mean = shift_d + k_all;
  const double* cov = forward_mean + k_all;
  // Patches centred on their batch mean this time (up to float rounding, kept in m): the sums A
  // then carry no d * mean part, which cancels against the other terms when the gradient
  // reaching the stem is nearly orthogonal to shifts (as the BNs after it make it).
  std::vector<float> shift(static_cast<size_t>(g.patch_stride), 0.f);
  std::vector<double> m(static_cast<size_t>(k_all));
  for (int64_t k = 0; k < k_all; ++k) {
    const double mean = shift_d[k] + forward_mean[k];
    shift[k] = static_cast<float>(mean);
    m[k] = mean - shift[k];
  }

  // d (channel_stride) then A (taps x channel_stride). Each image's gradient is first routed
  // to the conv positions that won (work: positions x channel_stride), then summed.
  const int64_t channel_stride = padded(channels);
  const std::vector<double> sums = image_sums(
      xs, g, shift.data(), channel_stride + k_all * channel_stride, g.positions() * channel_stride,
      [&](int64_t n, const float*, float* routed) {
        std::fill(routed, routed + g.positions() * channel_stride, 0.f);
        for (int64_t i = 0; i < g.pool_h; ++i)
          for (int64_t j = 0; j < g.pool_w; ++j) {
            const int64_t at_out = ((n * g.pool_h + i) * g.pool_w + j) * channels;
            for (int64_t c = 0; c < channels; ++c) {
              if (!(o[at_out + c] > 0.f)) continue;  // the ReLU's mask
              const int64_t tap = won[at_out + c];
              const int64_t p = (2 * i - 1 + tap / 3) * g.conv_w + 2 * j - 1 + tap % 3;
              routed[p * channel_stride + c] += gp[at_out + c];
            }
          }
      },
      [&](int64_t, const float* patches, int64_t begin, int64_t end, float* routed, float* s) {
        // Per vector of channels, 9 taps' sums at a time stay in registers over the positions.
        float* a = s + channel_stride;
        for (int64_t c0 = 0; c0 < channel_stride; c0 += LANES) {
          floats d = load(s + c0);
          for (int64_t p = begin; p < end; ++p) d += load(routed + p * channel_stride + c0);
          store(s + c0, d);
          for (int64_t k0 = 0; k0 < k_all; k0 += 3) {  // a row of taps: 3 sums in registers
            floats first = load(a + k0 * channel_stride + c0), second = load(a + (k0 + 1) * channel_stride + c0),
                   third = load(a + (k0 + 2) * channel_stride + c0);
            for (int64_t p = begin; p < end; ++p) {
              const floats gv = load(routed + p * channel_stride + c0);
              const float* patch = patches + p * g.patch_stride + k0;
              first += splat(patch[0]) * gv;
              second += splat(patch[1]) * gv;
              third += splat(patch[2]) * gv;
            }
            store(a + k0 * channel_stride + c0, first);
            store(a + (k0 + 1) * channel_stride + c0, second);
            store(a + (k0 + 2) * channel_stride + c0, third);
          }
        }
      });
  const double* a = sums.data() + channel_stride;

  Tensor grad_weight = at::empty_like(weight), grad_gamma = at::empty_like(gamma), grad_beta = at::empty_like(gamma);
  const float* w = weight.data_ptr<float>();
  const float* v = var.data_ptr<float>();
  for (int64_t c = 0; c < channels; ++c) {
    const float* wc = w + c * k_all;
    const double d = sums[c];
    const double invstd = 1.0 / std::sqrt(static_cast<double>(v[c]) + eps);
    double wa = 0.0, wm = 0.0;
    for (int64_t k = 0; k < k_all; ++k) {
      wa += wc[k] * a[k * channel_stride + c];
      wm += wc[k] * m[k];
    }
    const double dgamma = invstd * (wa - d * wm);
    const double scale = gamma.data_ptr<float>()[c] * invstd;
    for (int64_t k = 0; k < k_all; ++k) {
      double sw = 0.0;
      for (int64_t l = 0; l < k_all; ++l) sw += cov[k * k_all + l] * wc[l];
      grad_weight.data_ptr<float>()[c * k_all + k] =
          static_cast<float>(scale * (a[k * channel_stride + c] - d * m[k] - dgamma * invstd * sw));
    }
    grad_gamma.data_ptr<float>()[c] = static_cast<float>(dgamma);
    grad_beta.data_ptr<float>()[c] = static_cast<float>(d);
  }
  return {grad_weight, grad_gamma, grad_beta};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(shufflenas_fused, m) {
  m.def("stem(Tensor x, Tensor weight, Tensor gamma, Tensor beta, float eps, Tensor(a!) running_mean, "
        "Tensor(b!) running_var, float momentum) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("stem_backward(Tensor grad, Tensor x, Tensor out, Tensor winners, Tensor weight, Tensor gamma, Tensor var, "
        "Tensor stats, float eps) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(shufflenas_fused, CPU, m) {
  m.impl("stem", forward);
  m.impl("stem_backward", backward);
}
