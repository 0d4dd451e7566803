// Our CPU kernels for inference: q8_0 and q4_0 weights times quantized activations, an fp32 product for
// the few rows of decoding, a one-pass RMS norm, and a decoder layer's whole decode step in one call
// (decoder_layers_step, at the end: every layer's, in one call).
//
// Why our own kernels: decoding one token reads every weight once, so its speed is the rate at which the
// weights stream from memory. PyTorch's CPU int4 kernel unpacks at 5-8 GB/s on AVX2 and its int8 kernels
// reach about half the memory bandwidth on the small projections (BENCHMARKS.md, docs/cpu-speed.md).
//
// The number formats are llama.cpp's: each run of 32 inputs of an output row is a block with one fp16
// scale; q8_0 holds 32 int8 values, q4_0 32 nibbles with value = (nibble - 8) * scale, and in a row's
// 16 bytes of a block byte j holds input j (low nibble) and input j + 16 (high nibble). The activations
// are quantized per call in blocks of 32 with an fp32 scale (8-bit against q4_0, 7-bit against q8_0: see
// group_dots), so a block's dot product is integer arithmetic, scaled once.
//
// The layout is ours (docs/cpu-speed.md): output rows come in groups of 16, two halves of 8 rows, interleaved 4
// bytes at a time. For one half and one block, the weights are runs of 32 bytes; run c holds bytes 4c..4c+3 of
// each of the half's 8 rows, row after row (q8_0: 8 runs, q4_0: 4 runs); a group's block b holds half 0's runs,
// then half 1's, so that decoding reads a group as one stream. With the 4 matching activations broadcast to
// every 32-bit lane, maddubs + madd (or VNNI's vpdpbusd) leave each row's partial dot product in its own lane,
// so a block's 8 dot products come out as one vector: converted to float and scaled once for 8 rows, with no
// horizontal sums.
//
// Built on first use by internvl/model/cpu_kernels.py with -march=native; without AVX2 the same loops run
// as scalar C++.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <tuple>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>
#define INTERNVL_AVX2 1
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
#define INTERNVL_VNNI 1  // vpdpbusd on 256-bit vectors
#endif
#endif

namespace {

constexpr int64_t kBlock = 32;           // inputs per block
constexpr int64_t kRows = 8;             // output rows per vector of dot products: a half of a group
constexpr int64_t kGroupRows = 16;       // output rows per group of the weights' layout
constexpr int64_t kRowTile = 6;          // activation rows multiplied per pass over a group's weights
constexpr int64_t kOneRowInputs = 2048;  // fp32_linear, batch-1: longer weight rows are read 8 side by side

template <bool kFour>
constexpr int64_t kHalfBlockBytes = kFour ? kRows * kBlock / 2 : kRows * kBlock;  // 128 or 256: 8 rows' block
template <bool kFour>
constexpr int64_t kGroupBlockBytes = 2 * kHalfBlockBytes<kFour>;  // 256 or 512: a group's block, two halves
// batch-1 q4_0 / q8_0: bytes of the weight stream fetched ahead into L2 (measured per format, docs/cpu-speed.md)
template <bool kFour>
constexpr int64_t kStreamAhead = kFour ? 8192 : 2048;

#ifdef INTERNVL_AVX2
inline float horizontal_sum(__m256 v) {
  __m128 sum = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
  sum = _mm_add_ss(sum, _mm_movehdup_ps(sum));
  return _mm_cvtss_f32(sum);
}

inline float horizontal_max(__m256 v) {  // of ordered values (a NaN lane gives no defined answer)
  __m128 top = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  top = _mm_max_ps(top, _mm_movehl_ps(top, top));
  return _mm_cvtss_f32(_mm_max_ss(top, _mm_movehdup_ps(top)));
}
#endif

// x (rows, in) fp32 -> q (rows, in) int8 in -levels..levels, d (rows, in / 32) fp32 with x ~ q * d per block
// (symmetric), and offset (rows, in / 32) = shift * d * sum(q) per block: what the weights' unsigned storage
// (q4_0: nibble = value + 8; q8_0: byte = value + 128) adds to each block's dot, taken off afterwards.
void quantize_activations(const float* x, int64_t rows, int64_t in, float levels, float shift, int8_t* q, float* d,
                          float* offset) {
  const int64_t blocks = in / kBlock;
  at::parallel_for(0, rows * blocks, 256, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float* src = x + i * kBlock;
      float amax = 0.f;
#ifdef INTERNVL_AVX2
      // 8 lanes at a time, the same arithmetic as the scalar loops (a decode step quantizes the down
      // projection's 4,864 inputs 24 times; the scalar loops took about 8 microseconds each)
      const __m256 sign = _mm256_set1_ps(-0.f);
      __m256 highest = _mm256_setzero_ps();
      for (int64_t k = 0; k < kBlock; k += 8) highest = _mm256_max_ps(highest, _mm256_andnot_ps(sign, _mm256_loadu_ps(src + k)));
      amax = horizontal_max(highest);
#else
      for (int64_t k = 0; k < kBlock; ++k) amax = std::max(amax, std::fabs(src[k]));
#endif
      const float scale = amax / levels;
      const float inverse = scale > 0.f ? 1.f / scale : 0.f;
      int32_t sum = 0;
#ifdef INTERNVL_AVX2
      __m256i values[4];
      for (int k = 0; k < 4; ++k)  // rounded half to even, as nearbyint in the default rounding mode
        values[k] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(src + 8 * k), _mm256_set1_ps(inverse)),
                                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
      const __m256i total = _mm256_add_epi32(_mm256_add_epi32(values[0], values[1]), _mm256_add_epi32(values[2], values[3]));
      __m128i folded = _mm_add_epi32(_mm256_castsi256_si128(total), _mm256_extracti128_si256(total, 1));
      folded = _mm_add_epi32(folded, _mm_shuffle_epi32(folded, 0x4E));
      sum = _mm_cvtsi128_si32(_mm_add_epi32(folded, _mm_shuffle_epi32(folded, 0xB1)));
      // int32 -> int16 -> int8 (values are within +-127): packs work per 128-bit lane, the permute restores order
      const __m256i words = _mm256_packs_epi32(values[0], values[1]), words2 = _mm256_packs_epi32(values[2], values[3]);
      const __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(words, words2), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i * kBlock), bytes);
