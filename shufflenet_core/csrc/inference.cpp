// Inference kernels for batch-1 (and any batch) eval of the fast build, on NHWC maps with each
// BN folded into the conv before it:
//
//   pointwise_infer: a grouped 1x1 conv + bias, optionally + residual, optionally ReLU, written
//     into a channel range of a (possibly wider) output: the stride-2 unit's concat costs nothing.
//     Its input columns come through a table, so the channel shuffle before pw2 is free too.
//   depthwise_infer: a 3x3 depthwise conv (stride 1 or 2) + bias into a channel range of an
//     output; with 1/9 weights and no bias it is the stride-2 shortcut's average pool.
//   stem_infer: the stem's conv 3x3/2 + bias + ReLU + max pool 3x3/2 in one pass; the conv's
//     output (the largest map of the network) lives in three rows of scratch.
//
// oneDNN runs the grouped 1x1 convs of a ShuffleNet at batch 1 at 45-56 GFLOP/s here: it
// vectorizes over the output channels of a group (20 or 40 for 1.0x g3) in 16- or 32-wide
// blocks and reorders around each call. These kernels keep a register tile of up to 4 rows x
// 24 output channels (AVX2 + FMA, 8 wide) with zero-padded packed weights, so a 20-channel
// group wastes 4 lanes of 24 instead of 12 of 32. Without AVX2 the same loops run in plain C++.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define SHUFFLENAS_AVX2 1
#endif

namespace {

using at::Tensor;

constexpr int64_t LANES = 8;
constexpr int64_t BLOCK = 3 * LANES;  // output channels of a pointwise tile (3 vectors)
constexpr int64_t CHUNK_FLOATS = 4096;  // output floats per chunk of rows (16 KB, half of L1)

void check_map(const Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kFloat, name, " must be a float32 CPU tensor");
}

#ifdef SHUFFLENAS_AVX2

inline __m256i lane_mask(int64_t valid) {
  const __m256i index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(valid)), index);
}

// Stores the first `count` (1..7) lanes of `value`: AMD's masked store (vmaskmovps) is
// microcoded and made a 12-channel group 3x slower than plain stores.
inline void store_first(float* to, __m256 value, int64_t count) {
  __m128 part = _mm256_castps256_ps128(value);
  if (count >= 4) {
    _mm_storeu_ps(to, part);
    part = _mm256_extractf128_ps(value, 1);
    to += 4;
    count -= 4;
  }
  if (count >= 2) {
    _mm_storel_pi(reinterpret_cast<__m64*>(to), part);
    part = _mm_movehl_ps(part, part);
    to += 2;
    count -= 2;
  }
  if (count == 1) _mm_store_ss(to, part);
}

// R rows x V vectors of 8 output channels: acc = bias + sum_k x[r, columns[k]] * w[k, :];
// then + residual, ReLU, and a store of `valid` channels (the last vector may be partial).
template <int R, int V>
void pointwise_tile(const float* x, int64_t ldx, const int32_t* columns, int64_t depth, const float* w, int64_t ldw,
                    const float* bias, const float* residual, int64_t ldr, float* y, int64_t ldy, int64_t valid,
                    bool relu) {
  __m256 acc[R][V];
  for (int v = 0; v < V; ++v) {
    const __m256 b = _mm256_loadu_ps(bias + v * LANES);
    for (int r = 0; r < R; ++r) acc[r][v] = b;
  }
  for (int64_t k = 0; k < depth; ++k) {
    const float* wk = w + k * ldw;
    __m256 wv[V];
    for (int v = 0; v < V; ++v) wv[v] = _mm256_loadu_ps(wk + v * LANES);
    const int64_t column = columns[k];
    for (int r = 0; r < R; ++r) {
      const __m256 a = _mm256_broadcast_ss(x + r * ldx + column);
      for (int v = 0; v < V; ++v) acc[r][v] = _mm256_fmadd_ps(a, wv[v], acc[r][v]);
    }
  }
  // The epilogue reads the sums back from a buffer: indexing the accumulators in it made GCC
  // keep them on the stack through the whole k loop (a store per multiply-add).
  alignas(32) float sums[R][V * LANES];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) _mm256_store_ps(sums[r] + v * LANES, acc[r][v]);
  const __m256 zero = _mm256_setzero_ps();
  const int64_t tail = valid - (V - 1) * LANES;  // channels in the last vector, 1..8
  const __m256i mask = lane_mask(tail);
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < V; ++v) {
      __m256 value = _mm256_load_ps(sums[r] + v * LANES);
      const bool full = v < V - 1 || tail == LANES;
      if (residual != nullptr) {
        const float* from = residual + r * ldr + v * LANES;
        value = _mm256_add_ps(value, full ? _mm256_loadu_ps(from) : _mm256_maskload_ps(from, mask));
      }
      if (relu) value = _mm256_max_ps(zero, value);  // NaN stays NaN, as in torch.relu
      float* to = y + r * ldy + v * LANES;
      if (full) {
        _mm256_storeu_ps(to, value);
      } else {
        store_first(to, value, tail);
      }
    }
  }
}

