// CPU kernels of yolov9k::batched_nms and yolov9k::postprocess.
//
// Both run the same greedy NMS: candidates are handed out best first (score descending, ties by
// the lower key) and a candidate is kept when no kept box of its group overlaps it with
// IoU > iou_threshold. Because kept boxes come out in rank order, the loop can stop as soon as
// max_det boxes are kept, and only the prefix of the order that is actually visited gets sorted
// (RankedCandidates). Images run in parallel (at::parallel_for).
//
// A candidate is tested only against kept boxes that can overlap it (KeptBoxes): with a threshold
// >= 0, suppression needs IoU > 0, i.e. a positive overlap in x and in y, so a group that has kept
// more than kLinearKept boxes indexes them in a uniform grid (SpatialIndex) and a candidate looks
// only in the cells it covers. Boxes that are far apart then cost O(1) each instead of one test
// per kept box: 1e5 sparse boxes of one class went from ~11 s to well under a second (see
// docs/reliability.md). Skipped tests are exactly the ones that would have said "no overlap", so
// the result is unchanged.
//
// Arithmetic follows yolov9k/ops/nms.py (and so the official code + torchvision) to the bit:
// float32 boxes, IoU = inter / (area_a + area_b - inter), 0 where the union is not positive, the
// threshold comparison in double.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <unordered_map>
#include <vector>

#include "common/checks.h"
#include "nms.h"

namespace yolov9k {

namespace {

constexpr float kMaxWH = 7680.f;  // px, the official per-class coordinate offset

struct Candidate {
  float score;
  int64_t key;  // batched_nms: box index; postprocess: anchor * nc + class
};

inline bool ranks_before(const Candidate& a, const Candidate& b) {
  return a.score > b.score || (a.score == b.score && a.key < b.key);
}

// Hands out the best `limit` candidates in rank order, sorting lazily in chunks that double in
// size: nth_element splits off the next chunk (O(n)), then only that chunk is sorted.
class RankedCandidates {
 public:
  RankedCandidates(std::vector<Candidate>& cands, int64_t limit, int64_t first_chunk)
      : c_(cands),
        end_(std::min<int64_t>(limit, static_cast<int64_t>(cands.size()))),
        chunk_(std::max<int64_t>(first_chunk, 64)) {}

  bool next(Candidate& out) {
    if (pos_ == sorted_ && !refill()) return false;
    out = c_[pos_++];
    return true;
  }

 private:
  bool refill() {
    if (sorted_ >= end_) return false;
    const int64_t stop = std::min(end_, sorted_ + chunk_);
    auto first = c_.begin() + sorted_, mid = c_.begin() + stop;
    if (mid != c_.end()) std::nth_element(first, mid, c_.end(), ranks_before);
    std::sort(first, mid, ranks_before);
    sorted_ = stop;
    chunk_ *= 2;
    return true;
  }

  std::vector<Candidate>& c_;
  int64_t end_, chunk_, pos_ = 0, sorted_ = 0;
};

struct Box {
  float x1, y1, x2, y2, area;
};

inline Box make_box(float x1, float y1, float x2, float y2) {
  return {x1, y1, x2, y2, (x2 - x1) * (y2 - y1)};
}

// IoU(a, b) > threshold, with IoU defined like yolov9k.ops.box_iou.box_iou_reference: 0 where the union
// is not positive (or NaN). NaN IoUs (inf / inf) compare false, as in the reference.
inline bool suppresses(const Box& a, const Box& b, double threshold) {
  const float w = std::max(std::min(a.x2, b.x2) - std::max(a.x1, b.x1), 0.f);
  const float h = std::max(std::min(a.y2, b.y2) - std::max(a.y1, b.y1), 0.f);
  const float inter = w * h;
  const float uni = a.area + b.area - inter;
  const float iou = uni > 0.f ? inter / uni : 0.f;
  return static_cast<double>(iou) > threshold;
}

// Whether a box can take part in a suppression at a threshold >= 0: finite corners and a finite,
// positive area. Any other box (NaN / inf corners, zero or negative size, an area that overflows)
// has IoU 0 or NaN with every box, so it neither suppresses nor is suppressed.
inline bool can_overlap(const Box& b) {
  return std::isfinite(b.x1) && std::isfinite(b.y1) && std::isfinite(b.x2) && std::isfinite(b.y2) &&
         b.x2 > b.x1 && b.y2 > b.y1 && std::isfinite(b.area);
}

// Kept boxes of one group in a uniform grid of square cells: each box is listed in every cell its
// extent touches (at most kMaxCells, else in `wide_`, tested always). Two boxes that overlap with a
// positive area share a cell: the cell index floor(x / cell) is monotone in x, so overlapping x
// ranges give overlapping index ranges (clamping to int32 keeps that).
class SpatialIndex {
 public:
  static constexpr int64_t kMaxCells = 16;       // cells a kept box may be listed in
  static constexpr int64_t kMaxQueryCells = 64;  // cells a candidate looks in; else it scans all

