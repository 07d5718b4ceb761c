// CPU kernel of yolov9k::assign: task-aligned assignment (official YOLOv9 semantics, the tie rule
// of yolov9k.ops.assign) without any (B, M, A) tensor. Memory grows with the outputs and with the
// number of (gt, anchor-inside-gt) candidates.
//
//  1. Candidates of gt j: anchors whose centre is inside it by more than eps on all four sides (the
//     official predicate, evaluated exactly on every candidate). On a regular multi-level grid
//     (centres (i + 0.5) * stride, levels one after another, row-major, as make_anchors builds them)
//     only the cells of the box's column/row range are visited; any other anchor layout visits all
//     anchors (same results, O(M * A) time, still no M * A memory).
//  2. CIoU (clamped at 0) in the reference's operation order; its arctangents come from the same
//     at::atan calls as the reference, and the powers s^alpha, iou^beta from at::pow_ over blocks
//     whose lengths are multiples of 64, i.e. ATen's vectorised pow (Sleef), which the reference also
//     uses except on the last < 2 * vector-width elements of each of its loops.
//  3. Top-k per gt among its assignable candidates (finite CIoU, finite metric >= 0; the rule for
//     NaN/Inf inputs in yolov9k/ops/assign.py): metric descending, equal metrics by ascending index.
//  4. Per image: an anchor claimed by several gts goes to the gt of largest CIoU among all M gts
//     (padding rows included, first on ties, NaN/Inf last), and becomes background if that pair is
//     not assignable; labels, boxes and scores t * max_iou(gt) / (max_t(gt) + eps) over each gt's
//     final anchors are written directly.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <tuple>
#include <vector>

#include "common/checks.h"