#else

template <int R, int V>
void pointwise_tile(const float* x, int64_t ldx, const int32_t* columns, int64_t depth, const float* w, int64_t ldw,
                    const float* bias, const float* residual, int64_t ldr, float* y, int64_t ldy, int64_t valid,
                    bool relu) {
  float acc[R][V * LANES];
  for (int r = 0; r < R; ++r)
    for (int64_t j = 0; j < V * LANES; ++j) acc[r][j] = bias[j];
  for (int64_t k = 0; k < depth; ++k) {
    const float* wk = w + k * ldw;
    for (int r = 0; r < R; ++r) {
      const float a = x[r * ldx + columns[k]];
      for (int64_t j = 0; j < V * LANES; ++j) acc[r][j] += a * wk[j];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int64_t j = 0; j < valid; ++j) {
      float value = acc[r][j] + (residual != nullptr ? residual[r * ldr + j] : 0.f);
      y[r * ldy + j] = relu ? std::max(value, 0.f) : value;
    }
}

#endif

// Rows [begin, end) of one group's vector block of V vectors, R rows at a time, the rest in one
// smaller tile.
template <int V, int R>
void pointwise_rows(int64_t begin, int64_t end, const float* x, int64_t ldx, const int32_t* columns, int64_t depth,
                    const float* w, int64_t ldw, const float* bias, const float* residual, int64_t ldr, float* y,
                    int64_t ldy, int64_t valid, bool relu) {
  int64_t row = begin;
  auto tile = [&](auto rows) {
    constexpr int TILE = decltype(rows)::value;
    pointwise_tile<TILE, V>(x + row * ldx, ldx, columns, depth, w, ldw, bias,
                            residual ? residual + row * ldr : nullptr, ldr, y + row * ldy, ldy, valid, relu);
    row += TILE;
  };
  while (row + R <= end) tile(std::integral_constant<int, R>{});
  switch (end - row) {
    case 7: if constexpr (R > 7) tile(std::integral_constant<int, 7>{}); break;
    case 6: if constexpr (R > 6) tile(std::integral_constant<int, 6>{}); break;
    case 5: if constexpr (R > 5) tile(std::integral_constant<int, 5>{}); break;
    case 4: if constexpr (R > 4) tile(std::integral_constant<int, 4>{}); break;
    case 3: tile(std::integral_constant<int, 3>{}); break;
    case 2: tile(std::integral_constant<int, 2>{}); break;
    case 1: tile(std::integral_constant<int, 1>{}); break;
    default: break;
  }
}

// x: (N, C_in, H, W) channels_last; bias: (groups, padded) with padded a multiple of 8 (zeros
// past each group's `per_group` outputs); weight: (groups, depth * padded), each group's
// (depth, padded) matrix in blocks of up to BLOCK output columns, one block after another
// (depth rows of the block's width): a tile then streams its weights from consecutive memory
// (a group's full rows are up to 2.5 KB apart: a TLB miss every few rows); columns: (groups,
// depth) int32, the input channel each group's k-th input is; residual: like the output's
// channel range; out: (N, C_out_total, H, W) channels_last, written at channels [offset,
// offset + groups * per_group).
void pointwise_infer(const Tensor& x, const Tensor& weight, const Tensor& bias, const Tensor& columns,
                     int64_t per_group, const c10::optional<Tensor>& residual, bool relu, const Tensor& out,
                     int64_t offset) {
  check_map(x, "x");
  check_map(out, "out");
  TORCH_CHECK(x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast), "x must be a channels_last map");
  TORCH_CHECK(out.dim() == 4 && out.is_contiguous(at::MemoryFormat::ChannelsLast), "out must be a channels_last map");
  TORCH_CHECK(bias.dim() == 2 && bias.is_contiguous() && bias.scalar_type() == at::kFloat &&
                  bias.size(1) % LANES == 0 && bias.size(1) > 0,
              "bias must be a contiguous float32 (groups, padded) tensor");
  const int64_t groups = bias.size(0), padded = bias.size(1);
  TORCH_CHECK(weight.dim() == 2 && weight.is_contiguous() && weight.scalar_type() == at::kFloat &&
                  weight.size(0) == groups && weight.size(1) % padded == 0,
              "weight must be a contiguous float32 (groups, depth * padded) tensor");
  const int64_t depth = weight.size(1) / padded;
  TORCH_CHECK(columns.is_contiguous() && columns.scalar_type() == at::kInt && columns.numel() == groups * depth,
              "columns must be groups x depth int32");
  const int64_t rows = x.size(0) * x.size(2) * x.size(3), ldx = x.size(1), ldy = out.size(1);
  TORCH_CHECK(out.size(0) * out.size(2) * out.size(3) == rows, "out must have x's positions");
  const int32_t* column = columns.data_ptr<int32_t>();
  for (int64_t i = 0; i < groups * depth; ++i)
    TORCH_CHECK(column[i] >= 0 && column[i] < ldx, "columns must index x's channels");
  const float* res = nullptr;
  int64_t ldr = 0;
  if (residual.has_value()) {
    const Tensor& r = *residual;
    check_map(r, "residual");
    TORCH_CHECK(r.dim() == 4 && r.is_contiguous(at::MemoryFormat::ChannelsLast) &&
                    r.size(0) * r.size(2) * r.size(3) == rows,
                "residual must be a channels_last map with x's positions");
    res = r.data_ptr<float>();
    ldr = r.size(1);
  }
  TORCH_CHECK(per_group >= 1 && per_group <= padded, "per_group must be 1..padded");
  TORCH_CHECK(offset >= 0 && offset + per_group * groups <= ldy, "out has no room for the channels at offset");
  TORCH_CHECK(!res || ldr == per_group * groups, "residual must have the output's channels");
  const float* in = x.data_ptr<float>();
  const float* w = weight.data_ptr<float>();
  const float* b = bias.data_ptr<float>();
  float* y = out.data_ptr<float>() + offset;
  // Rows in chunks whose output (and input) rows stay in L1 while every group and vector block
  // writes them: whole cache lines are written at once instead of re-fetched per block.
  // Equal chunks: 49 rows in chunks of 24 would leave a 1-row chunk that reads all the weights
  // for one row.
  const int64_t target = std::max<int64_t>(24, (CHUNK_FLOATS / std::max<int64_t>(ldx, ldy)) / 24 * 24);
  const int64_t pieces = (rows + target - 1) / target;
  const int64_t chunk = std::max<int64_t>(1, (rows + pieces - 1) / std::max<int64_t>(1, pieces));
  at::parallel_for(0, rows, chunk, [&](int64_t begin, int64_t end) {
    for (int64_t low = begin; low < end; low += chunk) {
      const int64_t high = std::min(end, low + chunk);
      for (int64_t g = 0; g < groups; ++g) {
        const float* wg = w + g * depth * padded;
        const float* bg = b + g * padded;
        const int32_t* cg = column + g * depth;
        for (int64_t first = 0; first < per_group; first += BLOCK) {
          const int64_t valid = std::min<int64_t>(BLOCK, per_group - first);
          const int64_t vectors = (valid + LANES - 1) / LANES;
          const float* rg = res ? res + g * per_group + first : nullptr;
          float* yg = y + g * per_group + first;
          switch (vectors) {
            case 3:
              pointwise_rows<3, 4>(low, high, in, ldx, cg, depth, wg + first * depth, 3 * LANES, bg + first, rg, ldr,
                                   yg, ldy,
                                   valid, relu);
              break;
            case 2:
              pointwise_rows<2, 6>(low, high, in, ldx, cg, depth, wg + first * depth, 2 * LANES, bg + first, rg, ldr,
                                   yg, ldy,
                                   valid, relu);
              break;
            default:
              pointwise_rows<1, 8>(low, high, in, ldx, cg, depth, wg + first * depth, LANES, bg + first, rg, ldr,
                                   yg, ldy,
                                   valid, relu);
          }
        }
      }
    }
  });
}