  bool built() const { return cell_ > 0; }

  // Cell size = the median box side (max of width and height) of `boxes`, then index them all.
  void build(const std::vector<Box>& boxes) {
    std::vector<float> sides;
    sides.reserve(boxes.size());
    for (const Box& b : boxes) sides.push_back(std::max(b.x2 - b.x1, b.y2 - b.y1));
    auto mid = sides.begin() + sides.size() / 2;
    std::nth_element(sides.begin(), mid, sides.end());
    cell_ = std::max(static_cast<double>(*mid), 1e-30);
    for (size_t i = 0; i < boxes.size(); ++i) insert(boxes[i], static_cast<int32_t>(i));
  }

  void insert(const Box& b, int32_t i) {
    const Range r = range(b);
    if (r.cells() > kMaxCells) {
      wide_.push_back(i);
      return;
    }
    for (int64_t x = r.x0; x <= r.x1; ++x)
      for (int64_t y = r.y0; y <= r.y1; ++y) cells_[key(x, y)].push_back(i);
  }

  // Whether `test` is true for a kept box (of `boxes`) that shares a cell with `b`.
  template <typename Test>
  bool any(const Box& b, const std::vector<Box>& boxes, Test&& test) const {
    for (int32_t i : wide_)
      if (test(boxes[i])) return true;
    const Range r = range(b);
    if (r.cells() > kMaxQueryCells) {  // a large candidate: one pass over the group is cheaper
      for (const Box& k : boxes)
        if (test(k)) return true;
      return false;
    }
    for (int64_t x = r.x0; x <= r.x1; ++x)
      for (int64_t y = r.y0; y <= r.y1; ++y) {
        const auto it = cells_.find(key(x, y));
        if (it == cells_.end()) continue;
        for (int32_t i : it->second)
          if (test(boxes[i])) return true;
      }
    return false;
  }

 private:
  struct Range {
    int64_t x0, x1, y0, y1;
    double cells() const { return double(x1 - x0 + 1) * double(y1 - y0 + 1); }
  };

  int64_t index(float v) const {
    const double c = std::floor(static_cast<double>(v) / cell_);
    return static_cast<int64_t>(std::clamp(c, -2147483648.0, 2147483647.0));
  }
  Range range(const Box& b) const { return {index(b.x1), index(b.x2), index(b.y1), index(b.y2)}; }
  static uint64_t key(int64_t x, int64_t y) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(x)) << 32) | static_cast<uint32_t>(y);
  }

  double cell_ = 0.0;
  std::unordered_map<uint64_t, std::vector<int32_t>> cells_;
  std::vector<int32_t> wide_;
};

// Boxes kept so far, grouped by class: a candidate is only tested against its own group, and (for
// thresholds >= 0) only against kept boxes that can overlap it.
class KeptBoxes {
 public:
  static constexpr size_t kLinearKept = 64;  // kept boxes of a group scanned in turn before indexing

  explicit KeptBoxes(double threshold) : threshold_(threshold), spatial_(threshold >= 0.0) {}

  // Keeps `box` unless a kept box of `group` suppresses it; returns whether it was kept.
  bool offer(int64_t group, const Box& box) {
    if (spatial_ && !can_overlap(box)) return true;  // suppresses nothing, suppressed by nothing
    Group& g = groups_[group];
    const auto hits = [&](const Box& k) { return suppresses(k, box, threshold_); };
    if (g.index.built()) {
      if (g.index.any(box, g.kept, hits)) return false;
    } else {
      for (const Box& k : g.kept)
        if (hits(k)) return false;
    }
    g.kept.push_back(box);
    if (g.index.built())
      g.index.insert(box, static_cast<int32_t>(g.kept.size() - 1));
    else if (spatial_ && g.kept.size() > kLinearKept)
      g.index.build(g.kept);
    return true;
  }