#else
      for (int64_t k = 0; k < kBlock; ++k) {
        const int8_t value = static_cast<int8_t>(std::nearbyint(src[k] * inverse));
        q[i * kBlock + k] = value;
        sum += value;
      }
#endif
      d[i] = scale;
      offset[i] = shift * scale * static_cast<float>(sum);
    }
  });
}

inline int32_t four_bytes(const int8_t* p) {
  int32_t value;
  std::memcpy(&value, p, 4);
  return value;
}

// kG halves (8 weight rows each) of a group against kT quantized activation rows: `w` and `wd` point at the
// group's first half to read (a group's block b, half h: weights at (2b + h) * kHalfBlockBytes, fp16 scales at
// (2b + h) * 8); writes 8 outputs per half and activation row, `out_stride` apart between activation rows.
// Both halves in one pass (batch-1 decoding) load each broadcast activation once for 16 rows, keep two
// independent sums in flight and read the group as one stream: from cache 1.37x (q4_0) and 1.57x (q8_0) the
// products per second of the 8-row groups before, from memory 1.04x (docs/cpu-speed.md). That stream is
// fetched into L2 kStreamAhead bytes ahead (q4_0 8 KB, q8_0 2 KB). Against 2 KB, 8 KB made a decode step's 24
// fused q4_0 layers 1.07x faster at fast minutes (52 GB/s read) and 0.97-1.00x at slow ones (33-35 GB/s); for
// q8_0 4 or 8 KB were 0.91-0.94x and 1 KB 0.98x. 2 KB against the hardware prefetcher alone: q4_0 1.06x, q8_0
// 1.02x (docs/cpu-speed.md). One half (prefill) reads every other run of bytes, so `next`, the
// same place in the next group, is fetched ahead at the pace these are read. With VNNI (vpdpbusd) each 4-byte
// product sum adds to its 32-bit lane in one instruction, where AVX2 takes maddubs + madd + add; both give
// the same integers. A block's sums run as two independent chains per half (q4_0: low and high nibbles; q8_0:
// even and odd runs), added after the block: one chain of 8 dependent vpdpbusd set the pace of a block held in
// cache (one thread, the fused 1B q4_0 layer from cache 1.12x faster; q8_0 unchanged; docs/cpu-speed.md).
template <bool kFour, int kT, int kG>
void group_dots(const uint8_t* w, const uint16_t* wd, const int8_t* xq, const float* xd, const float* xo,
                int64_t blocks, int64_t in, float* out, int64_t out_stride, const uint8_t* next, const float* bias,
                int64_t valid) {
  constexpr int64_t kBytes = kHalfBlockBytes<kFour>;
  float total[kT][kG * kRows] = {};
#ifdef INTERNVL_AVX2
  const __m256i low_mask = _mm256_set1_epi8(0x0F);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[kT][kG];
  for (int t = 0; t < kT; ++t)
    for (int g = 0; g < kG; ++g) acc[t][g] = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    if constexpr (kG == 1) {  // one half: every other run of bytes, which the hardware prefetcher does not follow
      for (int64_t line = 0; line < kBytes; line += 64)
        _mm_prefetch(reinterpret_cast<const char*>(next + 2 * b * kBytes + line), _MM_HINT_T0);
    } else {  // the whole group, one stream: fetched into L2 kStreamAhead bytes ahead (past the group's end too)
      for (int64_t line = 0; line < 2 * kBytes; line += 64)
        _mm_prefetch(reinterpret_cast<const char*>(w + 2 * b * kBytes + kStreamAhead<kFour> + line), _MM_HINT_T1);
    }
    // q4_0 without VNNI: int16 pairs (8 of at most 2 * 15 * 127 each: 30,480), made int32 after the block;
    // otherwise int32 lanes
    __m256i sums[kT][kG], sums2[kT][kG];  // two chains per half
    for (int t = 0; t < kT; ++t)
      for (int g = 0; g < kG; ++g) sums[t][g] = sums2[t][g] = _mm256_setzero_si256();
    for (int c = 0; c < (kFour ? 4 : 8); ++c) {
      __m256i low[kG], high[kG];  // q4_0: nibbles 0..15, maddubs' unsigned operand; q8_0: low holds the bytes
      for (int g = 0; g < kG; ++g) {
        const __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + (2 * b + g) * kBytes + c * 32));
        low[g] = kFour ? _mm256_and_si256(packed, low_mask) : packed;
#ifdef INTERNVL_VNNI
        // the high nibbles left in place (16 x nibble, at most 240): their int32 sums are 16x, shifted back after
        // the block, one instruction instead of a shift per run
        if constexpr (kFour) high[g] = _mm256_andnot_si256(low_mask, packed);
#else
        if constexpr (kFour) high[g] = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low_mask);