// A dispatcher for tiles of up to 8 rows: calls tile(std::integral_constant<int, n>) for
// n = FULL as long as FULL rows are left, then once for what is left (0 rows: no call).
template <int FULL, typename Tile>
void in_tiles(int64_t count, const Tile& tile) {
  int64_t done = 0;
  for (; done + FULL <= count; done += FULL) tile(done, std::integral_constant<int, FULL>{});
  switch (count - done) {
    case 7: if constexpr (FULL > 7) tile(done, std::integral_constant<int, 7>{}); break;
    case 6: if constexpr (FULL > 6) tile(done, std::integral_constant<int, 6>{}); break;
    case 5: if constexpr (FULL > 5) tile(done, std::integral_constant<int, 5>{}); break;
    case 4: if constexpr (FULL > 4) tile(done, std::integral_constant<int, 4>{}); break;
    case 3: if constexpr (FULL > 3) tile(done, std::integral_constant<int, 3>{}); break;
    case 2: if constexpr (FULL > 2) tile(done, std::integral_constant<int, 2>{}); break;
    case 1: if constexpr (FULL > 1) tile(done, std::integral_constant<int, 1>{}); break;
    default: break;
  }
}

// ---- depthwise 3x3 ----

// One output position: out[c] = bias[c] + sum over the taps inside the map of w[tap, c] * x[c],
// for channels [first, first + valid) (the last vector may be partial).
inline void depthwise_position(const float* const* sources, const int* tap_of, int count, const float* taps,
                               int64_t padded, const float* bias, float* to, int64_t first, int64_t channels) {
#ifdef SHUFFLENAS_AVX2
  for (; first + 4 * LANES <= channels; first += 4 * LANES) {
    __m256 acc[4];
    for (int v = 0; v < 4; ++v) acc[v] = _mm256_loadu_ps(bias + first + v * LANES);
    for (int i = 0; i < count; ++i) {
      const float* src = sources[i] + first;
      const float* w = taps + tap_of[i] * padded + first;
      for (int v = 0; v < 4; ++v)
        acc[v] = _mm256_fmadd_ps(_mm256_loadu_ps(src + v * LANES), _mm256_loadu_ps(w + v * LANES), acc[v]);
    }
    for (int v = 0; v < 4; ++v) _mm256_storeu_ps(to + first + v * LANES, acc[v]);
  }
  for (; first < channels; first += LANES) {
    const int64_t valid = std::min<int64_t>(LANES, channels - first);
    const __m256i mask = lane_mask(valid);
    __m256 acc = _mm256_loadu_ps(bias + first);
    for (int i = 0; i < count; ++i) {
      const float* src = sources[i] + first;
      const __m256 value = valid == LANES ? _mm256_loadu_ps(src) : _mm256_maskload_ps(src, mask);
      acc = _mm256_fmadd_ps(value, _mm256_loadu_ps(taps + tap_of[i] * padded + first), acc);
    }
    if (valid == LANES) {
      _mm256_storeu_ps(to + first, acc);
    } else {
      store_first(to + first, acc, valid);
    }
  }
#else
  for (int64_t c = first; c < channels; ++c) to[c] = bias[c];
  for (int i = 0; i < count; ++i) {
    const float* w = taps + tap_of[i] * padded;
    for (int64_t c = first; c < channels; ++c) to[c] += w[c] * sources[i][c];
  }
#endif
}

