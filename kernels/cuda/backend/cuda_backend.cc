#include "kernels/cuda/backend/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "kernels/cuda/backend/cuda_device.h"
#include "kernels/cuda/backend/cuda_status.h"
#include "kernels/cuda/backend/cuda_support.h"
#include "kernels/cuda/backend/device_backward.h"
#include "kernels/cuda/backend/device_buffer.h"
#include "kernels/cuda/backend/device_kv_cache.h"
#include "kernels/cuda/backend/device_problem.h"
#include "kernels/cuda/backend/device_tensor.h"
#include "kernels/cuda/backend/layer_gradients.h"
#include "kernels/cuda/backend/layer_projections.h"
#include "kernels/cuda/common/expression_args.h"
#include "kernels/cuda/expr/device_expressions.h"
#include "kernels/cuda/expr/expression_module.h"
#include "kernels/cuda/flash/decode.h"
#include "kernels/cuda/flash/flash.h"
#include "kernels/cuda/flash/flash_rtc.h"
#include "kernels/cuda/reference/reference_attention.h"
#include "kernels/cuda/reference/reference_backward.h"
#include "kernels/cuda/unfused/unfused_attention.h"
#include "kernels/cuda/unfused/unfused_backward.h"
#include "kernels/spec/expressions.h"
#include "kernels/spec/inputs.h"
#include "kernels/spec/shapes.h"
#include "kernels/spec/tile_plan.h"

namespace attnbench {
namespace {

using cuda::AttentionArgs;
using cuda::CudaDeviceInfo;
using cuda::CudaDevices;

// Scores of one unfused chunk stay under this, so long sequences run in pieces instead of
// needing S_q x S_kv floats per head at once.
constexpr uint64_t kUnfusedMaxScratchBytes = 2ull << 30;
// cuBLAS workspace, set explicitly so graph capture never makes cuBLAS allocate.
constexpr uint64_t kCublasWorkspaceBytes = 32ull << 20;

using Kind = CudaBackendKind;

// Device `index` as cuda_flash's allow-lists see it.
cuda::flash::FlashDevice FlashDeviceOf(int index) {
  const CudaDeviceInfo& d = CudaDevices()[index];
  return cuda::flash::DeviceOf(d.cc_major, d.cc_minor, d.smem_optin_bytes);
}

// The problem's expressions compiled (through the process-wide cache) and loaded on `device`,
// the current device; null when the problem has none.
absl::StatusOr<std::unique_ptr<cuda::DeviceExpressions>> LoadExpressions(const Problem& problem,
                                                                         int device) {
  absl::StatusOr<std::shared_ptr<const ProblemExpressions>> exprs = CompileExpressions(problem);
  if (!exprs.ok()) return exprs.status();
  if (*exprs == nullptr) return std::unique_ptr<cuda::DeviceExpressions>();
  absl::StatusOr<ProblemShapes> shapes = ShapesOf(problem);
  if (!shapes.ok()) return shapes.status();
  std::vector<int32_t> query_heads, kv_heads;
  for (const HeadPair& p : shapes->heads.map) {
    query_heads.push_back(p.query_head);
    kv_heads.push_back(p.kv_head);
  }
  const CudaDeviceInfo& d = CudaDevices()[device];
  return cuda::DeviceExpressions::Create(
      **exprs, query_heads, kv_heads, problem.seq_len_q, problem.seq_len_kv,
      cuda::ExpressionArch(d.cc_major, d.cc_minor), cuda::SharedExpressionModuleCache());
}

// Enqueues one attention computation; the strategy a backend plugs into the shared workload.
class Kernel {
 public:
  virtual ~Kernel() = default;
  virtual absl::Status Enqueue(const AttentionArgs& args, cudaStream_t stream) = 0;
};

class FlashKernel : public Kernel {
 public:
  ~FlashKernel() override {
    if (library_ != nullptr) cudaLibraryUnload(library_);
  }

  // Builds what the kernel that will run needs beyond the problem's tables: its workspace, and
  // for a block-sparse mask (or a mask_mod) on the Hopper kernel the lists of kept K/V tiles
  // (timed: MaskPreparationSeconds). With client expressions, the kernel itself: compiled with
  // NVRTC for them (flash/flash_rtc.h) on a cache miss, loaded on `device` (the current one).
  static absl::StatusOr<std::unique_ptr<FlashKernel>> Create(const Problem& problem,
                                                             const AttentionArgs& args,
                                                             const cuda::flash::FlashDevice& dev,
                                                             int sms, int device) {
    auto k = std::make_unique<FlashKernel>();
    if (const size_t bytes = cuda::flash::WorkspaceBytes(args, dev); bytes > 0) {
      absl::StatusOr<cuda::DeviceBuffer> ws =
          cuda::DeviceBuffer::Allocate(bytes, "the flash kernel's workspace (RoPE-rotated K)");
      if (!ws.ok()) return ws.status();
      k->workspace_ = *std::move(ws);
    }
    if (problem.score_mod || problem.mask_mod) {
      if (absl::Status s = k->LoadExpressionKernel(problem, args, dev, device); !s.ok()) return s;
    }
    const cuda::flash::ListTiles tiles = cuda::flash::BlockListTiles(args, dev);
    if (tiles.query == 0) return k;
    static_assert(kTilePlanPartial == cuda::kTilePartial, "one partial bit");
    const absl::Time start = absl::Now();
    absl::StatusOr<TilePlan> plan =
        problem.mask_mod ? k->MaskModPlan(problem, args, tiles)
                         : BuildTilePlan(problem, tiles.query, tiles.kv,
                                         static_cast<int>(std::thread::hardware_concurrency()));
    if (!plan.ok()) return plan.status();
    absl::StatusOr<cuda::DeviceBuffer> list = cuda::DeviceBuffer::Upload(
        plan->tiles.data(), plan->tiles.size() * sizeof(int32_t), "the block-sparse tile lists");
    if (!list.ok()) return list.status();
    absl::StatusOr<cuda::DeviceBuffer> offsets = cuda::DeviceBuffer::Upload(
        plan->offsets.data(), plan->offsets.size() * sizeof(int64_t), "the tile list offsets");
    if (!offsets.ok()) return offsets.status();
    k->list_ = *std::move(list);
    k->offsets_ = *std::move(offsets);
    k->lists_per_head_ = plan->per_head;
    AttentionArgs with_lists = args;
    with_lists.block_per_head = plan->per_head;
    const std::vector<int32_t> order = cuda::flash::ItemOrderFor(with_lists, plan->offsets, sms);
    if (!order.empty()) {
      absl::StatusOr<cuda::DeviceBuffer> device_order = cuda::DeviceBuffer::Upload(
          order.data(), order.size() * sizeof(int32_t), "the balanced work-item order");
      if (!device_order.ok()) return device_order.status();
      k->order_ = *std::move(device_order);
      k->order_blocks_ = static_cast<int>(std::min<size_t>(order.size(), sms));
    }
    k->tile_q_ = tiles.query;
    k->tile_kv_ = tiles.kv;
    k->prepare_seconds_ += absl::ToDoubleSeconds(absl::Now() - start);
    return k;
  }

  absl::Status Enqueue(const AttentionArgs& args, cudaStream_t stream) override {
    if (rtc_kernel_ != nullptr) {
      return cuda::CudaStatus(
          cuda::flash::LaunchRtc(rtc_kernel_, instance_, WithLists(args), stream),
          "flash attention launch (compiled with the client expressions)");
    }
    return cuda::CudaStatus(cuda::flash::Launch(WithLists(args), stream), "flash attention launch");
  }

  // args with the workspace, the tile lists and the expression tables this kernel built
  // (unchanged when none).
  AttentionArgs WithLists(AttentionArgs args) const {
    if (workspace_.bytes() > 0) args.workspace = workspace_.get();
    if (tile_q_ > 0) {
      args.block_tiles = list_.as<int32_t>();
      args.block_tile_offsets = offsets_.as<int64_t>();
      args.block_tile_q = tile_q_;
      args.block_tile_kv = tile_kv_;
      // A mask_mod's lists may be per (b, h) over a mask that is not: the kernel then reads them,
      // and the block bitmap, per (b, h) (MaskModPlan copied the bitmap per (b, h)).
      if (lists_per_head_) args.block_per_head = true;
      if (bitmap_per_head_.bytes() > 0) args.block_bitmap = bitmap_per_head_.as<uint8_t>();
    }
    if (order_blocks_ > 0) {
      args.item_order = order_.as<int32_t>();
      args.item_order_blocks = order_blocks_;
    }
    if (expression_args_.bytes() > 0) args.expressions = expression_args_.get();
    return args;
  }
  double prepare_seconds() const { return prepare_seconds_; }
  double expression_compile_seconds() const { return compile_seconds_; }

