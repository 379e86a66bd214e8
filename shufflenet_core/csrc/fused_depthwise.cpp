// The 3x3 depthwise conv (padding 1, stride 1 or 2) of an NHWC map in training: forward, input
// gradient and weight gradient, each one pass with the channels as the vector dimension.
//
// On the small maps of a proxy (8x8 down to 2x2) oneDNN's depthwise kernels spend more time
// on setup and layout than on the 9 multiply-adds per value, and PyTorch has no NHWC average
// pool backward worth the name; the same kernel runs the stride-2 shortcut's 3x3 average pool
// (weights 1/9, no weight gradient). Loaded with the other kernels by shufflenet_core/fused.py.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <vector>

namespace {

using at::Tensor;

constexpr int64_t TAPS = 9;
constexpr int64_t RUN = 16;  // output rows summed in float before the double weight-gradient sums

struct Shape {
  int64_t batch, height, width, channels, stride, out_h, out_w;
};

Shape shape_of(const Tensor& x, const Tensor& weight, int64_t stride) {
  TORCH_CHECK(x.dim() == 4 && x.device().is_cpu() && x.scalar_type() == at::kFloat &&
                  x.is_contiguous(at::MemoryFormat::ChannelsLast),
              "x must be a float32 CPU channels_last map");
  TORCH_CHECK(stride == 1 || stride == 2, "stride must be 1 or 2");
  const int64_t channels = x.size(1);
  TORCH_CHECK(weight.device().is_cpu() && weight.scalar_type() == at::kFloat && weight.dim() == 4 &&
                  weight.size(0) == channels && weight.size(1) == 1 && weight.size(2) == 3 && weight.size(3) == 3,
              "weight must be a float32 CPU (C, 1, 3, 3) tensor");
  return {x.size(0), x.size(2), x.size(3), channels, stride, (x.size(2) - 1) / stride + 1, (x.size(3) - 1) / stride + 1};
}

// The weight as taps x channels (contiguous channels per tap).
std::vector<float> taps_by_channel(const Tensor& weight, int64_t channels) {
  const Tensor w = weight.contiguous();
  const float* from = w.data_ptr<float>();
  std::vector<float> taps(static_cast<size_t>(TAPS * channels));
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t t = 0; t < TAPS; ++t) taps[t * channels + c] = from[c * TAPS + t];
  return taps;
}

// Calls read(tap, input offset) for each tap of output (n, oy, ox) that falls inside the map;
// the offset is that input position's, in floats.
template <typename Read>
inline void for_each_tap(const Shape& s, int64_t n, int64_t oy, int64_t ox, const Read& read) {
  for (int64_t ky = 0; ky < 3; ++ky) {
    const int64_t iy = oy * s.stride + ky - 1;
    if (iy < 0 || iy >= s.height) continue;
    for (int64_t kx = 0; kx < 3; ++kx) {
      const int64_t ix = ox * s.stride + kx - 1;
      if (ix < 0 || ix >= s.width) continue;
      read(ky * 3 + kx, ((n * s.height + iy) * s.width + ix) * s.channels);
    }
  }
}

Tensor forward(const Tensor& x, const Tensor& weight, int64_t stride) {
  const Shape s = shape_of(x, weight, stride);
  const std::vector<float> taps = taps_by_channel(weight, s.channels);
  Tensor out = at::empty({s.batch, s.channels, s.out_h, s.out_w}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
  const float* in = x.data_ptr<float>();
  float* y = out.data_ptr<float>();
  const int64_t c_all = s.channels;
  at::parallel_for(0, s.batch * s.out_h, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, s.out_w * c_all)),
                   [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / s.out_h, oy = row % s.out_h;
      for (int64_t ox = 0; ox < s.out_w; ++ox) {
        float* __restrict dst = y + ((n * s.out_h + oy) * s.out_w + ox) * c_all;
        std::fill(dst, dst + c_all, 0.f);
        for_each_tap(s, n, oy, ox, [&](int64_t tap, int64_t at) {
          const float* __restrict src = in + at;
          const float* __restrict w = taps.data() + tap * c_all;
          for (int64_t c = 0; c < c_all; ++c) dst[c] += w[c] * src[c];
        });
      }
    }
  });
  return out;
}