#ifdef SHUFFLENAS_AVX2
// Output columns [low, high) of one output row for the 8 channels at `c`, whose taps all fall
// inside the map horizontally: the 9 weights stay in registers and 4 positions run at once,
// one load per multiply-add (the per-position path loads the weight too). rows[ky] is input
// row oy * stride + ky - 1 (nullptr outside the map), at channel 0 of column 0.
void depthwise_interior(const float* const* rows, int64_t channels, int64_t stride, const float* taps,
                        int64_t padded, const float* bias, float* out_row, int64_t ldo, int64_t low, int64_t high,
                        int64_t c) {
  __m256 w[9];
  for (int t = 0; t < 9; ++t) w[t] = _mm256_loadu_ps(taps + t * padded + c);
  const __m256 b = _mm256_loadu_ps(bias + c);
  auto tile = [&](int64_t ox, auto positions) {
    constexpr int P = decltype(positions)::value;
    __m256 acc[P];
    for (int p = 0; p < P; ++p) acc[p] = b;
    for (int ky = 0; ky < 3; ++ky) {
      if (rows[ky] == nullptr) continue;
      const float* row = rows[ky] + c + (ox * stride - 1) * channels;
      for (int kx = 0; kx < 3; ++kx)
        for (int p = 0; p < P; ++p)
          acc[p] = _mm256_fmadd_ps(_mm256_loadu_ps(row + (p * stride + kx) * channels), w[ky * 3 + kx], acc[p]);
    }
    for (int p = 0; p < P; ++p) _mm256_storeu_ps(out_row + (ox + p) * ldo + c, acc[p]);
  };
  int64_t ox = low;
  for (; ox + 4 <= high; ox += 4) tile(ox, std::integral_constant<int, 4>{});
  for (; ox < high; ++ox) tile(ox, std::integral_constant<int, 1>{});
}
#endif