#endif
      }
      for (int t = 0; t < kT; ++t) {
        const int8_t* xb = xq + t * in + b * kBlock;
        const __m256i x = _mm256_set1_epi32(four_bytes(xb + 4 * c));
        const __m256i x_high = kFour ? _mm256_set1_epi32(four_bytes(xb + 16 + 4 * c)) : x;  // q4_0's high nibbles
        for (int g = 0; g < kG; ++g) {
          if constexpr (kFour) {
#ifdef INTERNVL_VNNI
            sums[t][g] = _mm256_dpbusd_epi32(sums[t][g], low[g], x);
            sums2[t][g] = _mm256_dpbusd_epi32(sums2[t][g], high[g], x_high);
#else
            sums[t][g] = _mm256_add_epi16(sums[t][g], _mm256_maddubs_epi16(low[g], x));
            sums2[t][g] = _mm256_add_epi16(sums2[t][g], _mm256_maddubs_epi16(high[g], x_high));
#endif
          } else {
            // bytes = value + 128 (1..255), the unsigned operand, against 7-bit activations: a maddubs pair is
            // at most 2 * 255 * 63 = 32,130, so int16 does not saturate (8-bit activations would)
            __m256i& chain = c % 2 ? sums2[t][g] : sums[t][g];
#ifdef INTERNVL_VNNI
            chain = _mm256_dpbusd_epi32(chain, low[g], x);
#else
            chain = _mm256_add_epi32(chain, _mm256_madd_epi16(_mm256_maddubs_epi16(low[g], x), ones));
#endif
          }
        }
      }
    }
    for (int t = 0; t < kT; ++t)
      for (int g = 0; g < kG; ++g) {
#ifndef INTERNVL_VNNI
        if constexpr (kFour) {  // int16 pairs: the two chains' sum fits (at most 30,480, as one chain's did)
          sums[t][g] = _mm256_madd_epi16(_mm256_add_epi16(sums[t][g], sums2[t][g]), ones);
          continue;
        }
#endif
        sums[t][g] = _mm256_add_epi32(sums[t][g], kFour ? _mm256_srai_epi32(sums2[t][g], 4) : sums2[t][g]);
      }
    for (int g = 0; g < kG; ++g) {
      const __m256 weight_scales =
          _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wd + (2 * b + g) * kRows)));
      for (int t = 0; t < kT; ++t) {
        const __m256 dots = _mm256_cvtepi32_ps(sums[t][g]);
        // d * dot - offset: the offset takes the unsigned storage's shift off every weight
        const __m256 scaled = _mm256_fmsub_ps(_mm256_set1_ps(xd[t * blocks + b]), dots, _mm256_set1_ps(xo[t * blocks + b]));
        acc[t][g] = _mm256_fmadd_ps(weight_scales, scaled, acc[t][g]);
      }
    }
  }
  for (int t = 0; t < kT; ++t)
    for (int g = 0; g < kG; ++g) _mm256_storeu_ps(total[t] + g * kRows, acc[t][g]);
#else
  (void)next;
  for (int g = 0; g < kG; ++g)
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t* wb = w + (2 * b + g) * kBytes;
      for (int t = 0; t < kT; ++t) {
        const int8_t* xb = xq + t * in + b * kBlock;
        for (int row = 0; row < kRows; ++row) {
          int32_t dot = 0;
          for (int c = 0; c < (kFour ? 4 : 8); ++c)
            for (int k = 0; k < 4; ++k) {
              const uint8_t byte = wb[c * 32 + row * 4 + k];
              if constexpr (kFour)
                dot += (byte & 0x0F) * xb[4 * c + k] + (byte >> 4) * xb[16 + 4 * c + k];
              else
                dot += byte * xb[4 * c + k];
            }
          const float scale = static_cast<float>(c10::Half(wd[(2 * b + g) * kRows + row], c10::Half::from_bits()));
          total[t][g * kRows + row] += scale * (xd[t * blocks + b] * static_cast<float>(dot) - xo[t * blocks + b]);
        }
      }
    }
#endif
  for (int t = 0; t < kT; ++t)  // the rows that exist (the last group may end in padding), plus the bias
    for (int64_t row = 0; row < valid; ++row) out[t * out_stride + row] = total[t][row] + (bias ? bias[row] : 0.f);
}