 private:
  // The kernel compiled with the problem's expressions and what it reads (ExpressionArgs); for
  // a mask_mod on the sm_80 kernel, its tile classes, evaluated on the GPU (timed as mask
  // preparation).
  absl::Status LoadExpressionKernel(const Problem& problem, const AttentionArgs& args,
                                    const cuda::flash::FlashDevice& dev, int device) {
    absl::StatusOr<std::shared_ptr<const ProblemExpressions>> programs =
        CompileExpressions(problem);
    if (!programs.ok()) return programs.status();
    programs_ = *std::move(programs);
    absl::StatusOr<std::unique_ptr<cuda::DeviceExpressions>> exprs =
        LoadExpressions(problem, device);
    if (!exprs.ok()) return exprs.status();
    exprs_ = *std::move(exprs);
    const expr::Program* score = programs_->score_mod ? &*programs_->score_mod : nullptr;
    const expr::Program* mask = programs_->mask_mod ? &*programs_->mask_mod : nullptr;
    instance_ = cuda::flash::RtcInstanceOf(args, cuda::flash::RouteOf(args, dev), score != nullptr,
                                           mask != nullptr);
    if (instance_.route == cuda::flash::FlashRoute::kNone || instance_.tile < 0) {
      return absl::FailedPreconditionError("backend cuda_flash: no kernel runs this problem");
    }
    absl::StatusOr<std::vector<std::string>> dirs = cuda::flash::FlashRtcIncludeDirs();
    if (!dirs.ok()) return dirs.status();
    const std::string arch = cuda::ExpressionArch(dev.cc_major, dev.cc_minor);
    bool hit = false;
    const absl::Time start = absl::Now();
    absl::StatusOr<std::shared_ptr<const cuda::ExpressionModule>> module =
        cuda::SharedExpressionModuleCache().GetProgram(
            cuda::flash::FlashRtcKey(instance_, score, mask, arch),
            [&] { return cuda::flash::FlashRtcProgram(instance_, score, mask, *dirs); },
            "attnbench_flash_expressions", arch, &hit);
    if (!module.ok()) return module.status();
    compile_seconds_ =
        exprs_->compile_seconds() + (hit ? 0 : absl::ToDoubleSeconds(absl::Now() - start));
    module_ = *std::move(module);
    if (module_->compiled.lowered_names.size() != 1) {
      return absl::InternalError("the flash kernel's NVRTC image names no kernel");
    }
    const std::string& cubin = module_->compiled.cubin;
    ATTNBENCH_CUDA_RETURN_IF_ERROR(
        cudaLibraryLoadData(&library_, cubin.data(), nullptr, nullptr, 0, nullptr, nullptr, 0));
    ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaLibraryGetKernel(
        &rtc_kernel_, library_, module_->compiled.lowered_names.front().c_str()));
    ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(reinterpret_cast<const void*>(rtc_kernel_),
                                                        cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                        cuda::flash::RtcSmemBytes(instance_)));

    cuda::ExpressionArgs ea;
    ea.aux = exprs_->aux_table();
    if (mask != nullptr && instance_.route == cuda::flash::FlashRoute::kSm80) {
      const absl::Time classify = absl::Now();
      absl::StatusOr<cuda::DeviceBuffer> tiles =
          ClassifyMaskTiles(*mask, args, &ea.q_tiles, &ea.kv_tiles, &ea.per_head);
      if (!tiles.ok()) return tiles.status();
      mask_tiles_ = *std::move(tiles);
      ea.mask_tiles = mask_tiles_.as<uint8_t>();
      ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
      prepare_seconds_ += absl::ToDoubleSeconds(absl::Now() - classify);
    }
    absl::StatusOr<cuda::DeviceBuffer> ea_buffer =
        cuda::DeviceBuffer::Upload(&ea, sizeof(ea), "the client expressions' kernel arguments");
    if (!ea_buffer.ok()) return ea_buffer.status();
    expression_args_ = *std::move(ea_buffer);
    return absl::OkStatus();
  }

  // The mask_mod's class of every tile of the instance's tiles, on the GPU: per (b, h) when it
  // reads b or a head, else one set for all.
  absl::StatusOr<cuda::DeviceBuffer> ClassifyMaskTiles(const expr::Program& mask,
                                                       const AttentionArgs& args, int64_t* q_tiles,
                                                       int64_t* kv_tiles, int32_t* per_head) {
    const int64_t lists =
        mask.UsesBatch() || mask.UsesHead() ? static_cast<int64_t>(args.batch) * args.heads_out : 1;
    *q_tiles = (args.seq_q + instance_.tile_q - 1) / instance_.tile_q;
    *kv_tiles = (args.seq_kv + instance_.tile_kv - 1) / instance_.tile_kv;
    *per_head = lists > 1 ? 1 : 0;
    absl::StatusOr<cuda::DeviceBuffer> tiles = cuda::DeviceBuffer::Allocate(
        static_cast<size_t>(lists * *q_tiles * *kv_tiles), "the mask_mod's tile classes");
    if (!tiles.ok()) return tiles.status();
    ATTNBENCH_CUDA_RETURN_IF_ERROR(exprs_->ClassifyMaskTiles(instance_.tile_q, instance_.tile_kv,
                                                             lists, tiles->as<uint8_t>(), nullptr));
    return tiles;
  }

  // The Hopper kernel's tile lists under a mask_mod: its classes (GPU) intersected with the mask's
  // own coverage (host). Over a block mask with one bitmap for all, lists per (b, h) need the
  // bitmap per (b, h) too (the kernel indexes both by block_per_head): copied here.
  absl::StatusOr<TilePlan> MaskModPlan(const Problem& problem, const AttentionArgs& args,
                                       const cuda::flash::ListTiles& tiles) {
    const expr::Program& mask = *programs_->mask_mod;
    int64_t q_tiles = 0, kv_tiles = 0;
    int32_t per_head = 0;
    absl::StatusOr<cuda::DeviceBuffer> device_classes =
        ClassifyMaskTiles(mask, args, &q_tiles, &kv_tiles, &per_head);
    if (!device_classes.ok()) return device_classes.status();
    std::vector<uint8_t> classes(device_classes->bytes());
    ATTNBENCH_CUDA_RETURN_IF_ERROR(
        cudaMemcpy(classes.data(), device_classes->get(), classes.size(), cudaMemcpyDeviceToHost));
    const int64_t lists = per_head ? static_cast<int64_t>(args.batch) * args.heads_out : 1;
    absl::StatusOr<TilePlan> plan =
        BuildTilePlanFromClasses(problem, tiles.query, tiles.kv, classes, lists,
                                 static_cast<int>(std::thread::hardware_concurrency()));
    if (!plan.ok()) return plan.status();
    if (plan->per_head && args.mask == cuda::MaskCode::kBlock && !args.block_per_head) {
      const size_t one = static_cast<size_t>(args.block_rows) * args.block_cols;
      const int64_t copies = static_cast<int64_t>(args.batch) * args.heads_out;
      absl::StatusOr<cuda::DeviceBuffer> bitmaps = cuda::DeviceBuffer::Allocate(
          one * copies, "the block bitmap per (batch, head) for the mask_mod's tile lists");
      if (!bitmaps.ok()) return bitmaps.status();
      for (int64_t c = 0; c < copies; ++c) {
        ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaMemcpy(
            bitmaps->as<uint8_t>() + c * one, args.block_bitmap, one, cudaMemcpyDeviceToDevice));
      }
      bitmap_per_head_ = *std::move(bitmaps);
    }
    return plan;
  }

  cuda::DeviceBuffer workspace_, list_, offsets_, order_;
  int order_blocks_ = 0;
  int tile_q_ = 0;
  int tile_kv_ = 0;
  bool lists_per_head_ = false;
  double prepare_seconds_ = 0;
  // Client expressions: the programs, their aux tensors on the device (and the tile classifier),
  // the kernel compiled with them, and its arguments.
  std::shared_ptr<const ProblemExpressions> programs_;
  std::unique_ptr<cuda::DeviceExpressions> exprs_;
  std::shared_ptr<const cuda::ExpressionModule> module_;
  cudaLibrary_t library_ = nullptr;
  cudaKernel_t rtc_kernel_ = nullptr;
  cuda::flash::RtcInstance instance_;
  cuda::DeviceBuffer mask_tiles_, expression_args_, bitmap_per_head_;
  double compile_seconds_ = 0;
};

