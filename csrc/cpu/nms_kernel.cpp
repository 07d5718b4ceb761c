// CPU kernels of yolov9k::batched_nms and yolov9k::postprocess.
//
// Both run the same greedy NMS: candidates are handed out best first (score descending, ties by
// the lower key) and a candidate is kept when no kept box of its group overlaps it with
// IoU > iou_threshold. Because kept boxes come out in rank order, the loop can stop as soon as
// max_det boxes are kept: O(max_det x n) IoU tests, and only the prefix of the order that is
// actually visited gets sorted (RankedCandidates). Images run in parallel (at::parallel_for).
//
// Arithmetic follows yolov9k/ops/nms.py (and so the official code + torchvision) to the bit:
// float32 boxes, IoU = inter / (area_a + area_b - inter) with 0 for a non-positive union, the
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

namespace yolov9k {

// Defined in csrc/nms.cpp (shared with the CUDA registration).
void check_postprocess_args(const at::Tensor& pred, double conf, double iou, int64_t max_det, int64_t max_nms,
                            const c10::optional<at::Tensor>& class_mask);
void check_batched_nms_args(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                            double iou_threshold);

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

// IoU(a, b) > threshold, with IoU defined like yolov9k.ops.boxes.box_iou. NaN/inf coordinates
// give a NaN or infinite union and hence no suppression.
inline bool suppresses(const Box& a, const Box& b, double threshold) {
  const float w = std::max(std::min(a.x2, b.x2) - std::max(a.x1, b.x1), 0.f);
  const float h = std::max(std::min(a.y2, b.y2) - std::max(a.y1, b.y1), 0.f);
  const float inter = w * h;
  const float uni = a.area + b.area - inter;
  return uni > 0.f && static_cast<double>(inter / uni) > threshold;
}

// Boxes kept so far, grouped by class: a candidate is only tested against its own group.
class KeptBoxes {
 public:
  explicit KeptBoxes(double threshold) : threshold_(threshold) {}

  // Keeps `box` unless a kept box of `group` suppresses it; returns whether it was kept.
  bool offer(int64_t group, const Box& box) {
    std::vector<Box>& kept = groups_[group];
    for (const Box& k : kept)
      if (suppresses(k, box, threshold_)) return false;
    kept.push_back(box);
    return true;
  }

 private:
  double threshold_;
  std::unordered_map<int64_t, std::vector<Box>> groups_;
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