// x (..., in) fp32 times grouped weights (groups, blocks, 256 or 512) with scales (groups, blocks, 16), plus an
// optional bias -> (..., out_features) fp32, out_features <= 16 * groups (the rest of the last group is padding).
template <bool kFour>
at::Tensor grouped_linear(const at::Tensor& x, const at::Tensor& qs, const at::Tensor& scales,
                          const std::optional<at::Tensor>& bias, int64_t out_features) {
  TORCH_CHECK(x.dim() >= 1 && x.scalar_type() == at::kFloat, "x must be a float32 tensor");
  TORCH_CHECK(scales.dim() == 3 && scales.size(2) == kGroupRows && scales.scalar_type() == at::kHalf,
              "scales must be a (groups, blocks, 16) float16 tensor");
  const int64_t in = x.size(-1), rows = x.numel() / std::max<int64_t>(in, 1);
  const int64_t groups = scales.size(0), blocks = scales.size(1), group_bytes = blocks * kGroupBlockBytes<kFour>;
  TORCH_CHECK(in == blocks * kBlock, "x has ", in, " inputs, the weights ", blocks * kBlock);
  TORCH_CHECK(qs.scalar_type() == at::kByte && qs.dim() == 3 && qs.size(0) == groups && qs.size(1) == blocks &&
                  qs.size(2) == kGroupBlockBytes<kFour>,
              "qs (", qs.sizes(), ", ", qs.scalar_type(), ") does not match the scales ", scales.sizes());
  TORCH_CHECK(out_features > (groups - 1) * kGroupRows && out_features <= groups * kGroupRows, "out_features ",
              out_features, " does not fit ", groups, " groups of 16 rows");
  TORCH_CHECK(!bias || (bias->scalar_type() == at::kFloat && bias->numel() == out_features),
              "bias must be float32 with out_features values");
  const at::Tensor xc = x.contiguous();
  const at::Tensor qc = qs.contiguous();
  const at::Tensor sc = scales.contiguous();
  const at::Tensor bc = bias ? bias->contiguous() : at::Tensor();
  // the quantized activations live in this thread's scratch (no allocation per call when decoding)
  thread_local std::vector<int8_t> xq;
  thread_local std::vector<float> xd, xo;
  xq.resize(rows * in);
  xd.resize(rows * blocks);
  xo.resize(rows * blocks);
  // q4_0: 8-bit activations (nibble pairs are at most 2 * 15 * 127); q8_0: 7-bit (see group_dots)
  quantize_activations(xc.data_ptr<float>(), rows, in, kFour ? 127.f : 63.f, kFour ? 8.f : 128.f, xq.data(),
                       xd.data(), xo.data());
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = out_features;
  at::Tensor result = at::empty(shape, x.options());
  const uint8_t* w = qc.data_ptr<uint8_t>();
  const auto* wd = reinterpret_cast<const uint16_t*>(sc.data_ptr<at::Half>());
  const int8_t* xqp = xq.data();
  const float* xdp = xd.data();
  const float* xop = xo.data();
  const float* bp = bias ? bc.data_ptr<float>() : nullptr;
  float* res = result.data_ptr<float>();
  at::parallel_for(0, groups, 1, [&](int64_t group_begin, int64_t group_end) {
    for (int64_t g = group_begin; g < group_end; ++g) {
      const uint8_t* wg = w + g * group_bytes;
      const uint8_t* next = g + 1 < group_end ? wg + group_bytes : wg;
      const uint16_t* wdg = wd + g * blocks * kGroupRows;
      const int64_t first = g * kGroupRows;
      if (rows == 1) {  // decoding: both halves in one pass
        group_dots<kFour, 1, 2>(wg, wdg, xqp, xdp, xop, blocks, in, res + first, out_features, next,
                                bp ? bp + first : nullptr, std::min(kGroupRows, out_features - first));
        continue;
      }
      // prefill: half by half, a half's weights staying in cache while every activation row passes, kRowTile
      // at a time
      for (int64_t half = 0; half < 2 && first + half * kRows < out_features; ++half) {
        const int64_t offset = half * kHalfBlockBytes<kFour>, row = first + half * kRows;
        for (int64_t r0 = 0; r0 < rows; r0 += kRowTile) {
          const auto args = std::make_tuple(wg + offset, wdg + half * kRows, xqp + r0 * in, xdp + r0 * blocks,
                                            xop + r0 * blocks, blocks, in, res + r0 * out_features + row, out_features,
                                            next + offset, bp ? bp + row : nullptr, std::min(kRows, out_features - row));
          switch (std::min(kRowTile, rows - r0)) {
            case 1: std::apply(group_dots<kFour, 1, 1>, args); break;
            case 2: std::apply(group_dots<kFour, 2, 1>, args); break;
            case 3: std::apply(group_dots<kFour, 3, 1>, args); break;
            case 4: std::apply(group_dots<kFour, 4, 1>, args); break;
            case 5: std::apply(group_dots<kFour, 5, 1>, args); break;
            default: std::apply(group_dots<kFour, kRowTile, 1>, args);
          }
        }
      }
    }
  });
  return result;
}

at::Tensor q8_0x8_linear(const at::Tensor& x, const at::Tensor& qs, const at::Tensor& scales,
                         const std::optional<at::Tensor>& bias, int64_t out_features) {
  return grouped_linear<false>(x, qs, scales, bias, out_features);
}

at::Tensor q4_0x8_linear(const at::Tensor& x, const at::Tensor& qs, const at::Tensor& scales,
                         const std::optional<at::Tensor>& bias, int64_t out_features) {
  return grouped_linear<true>(x, qs, scales, bias, out_features);
}

// a . b over `size` floats: 4 independent sums, so that one row streams at the memory bandwidth (one sum is a
// chain of dependent FMAs, about half that rate here)
inline float dot(const float* a, const float* b, int64_t size) {
  float total = 0.f;
  int64_t k = 0;
#ifdef INTERNVL_AVX2
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  for (; k + 32 <= size; k += 32)
    for (int c = 0; c < 4; ++c)
      acc[c] = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 8 * c), _mm256_loadu_ps(b + k + 8 * c), acc[c]);
  for (; k + 8 <= size; k += 8) acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), acc[0]);
  total = horizontal_sum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
#endif
  for (; k < size; ++k) total += a[k] * b[k];
  return total;
}