// x: (N, C, H, W) channels_last; taps: (9, padded) the weight tap by tap, zero past C; bias:
// (padded); out: (N, C_out, OH, OW) channels_last with OH = (H - 1) / stride + 1, written at
// channels [offset, offset + C). Padding 1.
void depthwise_infer(const Tensor& x, const Tensor& taps, const Tensor& bias, int64_t stride, const Tensor& out,
                     int64_t offset) {
  check_map(x, "x");
  check_map(out, "out");
  TORCH_CHECK(x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast), "x must be a channels_last map");
  TORCH_CHECK(out.dim() == 4 && out.is_contiguous(at::MemoryFormat::ChannelsLast), "out must be a channels_last map");
  TORCH_CHECK(stride == 1 || stride == 2, "stride must be 1 or 2");
  const int64_t batch = x.size(0), channels = x.size(1), height = x.size(2), width = x.size(3);
  const int64_t out_h = (height - 1) / stride + 1, out_w = (width - 1) / stride + 1, ldo = out.size(1);
  TORCH_CHECK(taps.dim() == 2 && taps.size(0) == 9 && taps.is_contiguous() && taps.scalar_type() == at::kFloat &&
                  taps.size(1) % LANES == 0 && taps.size(1) >= channels,
              "taps must be a contiguous float32 (9, padded) tensor");
  const int64_t padded = taps.size(1);
  TORCH_CHECK(bias.is_contiguous() && bias.scalar_type() == at::kFloat && bias.numel() == padded,
              "bias must hold padded floats");
  TORCH_CHECK(out.size(0) == batch && out.size(2) == out_h && out.size(3) == out_w, "out has the wrong positions");
  TORCH_CHECK(offset >= 0 && offset + channels <= ldo, "out has no room for the channels at offset");
  const float* in = x.data_ptr<float>();
  const float* w = taps.data_ptr<float>();
  const float* b = bias.data_ptr<float>();
  float* y = out.data_ptr<float>() + offset;
  at::parallel_for(0, batch * out_h, 1, [&](int64_t begin, int64_t end) {
    const float* sources[9];
    int tap_of[9];
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / out_h, oy = row % out_h;
      float* out_row = y + (n * out_h + oy) * out_w * ldo;
      // Columns whose three taps are all inside the map: [1, high).
      const int64_t high = width >= 2 ? std::min(out_w, (width - 2) / stride + 1) : 0;
      int64_t vectorized = 0;  // channels the interior path covers (whole vectors)
#ifdef SHUFFLENAS_AVX2
      if (high > 1) {
        const float* rows[3];
        for (int64_t ky = 0; ky < 3; ++ky) {
          const int64_t iy = oy * stride + ky - 1;
          rows[ky] = iy < 0 || iy >= height ? nullptr : in + (n * height + iy) * width * channels;
        }
        vectorized = channels / LANES * LANES;
        for (int64_t c = 0; c < vectorized; c += LANES)
          depthwise_interior(rows, channels, stride, w, padded, b, out_row, ldo, 1, high, c);
      }
#endif
      for (int64_t ox = 0; ox < out_w; ++ox) {
        const int64_t first = ox >= 1 && ox < high ? vectorized : 0;
        if (first == channels) continue;
        int count = 0;
        for (int64_t ky = 0; ky < 3; ++ky) {
          const int64_t iy = oy * stride + ky - 1;
          if (iy < 0 || iy >= height) continue;
          for (int64_t kx = 0; kx < 3; ++kx) {
            const int64_t ix = ox * stride + kx - 1;
            if (ix < 0 || ix >= width) continue;
            sources[count] = in + ((n * height + iy) * width + ix) * channels;
            tap_of[count++] = static_cast<int>(ky * 3 + kx);
          }
        }
        depthwise_position(sources, tap_of, count, w, padded, b, out_row + ox * ldo, first, channels);
      }
    }
  });
}