 private:
  struct Group {
    std::vector<Box> kept;
    SpatialIndex index;
  };
  double threshold_;
  bool spatial_;
  std::unordered_map<int64_t, Group> groups_;
};

// ---------------------------------------------------------------------------------------------
// batched_nms
// ---------------------------------------------------------------------------------------------

at::Tensor batched_nms_cpu(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                           double iou_threshold, int64_t max_keep) {
  check_batched_nms_args(boxes, scores, idxs, iou_threshold);
  TORCH_CHECK(boxes.device().is_cpu() && scores.device().is_cpu() && idxs.device().is_cpu(),
              "yolov9k::batched_nms (CPU kernel): expected CPU tensors");
  const int64_t n = boxes.size(0);

  const auto b = boxes.to(at::kFloat).contiguous();
  const auto s = scores.to(at::kFloat).contiguous();
  const auto g = idxs.to(at::kLong).contiguous();
  const float* bp = b.data_ptr<float>();
  const float* sp = s.data_ptr<float>();
  const int64_t* gp = g.data_ptr<int64_t>();

  std::vector<Candidate> cands;
  cands.reserve(n);
  for (int64_t i = 0; i < n; ++i)
    if (!std::isnan(sp[i])) cands.push_back({sp[i], i});

  const int64_t limit = max_keep < 0 ? n : max_keep;
  std::vector<int64_t> keep;
  RankedCandidates ranked(cands, n, max_keep < 0 ? n : 4 * max_keep);
  KeptBoxes kept(iou_threshold);
  Candidate c;
  while (static_cast<int64_t>(keep.size()) < limit && ranked.next(c)) {
    const float* p = bp + 4 * c.key;
    if (kept.offer(gp[c.key], make_box(p[0], p[1], p[2], p[3]))) keep.push_back(c.key);
  }
  auto out = at::empty({static_cast<int64_t>(keep.size())}, boxes.options().dtype(at::kLong));
  std::copy(keep.begin(), keep.end(), out.data_ptr<int64_t>());
  return out;
}

// ---------------------------------------------------------------------------------------------
// postprocess
// ---------------------------------------------------------------------------------------------

struct PostprocessArgs {
  int64_t nc, anchors, max_det, max_nms;
  float conf;
  double iou;
  bool multi_label, agnostic;
  const bool* class_mask;  // nullptr: every class
};

// int32 that may alias float: reading the score rows' bits through it is defined behaviour.
using AliasInt32 = int32_t __attribute__((__may_alias__));

