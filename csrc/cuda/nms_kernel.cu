// CUDA kernels of yolov9k::postprocess and yolov9k::batched_nms.
//
// postprocess: the whole batch in one launch sequence, fixed-size outputs, no device->host
// synchronisation, so the op can be captured in a CUDA graph.
//
//   1. gather_candidates   one thread per (image, anchor): NaN check, best class / all classes
//                          above conf_thres, written as 64-bit sort keys into the image's segment.
//   2. segment_ends        end offset of each image's segment (= its candidate count).
//   3. cub segmented radix sort of the keys: rank order per image (score desc, then anchor, class).
//   4. greedy_nms          one block per image, candidates in tiles of 256: each thread tests its
//                          candidate against the boxes kept so far, builds its row of the tile's
//                          IoU bitmask (4 x 64-bit words), then one thread resolves the tile in
//                          order; stops as soon as max_det boxes are kept.
//
// batched_nms (one set of boxes): rank keys (score descending, -0 as +0, then index; NaN last),
// a cub radix sort, then the same tiled greedy NMS in one block with the kept boxes in global
// memory. Its result has a data-dependent length, so it ends with one device->host read (the
// count), as torchvision's nms does.
//
// Float arithmetic uses the _rn intrinsics so nvcc cannot contract it into FMAs: results are bit
// identical to the CPU kernel and the PyTorch reference (yolov9k/ops/nms.py).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>
#include <cub/cub.cuh>
#include <tuple>