// ---- stem: conv 3x3/2 + bias + ReLU + max pool 3x3/2 ----

// P consecutive conv outputs of one row, V vectors of channels from `first`: the input rows
// come zero-padded (one zero each side), so no tap needs a bounds check.
template <int P, int V>
void stem_tile(const float* const* rows, int64_t taps_per_row, int64_t column, const float* weight, int64_t padded,
               const float* bias, float* to) {
#ifdef SHUFFLENAS_AVX2
  __m256 acc[P][V];
  for (int v = 0; v < V; ++v) {
    const __m256 b = _mm256_loadu_ps(bias + v * LANES);
    for (int p = 0; p < P; ++p) acc[p][v] = b;
  }
  for (int64_t r = 0; r < taps_per_row; ++r) {  // (input channel, ky) pairs
    const float* row = rows[r] + 2 * column;
    for (int kx = 0; kx < 3; ++kx) {
      const float* wk = weight + (r * 3 + kx) * padded;
      __m256 wv[V];
      for (int v = 0; v < V; ++v) wv[v] = _mm256_loadu_ps(wk + v * LANES);
      for (int p = 0; p < P; ++p) {
        const __m256 a = _mm256_broadcast_ss(row + 2 * p + kx);
        for (int v = 0; v < V; ++v) acc[p][v] = _mm256_fmadd_ps(a, wv[v], acc[p][v]);
      }
    }
  }
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < V; ++v) _mm256_storeu_ps(to + p * padded + v * LANES, acc[p][v]);
#else
  for (int p = 0; p < P; ++p)
    for (int64_t j = 0; j < V * LANES; ++j) {
      float sum = bias[j];
      for (int64_t r = 0; r < taps_per_row; ++r)
        for (int kx = 0; kx < 3; ++kx) sum += rows[r][2 * (column + p) + kx] * weight[(r * 3 + kx) * padded + j];
      to[p * padded + j] = sum;
    }