class ReferenceKernel : public Kernel {
 public:
  // `cache`: a decode problem's paged or quantized cache (DeviceKvCache::Needed), else null.
  explicit ReferenceKernel(std::unique_ptr<cuda::DeviceKvCache> cache = nullptr)
      : cache_(std::move(cache)) {}
  absl::Status Enqueue(const AttentionArgs& args, cudaStream_t stream) override {
    if (cache_ != nullptr) {
      return cuda::CudaStatus(cuda::LaunchReferenceAttentionFromCache(args, cache_->Args(), stream),
                              "reference attention launch (decode cache)");
    }
    return cuda::CudaStatus(cuda::LaunchReferenceAttention(args, stream),
                            "reference attention launch");
  }

 private:
  std::unique_ptr<cuda::DeviceKvCache> cache_;
};

// cuda_flash's decode kernel (flash/decode.h) over the problem's cache as stored: native rows in
// the dtype, paged or not, quantized ranges as they are (DeviceKvCache, built once in Prepare like
// cuda_reference's, so both read the same bytes), with the split plan for this device.
class DecodeKernel : public Kernel {
 public:
  static absl::StatusOr<std::unique_ptr<DecodeKernel>> Create(const Problem& problem,
                                                              const ProblemShapes& shapes,
                                                              const AttentionInputs& inputs,
                                                              const AttentionArgs& args, int sms) {
    auto k = std::make_unique<DecodeKernel>();
    absl::StatusOr<std::unique_ptr<cuda::DeviceKvCache>> cache = cuda::DeviceKvCache::Create(
        problem, shapes, inputs, cuda::DeviceKvCache::NativeRows::kStorage);
    if (!cache.ok()) return cache.status();
    k->cache_ = *std::move(cache);
    k->plan_ = cuda::flash::PlanDecode(args, KvHeadsOfOutputs(shapes), sms,
                                       cuda::flash::DecodeBlocksPerSm(args));
    if (const size_t bytes = cuda::flash::DecodeWorkspaceBytes(args, k->plan_); bytes > 0) {
      absl::StatusOr<cuda::DeviceBuffer> ws =
          cuda::DeviceBuffer::Allocate(bytes, "the decode kernel's split outputs");
      if (!ws.ok()) return ws.status();
      k->workspace_ = *std::move(ws);
    }
    return k;
  }

  // Device bytes Create allocates beyond the problem's own, for a problem UsesFlashDecode takes
  // (the split outputs at the most splits any plan makes).
  static uint64_t EstimateBytes(const Problem& problem, const ProblemShapes& shapes) {
    const AttentionArgs args = cuda::ShapeArgs(problem, shapes);
    cuda::flash::DecodePlan most;
    most.splits = cuda::flash::kDecodeMaxSplits;
    return cuda::DeviceKvCache::EstimateBytes(problem, shapes) +
           cuda::flash::DecodeWorkspaceBytes(args, most);
  }

  absl::Status Enqueue(const AttentionArgs& args, cudaStream_t stream) override {
    return cuda::CudaStatus(
        cuda::flash::LaunchDecode(args, cache_->Args(), plan_, workspace_.get(), stream),
        "flash decode launch");
  }

  // e.g. "decode split-kv D=128 rows/tile=16 splits=33 keys/split=1024".
  std::string Name(const AttentionArgs& args) const {
    return absl::StrCat("decode split-kv D=", args.dim_qk, " rows/tile=", cuda::flash::kDecodeRowTile,
                        " row_tiles=", plan_.row_tiles, " splits=", plan_.splits,
                        " keys/split=", plan_.split_tokens);
  }

 private:
  static std::vector<int32_t> KvHeadsOfOutputs(const ProblemShapes& shapes) {
    std::vector<int32_t> kv;
    for (const HeadPair& p : shapes.heads.map) kv.push_back(p.kv_head);
    return kv;
  }

  std::unique_ptr<cuda::DeviceKvCache> cache_;
  cuda::flash::DecodePlan plan_;
  cuda::DeviceBuffer workspace_;
};

// A PHASE_BACKWARD kernel. What an iteration enqueues follows Problem::training_step: the forward
// keeping what the backward starts from (the log-sum-exp in state().Args(), and O), then the
// backward (a training step); or the backward alone, after EnqueueForward ran once outside the
// timed region (CudaWorkload::ForwardOnce).
class BackwardKernel : public Kernel {
 public:
  virtual absl::Status EnqueueForward(const AttentionArgs& args, cudaStream_t stream) = 0;
  virtual absl::Status EnqueueBackward(const AttentionArgs& args, cudaStream_t stream) = 0;

  absl::Status Enqueue(const AttentionArgs& args, cudaStream_t stream) override {
    if (training_step_) {
      if (absl::Status s = EnqueueForward(args, stream); !s.ok()) return s;
    }
    return EnqueueBackward(args, stream);
  }

  bool training_step() const { return training_step_; }
  const cuda::DeviceBackward& state() const { return *state_; }
  // What Workload::Gradients returns once the stream has passed an Enqueue.
  virtual absl::StatusOr<GradientTensors> DownloadGradients() const {
    return state_->DownloadGradients();
  }

 protected:
  // dO, the saved forward, the gradients and the inverted head map on the current device.
  absl::Status InitState(const Problem& problem, const ProblemShapes& shapes,
                         const AttentionInputs& inputs) {
    absl::StatusOr<std::unique_ptr<cuda::DeviceBackward>> state =
        cuda::DeviceBackward::Create(problem, shapes, inputs);
    if (!state.ok()) return state.status();
    state_ = *std::move(state);
    training_step_ = problem.training_step;
    return absl::OkStatus();
  }

  std::unique_ptr<cuda::DeviceBackward> state_;
  bool training_step_ = false;
};

// cuda_reference's PHASE_BACKWARD: its forward keeps O in float32 and the log-sum-exp; the
// backward reads both (D = <dO, O>).
class ReferenceBackwardKernel : public BackwardKernel {
 public:
  static absl::StatusOr<std::unique_ptr<ReferenceBackwardKernel>> Create(
      const Problem& problem, const AttentionInputs& inputs) {
    absl::StatusOr<ProblemShapes> shapes = ShapesOf(problem);
    if (!shapes.ok()) return shapes.status();
    auto k = std::make_unique<ReferenceBackwardKernel>();
    if (absl::Status s = k->InitState(problem, *shapes, inputs); !s.ok()) return s;
    return k;
  }

  absl::Status EnqueueForward(const AttentionArgs& args, cudaStream_t stream) override {
    const cuda::BackwardArgs& g = state_->Args();
    return cuda::CudaStatus(cuda::LaunchReferenceAttentionSaving(args, g.out, g.lse, stream),
                            "reference attention launch (keeping the log-sum-exp)");
  }

  absl::Status EnqueueBackward(const AttentionArgs& args, cudaStream_t stream) override {
    return cuda::CudaStatus(cuda::LaunchReferenceBackward(args, state_->Args(), stream),
                            "reference backward launch");
  }
};

// cuda_flash's PHASE_BACKWARD (flash.h LaunchBackward): its forward is the mma.sync kernel's saving
// build (O to the output as usual, and the log-sum-exp and O in float32 for the backward), then
// the fused backward with its float32 dQ accumulator, allocated here (counted by EstimateBytes).
class FlashBackwardKernel : public BackwardKernel {
 public:
  static absl::StatusOr<std::unique_ptr<FlashBackwardKernel>> Create(
      const Problem& problem, const AttentionInputs& inputs) {
    absl::StatusOr<ProblemShapes> shapes = ShapesOf(problem);
    if (!shapes.ok()) return shapes.status();
    auto k = std::make_unique<FlashBackwardKernel>();
    if (absl::Status s = k->InitState(problem, *shapes, inputs); !s.ok()) return s;
    absl::StatusOr<cuda::DeviceBuffer> acc = cuda::DeviceBuffer::Allocate(
        cuda::flash::BackwardWorkspaceBytes(cuda::ShapeArgs(problem, *shapes)),
        "the flash backward's float32 dQ accumulator");
    if (!acc.ok()) return acc.status();
    k->dq_accum_ = *std::move(acc);
    return k;
  }

