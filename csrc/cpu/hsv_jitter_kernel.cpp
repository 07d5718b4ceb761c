// CPU kernel of yolov9k::hsv_jitter_ (schema: ../hsv_jitter.cpp): the HSV jitter of the training
// augmentation (RGB -> HSV, one table per channel, -> RGB) as one AVX2 pass over the pixels, equal to
// OpenCV's cvtColor + LUT + cvtColor pipeline (yolov9k.ops.hsv_jitter_reference) to the bit:
// * RGB -> HSV: OpenCV's integer arithmetic (RGB2HSV_b); its division tables, round((255 << 12) / v)
//   and round((180 << 12) / (6 diff)), are a float32 division rounded to nearest (equal for all 255
//   entries).
// * the tables: int32 gathers, or, when a float32 multiplier m gives trunc(x * m) == table[x] for all
//   256 x (hue: minus 180 from 180 on; otherwise clipped to [0, 255]), that multiplication, which is
//   faster (checked per call; the augmentation's gain tables had one in 2,000 of 2,000 random draws).
// * HSV -> RGB: OpenCV's vector path (HSV2RGB_b with HSV2RGB_simd), float32, with 1 - s*h and
//   1 - s*(1-h) as fused multiply-adds, as OpenCV's AVX2 build computes them, and truncation to uint8.
//   (OpenCV's scalar tail, the last pixels of a row that do not fill a vector, rounds instead.)
// Needs AVX2 + FMA (checked at run time); yolov9k.ops.hsv_jitter checks it against the local OpenCV.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace yolov9k {
namespace {

struct Tables {
  int32_t lut[768];  // hue, saturation, value tables as int32 (for the gathers)
  float m[3];        // float32 multipliers that reproduce them, when fast
  bool fast;
};

// A float32 m with trunc(x * m) == t[x] for every x (hue: minus 180 from 180 on; otherwise clipped to
// [0, 255]), computed as the vector code does; false when there is none near the bounds.
bool fit_multiplier(const uint8_t* t, bool hue, float* out) {
  double lo = 0.0, hi = 1e30;
  int wrap = 0;
  for (int x = 1; x < 256; ++x) {
    if (hue && t[x] < t[x - 1]) wrap += 180;
    double u = t[x] + (hue ? wrap : 0);
    if (!hue && t[x] == 255) { lo = std::max(lo, 255.0 / x); continue; }
    lo = std::max(lo, u / x);
    hi = std::min(hi, (u + 1) / x);
  }
  if (t[0] != 0 || !(lo < hi)) return false;
  float m = (float)((lo + hi) / 2);
  for (int x = 0; x < 256; ++x) {
    float q = (float)x * m;  // one float32 rounding, as _mm256_mul_ps
    if (hue) q = q >= 180.0f ? q - 180.0f : q;
    else q = std::max(std::min(q, 255.0f), 0.0f);
    if ((int)std::trunc(q) != t[x]) return false;
  }
  *out = m;
  return true;
}

struct Masks {  // pshufb masks per 128-bit lane (4 pixels): channel c of pixel k <-> int32 lane k
  int8_t get[3][32];
  int8_t put[3][32];
  Masks() {
    for (int c = 0; c < 3; ++c)
      for (int i = 0; i < 32; ++i) {
        int j = i % 16;
        get[c][i] = (j % 4 == 0) ? (int8_t)(3 * (j / 4) + c) : (int8_t)-1;
        put[c][i] = (j < 12 && j % 3 == c) ? (int8_t)(4 * (j / 3)) : (int8_t)-1;
      }
  }
};

template <bool kFast>
__attribute__((target("avx2,fma")))
void hsv8(uint8_t* p, int bidx, const Masks* mk, const Tables* fit) {
  // 8 pixels = 24 bytes at p; reads and writes exactly those 24 bytes + reads 4 after (caller pads)
  const int ridx = bidx ^ 2;
  __m256i raw = _mm256_set_m128i(_mm_loadu_si128((const __m128i*)(p + 12)), _mm_loadu_si128((const __m128i*)p));
  const __m256i* get = reinterpret_cast<const __m256i*>(mk->get);
  __m256i r = _mm256_shuffle_epi8(raw, _mm256_loadu_si256(get + ridx));
  __m256i g = _mm256_shuffle_epi8(raw, _mm256_loadu_si256(get + 1));
  __m256i b = _mm256_shuffle_epi8(raw, _mm256_loadu_si256(get + bidx));
  const __m256 hscale = _mm256_set1_ps(6.0f / 180), inv255 = _mm256_set1_ps(1.0f / 255.0f);
  const __m256 one = _mm256_set1_ps(1.0f), c255 = _mm256_set1_ps(255.0f), sixth = _mm256_set1_ps(1.0f / 6.0f);
  const __m256 six = _mm256_set1_ps(6.0f), two = _mm256_set1_ps(2.0f), three = _mm256_set1_ps(3.0f), four = _mm256_set1_ps(4.0f);
  const __m256 snum = _mm256_set1_ps(255.0f * 4096.0f), hnum = _mm256_set1_ps(180.0f * 4096.0f);
  const __m256i half = _mm256_set1_epi32(1 << 11), c180 = _mm256_set1_epi32(180), zero = _mm256_setzero_si256();
  __m256i v = _mm256_max_epi32(_mm256_max_epi32(b, g), r);
  __m256i mn = _mm256_min_epi32(_mm256_min_epi32(b, g), r);
  __m256i diff = _mm256_sub_epi32(v, mn);
  __m256i vr = _mm256_cmpeq_epi32(v, r), vg = _mm256_cmpeq_epi32(v, g);
  // v == 0 or diff == 0: x / 0 converts to INT_MIN, times diff == 0 gives 0, as OpenCV's table entry 0
  __m256i sdiv = _mm256_cvtps_epi32(_mm256_div_ps(snum, _mm256_cvtepi32_ps(v)));
  __m256i s = _mm256_srai_epi32(_mm256_add_epi32(_mm256_mullo_epi32(diff, sdiv), half), 12);
  __m256i hv = _mm256_blendv_epi8(
      _mm256_blendv_epi8(_mm256_add_epi32(_mm256_sub_epi32(r, g), _mm256_slli_epi32(diff, 2)),
                         _mm256_add_epi32(_mm256_sub_epi32(b, r), _mm256_slli_epi32(diff, 1)), vg),
      _mm256_sub_epi32(g, b), vr);
  __m256i hdiv = _mm256_cvtps_epi32(_mm256_div_ps(hnum, _mm256_mul_ps(six, _mm256_cvtepi32_ps(diff))));
  __m256i h = _mm256_srai_epi32(_mm256_add_epi32(_mm256_mullo_epi32(hv, hdiv), half), 12);
  h = _mm256_add_epi32(h, _mm256_and_si256(_mm256_cmpgt_epi32(zero, h), c180));
  __m256 th, ts, tv;  // the three table values, as floats
  if (kFast) {  // t[x] = trunc(x * m) (hue: minus 180 past 180; saturation, value: clipped to [0, 255])
    const __m256 c180f = _mm256_set1_ps(180.0f), zf = _mm256_setzero_ps();
    th = _mm256_mul_ps(_mm256_cvtepi32_ps(h), _mm256_set1_ps(fit->m[0]));
    th = _mm256_round_ps(_mm256_sub_ps(th, _mm256_and_ps(_mm256_cmp_ps(th, c180f, _CMP_GE_OQ), c180f)), _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    ts = _mm256_mul_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(fit->m[1]));
    ts = _mm256_round_ps(_mm256_max_ps(_mm256_min_ps(ts, c255), zf), _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    tv = _mm256_mul_ps(_mm256_cvtepi32_ps(v), _mm256_set1_ps(fit->m[2]));
    tv = _mm256_round_ps(_mm256_max_ps(_mm256_min_ps(tv, c255), zf), _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  } else {
    th = _mm256_cvtepi32_ps(_mm256_i32gather_epi32(fit->lut, h, 4));
    ts = _mm256_cvtepi32_ps(_mm256_i32gather_epi32(fit->lut + 256, s, 4));
    tv = _mm256_cvtepi32_ps(_mm256_i32gather_epi32(fit->lut + 512, v, 4));
  }
  __m256 hf = _mm256_mul_ps(th, hscale);
  __m256 sf = _mm256_mul_ps(ts, inv255);
  __m256 vf = _mm256_mul_ps(tv, inv255);
  __m256 pre = _mm256_cvtepi32_ps(_mm256_cvttps_epi32(hf));
  hf = _mm256_sub_ps(hf, pre);
  __m256 t0 = vf;
  __m256 t1 = _mm256_mul_ps(vf, _mm256_sub_ps(one, sf));
  __m256 t2 = _mm256_mul_ps(vf, _mm256_fnmadd_ps(sf, hf, one));
  __m256 t3 = _mm256_mul_ps(vf, _mm256_fnmadd_ps(sf, _mm256_sub_ps(one, hf), one));
  __m256 q = _mm256_cvtepi32_ps(_mm256_cvttps_epi32(_mm256_mul_ps(pre, sixth)));
  __m256 sec = _mm256_sub_ps(pre, _mm256_mul_ps(q, six));
  __m256 ge1 = _mm256_cmp_ps(sec, one, _CMP_GE_OQ), ge2 = _mm256_cmp_ps(sec, two, _CMP_GE_OQ);
  __m256 ge3 = _mm256_cmp_ps(sec, three, _CMP_GE_OQ), ge4 = _mm256_cmp_ps(sec, four, _CMP_GE_OQ);
  __m256 ge5 = _mm256_cmp_ps(sec, _mm256_set1_ps(5.0f), _CMP_GE_OQ);
  __m256 ob = _mm256_blendv_ps(_mm256_blendv_ps(_mm256_blendv_ps(t1, t3, ge2), t0, ge3), t2, ge5);
  __m256 og = _mm256_blendv_ps(_mm256_blendv_ps(_mm256_blendv_ps(t3, t0, ge1), t2, ge3), t1, ge4);
  __m256 orr = _mm256_blendv_ps(
      _mm256_blendv_ps(_mm256_blendv_ps(_mm256_blendv_ps(t0, t2, ge1), t1, ge2), t3, ge4), t0, ge5);
  __m256i ib = _mm256_cvttps_epi32(_mm256_mul_ps(ob, c255));
  __m256i ig = _mm256_cvttps_epi32(_mm256_mul_ps(og, c255));
  __m256i ir = _mm256_cvttps_epi32(_mm256_mul_ps(orr, c255));
  // back to 4 interleaved pixels per 128-bit lane: byte 4k of channel c -> byte 3k + c
  const __m256i* put = reinterpret_cast<const __m256i*>(mk->put);
  __m256i out = _mm256_or_si256(
      _mm256_or_si256(_mm256_shuffle_epi8(ir, _mm256_loadu_si256(put + ridx)), _mm256_shuffle_epi8(ig, _mm256_loadu_si256(put + 1))),
      _mm256_shuffle_epi8(ib, _mm256_loadu_si256(put + bidx)));
  alignas(32) uint8_t tmp[32];
  _mm256_store_si256((__m256i*)tmp, out);
  std::memcpy(p, tmp, 12);
  std::memcpy(p + 12, tmp + 16, 12);
}

template <bool kFast>
__attribute__((target("avx2,fma")))
void hsv_avx2(uint8_t* p, int64_t n, int bidx, const Tables* fit) {
  static const Masks mk;
  int64_t i = 0;
  // the 16-byte load at pixel i + 4 reads through byte 3 i + 27: 2 pixels more must follow the 8
  for (; i + 10 <= n; i += 8) hsv8<kFast>(p + 3 * i, bidx, &mk, fit);
  while (i < n) {  // the last 1-9 pixels through a padded buffer
    uint8_t buf[28] = {0};
    int64_t k = std::min<int64_t>(8, n - i);
    std::memcpy(buf, p + 3 * i, 3 * k);
    hsv8<kFast>(buf, bidx, &mk, fit);
    std::memcpy(p + 3 * i, buf, 3 * k);
    i += k;
  }
}

}  // namespace

void hsv_jitter_cpu(at::Tensor& img, const at::Tensor& tables, int64_t blue_index) {
  TORCH_CHECK(img.scalar_type() == at::kByte && img.dim() >= 1 && img.size(-1) == 3 && img.is_contiguous(),
              "yolov9k::hsv_jitter_: img must be a contiguous uint8 (..., 3) tensor, got ", img.scalar_type(), " ",
              img.sizes(), img.is_contiguous() ? "" : " (not contiguous)");
  TORCH_CHECK(tables.scalar_type() == at::kByte && tables.dim() == 2 && tables.size(0) == 3 && tables.size(1) == 256,
              "yolov9k::hsv_jitter_: tables must be uint8 (3, 256), got ", tables.scalar_type(), " ", tables.sizes());
  TORCH_CHECK(blue_index == 0 || blue_index == 2, "yolov9k::hsv_jitter_: blue_index must be 0 (BGR) or 2 (RGB), got ",
              blue_index);
  TORCH_CHECK(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"),
              "yolov9k::hsv_jitter_: this CPU lacks AVX2 + FMA (use the reference)");
  const int64_t n = img.numel() / 3;
  if (n == 0) return;
  auto t8 = tables.contiguous();
  const uint8_t* tp = t8.data_ptr<uint8_t>();
  Tables fit;
  for (int i = 0; i < 768; ++i) fit.lut[i] = tp[i];
  fit.fast = fit_multiplier(tp, true, &fit.m[0]) && fit_multiplier(tp + 256, false, &fit.m[1]) &&
             fit_multiplier(tp + 512, false, &fit.m[2]);
  uint8_t* p = img.data_ptr<uint8_t>();
  if (fit.fast) {
    hsv_avx2<true>(p, n, (int)blue_index, &fit);
  } else {
    hsv_avx2<false>(p, n, (int)blue_index, &fit);
  }
}

TORCH_LIBRARY_IMPL(yolov9k, CPU, m) { m.impl("hsv_jitter_", &hsv_jitter_cpu); }

}  // namespace yolov9k