#ifdef INTERNVL_AVX2
// The dot products of a vector with 8 rows (`stride` floats apart: attention's keys, fp32_linear's weight
// rows), as one vector: 8 independent accumulators, then one transposing reduction (no horizontal sum per
// product). dim: a multiple of 8.
inline __m256 dots8(const float* vector, const float* rows, int64_t stride, int64_t dim) {
  __m256 acc[8];
  for (int r = 0; r < 8; ++r) acc[r] = _mm256_setzero_ps();
  for (int64_t c = 0; c < dim; c += 8) {
    const __m256 v = _mm256_loadu_ps(vector + c);
    for (int r = 0; r < 8; ++r) acc[r] = _mm256_fmadd_ps(v, _mm256_loadu_ps(rows + r * stride + c), acc[r]);
  }
  // hadd(a, b) = [a0+a1, a2+a3, b0+b1, b2+b3 | a4+a5, a6+a7, b4+b5, b6+b7]: two rounds leave each row's
  // quarter sums, lanes 0-3 (rows 0-3) and 4-7 (the same rows' other half); the halves then add
  const __m256 low_rows = _mm256_hadd_ps(_mm256_hadd_ps(acc[0], acc[1]), _mm256_hadd_ps(acc[2], acc[3]));
  const __m256 high_rows = _mm256_hadd_ps(_mm256_hadd_ps(acc[4], acc[5]), _mm256_hadd_ps(acc[6], acc[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(low_rows, high_rows, 0x20), _mm256_permute2f128_ps(low_rows, high_rows, 0x31));
}
#endif

// fp32 x (..., in) times fp32 weights (out, in) row-major, plus an optional bias -> (..., out), for the few
// rows of decoding, so that the weights stream at the memory bandwidth. One activation row (batch-1 decoding):
// a single read stream per thread, which the hardware prefetcher follows, one weight row after another while
// rows are short (8 short rows read side by side are 8 streams too short to be followed: about 0.7 of the
// bandwidth on a fast EPYC); rows longer than kOneRowInputs are read 8 side by side, each activation value
// loaded once for 8 rows (one row at a time, an activation row that fills the L1 cache with the weights
// streaming past is re-read from L2 for every row: about 0.6 of the bandwidth for the 1B shape's down
// projection). See docs/cpu-speed.md. More activation rows: 8 weight rows at a time against each activation
// row (8 independent accumulators, the next 8 rows fetched ahead); the 8 rows stay in cache while the
// activation rows pass. Prefills (many rows) belong to a matrix-matrix library (MKL, oneDNN).
at::Tensor fp32_linear(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat, "fp32_linear takes float32");
  TORCH_CHECK(weight.dim() == 2 && x.dim() >= 1 && x.size(-1) == weight.size(1), "x has ", x.size(-1),
              " inputs, the weights ", weight.size(1));
  const int64_t in = weight.size(1), out = weight.size(0), rows = x.numel() / std::max<int64_t>(in, 1);
  TORCH_CHECK(!bias || (bias->scalar_type() == at::kFloat && bias->numel() == out), "bias must be float32 with ",
              out, " values");
  const at::Tensor xc = x.contiguous();
  const at::Tensor wc = weight.contiguous();
  const at::Tensor bc = bias ? bias->contiguous() : at::Tensor();
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = out;
  at::Tensor result = at::empty(shape, x.options());
  const float* xp = xc.data_ptr<float>();
  const float* w = wc.data_ptr<float>();
  const float* bp = bias ? bc.data_ptr<float>() : nullptr;
  float* res = result.data_ptr<float>();
  if (rows == 1) {
    at::parallel_for(0, out, 64, [&](int64_t begin, int64_t end) {
      int64_t o = begin;
#ifdef INTERNVL_AVX2
      const int64_t body = in / 8 * 8;  // dots8 takes a multiple of 8 inputs; the rest is added after
      if (in > kOneRowInputs)
        for (; o + 8 <= end; o += 8) {
          float sums[8];
          _mm256_storeu_ps(sums, dots8(xp, w + o * in, in, body));
          for (int64_t i = 0; i < 8; ++i)
            res[o + i] = sums[i] + dot(w + (o + i) * in + body, xp + body, in - body) + (bp ? bp[o + i] : 0.f);
        }
#endif
      for (; o < end; ++o) res[o] = dot(w + o * in, xp, in) + (bp ? bp[o] : 0.f);
    });
    return result;
  }
  const int64_t groups = (out + kRows - 1) / kRows;
  at::parallel_for(0, groups, 1, [&](int64_t group_begin, int64_t group_end) {
    for (int64_t g = group_begin; g < group_end; ++g) {
      const int64_t first = g * kRows, count = std::min(kRows, out - first);
      const float* wg = w + first * in;
      const float* next = g + 1 < group_end ? wg + kRows * in : wg;
      for (int64_t r = 0; r < rows; ++r) {
        const float* xr = xp + r * in;
        float total[kRows] = {};
        int64_t k = 0;
#ifdef INTERNVL_AVX2
        if (count == kRows) {
          __m256 acc[kRows];
          for (int i = 0; i < kRows; ++i) acc[i] = _mm256_setzero_ps();
          for (; k + 8 <= in; k += 8) {
            if (r == 0 && (k & 15) == 0)  // the next group's rows, a 64-byte line of each per 16 inputs
              for (int i = 0; i < kRows; ++i) _mm_prefetch(reinterpret_cast<const char*>(next + i * in + k), _MM_HINT_T0);
            const __m256 xv = _mm256_loadu_ps(xr + k);
            for (int i = 0; i < kRows; ++i) acc[i] = _mm256_fmadd_ps(_mm256_loadu_ps(wg + i * in + k), xv, acc[i]);
          }
          for (int i = 0; i < kRows; ++i) total[i] = horizontal_sum(acc[i]);
        }
#endif
        for (int64_t i = 0; i < count; ++i) {
          float rest = total[i];
          for (int64_t kk = k; kk < in; ++kk) rest += wg[i * in + kk] * xr[kk];
          res[r * out + first + i] = rest + (bp ? bp[first + i] : 0.f);
        }
      }
    }
  });
  return result;
}

// The index of each row's largest value, as torch.argmax gives it (the first of equal ones; a NaN counts as
// the largest, the first NaN wins): x (rows, n) float32 -> (rows,) int64. The greedy pick of every decode
// step: torch's CPU argmax took 129 microseconds over the 1B shape's 151,936 logits, a max and a search
// for it about 10 (docs/cpu-speed.md).
at::Tensor argmax_rows(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.size(1) > 0,
              "argmax_rows takes a float32 (rows, n) tensor with n > 0, got ", x.sizes(), " ", x.scalar_type());
  const at::Tensor xc = x.contiguous();
  const int64_t rows = xc.size(0), n = xc.size(1);
  at::Tensor result = at::empty({rows}, x.options().dtype(at::kLong));
  const float* data = xc.data_ptr<float>();
  int64_t* picks = result.data_ptr<int64_t>();
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* row = data + r * n;
      float best = row[0];
      bool nan = false;
      int64_t k = 0;
#ifdef INTERNVL_AVX2
      __m256 highest = _mm256_set1_ps(row[0]);
      __m256 unordered = _mm256_setzero_ps();
      for (; k + 8 <= n; k += 8) {
        const __m256 v = _mm256_loadu_ps(row + k);
        highest = _mm256_max_ps(highest, v);
        unordered = _mm256_or_ps(unordered, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
      }
      nan = _mm256_movemask_ps(unordered) != 0;
      if (!nan) best = horizontal_max(highest);  // highest started from row[0]
#endif
      for (; k < n; ++k) {
        nan = nan || std::isnan(row[k]);
        best = std::max(best, row[k]);
      }
      int64_t pick = 0;
      if (nan) {
        while (!std::isnan(row[pick])) ++pick;
      } else {
#ifdef INTERNVL_AVX2
        const __m256 target = _mm256_set1_ps(best);
        int found = 0;  // the lanes of the first 8 that hold `best`
        for (; pick + 8 <= n; pick += 8)
          if ((found = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(row + pick), target, _CMP_EQ_OQ)))) break;
        if (found) pick += __builtin_ctz(found);
#endif
        while (row[pick] != best) ++pick;
      }
      picks[r] = pick;
    }
  });
  return result;
}