  absl::Status EnqueueForward(const AttentionArgs& args, cudaStream_t stream) override {
    return cuda::CudaStatus(cuda::flash::LaunchForwardSaving(args, state_->Args(), stream),
                            "flash attention launch (keeping the log-sum-exp)");
  }

  absl::Status EnqueueBackward(const AttentionArgs& args, cudaStream_t stream) override {
    return cuda::CudaStatus(
        cuda::flash::LaunchBackward(args, state_->Args(), dq_accum_.get(), stream),
        "flash backward launch");
  }

 private:
  cuda::DeviceBuffer dq_accum_;
};

// A cuBLAS handle bound to the workload's stream, with a workspace of its own (set explicitly so
// that graph capture never makes cuBLAS allocate).
class CublasSession {
 public:
  CublasSession() = default;
  CublasSession(const CublasSession&) = delete;
  CublasSession& operator=(const CublasSession&) = delete;
  ~CublasSession() {
    if (handle_ != nullptr) cublasDestroy(handle_);
  }

  absl::Status Init(cudaStream_t stream) {
    if (absl::Status s = cuda::CublasStatus(cublasCreate(&handle_), "cublasCreate"); !s.ok()) {
      handle_ = nullptr;
      return s;
    }
    absl::StatusOr<cuda::DeviceBuffer> ws =
        cuda::DeviceBuffer::Allocate(kCublasWorkspaceBytes, "the cuBLAS workspace");
    if (!ws.ok()) return ws.status();
    workspace_ = *std::move(ws);
    if (absl::Status s = cuda::CublasStatus(cublasSetStream(handle_, stream), "cublasSetStream");
        !s.ok()) {
      return s;
    }
    return cuda::CublasStatus(cublasSetWorkspace(handle_, workspace_.get(), workspace_.bytes()),
                              "cublasSetWorkspace");
  }

  cublasHandle_t handle() const { return handle_; }

 private:
  cublasHandle_t handle_ = nullptr;
  cuda::DeviceBuffer workspace_;
};

// The output heads of `shapes` in the unfused backward's rounds.
cuda::UnfusedHeadRounds UnfusedRoundsOf(const ProblemShapes& shapes) {
  std::vector<int32_t> query_heads, kv_heads;
  for (const HeadPair& p : shapes.heads.map) {
    query_heads.push_back(p.query_head);
    kv_heads.push_back(p.kv_head);
  }
  return cuda::UnfusedBackward::HeadRounds(query_heads, kv_heads);
}

// Device scratch of cuda_unfused beside its cuBLAS workspace: the forward's; for a backward one
// buffer that the forward and then the backward use in turn (the larger of the two). EstimateBytes
// and UnfusedBackwardKernel::Create both size it here; a backward also uploads its rounds' heads
// (UnfusedRoundTableBytes).
uint64_t UnfusedScratchBytes(const Problem& problem, const ProblemShapes& shapes) {
  const AttentionArgs args = cuda::ShapeArgs(problem, shapes);
  const uint64_t forward = cuda::UnfusedAttention::ScratchBytes(args, kUnfusedMaxScratchBytes);
  if (problem.phase != Phase::kBackward) return forward;
  const uint64_t backward =
      cuda::UnfusedBackward::ScratchBytes(args, UnfusedRoundsOf(shapes), kUnfusedMaxScratchBytes);
  return std::max(forward, backward);
}
uint64_t UnfusedRoundTableBytes(const ProblemShapes& shapes) {
  return static_cast<uint64_t>(shapes.heads.map.size()) * sizeof(int32_t);
}

// cuda_unfused's PHASE_BACKWARD: its own forward (cuBLAS and the softmax kernel) keeping the
// log-sum-exp, then the cuBLAS backward of unfused_backward.h, which needs no O (D = sum P dP), on
// one scratch buffer.
class UnfusedBackwardKernel : public BackwardKernel {
 public:
  static absl::StatusOr<std::unique_ptr<UnfusedBackwardKernel>> Create(
      const Problem& problem, const AttentionInputs& inputs, cudaStream_t stream) {
    absl::StatusOr<ProblemShapes> shapes = ShapesOf(problem);
    if (!shapes.ok()) return shapes.status();
    auto k = std::make_unique<UnfusedBackwardKernel>();
    if (absl::Status s = k->InitState(problem, *shapes, inputs); !s.ok()) return s;
    if (absl::Status s = k->cublas_.Init(stream); !s.ok()) return s;
    k->rounds_ = UnfusedRoundsOf(*shapes);
    absl::StatusOr<cuda::DeviceBuffer> heads =
        cuda::DeviceBuffer::Upload(k->rounds_.heads.data(), UnfusedRoundTableBytes(*shapes),
                                   "the unfused backward's head rounds");
    if (!heads.ok()) return heads.status();
    k->round_heads_ = *std::move(heads);
    absl::StatusOr<cuda::DeviceBuffer> scratch = cuda::DeviceBuffer::Allocate(
        UnfusedScratchBytes(problem, *shapes), "the unfused backward's scratch");
    if (!scratch.ok()) return scratch.status();
    k->scratch_ = *std::move(scratch);
    return k;
  }

  absl::Status EnqueueForward(const AttentionArgs& args, cudaStream_t stream) override {
    return cuda::UnfusedAttention::Run(args, cublas_.handle(), scratch_.get(), scratch_.bytes(),
                                       kUnfusedMaxScratchBytes, stream, /*expressions=*/nullptr,
                                       state_->Args().lse);
  }

  absl::Status EnqueueBackward(const AttentionArgs& args, cudaStream_t stream) override {
    return cuda::UnfusedBackward::Run(args, state_->Args(), rounds_, round_heads_.as<int32_t>(),
                                      cublas_.handle(), scratch_.get(), scratch_.bytes(),
                                      kUnfusedMaxScratchBytes, stream);
  }

 private:
  CublasSession cublas_;
  cuda::UnfusedHeadRounds rounds_;
  cuda::DeviceBuffer round_heads_, scratch_;
};

class UnfusedKernel : public Kernel {
 public:
  // `expressions`: the problem's score_mod / mask_mod loaded on this device, or null.
  static absl::StatusOr<std::unique_ptr<UnfusedKernel>> Create(
      const AttentionArgs& args, cudaStream_t stream,
      std::unique_ptr<cuda::DeviceExpressions> expressions) {
    auto k = std::make_unique<UnfusedKernel>();
    k->expressions_ = std::move(expressions);
    if (absl::Status s = k->cublas_.Init(stream); !s.ok()) return s;
    absl::StatusOr<cuda::DeviceBuffer> scratch = cuda::DeviceBuffer::Allocate(
        cuda::UnfusedAttention::ScratchBytes(args, kUnfusedMaxScratchBytes),
        "the unfused score scratch");
    if (!scratch.ok()) return scratch.status();
    k->scratch_ = *std::move(scratch);
    return k;
  }
  absl::Status Enqueue(const AttentionArgs& args, cudaStream_t stream) override {
    return cuda::UnfusedAttention::Run(args, cublas_.handle(), scratch_.get(), scratch_.bytes(),
                                       kUnfusedMaxScratchBytes, stream, expressions_.get());
  }
  double expression_compile_seconds() const {
    return expressions_ != nullptr ? expressions_->compile_seconds() : 0;
  }

 private:
  CublasSession cublas_;
  cuda::DeviceBuffer scratch_;
  // Outlives every graph that launches its kernels: the workload destroys graphs first.
  std::unique_ptr<cuda::DeviceExpressions> expressions_;
};

// Events between the parts of one layer iteration, so that its time splits into projections and
// core (LayerSplit). Nothing is recorded while the stream is being captured: a replayed graph has
// no split.
class LayerSplitEvents {
 public:
  enum class Part { kProjections, kCore };

  LayerSplitEvents() = default;
  LayerSplitEvents(const LayerSplitEvents&) = delete;
  LayerSplitEvents& operator=(const LayerSplitEvents&) = delete;
  ~LayerSplitEvents() {
    for (cudaEvent_t e : events_) {
      if (e != nullptr) cudaEventDestroy(e);
    }
  }