// grad_x (gathered: each input position sums the outputs that read it) and grad_weight.
std::tuple<Tensor, Tensor> backward(const Tensor& grad_out, const Tensor& x, const Tensor& weight, int64_t stride,
                                    bool input_grad, bool weight_grad) {
  const Shape s = shape_of(x, weight, stride);
  const Tensor grad = grad_out.contiguous(at::MemoryFormat::ChannelsLast);
  TORCH_CHECK(grad.size(0) == s.batch && grad.size(1) == s.channels && grad.size(2) == s.out_h &&
                  grad.size(3) == s.out_w && grad.scalar_type() == at::kFloat,
              "grad must match the output");
  const int64_t c_all = s.channels;
  const float* in = x.data_ptr<float>();
  const float* g = grad.data_ptr<float>();
  Tensor grad_x, grad_w;
  if (input_grad) {
    const std::vector<float> taps = taps_by_channel(weight, c_all);
    grad_x = at::empty_like(x, x.options().memory_format(at::MemoryFormat::ChannelsLast));
    float* gx = grad_x.data_ptr<float>();
    at::parallel_for(0, s.batch * s.height, std::max<int64_t>(1, 4096 / std::max<int64_t>(1, s.width * c_all)),
                     [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t n = row / s.height, iy = row % s.height;
        for (int64_t ix = 0; ix < s.width; ++ix) {
          float* __restrict dst = gx + ((n * s.height + iy) * s.width + ix) * c_all;
          std::fill(dst, dst + c_all, 0.f);
          for (int64_t ky = 0; ky < 3; ++ky) {
            const int64_t ty = iy + 1 - ky;  // = oy * stride
            if (ty < 0 || ty % s.stride != 0 || ty / s.stride >= s.out_h) continue;
            for (int64_t kx = 0; kx < 3; ++kx) {
              const int64_t tx = ix + 1 - kx;
              if (tx < 0 || tx % s.stride != 0 || tx / s.stride >= s.out_w) continue;
              const float* __restrict src = g + ((n * s.out_h + ty / s.stride) * s.out_w + tx / s.stride) * c_all;
              const float* __restrict w = taps.data() + (ky * 3 + kx) * c_all;
              for (int64_t c = 0; c < c_all; ++c) dst[c] += w[c] * src[c];
            }
          }
        }
      }
    });
  }
  if (weight_grad) {
    // Per tap and channel, the sum over every output of grad times the input the tap read:
    // float over RUN output rows, then double; chunks of rows in parallel, added in order.
    const int64_t rows = s.batch * s.out_h;
    const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), rows / RUN));
    std::vector<double> partial(static_cast<size_t>(chunks * TAPS * c_all), 0.0);
    at::parallel_for(0, chunks, 1, [&](int64_t first, int64_t last) {
      std::vector<float> run(static_cast<size_t>(TAPS * c_all));
      for (int64_t chunk = first; chunk < last; ++chunk) {
        double* __restrict total = partial.data() + chunk * TAPS * c_all;
        const int64_t begin = rows * chunk / chunks, end = rows * (chunk + 1) / chunks;
        for (int64_t start = begin; start < end; start += RUN) {
          std::fill(run.begin(), run.end(), 0.f);
          for (int64_t row = start; row < std::min(end, start + RUN); ++row) {
            const int64_t n = row / s.out_h, oy = row % s.out_h;
            for (int64_t ox = 0; ox < s.out_w; ++ox) {
              const float* __restrict go = g + ((n * s.out_h + oy) * s.out_w + ox) * c_all;
              for_each_tap(s, n, oy, ox, [&](int64_t tap, int64_t at) {
                const float* __restrict src = in + at;
                float* __restrict acc = run.data() + tap * c_all;
                for (int64_t c = 0; c < c_all; ++c) acc[c] += go[c] * src[c];
              });
            }
          }
          for (int64_t i = 0; i < TAPS * c_all; ++i) total[i] += run[i];
        }
      }
    });
    grad_w = at::empty({c_all, 1, 3, 3}, x.options());
    float* gw = grad_w.data_ptr<float>();
    for (int64_t c = 0; c < c_all; ++c)
      for (int64_t t = 0; t < TAPS; ++t) {
        double sum = 0.0;
        for (int64_t chunk = 0; chunk < chunks; ++chunk) sum += partial[(chunk * TAPS + t) * c_all + c];
        gw[c * TAPS + t] = static_cast<float>(sum);
      }
  }
  return {grad_x, grad_w};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(shufflenas_fused, m) {
  m.def("depthwise3x3(Tensor x, Tensor weight, int stride) -> Tensor");
  m.def("depthwise3x3_backward(Tensor grad, Tensor x, Tensor weight, int stride, bool input_grad, bool weight_grad) "
        "-> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(shufflenas_fused, CPU, m) {
  m.impl("depthwise3x3", forward);
  m.impl("depthwise3x3_backward", backward);
}