namespace yolov9k {
namespace {

constexpr int kTile = 256;              // candidates per NMS tile = threads per NMS block
constexpr int kWords = kTile / 64;      // 64-bit words per bitmask row
constexpr int kGatherThreads = 256;
constexpr float kMaxWH = 7680.f;        // px, the official per-class coordinate offset

// Sort key: ascending order = score descending, then candidate id (anchor * nc + class) ascending.
// Scores are > conf_thres >= 0, so their IEEE bits order like the values.
__device__ __forceinline__ uint64_t make_key(float score, uint32_t id) {
  return (static_cast<uint64_t>(~__float_as_uint(score)) << 32) | id;
}
__device__ __forceinline__ float key_score(uint64_t key) {
  return __uint_as_float(~static_cast<uint32_t>(key >> 32));
}
__device__ __forceinline__ uint32_t key_id(uint64_t key) { return static_cast<uint32_t>(key); }

__global__ void gather_candidates(const float* __restrict__ pred, int64_t anchors, int nc, float conf,
                                  bool multi_label, const bool* __restrict__ class_mask, int64_t capacity,
                                  int* __restrict__ counts, uint64_t* __restrict__ keys) {
  const int b = blockIdx.y;
  const int64_t a = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (a >= anchors) return;
  const float* scores = pred + (static_cast<int64_t>(b) * (4 + nc) + 4) * anchors + a;  // stride: anchors
  float best = scores[0];
  int best_cls = 0, above = 0;
  for (int c = 0; c < nc; ++c) {
    const float s = scores[c * anchors];
    if (isnan(s)) return;  // the official amax(1) > conf drops the whole anchor
    if (s > best) best = s, best_cls = c;
    above += s > conf && (class_mask == nullptr || class_mask[c]);
  }
  uint64_t* out = keys + b * capacity;
  if (!multi_label) {
    if (best > conf && (class_mask == nullptr || class_mask[best_cls]))
      out[atomicAdd(&counts[b], 1)] = make_key(best, static_cast<uint32_t>(a * nc + best_cls));
    return;
  }
  if (above == 0) return;
  int slot = atomicAdd(&counts[b], above);  // one reservation per anchor
  for (int c = 0; c < nc; ++c) {
    const float s = scores[c * anchors];
    if (s > conf && (class_mask == nullptr || class_mask[c]))
      out[slot++] = make_key(s, static_cast<uint32_t>(a * nc + c));
  }
}

__global__ void segment_ends(const int* __restrict__ counts, int batch, int64_t capacity, int* __restrict__ begin,
                             int* __restrict__ end) {
  const int b = blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= batch) return;
  begin[b] = static_cast<int>(b * capacity);
  end[b] = static_cast<int>(b * capacity + counts[b]);
}

template <typename Group>
struct DevBoxT {
  float x1, y1, x2, y2, area;
  Group group;
};
using DevBox = DevBoxT<int>;        // postprocess: class id
using DevBox64 = DevBoxT<int64_t>;  // batched_nms: the caller's idxs

template <typename Group>
__device__ __forceinline__ DevBoxT<Group> make_box(float x1, float y1, float x2, float y2, Group group) {
  return {x1, y1, x2, y2, __fmul_rn(__fsub_rn(x2, x1), __fsub_rn(y2, y1)), group};
}

// IoU(a, b) > threshold for boxes of one group; IoU as yolov9k.ops.box_iou (0 when the
// union is not positive, so NaN/inf boxes never suppress), compared in double like torchvision.
template <typename Group>
__device__ __forceinline__ bool suppresses(const DevBoxT<Group>& a, const DevBoxT<Group>& b, double threshold) {
  if (a.group != b.group) return false;
  const float w = fmaxf(__fsub_rn(fminf(a.x2, b.x2), fmaxf(a.x1, b.x1)), 0.f);
  const float h = fmaxf(__fsub_rn(fminf(a.y2, b.y2), fmaxf(a.y1, b.y1)), 0.f);
  const float inter = __fmul_rn(w, h);
  const float uni = __fsub_rn(__fadd_rn(a.area, b.area), inter);
  return uni > 0.f && static_cast<double>(__fdiv_rn(inter, uni)) > threshold;
}

// The two parallel steps of a tile (thread t holds candidate `me` of the tile that starts at rank
// `start`, of n): is `me` still alive after the k_end boxes kept in earlier tiles, and row t of the
// tile's bitmask (the later candidates of the tile that `me` would suppress, all zero when `me` is
// dead).
template <typename Group>
__device__ __forceinline__ bool alive_after_kept(const DevBoxT<Group>* kept, int64_t k_end, const DevBoxT<Group>& me,
                                                 bool valid, double iou_threshold) {
  bool alive = valid;
  for (int64_t k = 0; alive && k < k_end; ++k) alive = !suppresses(kept[k], me, iou_threshold);
  return alive;
}

template <typename Group>
__device__ __forceinline__ void tile_mask_row(const DevBoxT<Group>* tile_box, const DevBoxT<Group>& me, bool alive,
                                              int t, int64_t start, int64_t n, double iou_threshold,
                                              uint64_t* row) {
  for (int w = 0; w < kWords; ++w) {
    uint64_t bits = 0;
    if (alive)
      for (int j = max(w * 64, t + 1); j < (w + 1) * 64 && start + j < n; ++j)
        if (suppresses(me, tile_box[j], iou_threshold)) bits |= 1ull << (j - w * 64);
    row[w] = bits;
  }
}

// Shared memory of one tile of the greedy loop.
template <typename Group>
struct TileSmem {
  uint64_t mask[kTile][kWords];
  DevBoxT<Group> box[kTile];
  bool alive[kTile];
};

// One tile of the greedy NMS, by all kTile threads of the block (the one loop both kernels run).
// Thread t brings candidate `me` (rank start + t of n; `valid` false past the end): each tests it
// against the `num_kept` boxes kept so far and builds its bitmask row, then thread 0 resolves the
// tile in rank order, appending survivors to `kept` up to `limit` and calling keep(j, k) for the
// tile's j-th candidate kept as number k, and finally end_tile(new count). `num_kept` lives in shared
// memory; it is updated by thread 0 and visible to all threads on return.
template <typename Group, typename Count, typename Keep, typename EndTile>
__device__ __forceinline__ void greedy_tile(TileSmem<Group>& tile, DevBoxT<Group>* kept, Count& num_kept,
                                            const DevBoxT<Group>& me, bool valid, int t, int64_t start, int64_t n,
                                            int64_t limit, double iou_threshold, Keep keep, EndTile end_tile) {
  tile.box[t] = me;
  const bool alive = alive_after_kept(kept, num_kept, me, valid, iou_threshold);
  tile.alive[t] = alive;
  __syncthreads();
  tile_mask_row(tile.box, me, alive, t, start, n, iou_threshold, tile.mask[t]);
  __syncthreads();
  if (t == 0) {  // greedy resolution of the tile, in rank order
    uint64_t removed[kWords] = {0, 0, 0, 0};
    Count nk = num_kept;
    for (int j = 0; j < kTile && start + j < n && nk < limit; ++j) {
      if (!tile.alive[j] || (removed[j / 64] >> (j % 64)) & 1) continue;
      for (int w = 0; w < kWords; ++w) removed[w] |= tile.mask[j][w];
      kept[nk] = tile.box[j];
      keep(j, nk++);
    }
    num_kept = nk;
    end_tile(nk);
  }
  __syncthreads();
}

// One block (kTile threads) per image. Dynamic shared memory: the kept boxes (max_det DevBox).
__global__ void __launch_bounds__(kTile)
    greedy_nms(const float* __restrict__ pred, int64_t anchors, int nc, const uint64_t* __restrict__ sorted_keys,
               const int* __restrict__ counts, int64_t capacity, int max_nms, int max_det, double iou_threshold,
               bool agnostic, float* __restrict__ dets, int64_t* __restrict__ det_counts) {
  extern __shared__ DevBox kept[];
  __shared__ TileSmem<int> tile;
  __shared__ int num_kept;

  const int b = blockIdx.x, t = threadIdx.x;
  const float* p = pred + static_cast<int64_t>(b) * (4 + nc) * anchors;
  const uint64_t* keys = sorted_keys + b * capacity;
  const int n = min(counts[b], max_nms);
  float* out = dets + static_cast<int64_t>(b) * max_det * 6;
  if (t == 0) num_kept = 0;
  __syncthreads();

  for (int start = 0; start < n && num_kept < max_det; start += kTile) {
    const int i = start + t;
    const bool valid = i < n;
    DevBox me{};
    if (valid) {
      const uint32_t id = key_id(keys[i]);
      const int64_t a = id / nc;
      const int c = static_cast<int>(id % nc);
      const float hw = __fdiv_rn(p[2 * anchors + a], 2.f), hh = __fdiv_rn(p[3 * anchors + a], 2.f);
      const float x = p[a], y = p[anchors + a];
      const float off = agnostic ? 0.f : __fmul_rn(static_cast<float>(c), kMaxWH);
      me = make_box<int>(__fadd_rn(__fsub_rn(x, hw), off), __fadd_rn(__fsub_rn(y, hh), off),
                         __fadd_rn(__fadd_rn(x, hw), off), __fadd_rn(__fadd_rn(y, hh), off), agnostic ? 0 : c);
    }
    // Output row of a kept candidate: its box without the class offset, recomputed as above.
    auto keep = [&](int j, int k) {
      const uint32_t id = key_id(keys[start + j]);
      const int64_t a = id / nc;
      const float hw = __fdiv_rn(p[2 * anchors + a], 2.f), hh = __fdiv_rn(p[3 * anchors + a], 2.f);
      const float x = p[a], y = p[anchors + a];
      float* row = out + 6 * k;
      row[0] = __fsub_rn(x, hw), row[1] = __fsub_rn(y, hh), row[2] = __fadd_rn(x, hw), row[3] = __fadd_rn(y, hh);
      row[4] = key_score(keys[start + j]);
      row[5] = static_cast<float>(id % nc);
    };
    greedy_tile(tile, kept, num_kept, me, valid, t, start, n, max_det, iou_threshold, keep, [](int) {});
  }
  if (t == 0) det_counts[b] = num_kept;
}

// ---------------------------------------------------------------------------------------------
// batched_nms

constexpr uint32_t kNanRank = 0xFFFFFFFFu;  // high word of the key of a NaN score (sorted last)

// Ascending key order = score descending (-0 ranks as +0), then index ascending; NaN scores last.
__global__ void make_rank_keys(const float* __restrict__ scores, int64_t n, uint64_t* __restrict__ keys) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const float s = __fadd_rn(scores[i], 0.f);  // -0 + 0 = +0
  uint32_t rank = kNanRank;
  if (!isnan(s)) {
    const uint32_t u = __float_as_uint(s);
    const uint32_t ascending = (u & 0x80000000u) ? ~u : (u | 0x80000000u);  // orders like s
    rank = ~ascending;  // never kNanRank: that would need u == 0xFFFFFFFF, a NaN
  }
  keys[i] = (static_cast<uint64_t>(rank) << 32) | static_cast<uint32_t>(i);
}