  // Room for iterations of up to `parts` parts.
  absl::Status Init(int parts) {
    events_.assign(parts + 1, nullptr);
    for (cudaEvent_t& e : events_) ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaEventCreate(&e));
    return absl::OkStatus();
  }

  // Starts recording an iteration on `stream`, unless the stream is being captured.
  absl::Status Start(cudaStream_t stream) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaStreamIsCapturing(stream, &capture));
    ready_ = false;
    parts_.clear();
    recording_ = capture == cudaStreamCaptureStatusNone;
    if (recording_) ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaEventRecord(events_[0], stream));
    return absl::OkStatus();
  }

  // Ends the part begun at the previous mark (or Start) as `part`; nothing outside Start-Finish.
  absl::Status Mark(cudaStream_t stream, Part part) {
    if (!recording_) return absl::OkStatus();
    if (parts_.size() + 1 >= events_.size()) {
      return absl::InternalError("a layer iteration has more parts than its split events");
    }
    parts_.push_back(part);
    ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaEventRecord(events_[parts_.size()], stream));
    return absl::OkStatus();
  }

  void Finish() {
    ready_ = recording_;
    recording_ = false;
  }

  // The split of the last finished iteration once the stream has passed it; nullopt after a
  // capture.
  std::optional<LayerSplit> Last() const {
    if (!ready_) return std::nullopt;
    LayerSplit split{0, 0};
    for (size_t k = 0; k < parts_.size(); ++k) {
      float ms = 0;
      if (cudaEventElapsedTime(&ms, events_[k], events_[k + 1]) != cudaSuccess) {
        cudaGetLastError();  // not sticky: leave the next call a clean slate
        return std::nullopt;
      }
      (parts_[k] == Part::kCore ? split.core_seconds : split.projections_seconds) += ms * 1e-3;
    }
    return split;
  }

 private:
  std::vector<cudaEvent_t> events_;
  std::vector<Part> parts_;  // of the iteration recorded last
  bool recording_ = false;
  bool ready_ = false;
};

using Part = LayerSplitEvents::Part;

// SCOPE_LAYER around any forward kernel (§6): the input projections, the core, the output
// projection (layer_projections.h), split by LayerSplitEvents.
class LayerKernel : public Kernel {
 public:
  static absl::StatusOr<std::unique_ptr<LayerKernel>> Create(std::unique_ptr<Kernel> core,
                                                             const cuda::LayerBuffers& buffers,
                                                             cudaStream_t stream) {
    auto k = std::unique_ptr<LayerKernel>(new LayerKernel(std::move(core), buffers));
    if (absl::Status s = k->split_.Init(3); !s.ok()) return s;
    if (absl::Status s = k->cublas_.Init(stream); !s.ok()) return s;
    return k;
  }

  absl::Status Enqueue(const AttentionArgs& args, cudaStream_t stream) override {
    if (absl::Status s = split_.Start(stream); !s.ok()) return s;
    if (absl::Status s = cuda::EnqueueInputProjections(buffers_, cublas_.handle()); !s.ok()) {
      return s;
    }
    if (absl::Status s = split_.Mark(stream, Part::kProjections); !s.ok()) return s;
    if (absl::Status s = core_->Enqueue(args, stream); !s.ok()) return s;
    if (absl::Status s = split_.Mark(stream, Part::kCore); !s.ok()) return s;
    if (absl::Status s = cuda::EnqueueOutputProjection(buffers_, cublas_.handle()); !s.ok()) {
      return s;
    }
    if (absl::Status s = split_.Mark(stream, Part::kProjections); !s.ok()) return s;
    split_.Finish();
    return absl::OkStatus();
  }

  const LayerSplitEvents& split() const { return split_; }

 private:
  LayerKernel(std::unique_ptr<Kernel> core, const cuda::LayerBuffers& buffers)
      : core_(std::move(core)), buffers_(buffers) {}

  std::unique_ptr<Kernel> core_;
  const cuda::LayerBuffers buffers_;
  CublasSession cublas_;
  LayerSplitEvents split_;
};

// SCOPE_LAYER's PHASE_BACKWARD around any backward kernel (§5, §6; layer_gradients.h). The forward
// is the layer's: input projections, the core's forward keeping what its backward reads, the
// output projection. The backward: dW_o and dO (into the core's dO), the core's backward, then the
// weight gradients and dX from the core's dQ, dK, dV. An iteration follows Problem::training_step
// as any BackwardKernel's, split between products and core by LayerSplitEvents.
class LayerBackwardKernel : public BackwardKernel {
 public:
  // `core` made for the layer's core problem with a dO it leaves to this kernel; `problem`,
  // `shapes` and `inputs` the layer's (dY from inputs.grad_output).
  static absl::StatusOr<std::unique_ptr<LayerBackwardKernel>> Create(
      std::unique_ptr<BackwardKernel> core, const cuda::LayerBuffers& layer, const Problem& problem,
      const ProblemShapes& shapes, const AttentionInputs& inputs, cudaStream_t stream) {
    auto k = std::unique_ptr<LayerBackwardKernel>(new LayerBackwardKernel(std::move(core)));
    k->training_step_ = problem.training_step;
    k->dtype_ = problem.dtype;
    k->shapes_ = shapes;
    if (absl::Status s = k->split_.Init(6); !s.ok()) return s;
    if (absl::Status s = k->cublas_.Init(stream); !s.ok()) return s;
    if (inputs.grad_output.shape != shapes.x) {
      return absl::InternalError("the layer backward's dY does not have the shape of Y");
    }
    const std::string dy = EncodeTensor(inputs.grad_output);
    absl::StatusOr<cuda::DeviceBuffer> b =
        cuda::DeviceBuffer::Upload(dy.data(), dy.size(), "the layer's output gradient dY");
    if (!b.ok()) return b.status();
    k->dy_ = *std::move(b);

    const uint64_t e = static_cast<uint64_t>(cuda::StorageBytes(layer.storage));
    const uint64_t concat = static_cast<uint64_t>(cuda::ConcatWidth(layer));
    const uint64_t tokens = static_cast<uint64_t>(layer.tokens);
    const uint64_t d_model = static_cast<uint64_t>(layer.d_model);
    b = cuda::DeviceBuffer::Allocate(concat * d_model * e, "the layer's [W_q W_k W_v]");
    if (!b.ok()) return b.status();
    k->w_concat_ = *std::move(b);
    b = cuda::DeviceBuffer::Allocate(concat * tokens * e, "the layer's [dQ dK dV]");
    if (!b.ok()) return b.status();
    k->grad_concat_ = *std::move(b);
    b = cuda::AllocateNaN(tokens * d_model * e, "the layer's input gradient dX");
    if (!b.ok()) return b.status();
    k->dx_ = *std::move(b);
    b = cuda::AllocateNaN(concat * d_model * e, "the layer's dW_q, dW_k and dW_v");
    if (!b.ok()) return b.status();
    k->dw_qkv_ = *std::move(b);
    b = cuda::AllocateNaN(static_cast<uint64_t>(layer.width_o) * d_model * e,
                          "the layer's output weight gradient dW_o");
    if (!b.ok()) return b.status();
    k->dw_o_ = *std::move(b);
    if (absl::Status s = cuda::ConcatenateWeights(layer, k->w_concat_.get(), stream); !s.ok()) {
      return s;
    }
    ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));

    cuda::LayerGradientBuffers& g = k->grads_;
    g.layer = layer;
    g.grad_output = k->dy_.get();
    const cuda::DeviceBackward& core_state = k->core_->state();
    g.grad_core_output = core_state.GradOutput();
    g.grad_projected[0] = core_state.Args().dq;
    g.grad_projected[1] = core_state.Args().dk;
    g.grad_projected[2] = core_state.Args().dv;
    g.grad_concat = k->grad_concat_.get();
    g.w_concat = k->w_concat_.get();
    g.dx = k->dx_.get();
    uint64_t column = 0;
    for (int p = 0; p < 3; ++p) {
      // dW_q, dW_k, dW_v one after another, each [d_model, width[p]].
      g.dw[p] = k->dw_qkv_.as<char>() + column * d_model * e;
      column += static_cast<uint64_t>(layer.width[p]);
    }
    g.dw_o = k->dw_o_.get();
    return k;
  }

  absl::Status Enqueue(const AttentionArgs& args, cudaStream_t stream) override {
    if (absl::Status s = split_.Start(stream); !s.ok()) return s;
    if (absl::Status s = BackwardKernel::Enqueue(args, stream); !s.ok()) return s;
    split_.Finish();
    return absl::OkStatus();
  }

  // Outside Enqueue (the untimed forward a backward alone starts from) the marks record nothing.
  absl::Status EnqueueForward(const AttentionArgs& args, cudaStream_t stream) override {
    if (absl::Status s = cuda::EnqueueInputProjections(grads_.layer, cublas_.handle()); !s.ok()) {
      return s;
    }
    if (absl::Status s = split_.Mark(stream, Part::kProjections); !s.ok()) return s;
    if (absl::Status s = core_->EnqueueForward(args, stream); !s.ok()) return s;
    if (absl::Status s = split_.Mark(stream, Part::kCore); !s.ok()) return s;
    if (absl::Status s = cuda::EnqueueOutputProjection(grads_.layer, cublas_.handle()); !s.ok()) {
      return s;
    }
    return split_.Mark(stream, Part::kProjections);
  }

  absl::Status EnqueueBackward(const AttentionArgs& args, cudaStream_t stream) override {
    if (absl::Status s = cuda::EnqueueOutputGradients(grads_, cublas_.handle()); !s.ok()) {
      return s;
    }
    if (absl::Status s = split_.Mark(stream, Part::kProjections); !s.ok()) return s;
    if (absl::Status s = core_->EnqueueBackward(args, stream); !s.ok()) return s;
    if (absl::Status s = split_.Mark(stream, Part::kCore); !s.ok()) return s;
    if (absl::Status s = cuda::EnqueueInputGradients(grads_, cublas_.handle(), stream); !s.ok()) {
      return s;
    }
    return split_.Mark(stream, Part::kProjections);
  }

  absl::StatusOr<GradientTensors> DownloadGradients() const override {
    GradientTensors g;
    struct Slot {
      FloatTensor* into;
      const void* from;
      const Shape* shape;
    };
    const Slot slots[] = {{&g.dx, grads_.dx, &shapes_.x},
                          {&g.dw_q, grads_.dw[0], &shapes_.w_q},
                          {&g.dw_k, grads_.dw[1], &shapes_.w_k},
                          {&g.dw_v, grads_.dw[2], &shapes_.w_v},
                          {&g.dw_o, grads_.dw_o, &shapes_.w_o}};
    for (const Slot& slot : slots) {
      absl::StatusOr<FloatTensor> t = cuda::DownloadTensor(slot.from, *slot.shape, dtype_);
      if (!t.ok()) return t.status();
      *slot.into = *std::move(t);
    }
    return g;
  }

  const LayerSplitEvents& split() const { return split_; }

  // Device bytes Create allocates beside the core's (DeviceBackward's dO among them): dY, [W_q
  // W_k W_v], [dQ dK dV], dX and the weight gradients.
  static uint64_t EstimateBytes(const Problem& problem, const ProblemShapes& s) {
    const uint64_t weights = NumElements(s.w_q) + NumElements(s.w_k) + NumElements(s.w_v);
    const uint64_t concat = NumElements(s.query) + NumElements(s.key) + NumElements(s.value);
    const uint64_t elements = 2 * NumElements(s.x) + 2 * weights + concat + NumElements(s.w_o);
    return elements * DTypeBytes(problem.dtype);
  }

 private:
  explicit LayerBackwardKernel(std::unique_ptr<BackwardKernel> core) : core_(std::move(core)) {}

  std::unique_ptr<BackwardKernel> core_;
  CublasSession cublas_;
  LayerSplitEvents split_;
  DType dtype_ = DType::kUnspecified;
  ProblemShapes shapes_;  // the layer's
  cuda::DeviceBuffer dy_, w_concat_, grad_concat_, dx_, dw_qkv_, dw_o_;
  cuda::LayerGradientBuffers grads_;
};