namespace yolov9k {
namespace {

using Result = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

constexpr float kCiouEps = 1e-7f;   // bbox_iou's eps, as float32
constexpr int64_t kPowAlign = 64;   // pow block lengths: a multiple of every SIMD loop step
constexpr int64_t kPowBlock = 8192; // elements per pow task (multiple of kPowAlign)
constexpr int64_t kMaxLevels = 16;  // more "levels" than this: treat as irregular

// One level of a regular anchor grid: nx * ny centres ((i + 0.5) * stride, (j + 0.5) * stride),
// row-major, at anchor indices offset, offset + 1, ...
struct Level {
  float stride;
  int64_t nx, ny, offset;
};

// The levels of anc (n, 2) if it is exactly a regular multi-level grid, else an empty vector.
std::vector<Level> grid_levels(const float* anc, int64_t n) {
  std::vector<Level> levels;
  int64_t p = 0;
  while (p < n) {
    const float s = 2.0f * anc[2 * p];
    if (static_cast<int64_t>(levels.size()) == kMaxLevels || !(s > 0.0f) || !std::isfinite(s)) return {};
    auto centre = [s](int64_t i) { return (static_cast<float>(i) + 0.5f) * s; };
    auto row_matches = [&](int64_t start, int64_t nx, int64_t j) {
      for (int64_t i = 0; i < nx; ++i) {
        if (anc[2 * (start + i)] != centre(i) || anc[2 * (start + i) + 1] != centre(j)) return false;
      }
      return true;
    };
    int64_t nx = 0;
    while (p + nx < n && anc[2 * (p + nx)] == centre(nx) && anc[2 * (p + nx) + 1] == centre(0)) ++nx;
    if (nx == 0) return {};
    int64_t ny = 1;
    while (p + (ny + 1) * nx <= n && row_matches(p + ny * nx, nx, ny)) ++ny;
    levels.push_back({s, nx, ny, p});
    p += nx * ny;
  }
  return levels;
}

// Cells [lo, hi] of one axis (n cells of size s) whose centre can lie in (a, b) with margin e: a
// superset (one extra cell each side), the exact predicate decides. Empty (lo > hi) for NaN.
inline std::pair<int64_t, int64_t> cell_range(float a, float b, float e, float s, int64_t n) {
  const double m = std::fabs(static_cast<double>(e));
  const double lo = std::floor((a - m) / s - 0.5) - 1.0;
  const double hi = std::ceil((b + m) / s - 0.5) + 1.0;
  if (!(lo <= hi)) return {0, -1};
  return {static_cast<int64_t>(std::clamp(lo, 0.0, static_cast<double>(n))),
          static_cast<int64_t>(std::clamp(hi, -1.0, static_cast<double>(n - 1)))};
}

// Per-box CIoU terms (boxes.bbox_iou / the reference's _box_terms): xyxy, w * (h + eps), atan(w / h).
struct Box {
  float x1, y1, x2, y2, area, atan;
};

inline Box make_box(const float* b, float atan_wh) {
  const float w = b[2] - b[0];
  const float h = (b[3] - b[1]) + kCiouEps;
  return {b[0], b[1], b[2], b[3], w * h, atan_wh};
}

// torch.minimum / torch.maximum: NaN propagates.
inline float min_nan(float a, float b) { return (a < b || std::isnan(a)) ? a : b; }
inline float max_nan(float a, float b) { return (a > b || std::isnan(a)) ? a : b; }
// clamp(min=0): NaN stays NaN.
inline float clamp0(float x) { return x < 0.0f ? 0.0f : x; }

// CIoU of gt g and predicted box p, clamped at 0, in the reference's float32 operation order.
inline float ciou(const Box& g, const Box& p) {
  const float inter_w = clamp0(min_nan(g.x2, p.x2) - max_nan(g.x1, p.x1));
  const float inter_h = clamp0(min_nan(g.y2, p.y2) - max_nan(g.y1, p.y1));
  const float inter = inter_w * inter_h;
  const float iou = inter / (((g.area + p.area) - inter) + kCiouEps);
  const float cw = max_nan(g.x2, p.x2) - min_nan(g.x1, p.x1);
  const float ch = max_nan(g.y2, p.y2) - min_nan(g.y1, p.y1);
  const float c2 = (cw * cw + ch * ch) + kCiouEps;
  const float dx = ((p.x1 + p.x2) - g.x1) - g.x2;
  const float dy = ((p.y1 + p.y2) - g.y1) - g.y2;
  const float rho2 = (dx * dx + dy * dy) / 4.0f;
  const float d = p.atan - g.atan;
  const float v = (d * d) * static_cast<float>(4.0 / (M_PI * M_PI));
  const float alpha = v / ((v - iou) + static_cast<float>(1.0 + 1e-7));
  return clamp0(iou - (rho2 / c2 + v * alpha));
}

// A (gt, anchor) pair may be assigned only with a finite CIoU and a finite, non-negative metric
// (the reference's _assignable: NaN/Inf inputs never make a positive nor a NaN target score).
inline bool assignable(float iou, float metric) {
  return std::isfinite(iou) && std::isfinite(metric) && metric >= 0.0f;
}

// Strict order of assignable candidates "a ranks before b": metric descending, then anchor index
// ascending.
inline bool ranks_before(float ma, int32_t ia, float mb, int32_t ib) {
  if (ma != mb) return ma > mb;
  return ia < ib;
}

// x^exponent in place with ATen's vectorised pow, over blocks of kPowBlock elements.
// buf.numel() must be a multiple of kPowAlign so that no element takes the scalar tail loop.
void pow_inplace(at::Tensor& buf, double exponent) {
  const int64_t n = buf.numel();
  if (n == 0) return;
  TORCH_INTERNAL_ASSERT(n % kPowAlign == 0);
  at::parallel_for(0, (n + kPowBlock - 1) / kPowBlock, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t start = blk * kPowBlock;
      buf.narrow(0, start, std::min(kPowBlock, n - start)).pow_(exponent);
    }
  });
}

inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// The inputs, converted, with raw pointers. Scores keep their dtype and strides.
struct Problem {
  int64_t B, A, C, M, topk;
  double alpha, beta;
  float eps;
  const float* pd;       // (B, A, 4) contiguous
  const float* pd_atan;  // (B, A)
  const float* gt;       // (B, M, 4)
  const float* gt_atan;  // (B, M)
  const int64_t* label;  // (B, M)
  const bool* valid;     // (B, M)
  const float* anc;      // (A, 2)
  std::vector<Level> levels;  // empty: irregular anchors, visit all
};