// One block of kTile threads. kept: room for every box that can be kept (global memory).
__global__ void __launch_bounds__(kTile)
    greedy_nms_single(const float* __restrict__ boxes, const int64_t* __restrict__ groups,
                      const uint64_t* __restrict__ sorted_keys, int64_t n, int64_t max_keep, double iou_threshold,
                      DevBox64* __restrict__ kept, int64_t* __restrict__ keep_idx, int64_t* __restrict__ keep_count) {
  __shared__ TileSmem<int64_t> tile;
  __shared__ int64_t num_kept;
  __shared__ bool done;

  const int t = threadIdx.x;
  if (t == 0) num_kept = 0, done = false;
  __syncthreads();

  const int64_t limit = max_keep < 0 ? n : max_keep;
  for (int64_t start = 0; start < n && !done; start += kTile) {
    const int64_t i = start + t;
    const bool valid = i < n && static_cast<uint32_t>(sorted_keys[i] >> 32) != kNanRank;
    DevBox64 me{};
    if (valid) {
      const int64_t idx = static_cast<uint32_t>(sorted_keys[i]);
      const float* p = boxes + 4 * idx;
      me = make_box<int64_t>(p[0], p[1], p[2], p[3], groups[idx]);
    }
    auto keep = [&](int j, int64_t k) { keep_idx[k] = static_cast<uint32_t>(sorted_keys[start + j]); };
    // NaN scores sort last: a tile that ends in one ends the work.
    auto end_tile = [&](int64_t nk) {
      const int64_t last = min(start + kTile, n) - 1;
      done = nk >= limit || static_cast<uint32_t>(sorted_keys[last] >> 32) == kNanRank;
    };
    greedy_tile(tile, kept, num_kept, me, valid, t, start, n, limit, iou_threshold, keep, end_tile);
  }
  if (t == 0) *keep_count = num_kept;
}

}  // namespace