class CudaWorkload : public Workload {
 public:
  CudaWorkload(int device, AttentionInputs inputs, std::unique_ptr<cuda::DeviceProblem> problem)
      : device_(device), inputs_(std::move(inputs)), problem_(std::move(problem)) {}

  ~CudaWorkload() override {
    cudaSetDevice(device_);
    for (cudaGraphExec_t g : graphs_) {
      if (g != nullptr) cudaGraphExecDestroy(g);
    }
    kernel_.reset();  // its cuBLAS handle is bound to the stream
    if (start_ != nullptr) cudaEventDestroy(start_);
    if (stop_ != nullptr) cudaEventDestroy(stop_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  absl::Status Init(Kind kind, const Problem& problem) {
    kind_ = kind;
    ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaEventCreate(&start_));
    ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaEventCreate(&stop_));
    if (problem.phase == Phase::kBackward && problem_->layer()) return InitLayerBackward(problem);
    switch (kind) {
      case Kind::kFlash: {
        if (problem.phase == Phase::kBackward) {
          absl::StatusOr<std::unique_ptr<BackwardKernel>> k = MakeBackwardKernel(problem, inputs_);
          if (!k.ok()) return k.status();
          backward_ = k->get();
          kernel_ = *std::move(k);
          break;
        }
        if (UsesFlashDecode(problem)) {
          absl::StatusOr<ProblemShapes> shapes = ShapesOf(problem);
          if (!shapes.ok()) return shapes.status();
          absl::StatusOr<std::unique_ptr<DecodeKernel>> k = DecodeKernel::Create(
              problem, *shapes, inputs_, problem_->Args(0),
              CudaDevices()[device_].description.compute_units);
          if (!k.ok()) return k.status();
          decode_ = k->get();
          kernel_ = *std::move(k);
          break;
        }
        // Client expressions are compiled here, in Prepare, so NVRTC never runs inside a timed
        // iteration.
        absl::StatusOr<std::unique_ptr<FlashKernel>> k =
            FlashKernel::Create(problem, problem_->Args(0), FlashDeviceOf(device_),
                                CudaDevices()[device_].description.compute_units, device_);
        if (!k.ok()) return k.status();
        flash_ = k->get();
        expression_compile_seconds_ = (*k)->expression_compile_seconds();
        kernel_ = *std::move(k);
        break;
      }
      case Kind::kReference:
        if (problem.phase == Phase::kBackward) {
          absl::StatusOr<std::unique_ptr<BackwardKernel>> k = MakeBackwardKernel(problem, inputs_);
          if (!k.ok()) return k.status();
          backward_ = k->get();
          kernel_ = *std::move(k);
        } else if (cuda::DeviceKvCache::Needed(problem)) {
          absl::StatusOr<ProblemShapes> shapes = ShapesOf(problem);
          if (!shapes.ok()) return shapes.status();
          absl::StatusOr<std::unique_ptr<cuda::DeviceKvCache>> cache =
              cuda::DeviceKvCache::Create(problem, *shapes, inputs_);
          if (!cache.ok()) return cache.status();
          kernel_ = std::make_unique<ReferenceKernel>(*std::move(cache));
        } else {
          kernel_ = std::make_unique<ReferenceKernel>();
        }
        break;
      case Kind::kUnfused: {
        if (problem.phase == Phase::kBackward) {
          absl::StatusOr<std::unique_ptr<BackwardKernel>> k = MakeBackwardKernel(problem, inputs_);
          if (!k.ok()) return k.status();
          backward_ = k->get();
          kernel_ = *std::move(k);
          break;
        }
        // Compiled here, in Prepare, so NVRTC never runs inside a timed iteration.
        absl::StatusOr<std::unique_ptr<cuda::DeviceExpressions>> exprs =
            LoadExpressions(problem, device_);
        if (!exprs.ok()) return exprs.status();
        absl::StatusOr<std::unique_ptr<UnfusedKernel>> k =
            UnfusedKernel::Create(problem_->Args(0), stream_, *std::move(exprs));
        if (!k.ok()) return k.status();
        expression_compile_seconds_ = (*k)->expression_compile_seconds();
        kernel_ = *std::move(k);
        break;
      }
    }
    if (problem_->layer()) {
      // The core kernel above was made for the core's arguments, which at layer scope read the
      // projections' Q, K, V and write O apart from Y (DeviceProblem).
      absl::StatusOr<std::unique_ptr<LayerKernel>> k =
          LayerKernel::Create(std::move(kernel_), problem_->Layer(), stream_);
      if (!k.ok()) return k.status();
      layer_split_ = &(*k)->split();
      kernel_ = *std::move(k);
    }
    return FinishInit();
  }

  absl::Status BeforeIteration(const IterationOptions& options) override {
    ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
    options_ = options;
    set_ = (set_ + 1) % problem_->num_input_sets();
    if (absl::Status s = ForwardOnce(); !s.ok()) return s;
    if (options.flush_cache) return cuda::FlushL2(device_, stream_);
    return absl::OkStatus();
  }

