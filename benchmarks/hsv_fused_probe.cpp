// Probe, not part of yolov9k: the HSV jitter of ``augment_hsv`` (RGB -> HSV, one table per channel, -> RGB)
// fused into one AVX2 pass, bit-exact with OpenCV's vector paths: RGB2HSV_b's integer arithmetic (its
// division tables computed by a float32 division, equal for all 255 entries), HSV2RGB_b's vector path
// (float32, ``1 - s*h`` fused multiply-add as OpenCV's AVX2 build computes it, truncation to uint8; its
// scalar tail rounds instead). Built and timed by ``benchmarks/loader_levers.py --fused``.
#include <torch/extension.h>
#include <immintrin.h>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <algorithm>

namespace {
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

__attribute__((target("avx2,fma")))
void hsv8(uint8_t* p, int bidx, const Masks* mk, const int32_t* lut) {
  // 8 pixels = 24 bytes at p; reads and writes exactly those 24 bytes + reads 4 after (caller pads)
  const int ridx = bidx ^ 2;
  __m256i raw = _mm256_set_m128i(_mm_loadu_si128((const __m128i*)(p + 12)), _mm_loadu_si128((const __m128i*)p));
  __m256i r = _mm256_shuffle_epi8(raw, _mm256_loadu_si256((const __m256i*)mk->get[ridx]));
  __m256i g = _mm256_shuffle_epi8(raw, _mm256_loadu_si256((const __m256i*)mk->get[1]));
  __m256i b = _mm256_shuffle_epi8(raw, _mm256_loadu_si256((const __m256i*)mk->get[bidx]));
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
  __m256 hf = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_i32gather_epi32(lut, h, 4)), hscale);
  __m256 sf = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_i32gather_epi32(lut + 256, s, 4)), inv255);
  __m256 vf = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_i32gather_epi32(lut + 512, v, 4)), inv255);
  __m256 pre = _mm256_cvtepi32_ps(_mm256_cvttps_epi32(hf));
  hf = _mm256_sub_ps(hf, pre);
  __m256 t0 = vf;
  __m256 t1 = _mm256_mul_ps(vf, _mm256_sub_ps(one, sf));
  __m256 t2 = _mm256_mul_ps(vf, _mm256_fnmadd_ps(sf, hf, one));
  __m256 t3 = _mm256_mul_ps(vf, _mm256_fnmadd_ps(sf, _mm256_sub_ps(one, hf), one));
  __m256 q = _mm256_cvtepi32_ps(_mm256_cvttps_epi32(_mm256_mul_ps(pre, sixth)));
  __m256 sec = _mm256_sub_ps(pre, _mm256_mul_ps(q, six));
  __m256 lt1 = _mm256_cmp_ps(sec, one, _CMP_LT_OQ), lt2 = _mm256_cmp_ps(sec, two, _CMP_LT_OQ);
  __m256 eq1 = _mm256_cmp_ps(sec, one, _CMP_EQ_OQ), eq2 = _mm256_cmp_ps(sec, two, _CMP_EQ_OQ);
  __m256 eq3 = _mm256_cmp_ps(sec, three, _CMP_EQ_OQ), eq4 = _mm256_cmp_ps(sec, four, _CMP_EQ_OQ);
  __m256 gt4 = _mm256_cmp_ps(sec, four, _CMP_GT_OQ), gt3 = _mm256_cmp_ps(sec, three, _CMP_GT_OQ);
  __m256 ob = _mm256_or_ps(_mm256_or_ps(_mm256_and_ps(t1, lt2), _mm256_and_ps(t3, eq2)),
               _mm256_or_ps(_mm256_or_ps(_mm256_and_ps(t0, eq3), _mm256_and_ps(t0, eq4)), _mm256_and_ps(t2, gt4)));
  __m256 og = _mm256_or_ps(_mm256_or_ps(_mm256_and_ps(t3, lt1), _mm256_and_ps(t0, eq1)),
               _mm256_or_ps(_mm256_or_ps(_mm256_and_ps(t0, eq2), _mm256_and_ps(t2, eq3)), _mm256_and_ps(t1, gt3)));
  __m256 orr = _mm256_or_ps(_mm256_or_ps(_mm256_and_ps(t0, lt1), _mm256_and_ps(t2, eq1)),
                _mm256_or_ps(_mm256_or_ps(_mm256_and_ps(t1, eq2), _mm256_and_ps(t1, eq3)),
                             _mm256_or_ps(_mm256_and_ps(t3, eq4), _mm256_and_ps(t0, gt4))));
  __m256i ib = _mm256_cvttps_epi32(_mm256_mul_ps(ob, c255));
  __m256i ig = _mm256_cvttps_epi32(_mm256_mul_ps(og, c255));
  __m256i ir = _mm256_cvttps_epi32(_mm256_mul_ps(orr, c255));
  // back to 4 interleaved pixels per 128-bit lane: byte 4k of channel c -> byte 3k + c

  __m256i out = _mm256_or_si256(_mm256_or_si256(_mm256_shuffle_epi8(ir, _mm256_loadu_si256((const __m256i*)mk->put[ridx])), _mm256_shuffle_epi8(ig, _mm256_loadu_si256((const __m256i*)mk->put[1]))),
                                _mm256_shuffle_epi8(ib, _mm256_loadu_si256((const __m256i*)mk->put[bidx])));
  alignas(32) uint8_t tmp[32];
  _mm256_store_si256((__m256i*)tmp, out);
  std::memcpy(p, tmp, 12);
  std::memcpy(p + 12, tmp + 16, 12);
}

__attribute__((target("avx2,fma")))
void hsv_avx2(uint8_t* p, int64_t n, int bidx, const int32_t* lut) {
  static const Masks mk;
  int64_t i = 0;
  for (; i + 9 <= n; i += 8) hsv8(p + 3 * i, bidx, &mk, lut);  // +1 pixel: the 4-byte over-read stays inside
  while (i < n) {  // the last 1-9 pixels through a padded buffer
    uint8_t buf[28] = {0};
    int64_t k = std::min<int64_t>(8, n - i);
    std::memcpy(buf, p + 3 * i, 3 * k);
    hsv8(buf, bidx, &mk, lut);
    std::memcpy(p + 3 * i, buf, 3 * k);
    i += k;
  }
}
}  // namespace

// img: contiguous uint8 (..., 3), changed in place; tables: uint8 (3, 256) hue / saturation / value
void hsv_tables_fused(torch::Tensor img, torch::Tensor tables, int64_t blue_index) {
  TORCH_CHECK(img.dtype() == torch::kUInt8 && img.is_contiguous() && img.size(-1) == 3, "uint8 (..., 3) contiguous");
  TORCH_CHECK(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"), "this probe needs AVX2 + FMA");
  auto lut = tables.to(torch::kInt32).contiguous();
  hsv_avx2(img.data_ptr<uint8_t>(), img.numel() / 3, (int)blue_index, lut.data_ptr<int32_t>());
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("hsv_tables_fused", &hsv_tables_fused); }