// boxes: contiguous float32 (N, 4), scores float32 (N), groups int64 (N), all on one CUDA device;
// max_keep < 0: no limit. Argument checks happen in nms_register.cpp.
at::Tensor batched_nms_cuda_impl(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& groups,
                                 double iou_threshold, int64_t max_keep) {
  c10::cuda::CUDAGuard guard(boxes.device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t n = boxes.size(0);
  const auto opts = boxes.options();
  const int64_t cap = max_keep < 0 ? n : std::min(n, max_keep);
  if (cap == 0) return at::empty({0}, opts.dtype(at::kLong));
  TORCH_CHECK(n < (int64_t{1} << 31), "yolov9k::batched_nms (CUDA): at most 2^31 - 1 boxes, got ", n);

  auto keys = at::empty({n}, opts.dtype(at::kLong));
  auto sorted = at::empty({n}, opts.dtype(at::kLong));
  auto* keys_in = reinterpret_cast<uint64_t*>(keys.data_ptr<int64_t>());
  auto* keys_out = reinterpret_cast<uint64_t*>(sorted.data_ptr<int64_t>());
  make_rank_keys<<<(n + kGatherThreads - 1) / kGatherThreads, kGatherThreads, 0, stream>>>(
      scores.data_ptr<float>(), n, keys_in);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  size_t temp_bytes = 0;
  C10_CUDA_CHECK(cub::DeviceRadixSort::SortKeys(nullptr, temp_bytes, keys_in, keys_out, static_cast<int>(n), 0,
                                                64, stream));
  auto temp = at::empty({static_cast<int64_t>(temp_bytes)}, opts.dtype(at::kByte));
  C10_CUDA_CHECK(cub::DeviceRadixSort::SortKeys(temp.data_ptr(), temp_bytes, keys_in, keys_out,
                                                static_cast<int>(n), 0, 64, stream));

  auto kept = at::empty({cap * static_cast<int64_t>(sizeof(DevBox64))}, opts.dtype(at::kByte));
  auto keep_idx = at::empty({cap}, opts.dtype(at::kLong));
  auto count = at::zeros({1}, opts.dtype(at::kLong));
  greedy_nms_single<<<1, kTile, 0, stream>>>(boxes.data_ptr<float>(), groups.data_ptr<int64_t>(), keys_out, n,
                                             max_keep, iou_threshold, reinterpret_cast<DevBox64*>(kept.data_ptr()),
                                             keep_idx.data_ptr<int64_t>(), count.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return keep_idx.narrow(0, 0, count.item<int64_t>());  // the one host sync: the result's length
}

// max_det kept boxes live in dynamic shared memory beside the tile's static shared memory: checked
// against what one block may opt in to on this device, with a one-line error (beside 14608 B of static
// shared memory: max_det <= 9076 on H100/H200, 6346 on A100, 3615 on sm_86/sm_89 cards).
static void check_max_det_fits(int64_t max_det, int device) {
  int optin = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  cudaFuncAttributes attr{};
  C10_CUDA_CHECK(cudaFuncGetAttributes(&attr, greedy_nms));
  const int64_t room = (static_cast<int64_t>(optin) - static_cast<int64_t>(attr.sharedSizeBytes)) /
                       static_cast<int64_t>(sizeof(DevBox));
  TORCH_CHECK(max_det <= room, "yolov9k::postprocess (CUDA): max_det=", max_det, " needs ",
              max_det * static_cast<int64_t>(sizeof(DevBox)) + static_cast<int64_t>(attr.sharedSizeBytes),
              " bytes of shared memory per block, this GPU allows ", optin, ": use max_det <= ", room,
              " here (or the CPU / PyTorch backend)");
}

// pred: contiguous float32 (B, 4 + nc, A) on a CUDA device; class_mask: device bool (nc,) or
// nullptr. Argument checks happen in nms_register.cpp.
std::tuple<at::Tensor, at::Tensor> postprocess_cuda_impl(const at::Tensor& pred, double conf_thres,
                                                         double iou_thres, int64_t max_det, int64_t max_nms,
                                                         bool multi_label, bool agnostic,
                                                         const bool* class_mask) {
  c10::cuda::CUDAGuard guard(pred.device());
  auto stream = c10::cuda::getCurrentCUDAStream();
  const int64_t batch = pred.size(0), nc = pred.size(1) - 4, anchors = pred.size(2);
  multi_label = multi_label && nc > 1;  // as the official code: one class needs no pairs
  const auto opts = pred.options();
  auto dets = at::zeros({batch, max_det, 6}, opts);
  auto det_counts = at::zeros({batch}, opts.dtype(at::kLong));
  if (batch == 0 || anchors == 0) return {dets, det_counts};

  const int64_t capacity = multi_label ? anchors * nc : anchors;
  const int64_t total = batch * capacity;
  TORCH_CHECK(total < (int64_t{1} << 31) && anchors * nc < (int64_t{1} << 32),
              "yolov9k::postprocess (CUDA): batch x anchors x classes too large (", total, " candidate slots)");
  check_max_det_fits(max_det, pred.device().index());

  auto counts = at::zeros({batch}, opts.dtype(at::kInt));
  auto keys = at::empty({total}, opts.dtype(at::kLong));
  auto sorted = at::empty({total}, opts.dtype(at::kLong));
  auto offsets = at::empty({2 * batch}, opts.dtype(at::kInt));
  auto* keys_in = reinterpret_cast<uint64_t*>(keys.data_ptr<int64_t>());
  auto* keys_out = reinterpret_cast<uint64_t*>(sorted.data_ptr<int64_t>());
  int* begin = offsets.data_ptr<int>();
  int* end = begin + batch;

  const dim3 gather_grid((anchors + kGatherThreads - 1) / kGatherThreads, batch);
  gather_candidates<<<gather_grid, kGatherThreads, 0, stream>>>(
      pred.data_ptr<float>(), anchors, static_cast<int>(nc), static_cast<float>(conf_thres), multi_label,
      class_mask, capacity, counts.data_ptr<int>(), keys_in);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  segment_ends<<<(batch + 127) / 128, 128, 0, stream>>>(counts.data_ptr<int>(), static_cast<int>(batch),
                                                        capacity, begin, end);
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  size_t temp_bytes = 0;
  C10_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortKeys(nullptr, temp_bytes, keys_in, keys_out,
                                                         static_cast<int>(total), static_cast<int>(batch), begin,
                                                         end, 0, 64, stream));
  auto temp = at::empty({static_cast<int64_t>(temp_bytes)}, opts.dtype(at::kByte));
  C10_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortKeys(temp.data_ptr(), temp_bytes, keys_in, keys_out,
                                                         static_cast<int>(total), static_cast<int>(batch), begin,
                                                         end, 0, 64, stream));

  const size_t smem = static_cast<size_t>(max_det) * sizeof(DevBox);
  if (smem > 48 * 1024)
    C10_CUDA_CHECK(cudaFuncSetAttribute(greedy_nms, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(smem)));
  greedy_nms<<<batch, kTile, smem, stream>>>(pred.data_ptr<float>(), anchors, static_cast<int>(nc), keys_out,
                                             counts.data_ptr<int>(), capacity,
                                             static_cast<int>(std::min<int64_t>(max_nms, capacity)),
                                             static_cast<int>(max_det), iou_thres, agnostic,
                                             dets.data_ptr<float>(), det_counts.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {dets, det_counts};
}

}  // namespace yolov9k