// One row of `size` values RMS-normalized, weight applied: out = w * row / rms(row) (out may be row).
inline void normalize_row(const float* row, const float* w, int64_t size, float eps, float* out) {
  float squares = 0.f;
#pragma omp simd reduction(+ : squares)
  for (int64_t k = 0; k < size; ++k) squares += row[k] * row[k];
  const float inverse = 1.f / std::sqrt(squares / static_cast<float>(size) + eps);
#pragma omp simd
  for (int64_t k = 0; k < size; ++k) out[k] = w[k] * (row[k] * inverse);
}

// RMS normalisation of fp32 rows, weight applied: one pass over each row, where PyTorch's CPU rms_norm runs
// as several small operations (a decode step makes 49 of these calls on the 1B shape).
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat, "rms_norm takes float32");
  const int64_t size = weight.numel();
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == size, "x's last dimension must be the weight's size ", size);
  const at::Tensor xc = x.contiguous();
  const at::Tensor wc = weight.contiguous();
  at::Tensor out = at::empty_like(xc);
  const float* src = xc.data_ptr<float>();
  const float* w = wc.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const int64_t rows = size ? xc.numel() / size : 0;
  at::parallel_for(0, rows, std::max<int64_t>(1, 65536 / std::max<int64_t>(size, 1)), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) normalize_row(src + r * size, w, size, static_cast<float>(eps), dst + r * size);
  });
  return out;
}

#ifdef INTERNVL_AVX2
// e^x for 8 floats, x clamped to [-87, 88]: 2^n * e^r with n = round(x / ln 2) and |r| <= ln(2) / 2, e^r by
// its Taylor polynomial to r^6 (relative error below 2e-7).
inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.f)), _mm256_set1_ps(88.f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145752f), x);  // ln 2 in two parts, for an exact r
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.42860677e-6f), r);
  __m256 p = _mm256_set1_ps(1.f / 720);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  const __m256i two_n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(two_n));
}
#endif

// out[k] = e^(x[k] - shift) for k < count; returns their sum.
float shifted_exps(const float* x, float shift, int64_t count, float* out) {
  float sum = 0.f;
  int64_t k = 0;
#ifdef INTERNVL_AVX2
  __m256 sums = _mm256_setzero_ps();
  for (; k + 8 <= count; k += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + k), _mm256_set1_ps(shift)));
    _mm256_storeu_ps(out + k, e);
    sums = _mm256_add_ps(sums, e);
  }
  sum = horizontal_sum(sums);
#endif
  for (; k < count; ++k) sum += out[k] = std::exp(x[k] - shift);
  return sum;
}

// One query head's attention over `total` cached positions: softmax(scale * q.k) weighted values into `out`
// (dim floats); `seen` (or null: all) hides positions; `scores` is scratch of `total` floats.
void attend(const float* query, const float* key_rows, int64_t key_stride, const float* value_rows,
            int64_t value_stride, const bool* seen, int64_t total, int64_t dim, float scale, float* scores,
            float* out) {
  int64_t t = 0;
#ifdef INTERNVL_AVX2
  if (dim % 8 == 0)
    for (; t + 8 <= total; t += 8)
      _mm256_storeu_ps(scores + t,
                       _mm256_mul_ps(_mm256_set1_ps(scale), dots8(query, key_rows + t * key_stride, key_stride, dim)));
#endif
  for (; t < total; ++t) scores[t] = scale * dot(query, key_rows + t * key_stride, dim);
  if (seen)
    for (t = 0; t < total; ++t)
      if (!seen[t]) scores[t] = -INFINITY;
  std::fill(out, out + dim, 0.f);
  const float highest = *std::max_element(scores, scores + total);
  if (highest == -INFINITY) return;  // a query that sees nothing (never the case in decoding): zeros
  const float inverse = 1.f / shifted_exps(scores, highest, total, scores);
  for (t = 0; t < total; ++t) scores[t] = seen && !seen[t] ? 0.f : scores[t] * inverse;  // hidden: exactly 0
  t = 0;
  for (; t + 4 <= total; t += 4) {  // four positions per pass over out: four independent products per value
    const float* v = value_rows + t * value_stride;
    const float w0 = scores[t], w1 = scores[t + 1], w2 = scores[t + 2], w3 = scores[t + 3];
#pragma omp simd
    for (int64_t k = 0; k < dim; ++k)
      out[k] += w0 * v[k] + w1 * v[value_stride + k] + w2 * v[2 * value_stride + k] + w3 * v[3 * value_stride + k];
  }
  for (; t < total; ++t) {
    const float* v = value_rows + t * value_stride;
#pragma omp simd
    for (int64_t k = 0; k < dim; ++k) out[k] += scores[t] * v[k];
  }
}

// One projection of a fused decoder layer, as layer_step receives it: fp32 (weight (out, in), an
// empty tensor, bias) or q8_0 / q4_0 (values (groups, blocks, 512 or 256), scales (groups, blocks, 16), bias);
// an empty bias is none.
at::Tensor project(const at::Tensor& x, const at::Tensor& a, const at::Tensor& b, const at::Tensor& bias,
                   int64_t out_features) {
  const std::optional<at::Tensor> maybe_bias = bias.numel() ? std::optional<at::Tensor>(bias) : std::nullopt;
  if (a.scalar_type() == at::kFloat) return fp32_linear(x, a, maybe_bias);
  TORCH_CHECK(a.dim() == 3, "a quantized projection's values must be (groups, blocks, bytes)");
  if (a.size(2) == kGroupBlockBytes<false>) return grouped_linear<false>(x, a, b, maybe_bias, out_features);
  return grouped_linear<true>(x, a, b, maybe_bias, out_features);
}