#endif
}

// The max of a and b, NaN if either is (as PyTorch's max pool).
#ifdef SHUFFLENAS_AVX2
inline __m256 nan_max(__m256 a, __m256 b) {
  const __m256 larger = _mm256_max_ps(a, b);  // b when either is NaN
  return _mm256_blendv_ps(larger, a, _mm256_cmp_ps(a, a, _CMP_UNORD_Q));
}
#endif

// x: (N, C_in, H, W), any strides; weight: (C_in * 9, padded) the folded conv weight tap by tap
// ((c, ky, kx) order), zero past `channels`; bias: (padded); out: the pooled map, channels_last
// (N, channels, PH, PW).
void stem_infer(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t channels, const Tensor& out) {
  check_map(x, "x");
  TORCH_CHECK(x.dim() == 4, "x must be an (N, C, H, W) image");
  const int64_t batch = x.size(0), in_channels = x.size(1), height = x.size(2), width = x.size(3);
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == in_channels * 9 && weight.is_contiguous() &&
                  weight.scalar_type() == at::kFloat && weight.size(1) % LANES == 0 && weight.size(1) >= channels,
              "weight must be a contiguous float32 (C_in * 9, padded) tensor");
  const int64_t padded = weight.size(1);
  TORCH_CHECK(bias.is_contiguous() && bias.scalar_type() == at::kFloat && bias.numel() == padded,
              "bias must hold padded floats");
  const int64_t conv_h = (height - 1) / 2 + 1, conv_w = (width - 1) / 2 + 1;
  const int64_t pool_h = (conv_h - 1) / 2 + 1, pool_w = (conv_w - 1) / 2 + 1;
  check_map(out, "out");
  TORCH_CHECK(out.dim() == 4 && out.is_contiguous(at::MemoryFormat::ChannelsLast) && out.size(0) == batch &&
                  out.size(1) == channels && out.size(2) == pool_h && out.size(3) == pool_w,
              "out must be the pooled channels_last map");
  const float* in = x.data_ptr<float>();
  const int64_t sn = x.stride(0), sc = x.stride(1), sy = x.stride(2), sx = x.stride(3);
  const float* w = weight.data_ptr<float>();
  const float* b = bias.data_ptr<float>();
  float* y = out.data_ptr<float>();
  const int64_t taps_per_row = in_channels * 3, padded_width = width + 2 + 2;  // + 2: tiles read one past
  at::parallel_for(0, batch * pool_h, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> input_rows(static_cast<size_t>(taps_per_row * padded_width), 0.f);
    std::vector<const float*> rows(static_cast<size_t>(taps_per_row));
    for (int64_t r = 0; r < taps_per_row; ++r) rows[r] = input_rows.data() + r * padded_width;
    // Conv rows, three at a time, keyed by (image, conv row): row 2py+1 serves two pooled rows.
    std::vector<float> conv(static_cast<size_t>(3 * conv_w * padded));
    int64_t held[3] = {-1, -1, -1};
    auto conv_row = [&](int64_t n, int64_t cy) -> const float* {
      const int64_t key = n * conv_h + cy, slot = key % 3;
      float* dst = conv.data() + slot * conv_w * padded;
      if (held[slot] == key) return dst;
      held[slot] = key;
      for (int64_t c = 0; c < in_channels; ++c)
        for (int64_t ky = 0; ky < 3; ++ky) {
          float* row = input_rows.data() + (c * 3 + ky) * padded_width;
          const int64_t iy = 2 * cy + ky - 1;
          if (iy < 0 || iy >= height) {
            std::fill(row, row + padded_width, 0.f);
            continue;
          }
          const float* src = in + n * sn + c * sc + iy * sy;
          for (int64_t ix = 0; ix < width; ++ix) row[ix + 1] = src[ix * sx];
        }
      // Up to 6 vectors of channels at a time (12 accumulators: 4 positions x 3 vectors, 3 x 4
      // or 2 x 5-6), so each input value is broadcast once for up to 48 channels.
      for (int64_t first = 0; first < channels; first += 6 * LANES) {
        const int64_t vectors = (std::min<int64_t>(6 * LANES, channels - first) + LANES - 1) / LANES;
        auto tiles = [&](auto v, auto positions) {
          constexpr int V = decltype(v)::value;
          in_tiles<decltype(positions)::value>(conv_w, [&](int64_t cx, auto p) {
            constexpr int P = decltype(p)::value;
            stem_tile<P, V>(rows.data(), taps_per_row, cx, w + first, padded, b + first, dst + cx * padded + first);
          });
        };
        using std::integral_constant;
        switch (vectors) {
          case 6: tiles(integral_constant<int, 6>{}, integral_constant<int, 2>{}); break;
          case 5: tiles(integral_constant<int, 5>{}, integral_constant<int, 2>{}); break;
          case 4: tiles(integral_constant<int, 4>{}, integral_constant<int, 3>{}); break;
          case 3: tiles(integral_constant<int, 3>{}, integral_constant<int, 4>{}); break;
          case 2: tiles(integral_constant<int, 2>{}, integral_constant<int, 6>{}); break;
          default: tiles(integral_constant<int, 1>{}, integral_constant<int, 8>{});
        }
      }
      return dst;
    };
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / pool_h, py = row % pool_h;
      const float* window[3];
      int count = 0;
      for (int64_t cy = 2 * py - 1; cy <= 2 * py + 1; ++cy)
        if (cy >= 0 && cy < conv_h) window[count++] = conv_row(n, cy);
      float* dst_row = y + (n * pool_h + py) * pool_w * channels;
      for (int64_t px = 0; px < pool_w; ++px) {
        const int64_t cx_low = std::max<int64_t>(0, 2 * px - 1), cx_high = std::min<int64_t>(conv_w - 1, 2 * px + 1);
        float* dst = dst_row + px * channels;
        for (int64_t first = 0; first < channels; first += LANES) {
          const int64_t valid = std::min<int64_t>(LANES, channels - first);
#ifdef SHUFFLENAS_AVX2
          __m256 best = _mm256_loadu_ps(window[0] + cx_low * padded + first);
          for (int i = 0; i < count; ++i)
            for (int64_t cx = cx_low; cx <= cx_high; ++cx)
              best = nan_max(best, _mm256_loadu_ps(window[i] + cx * padded + first));
          best = _mm256_max_ps(_mm256_setzero_ps(), best);  // ReLU after the pool: they commute
          if (valid == LANES) {
            _mm256_storeu_ps(dst + first, best);
          } else {
            store_first(dst + first, best, valid);
          }
#else
          for (int64_t c = first; c < first + valid; ++c) {
            float best = window[0][cx_low * padded + c];
            for (int i = 0; i < count; ++i)
              for (int64_t cx = cx_low; cx <= cx_high; ++cx) {
                const float value = window[i][cx * padded + c];
                if (value > best || value != value) best = value;  // once NaN, stays NaN
              }
            dst[c] = best != best ? best : std::max(best, 0.f);
          }
#endif
        }
      }
    }
  });
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(shufflenas_fused, m) {
  m.def("pointwise_infer(Tensor x, Tensor weight, Tensor bias, Tensor columns, int per_group, Tensor? residual, "
        "bool relu, Tensor(a!) out, int offset) -> ()");
  m.def("depthwise_infer(Tensor x, Tensor taps, Tensor bias, int stride, Tensor(a!) out, int offset) -> ()");
  m.def("stem_infer(Tensor x, Tensor weight, Tensor bias, int channels, Tensor(a!) out) -> ()");
}

TORCH_LIBRARY_IMPL(shufflenas_fused, CPU, m) {
  m.impl("pointwise_infer", pointwise_infer);
  m.impl("depthwise_infer", depthwise_infer);
  m.impl("stem_infer", stem_infer);
}