template <typename score_t>
struct Scores {
  const score_t* p;
  int64_t sb, sa, sc;
  float operator()(int64_t b, int64_t a, int64_t c) const {
    return static_cast<float>(p[b * sb + a * sa + c * sc]);
  }
};

// Calls fn(a) for each anchor a inside gt g (= b * M + j), in ascending order of a.
template <typename Fn>
void for_each_inside(const Problem& P, int64_t g, Fn&& fn) {
  if (!P.valid[g]) return;
  const float* box = P.gt + 4 * g;
  const float x1 = box[0], y1 = box[1], x2 = box[2], y2 = box[3], e = P.eps;
  auto inside = [&](int64_t a) {
    const float ax = P.anc[2 * a], ay = P.anc[2 * a + 1];
    return (ax - x1) > e && (ay - y1) > e && (x2 - ax) > e && (y2 - ay) > e;
  };
  if (P.levels.empty()) {
    for (int64_t a = 0; a < P.A; ++a) {
      if (inside(a)) fn(a);
    }
    return;
  }
  for (const Level& L : P.levels) {
    const auto [i0, i1] = cell_range(x1, x2, e, L.stride, L.nx);
    const auto [j0, j1] = cell_range(y1, y2, e, L.stride, L.ny);
    for (int64_t j = j0; j <= j1; ++j) {
      for (int64_t i = i0; i <= i1; ++i) {
        const int64_t a = L.offset + j * L.nx + i;
        if (inside(a)) fn(a);
      }
    }
  }
}