// One decode step of a decoder layer (RMSNorm -> attention with RoPE over the cache -> RMSNorm -> SwiGLU MLP,
// each with its residual) for one new token per row, in one call: a step of the 1B shape made about 30
// PyTorch operations per layer, each microseconds of dispatch on a few hundred numbers (docs/cpu-speed.md).
// The same arithmetic as internvl/model/llm.py's DecoderLayer; the projections run on the kernels above.
//
// x (batch, 1, hidden); weights: attn_norm, mlp_norm, q_norm, k_norm (the last two empty unless Qwen3), then
// qkv, o, gate_up and down as 3 tensors each (see project); out_features: those 4 projections' widths;
// cos, sin (batch, 1, 1, head_dim): llm.py's rope_cos_sin (sin signed); keys, values (batch, kv_heads,
// max_length, head_dim): this layer's cache; write_at: the cache index of each row's new token (one value:
// the same for every row); mask (batch, 1, 1, max(write_at) + 1) bool, or None where every row sees all.
at::Tensor layer_step(const at::Tensor& x, at::TensorList weights, at::IntArrayRef out_features, const at::Tensor& cos,
                      const at::Tensor& sin, const at::Tensor& keys, const at::Tensor& values, at::IntArrayRef write_at,
                      const std::optional<at::Tensor>& mask, int64_t heads, double eps) {
  TORCH_CHECK(x.dim() == 3 && x.size(1) == 1 && x.scalar_type() == at::kFloat,
              "decoder_layers_step takes float32 x of shape (batch, 1, hidden), got ", x.sizes());
  const int64_t batch = x.size(0), hidden = x.size(2);
  TORCH_CHECK(keys.dim() == 4 && keys.sizes() == values.sizes() && keys.size(0) == batch &&
                  keys.scalar_type() == at::kFloat && values.scalar_type() == at::kFloat && keys.stride(3) == 1 &&
                  values.stride(3) == 1,
              "keys and values must be float32 (batch, kv_heads, max_length, head_dim), got ", keys.sizes());
  const int64_t kv_heads = keys.size(1), max_length = keys.size(2), dim = keys.size(3);
  TORCH_CHECK(write_at.size() == 1 || static_cast<int64_t>(write_at.size()) == batch, "write_at holds ",
              write_at.size(), " indices for ", batch, " rows");
  const auto row_end = [&](int64_t b) { return write_at[write_at.size() == 1 ? 0 : b]; };
  const int64_t total = *std::max_element(write_at.begin(), write_at.end()) + 1;
  TORCH_CHECK(*std::min_element(write_at.begin(), write_at.end()) >= 0 && total <= max_length,
              "KV cache full: ", total, " positions needed, ", max_length, " allocated");
  TORCH_CHECK(mask || *std::min_element(write_at.begin(), write_at.end()) == total - 1,
              "rows that write at different cache indices need a mask");
  TORCH_CHECK(heads % kv_heads == 0 && out_features[0] == (heads + 2 * kv_heads) * dim,
              "qkv width ", out_features[0], " does not fit ", heads, " heads and ", kv_heads, " kv heads of ", dim);
  TORCH_CHECK(cos.numel() == batch * dim && sin.numel() == batch * dim, "cos and sin must hold batch x head_dim");
  const float epsilon = static_cast<float>(eps);
  const at::Tensor xc = x.contiguous();
  const at::Tensor qkv = project(rms_norm(xc, weights[0], eps), weights[4], weights[5], weights[6], out_features[0]);
  const at::Tensor cc = cos.reshape({batch, dim}).contiguous(), sc = sin.reshape({batch, dim}).contiguous();
  at::Tensor visible;
  if (mask) {
    TORCH_CHECK(mask->numel() == batch * total, "mask must hold batch x (max(write_at) + 1) values");
    visible = mask->reshape({batch, total}).to(at::kBool).contiguous();
  }

  // per head: Qwen3's norm, then RoPE (x * cos + roll(x, half) * signed sin) on q and k; k and v to the cache
  at::Tensor queries = at::empty({batch, heads, dim}, x.options());
  float* q = queries.data_ptr<float>();
  float* key_cache = keys.data_ptr<float>();
  float* value_cache = values.data_ptr<float>();
  const int64_t half = dim / 2;
  std::vector<float> head(dim);
  for (int64_t b = 0; b < batch; ++b) {
    const float* row = qkv.data_ptr<float>() + b * out_features[0];
    const float* c = cc.data_ptr<float>() + b * dim;
    const float* s = sc.data_ptr<float>() + b * dim;
    for (int64_t h = 0; h < heads + kv_heads; ++h) {
      std::memcpy(head.data(), row + h * dim, dim * sizeof(float));
      const at::Tensor& head_weight = weights[h < heads ? 2 : 3];  // Qwen3's per-head norm, where given
      if (head_weight.numel()) normalize_row(head.data(), head_weight.data_ptr<float>(), dim, epsilon, head.data());
      float* target = h < heads ? q + (b * heads + h) * dim
                                : key_cache + b * keys.stride(0) + (h - heads) * keys.stride(1) + row_end(b) * keys.stride(2);
      // in two halves, so that the loops vectorize (one loop with the index taken modulo dim did not)
#pragma omp simd
      for (int64_t k = 0; k < half; ++k) target[k] = head[k] * c[k] + head[k + half] * s[k];
#pragma omp simd
      for (int64_t k = half; k < dim; ++k) target[k] = head[k] * c[k] + head[k - half] * s[k];
    }
    for (int64_t h = 0; h < kv_heads; ++h)
      std::memcpy(value_cache + b * values.stride(0) + h * values.stride(1) + row_end(b) * values.stride(2),
                  row + (heads + kv_heads + h) * dim, dim * sizeof(float));
  }

  // attention of each (row, head) over the cache's first max(write_at) + 1 positions
  at::Tensor attended = at::empty({batch, 1, heads * dim}, x.options());
  float* att = attended.data_ptr<float>();
  const float scale = 1.f / std::sqrt(static_cast<float>(dim));
  const bool* seen = mask ? visible.data_ptr<bool>() : nullptr;
  // one thread while the whole attention is under 65,536 query-key products (on the 1B shape: under 73
  // cached positions): waking the other thread cost more than that work (docs/cpu-speed.md)
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(total * dim, 1));
  at::parallel_for(0, batch * heads, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(total);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / heads, g = i % heads / (heads / kv_heads);
      attend(q + i * dim, key_cache + b * keys.stride(0) + g * keys.stride(1), keys.stride(2),
             value_cache + b * values.stride(0) + g * values.stride(1), values.stride(2),
             seen ? seen + b * total : nullptr, total, dim, scale, scores.data(), att + i * dim);
    }
  });

  // residual, MLP, residual
  at::Tensor mid = project(attended, weights[7], weights[8], weights[9], out_features[1]);
  float* m = mid.data_ptr<float>();
  const float* xp = xc.data_ptr<float>();
  for (int64_t k = 0; k < batch * hidden; ++k) m[k] += xp[k];
  const at::Tensor gate_up = project(rms_norm(mid, weights[1], eps), weights[10], weights[11], weights[12], out_features[2]);
  const int64_t inner = out_features[2] / 2;
  at::Tensor activated = at::empty({batch, 1, inner}, x.options());
  float* act = activated.data_ptr<float>();
  for (int64_t b = 0; b < batch; ++b) {
    const float* gate = gate_up.data_ptr<float>() + b * out_features[2];
    const float* up = gate + inner;
    float* a = act + b * inner;
    int64_t k = 0;  // silu(gate) * up = gate / (1 + e^-gate) * up
#ifdef INTERNVL_AVX2
    for (; k + 8 <= inner; k += 8) {  // one pass, 8 at a time
      const __m256 g = _mm256_loadu_ps(gate + k);
      const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
      _mm256_storeu_ps(a + k, _mm256_mul_ps(_mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.f), e)), _mm256_loadu_ps(up + k)));
    }