  absl::StatusOr<double> RunTimed() override {
    ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
    // RunTimed without a BeforeIteration: the forward still stays outside the timed region.
    if (absl::Status s = ForwardOnce(); !s.ok()) return s;
    cudaGraphExec_t graph = nullptr;
    if (options_.use_cuda_graph) {
      absl::StatusOr<cudaGraphExec_t> g = GraphFor(set_);
      if (!g.ok()) return g.status();
      graph = *g;
    }
    ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaEventRecord(start_, stream_));
    if (graph != nullptr) {
      ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(graph, stream_));
    } else if (absl::Status s = kernel_->Enqueue(problem_->Args(set_), stream_); !s.ok()) {
      return s;
    }
    ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaEventRecord(stop_, stream_));
    ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(stop_));
    float ms = 0;
    ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, start_, stop_));
    ran_ = true;
    replayed_ = graph != nullptr;
    return static_cast<double>(ms) * 1e-3;
  }

  std::optional<LayerSplit> LastLayerSplit() const override {
    if (layer_split_ == nullptr || !ran_ || replayed_) return std::nullopt;
    return layer_split_->Last();
  }

  const AttentionInputs& Inputs() const override { return inputs_; }

  absl::StatusOr<FloatTensor> Output() override {
    if (!ran_) return absl::FailedPreconditionError("Output() before any RunTimed()");
    ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
    return problem_->DownloadOutput();
  }

  absl::StatusOr<GradientTensors> Gradients() override {
    if (backward_ == nullptr) return Workload::Gradients();
    if (!ran_) return absl::FailedPreconditionError("Gradients() before any RunTimed()");
    ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
    return backward_->DownloadGradients();
  }

  DeviceDescription Device() const override { return CudaDevices()[device_].description; }
  int CurrentClockMhz() const override { return cuda::SmClockMhz(device_); }
  std::string KernelName() const override {
    switch (kind_) {
      case Kind::kFlash:
        if (decode_ != nullptr) return decode_->Name(problem_->Args(0));
        if (flash_ == nullptr) {  // PHASE_BACKWARD
          return cuda::flash::BackwardKernelName(problem_->Args(0), FlashDeviceOf(device_));
        }
        return cuda::flash::KernelName(flash_->WithLists(problem_->Args(0)),
                                       FlashDeviceOf(device_));
      case Kind::kUnfused:
      case Kind::kReference:
        return "";  // one kernel family each
    }
    return "";
  }
  double MaskPreparationSeconds() const override {
    return flash_ != nullptr ? flash_->prepare_seconds() : 0;
  }
  double ExpressionCompileSeconds() const override { return expression_compile_seconds_; }

 private:
  // The backend's backward kernel for a core-scope backward `problem`. No expressions (the
  // backward allow-lists refuse them) and no tile lists: the backward kernels and their forwards
  // test block masks per tile.
  absl::StatusOr<std::unique_ptr<BackwardKernel>> MakeBackwardKernel(
      const Problem& problem, const AttentionInputs& inputs) {
    switch (kind_) {
      case Kind::kFlash: {
        absl::StatusOr<std::unique_ptr<FlashBackwardKernel>> k =
            FlashBackwardKernel::Create(problem, inputs);
        if (!k.ok()) return k.status();
        return std::unique_ptr<BackwardKernel>(*std::move(k));
      }
      case Kind::kUnfused: {
        absl::StatusOr<std::unique_ptr<UnfusedBackwardKernel>> k =
            UnfusedBackwardKernel::Create(problem, inputs, stream_);
        if (!k.ok()) return k.status();
        return std::unique_ptr<BackwardKernel>(*std::move(k));
      }
      case Kind::kReference: {
        absl::StatusOr<std::unique_ptr<ReferenceBackwardKernel>> k =
            ReferenceBackwardKernel::Create(problem, inputs);
        if (!k.ok()) return k.status();
        return std::unique_ptr<BackwardKernel>(*std::move(k));
      }
    }
    return absl::InternalError("unknown CUDA backend kind");
  }

  // SCOPE_LAYER with PHASE_BACKWARD: the backend's backward kernel for the layer's core, its dO
  // written by the layer (a grad_output of the core output's shape without values), inside a
  // LayerBackwardKernel.
  absl::Status InitLayerBackward(const Problem& problem) {
    const Problem core = CoreProblemOfLayer(problem);
    absl::StatusOr<ProblemShapes> core_shapes = ShapesOf(core);
    if (!core_shapes.ok()) return core_shapes.status();
    absl::StatusOr<ProblemShapes> shapes = ShapesOf(problem);
    if (!shapes.ok()) return shapes.status();
    AttentionInputs core_inputs;
    core_inputs.grad_output.dtype = core.dtype;
    core_inputs.grad_output.shape = core_shapes->core_output;
    absl::StatusOr<std::unique_ptr<BackwardKernel>> k = MakeBackwardKernel(core, core_inputs);
    if (!k.ok()) return k.status();
    absl::StatusOr<std::unique_ptr<LayerBackwardKernel>> layer = LayerBackwardKernel::Create(
        *std::move(k), problem_->Layer(), problem, *shapes, inputs_, stream_);
    if (!layer.ok()) return layer.status();
    layer_split_ = &(*layer)->split();
    backward_ = layer->get();
    kernel_ = *std::move(layer);
    return FinishInit();
  }

  absl::Status FinishInit() {
    graphs_.assign(problem_->num_input_sets(), nullptr);
    if (absl::Status s = problem_->PoisonOutput(); !s.ok()) return s;
    // The poison's cudaMemset may still be queued on the legacy stream, which stream_ (non-
    // blocking) does not wait for; a backward timed alone writes O in its first BeforeIteration.
    ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
    return absl::OkStatus();
  }

  // A backward timed alone starts from the forward's O and log-sum-exp: computed here once,
  // untimed, before the first iteration (every input copy holds the same values, so any will do).
  absl::Status ForwardOnce() {
    if (backward_ == nullptr || backward_->training_step() || forward_done_) {
      return absl::OkStatus();
    }
    if (absl::Status s = backward_->EnqueueForward(problem_->Args(set_), stream_); !s.ok()) {
      return s;
    }
    ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_));
    forward_done_ = true;
    return absl::OkStatus();
  }

  // The graph of one computation on input set `set`, captured on first use.
  absl::StatusOr<cudaGraphExec_t> GraphFor(int set) {
    if (graphs_[set] != nullptr) return graphs_[set];
    ATTNBENCH_CUDA_RETURN_IF_ERROR(
        cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    const absl::Status enqueued = kernel_->Enqueue(problem_->Args(set), stream_);
    cudaGraph_t graph = nullptr;
    const cudaError_t ended = cudaStreamEndCapture(stream_, &graph);
    if (!enqueued.ok()) {
      if (graph != nullptr) cudaGraphDestroy(graph);
      return enqueued;
    }
    ATTNBENCH_CUDA_RETURN_IF_ERROR(ended);
    const cudaError_t made = cudaGraphInstantiate(&graphs_[set], graph, 0);
    cudaGraphDestroy(graph);
    ATTNBENCH_CUDA_RETURN_IF_ERROR(made);
    return graphs_[set];
  }

  const int device_;
  Kind kind_ = Kind::kReference;
  const AttentionInputs inputs_;
  std::unique_ptr<cuda::DeviceProblem> problem_;
  std::unique_ptr<Kernel> kernel_;
  const FlashKernel* flash_ = nullptr;  // kernel_ when it is the flash kernel
  const DecodeKernel* decode_ = nullptr;  // kernel_ when it is the flash decode kernel
  BackwardKernel* backward_ = nullptr;  // kernel_ when the problem is a backward
  // The split events of kernel_ at layer scope (flash_ then lies inside it).
  const LayerSplitEvents* layer_split_ = nullptr;
  bool replayed_ = false;      // the last RunTimed replayed a graph
  bool forward_done_ = false;  // ForwardOnce ran
  cudaStream_t stream_ = nullptr;
  cudaEvent_t start_ = nullptr;
  cudaEvent_t stop_ = nullptr;
  std::vector<cudaGraphExec_t> graphs_;
  IterationOptions options_;
  int set_ = 0;
  bool ran_ = false;
  double expression_compile_seconds_ = 0;  // NVRTC on a cache miss in Init, 0 on a hit
};

class CudaBackend : public Backend {
 public:
  explicit CudaBackend(Kind kind) : kind_(kind) {}

  std::string Name() const override { return CudaBackendName(kind_); }