inline float bits_to_float(int32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Candidates of one image in the official order. p: (4 + nc, A) float32, row-major.
// An anchor with any NaN class score is dropped (the official `amax > conf` is false for it).
std::vector<Candidate> image_candidates(const float* p, const PostprocessArgs& a) {
  const int64_t A = a.anchors, nc = a.nc;
  if (A == 0) return {};
  // One pass over the class rows: NaN flags and, for single-label, the best class (the first one on
  // ties, as torch.max). Written with integer masks and no branches so that gcc vectorises it
  // without -march flags (a float ?: select is "control flow" to it).
  std::vector<int32_t> has_nan(A, 0);
  std::vector<int32_t> best_bits(A), best_cls(A, 0);
  std::memcpy(best_bits.data(), p + 4 * A, A * sizeof(float));
  int32_t* __restrict__ nan_p = has_nan.data();
  int32_t* __restrict__ best_p = best_bits.data();
  int32_t* __restrict__ cls_p = best_cls.data();
  for (int64_t c = 0; c < nc; ++c) {
    const AliasInt32* __restrict__ row = reinterpret_cast<const AliasInt32*>(p + (4 + c) * A);
    const int32_t ci = static_cast<int32_t>(c);
    for (int64_t i = 0; i < A; ++i) {
      const int32_t v = row[i];
      nan_p[i] |= static_cast<int32_t>((v & 0x7fffffff) > 0x7f800000);  // isnan
      if (a.multi_label) continue;
      const int32_t better = -static_cast<int32_t>(bits_to_float(v) > bits_to_float(best_p[i]));
      best_p[i] = (v & better) | (best_p[i] & ~better);
      cls_p[i] = (ci & better) | (cls_p[i] & ~better);
    }
  }
  std::vector<Candidate> cands;
  if (a.multi_label) {
    for (int64_t c = 0; c < nc; ++c) {
      if (a.class_mask && !a.class_mask[c]) continue;
      const float* row = p + (4 + c) * A;
      for (int64_t i = 0; i < A; ++i)
        if (row[i] > a.conf && !nan_p[i]) cands.push_back({row[i], i * nc + c});
    }
    return cands;
  }
  for (int64_t i = 0; i < A; ++i) {
    const float best = bits_to_float(best_p[i]);
    if (nan_p[i] || !(best > a.conf)) continue;
    if (a.class_mask && !a.class_mask[cls_p[i]]) continue;
    cands.push_back({best, i * nc + cls_p[i]});
  }
  return cands;
}

// Greedy NMS of one image; writes up to max_det rows of `out` and returns their count.
int64_t postprocess_image(const float* p, const PostprocessArgs& a, float* out) {
  std::vector<Candidate> cands = image_candidates(p, a);
  RankedCandidates ranked(cands, a.max_nms, 4 * a.max_det);
  KeptBoxes kept(a.iou);
  const int64_t A = a.anchors;
  int64_t count = 0;
  Candidate c;
  while (count < a.max_det && ranked.next(c)) {
    const int64_t anchor = c.key / a.nc, k = c.key % a.nc;
    // xywh -> xyxy exactly as yolov9k.ops.boxes.xywh2xyxy.
    const float x = p[anchor], y = p[A + anchor], hw = p[2 * A + anchor] / 2, hh = p[3 * A + anchor] / 2;
    const float x1 = x - hw, y1 = y - hh, x2 = x + hw, y2 = y + hh;
    const float off = a.agnostic ? 0.f : static_cast<float>(k) * kMaxWH;
    if (!kept.offer(a.agnostic ? 0 : k, make_box(x1 + off, y1 + off, x2 + off, y2 + off))) continue;
    float* row = out + 6 * count++;
    row[0] = x1, row[1] = y1, row[2] = x2, row[3] = y2, row[4] = c.score, row[5] = static_cast<float>(k);
  }
  return count;
}

std::tuple<at::Tensor, at::Tensor> postprocess_cpu(const at::Tensor& pred, double conf_thres, double iou_thres,
                                                   int64_t max_det, int64_t max_nms, bool multi_label,
                                                   bool agnostic, const c10::optional<at::Tensor>& class_mask) {
  check_postprocess_args(pred, conf_thres, iou_thres, max_det, max_nms, class_mask);
  TORCH_CHECK(pred.device().is_cpu(), "yolov9k::postprocess (CPU kernel): expected a CPU tensor");
  const auto x = pred.to(at::kFloat).contiguous();
  const int64_t batch = x.size(0), channels = x.size(1), anchors = x.size(2), nc = channels - 4;
  at::Tensor mask;
  if (class_mask.has_value()) mask = class_mask->contiguous();

  PostprocessArgs args{nc, anchors, max_det, max_nms, static_cast<float>(conf_thres), iou_thres,
                       multi_label && nc > 1, agnostic, mask.defined() ? mask.data_ptr<bool>() : nullptr};
  auto dets = at::zeros({batch, max_det, 6}, x.options());
  auto counts = at::zeros({batch}, x.options().dtype(at::kLong));
  const float* xp = x.data_ptr<float>();
  float* dp = dets.data_ptr<float>();
  int64_t* cp = counts.data_ptr<int64_t>();
  at::parallel_for(0, batch, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b)
      cp[b] = postprocess_image(xp + b * channels * anchors, args, dp + b * max_det * 6);
  });
  return {dets, counts};
}

}  // namespace

TORCH_LIBRARY_IMPL(yolov9k, CPU, m) {
  m.impl("batched_nms", &batched_nms_cpu);
  m.impl("postprocess", &postprocess_cpu);
}

}  // namespace yolov9k