#endif
    for (; k < inner; ++k) a[k] = gate[k] / (1.f + std::exp(-gate[k])) * up[k];
  }
  at::Tensor out = project(activated, weights[13], weights[14], weights[15], out_features[3]);
  float* o = out.data_ptr<float>();
  for (int64_t k = 0; k < batch * hidden; ++k) o[k] += m[k];
  return out;
}

// The decode step of consecutive decoder layers, one after another, in one call: from Python, each layer's call
// (the module, its checks, the operator's dispatch) cost about 20 microseconds; one call for the 1B shape's 24
// layers made an int4 step 1.05x faster (0.50 ms) and an int8 step 1.03x (docs/cpu-speed.md).
// weights: each layer's 16 (see layer_step), out_features its 4 widths, layer after layer; keys, values
// (layers, batch, kv_heads, max_length, head_dim): these layers' caches; the other arguments are the same for
// every layer.
at::Tensor decoder_layers_step(const at::Tensor& x, at::TensorList weights, at::IntArrayRef out_features,
                               const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& keys,
                               const at::Tensor& values, at::IntArrayRef write_at, const std::optional<at::Tensor>& mask,
                               int64_t heads, double eps) {
  TORCH_CHECK(keys.dim() == 5 && values.dim() == 5, "keys and values must be (layers, batch, kv_heads, max_length, "
              "head_dim), got ", keys.sizes(), " and ", values.sizes());
  const int64_t layers = keys.size(0);
  TORCH_CHECK(values.size(0) == layers && static_cast<int64_t>(weights.size()) == 16 * layers &&
                  static_cast<int64_t>(out_features.size()) == 4 * layers,
              "decoder_layers_step takes 16 weights and 4 widths per layer: ", weights.size(), " and ",
              out_features.size(), " for ", layers, " layers of cache");
  at::Tensor hidden = x;
  for (int64_t i = 0; i < layers; ++i)
    hidden = layer_step(hidden, weights.slice(16 * i, 16), out_features.slice(4 * i, 4), cos, sin, keys.select(0, i),
                        values.select(0, i), write_at, mask, heads, eps);
  return hidden;
}

}  // namespace

// Registered as CPU kernels (not catch-all functions), so that a meta implementation can be added for
// torch.compile.
TORCH_LIBRARY(internvl_cpu, m) {
  m.def("q8_0x8_linear(Tensor x, Tensor qs, Tensor scales, Tensor? bias, int out_features) -> Tensor");
  m.def("q4_0x8_linear(Tensor x, Tensor qs, Tensor scales, Tensor? bias, int out_features) -> Tensor");
  m.def("fp32_linear(Tensor x, Tensor weight, Tensor? bias) -> Tensor");
  m.def("rms_norm(Tensor x, Tensor weight, float eps) -> Tensor");
  m.def("argmax_rows(Tensor x) -> Tensor");
  m.def(
      "decoder_layers_step(Tensor x, Tensor[] weights, int[] out_features, Tensor cos, Tensor sin, Tensor(a!) keys, "
      "Tensor(b!) values, int[] write_at, Tensor? mask, int heads, float eps) -> Tensor");
}

TORCH_LIBRARY_IMPL(internvl_cpu, CPU, m) {
  m.impl("q8_0x8_linear", &q8_0x8_linear);
  m.impl("q4_0x8_linear", &q4_0x8_linear);
  m.impl("fp32_linear", &fp32_linear);
  m.impl("rms_norm", &rms_norm);
  m.impl("argmax_rows", &argmax_rows);
  m.impl("decoder_layers_step", &decoder_layers_step);
}