  std::string Description() const override {
    switch (kind_) {
      case Kind::kFlash:
        return "Fused FlashAttention forward on tensor cores with float32 accumulation and an "
               "online softmax: on Hopper a wgmma + TMA kernel (FlashAttention-3 style) for "
               "fp16/bf16, head dims 64-256 and 192/128, every mask (block-sparse ones from lists "
               "of kept K/V tiles) and modifier (K rotated for RoPE by a pre-pass, Q in shared "
               "memory); otherwise ldmatrix + mma.sync with K/V streamed by cp.async, masks "
               "skipping whole tiles, RoPE fused into the Q/K loads. RunResult.kernel names the "
               "one that ran. PHASE_BACKWARD (where declared: flash/support.h "
               "FlashBackwardEnabled): FlashAttention-2's backward on mma.sync, a block per K/V "
               "tile and kv head with dK and dV in registers summed over the heads sharing it, S "
               "and dP recomputed from the log-sum-exp, dQ summed in float32 with atomics.";
      case Kind::kUnfused:
        return "The textbook baseline: cuBLAS batched GEMM for Q K^T into float32 scores, a "
               "softmax kernel with masks and modifiers, cuBLAS for P V; long sequences in "
               "chunks of query rows. Client score_mod / mask_mod expressions are compiled with "
               "NVRTC at preparation (cached per process) and applied to the scores per pair. "
               "PHASE_BACKWARD too: S and dP recomputed with cuBLAS, the softmax's backward in a "
               "kernel (P from the forward's log-sum-exp, dS in the storage type), then dV, dK "
               "and dQ by cuBLAS into float32 accumulators over rounds of heads that share no "
               "query or key/value head (deterministic, no atomics).";
      case Kind::kReference:
        return "Plain float32 GPU attention, one query row per thread block, every layout, mask "
               "and modifier: the check for the fast paths at sizes the CPU is too slow for. "
               "PHASE_BACKWARD too: D = <dO, O> per row, then dK and dV a key row per block and dQ "
               "a query row per block, P recomputed from the forward's log-sum-exp, without "
               "atomics (deterministic).";
    }
    return "";
  }

  std::vector<DeviceDescription> Devices() const override {
    std::vector<DeviceDescription> out;
    for (const CudaDeviceInfo& d : CudaDevices()) out.push_back(d.description);
    return out;
  }

  BackendSupport Support() const override { return CudaBackendSupport(kind_); }

  absl::Status CheckSupported(const Problem& problem) const override {
    return CheckCudaSupport(kind_, problem, FlashDeviceOf(0));
  }

  uint64_t EstimateBytes(const Problem& problem) const override {
    absl::StatusOr<ProblemShapes> shapes = ShapesOf(problem);
    if (!shapes.ok()) return 0;
    uint64_t bytes =
        cuda::DeviceProblem::EstimateBytes(problem, *shapes, CudaDevices().front().l2_bytes);
    if (kind_ == Kind::kFlash && problem.phase == Phase::kBackward) {
      // The float32 dQ accumulator; the backward's forward (the mma.sync kernel) needs no
      // workspace or tile lists.
      bytes += cuda::flash::BackwardWorkspaceBytes(cuda::ShapeArgs(problem, *shapes));
    } else if (kind_ == Kind::kFlash && UsesFlashDecode(problem)) {
      bytes += DecodeKernel::EstimateBytes(problem, *shapes);
    } else if (kind_ == Kind::kFlash) {
      const AttentionArgs args = cuda::ShapeArgs(problem, *shapes);
      const cuda::flash::ListTiles tiles = cuda::flash::BlockListTiles(args, FlashDeviceOf(0));
      if (tiles.query > 0) bytes += TilePlanMaxBytes(problem, tiles.query, tiles.kv);
      bytes += cuda::flash::WorkspaceBytes(args, FlashDeviceOf(0));
      if (problem.mask_mod) {
        // The mask_mod's tile classes (a byte per tile and (b, h) at most, the smallest tiles
        // being 128 x 32), and the block bitmap per (b, h) (MaskModPlan).
        const uint64_t pairs = static_cast<uint64_t>(shapes->batch) *
                               static_cast<uint64_t>(shapes->heads.num_output_heads);
        bytes += pairs * static_cast<uint64_t>((shapes->seq_q + 127) / 128) *
                 static_cast<uint64_t>((shapes->seq_kv + 31) / 32);
        if (args.mask == cuda::MaskCode::kBlock) {
          bytes += pairs * static_cast<uint64_t>(args.block_rows) * args.block_cols;
        }
      }
    }
    if (kind_ == Kind::kUnfused) {
      bytes += kCublasWorkspaceBytes + UnfusedScratchBytes(problem, *shapes);
      if (problem.phase == Phase::kBackward) bytes += UnfusedRoundTableBytes(*shapes);
    }
    if (kind_ != Kind::kReference) {
      // The expressions' aux tensors as float, their table and the head-map columns.
      for (const NamedTensor& t : problem.aux) {
        uint64_t elements = 1;
        for (int64_t d : t.tensor.shape) elements *= static_cast<uint64_t>(std::max<int64_t>(d, 0));
        bytes += elements * sizeof(float) + 24;
      }
      if (problem.score_mod || problem.mask_mod) {
        bytes += static_cast<uint64_t>(shapes->heads.num_output_heads) * 2 * sizeof(int32_t);
      }
    }
    if (problem.phase == Phase::kBackward) {
      bytes += cuda::DeviceBackward::EstimateBytes(problem, *shapes);
      // The layer backward's own buffers, and its cuBLAS handle beside the projections'.
      if (shapes->layer) {
        bytes += LayerBackwardKernel::EstimateBytes(problem, *shapes) + kCublasWorkspaceBytes;
      }
    }
    if (shapes->layer) bytes += kCublasWorkspaceBytes;  // the projections' cuBLAS handle
    // cuda_reference's cache (the decode kernel counted its own above).
    if (kind_ == Kind::kReference && cuda::DeviceKvCache::Needed(problem)) {
      bytes += cuda::DeviceKvCache::EstimateBytes(problem, *shapes);
    }
    return bytes;
  }

  absl::StatusOr<std::unique_ptr<Workload>> Prepare(const Problem& problem,
                                                    int device_index) override {
    const std::vector<CudaDeviceInfo>& devices = CudaDevices();
    if (device_index < 0 || device_index >= static_cast<int>(devices.size())) {
      return absl::InvalidArgumentError(absl::StrCat("device_index (", device_index,
                                                     ") must be below ", devices.size(),
                                                     ", the CUDA devices of backend ", Name()));
    }
    if (absl::Status s = ValidateProblem(problem); !s.ok()) return s;
    if (absl::Status s = CheckSupported(problem); !s.ok()) return s;
    absl::StatusOr<ProblemShapes> shapes = ShapesOf(problem);
    if (!shapes.ok()) return shapes.status();
    // Refused before generating inputs on the host or allocating anything on the device.
    const uint64_t device_bytes = devices[device_index].description.memory_bytes;
    if (const uint64_t estimate = EstimateBytes(problem); estimate > device_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat("backend ", Name(), " estimates ", estimate,
                                                       " bytes of device memory for this problem, "
                                                       "more than device ",
                                                       device_index, " has (", device_bytes, ")"));
    }
    absl::StatusOr<AttentionInputs> inputs = GenerateInputs(problem);
    if (!inputs.ok()) return inputs.status();
    ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_index));
    absl::StatusOr<std::unique_ptr<cuda::DeviceProblem>> resident =
        cuda::DeviceProblem::Create(problem, *shapes, *inputs, devices[device_index].l2_bytes);
    if (!resident.ok()) return resident.status();
    auto workload =
        std::make_unique<CudaWorkload>(device_index, *std::move(inputs), *std::move(resident));
    if (absl::Status s = workload->Init(kind_, problem); !s.ok()) return s;
    return std::unique_ptr<Workload>(std::move(workload));
  }

 private:
  const Kind kind_;
};

}  // namespace

std::vector<std::unique_ptr<Backend>> MakeCudaBackends() {
  std::vector<std::unique_ptr<Backend>> backends;
  if (CudaDevices().empty()) return backends;
  backends.push_back(std::make_unique<CudaBackend>(Kind::kFlash));
  backends.push_back(std::make_unique<CudaBackend>(Kind::kUnfused));
  backends.push_back(std::make_unique<CudaBackend>(Kind::kReference));
  return backends;
}

}  // namespace attnbench