template <typename score_t>
void assign_kernel(const Problem& P, const Scores<score_t>& score, at::Tensor& labels_out,
                   at::Tensor& boxes_out, at::Tensor& scores_out, at::Tensor& fg_out,
                   at::Tensor& idx_out) {
  const int64_t B = P.B, A = P.A, C = P.C, M = P.M, G = B * M;
  auto pd_box = [&](int64_t b, int64_t a) {
    return make_box(P.pd + 4 * (b * A + a), P.pd_atan[b * A + a]);
  };
  auto gt_box = [&](int64_t g) { return make_box(P.gt + 4 * g, P.gt_atan[g]); };

  // 1. Count the candidates of every gt, then fill them: anchor, CIoU, score of the gt's class.
  std::vector<int64_t> offs(G + 1, 0);
  at::parallel_for(0, G, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      int64_t n = 0;
      for_each_inside(P, g, [&](int64_t) { ++n; });
      offs[g + 1] = n;
    }
  });
  std::partial_sum(offs.begin(), offs.end(), offs.begin());
  const int64_t total = offs[G];
  const int64_t padded = round_up(total, kPowAlign);
  const auto fopt = at::TensorOptions().dtype(at::kFloat);
  std::vector<int32_t> cand(total);
  at::Tensor iou_t = at::zeros({padded}, fopt);     // CIoU of each candidate
  at::Tensor metric_t = at::zeros({padded}, fopt);  // CIoU^beta, then the metric
  at::Tensor spow_t = at::zeros({padded}, fopt);    // score, then score^alpha
  float* iou = iou_t.data_ptr<float>();
  float* metric = metric_t.data_ptr<float>();
  float* spow = spow_t.data_ptr<float>();
  at::parallel_for(0, G, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t b = g / M, c = P.label[g];
      const Box gb = gt_box(g);
      int64_t pos = offs[g];
      for_each_inside(P, g, [&](int64_t a) {
        cand[pos] = static_cast<int32_t>(a);
        iou[pos] = metric[pos] = ciou(gb, pd_box(b, a));
        spow[pos] = score(b, a, c);
        ++pos;
      });
    }
  });

  // 2. Metric s^alpha * iou^beta, then the top-k of the assignable candidates of each gt (flags).
  pow_inplace(metric_t, P.beta);
  pow_inplace(spow_t, P.alpha);
  std::vector<uint8_t> selected(total, 0);
  at::parallel_for(0, G, 1, [&](int64_t g0, int64_t g1) {
    std::vector<int64_t> order;
    for (int64_t g = g0; g < g1; ++g) {
      order.clear();
      for (int64_t p = offs[g]; p < offs[g + 1]; ++p) {
        metric[p] = spow[p] * metric[p];
        if (assignable(iou[p], metric[p])) order.push_back(p);
      }
      const int64_t n = static_cast<int64_t>(order.size());
      if (n > P.topk) {
        std::nth_element(order.begin(), order.begin() + (P.topk - 1), order.end(), [&](int64_t x, int64_t y) {
          return ranks_before(metric[x], cand[x], metric[y], cand[y]);
        });
      }
      for (int64_t t = 0; t < std::min(n, P.topk); ++t) selected[order[t]] = 1;
    }
  });

  // 3. Per image: resolve anchors claimed by several gts, normalise, write the targets.
  int64_t* out_label = labels_out.data_ptr<int64_t>();
  float* out_box = boxes_out.data_ptr<float>();
  float* out_score = scores_out.data_ptr<float>();
  bool* out_fg = fg_out.data_ptr<bool>();
  int64_t* out_idx = idx_out.data_ptr<int64_t>();
  at::parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    std::vector<int32_t> claims(A), tgt(A);
    std::vector<float> t_metric(A), t_iou(A), best_metric(M), best_iou(M);
    std::vector<Box> gts(M);
    std::vector<int64_t> contested;
    for (int64_t b = b0; b < b1; ++b) {
      std::fill(claims.begin(), claims.end(), 0);
      std::fill(tgt.begin(), tgt.end(), 0);
      std::fill(t_metric.begin(), t_metric.end(), 0.0f);
      std::fill(t_iou.begin(), t_iou.end(), 0.0f);
      for (int64_t j = 0; j < M; ++j) {  // gts in order: the first claim is the lowest gt index
        const int64_t g = b * M + j;
        gts[j] = gt_box(g);
        for (int64_t p = offs[g]; p < offs[g + 1]; ++p) {
          if (!selected[p]) continue;
          const int32_t a = cand[p];
          if (claims[a]++ == 0) {
            tgt[a] = static_cast<int32_t>(j);
            t_metric[a] = metric[p];
            t_iou[a] = iou[p];
          }
        }
      }
      contested.clear();
      for (int64_t a = 0; a < A; ++a) {
        if (claims[a] > 1) contested.push_back(a);
      }
      if (!contested.empty()) {  // largest CIoU among all M gts, first on ties, NaN/Inf last
        const int64_t nc = static_cast<int64_t>(contested.size());
        at::Tensor c_iou = at::zeros({round_up(nc, kPowAlign)}, fopt);
        at::Tensor c_pow = at::zeros({round_up(nc, kPowAlign)}, fopt);
        at::Tensor c_s = at::zeros({round_up(nc, kPowAlign)}, fopt);
        float *ci = c_iou.data_ptr<float>(), *cp = c_pow.data_ptr<float>(), *cs = c_s.data_ptr<float>();
        for (int64_t k = 0; k < nc; ++k) {
          const int64_t a = contested[k];
          const Box pb = pd_box(b, a);
          int64_t best = 0;
          float best_rank = -1.0f, best_v = ciou(gts[0], pb);  // NaN/Inf rank as -1: below all
          for (int64_t j = 0; j < M; ++j) {
            const float v = ciou(gts[j], pb);
            const float rank = std::isfinite(v) ? v : -1.0f;
            if (rank > best_rank) best = j, best_rank = rank, best_v = v;
          }
          tgt[a] = static_cast<int32_t>(best);
          ci[k] = cp[k] = t_iou[a] = best_v;
          cs[k] = score(b, a, P.label[b * M + best]);
        }
        c_pow.pow_(P.beta);  // inside our parallel region: one serial, fully vectorised loop
        c_s.pow_(P.alpha);
        for (int64_t k = 0; k < nc; ++k) {
          const int64_t a = contested[k];
          t_metric[a] = cs[k] * cp[k];
          if (!assignable(t_iou[a], t_metric[a])) {  // the new gt's pair is not: background
            claims[a] = 0, tgt[a] = 0, t_metric[a] = 0.0f, t_iou[a] = 0.0f;
          }
        }
      }
      // Per gt: largest metric and CIoU over its final anchors (scatter_reduce amax from 0).
      std::fill(best_metric.begin(), best_metric.end(), 0.0f);
      std::fill(best_iou.begin(), best_iou.end(), 0.0f);
      for (int64_t a = 0; a < A; ++a) {
        if (claims[a] == 0) continue;
        best_metric[tgt[a]] = max_nan(t_metric[a], best_metric[tgt[a]]);
        best_iou[tgt[a]] = max_nan(t_iou[a], best_iou[tgt[a]]);
      }
      for (int64_t a = 0; a < A; ++a) {
        const int64_t t = tgt[a], g = b * M + t, ba = b * A + a;
        const int64_t c = P.label[g];
        out_idx[ba] = t;
        out_fg[ba] = claims[a] > 0;
        out_label[ba] = c;
        std::copy(P.gt + 4 * g, P.gt + 4 * g + 4, out_box + 4 * ba);
        // background: metric 0 (the reference computes the same expression there)
        out_score[ba * C + c] = (t_metric[a] * best_iou[t]) / (best_metric[t] + P.eps);
      }
    }
  });
}

Result assign_cpu(const at::Tensor& pd_scores, const at::Tensor& pd_bboxes, const at::Tensor& anc_points,
                  const at::Tensor& gt_labels, const at::Tensor& gt_bboxes, const at::Tensor& mask_gt,
                  int64_t topk, double alpha, double beta, double eps) {
  TORCH_CHECK(pd_scores.dim() == 3, "yolov9k::assign: pd_scores must be (B, A, C), got ", pd_scores.sizes());
  check_floating(pd_scores, "pd_scores");
  const int64_t B = pd_scores.size(0), A = pd_scores.size(1), C = pd_scores.size(2);
  TORCH_CHECK(pd_bboxes.dim() == 3 && pd_bboxes.size(0) == B && pd_bboxes.size(1) == A && pd_bboxes.size(2) == 4,
              "yolov9k::assign: pd_bboxes must be (B, A, 4) = (", B, ", ", A, ", 4), got ", pd_bboxes.sizes());
  check_floating(pd_bboxes, "pd_bboxes");
  TORCH_CHECK(pd_bboxes.scalar_type() != at::kDouble,
              "yolov9k::assign: float64 pd_bboxes are not supported by the C++ kernel (the reference, "
              "yolov9k.ops.assign_reference, computes them in float64)");
  TORCH_CHECK(anc_points.dim() == 2 && anc_points.size(0) == A && anc_points.size(1) == 2,
              "yolov9k::assign: anc_points must be (A, 2) with A = ", A, ", got ", anc_points.sizes());
  check_floating(anc_points, "anc_points");
  TORCH_CHECK(gt_bboxes.dim() == 3 && gt_bboxes.size(0) == B && gt_bboxes.size(2) == 4,
              "yolov9k::assign: gt_bboxes must be (B, M, 4) with B = ", B, ", got ", gt_bboxes.sizes());
  check_floating(gt_bboxes, "gt_bboxes");
  const int64_t M = gt_bboxes.size(1);
  TORCH_CHECK(gt_labels.dim() == 3 && gt_labels.size(0) == B && gt_labels.size(1) == M && gt_labels.size(2) == 1,
              "yolov9k::assign: gt_labels must be (B, M, 1) = (", B, ", ", M, ", 1), got ", gt_labels.sizes());
  TORCH_CHECK(mask_gt.dim() == 3 && mask_gt.size(0) == B && mask_gt.size(1) == M && mask_gt.size(2) == 1,
              "yolov9k::assign: mask_gt must be (B, M, 1) = (", B, ", ", M, ", 1), got ", mask_gt.sizes());
  TORCH_CHECK(gt_labels.scalar_type() != at::kBool && !at::isComplexType(gt_labels.scalar_type()),
              "yolov9k::assign: gt_labels must be a real number type, got ", gt_labels.scalar_type());
  for (const at::Tensor* t : {&pd_scores, &pd_bboxes, &anc_points, &gt_labels, &gt_bboxes, &mask_gt}) {
    TORCH_CHECK(t->device().is_cpu(), "yolov9k::assign (CPU kernel): expected CPU tensors, got ", t->device());
  }
  TORCH_CHECK(A > 0, "yolov9k::assign: there must be at least one anchor (A > 0)");
  TORCH_CHECK(topk >= 1, "yolov9k::assign: topk must be >= 1, got ", topk);
  TORCH_CHECK(A <= INT32_MAX, "yolov9k::assign: too many anchors (", A, ")");

  auto i64 = at::TensorOptions().dtype(at::kLong);
  auto f32 = at::TensorOptions().dtype(at::kFloat);
  if (M == 0) {  // official: background index everywhere, zero boxes and scores
    return {at::full({B, A}, C, i64), at::zeros({B, A, 4}, f32), at::zeros({B, A, C}, f32),
            at::zeros({B, A}, at::TensorOptions().dtype(at::kBool)), at::zeros({B, A}, i64)};
  }
  const at::Tensor labels = gt_labels.reshape({B, M}).to(at::kLong).contiguous();
  if (labels.numel() > 0) {
    const bool ok = labels.ge(0).logical_and(labels.lt(C)).all().item<bool>();
    TORCH_CHECK(ok, "yolov9k::assign: gt_labels must lie in [0, ", C, ") (C = pd_scores.size(2))");
  }
  const at::Tensor valid = mask_gt.reshape({B, M}).ne(0).contiguous();
  // Box terms exactly as the reference computes them (same ops on the same tensors: same atan bits).
  const at::Tensor pd_f = pd_bboxes.to(at::kFloat);
  const at::Tensor gt_f = gt_bboxes.to(at::kFloat);
  auto atan_wh = [](const at::Tensor& boxes) {
    const at::Tensor w = boxes.select(-1, 2) - boxes.select(-1, 0);
    const at::Tensor h = boxes.select(-1, 3) - boxes.select(-1, 1) + 1e-7;
    return at::atan(w / h).contiguous();
  };
  const at::Tensor pd_atan = atan_wh(pd_f), gt_atan = atan_wh(gt_f);
  const at::Tensor pd_c = pd_f.contiguous(), gt_c = gt_f.contiguous();
  const at::Tensor anc = anc_points.to(at::kFloat).contiguous();

  Problem P;
  P.B = B, P.A = A, P.C = C, P.M = M, P.topk = std::min(topk, A);
  P.alpha = alpha, P.beta = beta, P.eps = static_cast<float>(eps);
  P.pd = pd_c.data_ptr<float>(), P.pd_atan = pd_atan.data_ptr<float>();
  P.gt = gt_c.data_ptr<float>(), P.gt_atan = gt_atan.data_ptr<float>();
  P.label = labels.data_ptr<int64_t>(), P.valid = valid.data_ptr<bool>();
  P.anc = anc.data_ptr<float>();
  P.levels = grid_levels(P.anc, A);

  at::Tensor out_labels = at::empty({B, A}, i64);
  at::Tensor out_boxes = at::empty({B, A, 4}, f32);
  at::Tensor out_scores = at::zeros({B, A, C}, f32);
  at::Tensor out_fg = at::empty({B, A}, at::TensorOptions().dtype(at::kBool));
  at::Tensor out_idx = at::empty({B, A}, i64);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, pd_scores.scalar_type(), "yolov9k_assign_cpu", [&] {
    const Scores<scalar_t> sc{pd_scores.data_ptr<scalar_t>(), pd_scores.stride(0), pd_scores.stride(1),
                              pd_scores.stride(2)};
    assign_kernel<scalar_t>(P, sc, out_labels, out_boxes, out_scores, out_fg, out_idx);
  });
  return {out_labels, out_boxes, out_scores, out_fg, out_idx};
}

}  // namespace

TORCH_LIBRARY_IMPL(yolov9k, CPU, m) { m.impl("assign", &assign_cpu); }

}  // namespace yolov9k
