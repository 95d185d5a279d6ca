#include "kernels/cuda/backend/cuda_backend.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/cuda/backend/cuda_device.h"
#include "kernels/cuda/backend/cuda_status.h"
#include "kernels/cuda/backend/device_buffer.h"
#include "kernels/cuda/backend/device_problem.h"
#include "kernels/cuda/flash/launch.h"
#include "kernels/cuda/unfused/unfused_attention.h"
#include "kernels/spec/inputs.h"
#include "kernels/spec/shapes.h"

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

enum class Kind { kFlash, kUnfused, kReference };

// Enqueues one attention computation; the strategy a backend plugs into the shared workload.
class Kernel {
 public:
  virtual ~Kernel() = default;
  virtual absl::Status Enqueue(const AttentionArgs& args, cudaStream_t stream) = 0;
};

class FlashKernel : public Kernel {
 public:
  absl::Status Enqueue(const AttentionArgs& args, cudaStream_t stream) override {
    return cuda::CudaStatus(cuda::LaunchFlashAttention(args, stream), "flash attention launch");
  }
};

class ReferenceKernel : public Kernel {
 public:
  absl::Status Enqueue(const AttentionArgs& args, cudaStream_t stream) override {
    return cuda::CudaStatus(cuda::LaunchReferenceAttention(args, stream),
                            "reference attention launch");
  }
};

class UnfusedKernel : public Kernel {
 public:
  ~UnfusedKernel() override {
    if (handle_ != nullptr) cublasDestroy(handle_);
  }
  static absl::StatusOr<std::unique_ptr<Kernel>> Create(const AttentionArgs& args,
                                                        cudaStream_t stream) {
    auto k = std::make_unique<UnfusedKernel>();
    if (absl::Status s = cuda::CublasStatus(cublasCreate(&k->handle_), "cublasCreate"); !s.ok()) {
      k->handle_ = nullptr;
      return s;
    }
    absl::StatusOr<cuda::DeviceBuffer> ws =
        cuda::DeviceBuffer::Allocate(kCublasWorkspaceBytes, "the cuBLAS workspace");
    if (!ws.ok()) return ws.status();
    k->workspace_ = *std::move(ws);
    absl::StatusOr<cuda::DeviceBuffer> scratch = cuda::DeviceBuffer::Allocate(
        cuda::UnfusedAttention::ScratchBytes(args, kUnfusedMaxScratchBytes),
        "the unfused score scratch");
    if (!scratch.ok()) return scratch.status();
    k->scratch_ = *std::move(scratch);
    if (absl::Status s = cuda::CublasStatus(cublasSetStream(k->handle_, stream), "cublasSetStream");
        !s.ok()) {
      return s;
    }
    if (absl::Status s = cuda::CublasStatus(
            cublasSetWorkspace(k->handle_, k->workspace_.get(), k->workspace_.bytes()),
            "cublasSetWorkspace");
        !s.ok()) {
      return s;
    }
    return std::unique_ptr<Kernel>(std::move(k));
  }
  absl::Status Enqueue(const AttentionArgs& args, cudaStream_t stream) override {
    return cuda::UnfusedAttention::Run(args, handle_, scratch_.get(), scratch_.bytes(),
                                       kUnfusedMaxScratchBytes, stream);
  }

 private:
  cublasHandle_t handle_ = nullptr;
  cuda::DeviceBuffer workspace_, scratch_;
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

  absl::Status Init(Kind kind) {
    kind_ = kind;
    ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaEventCreate(&start_));
    ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaEventCreate(&stop_));
    switch (kind) {
      case Kind::kFlash:
        kernel_ = std::make_unique<FlashKernel>();
        break;
      case Kind::kReference:
        kernel_ = std::make_unique<ReferenceKernel>();
        break;
      case Kind::kUnfused: {
        absl::StatusOr<std::unique_ptr<Kernel>> k =
            UnfusedKernel::Create(problem_->Args(0), stream_);
        if (!k.ok()) return k.status();
        kernel_ = *std::move(k);
        break;
      }
    }
    graphs_.assign(problem_->num_input_sets(), nullptr);
    return problem_->PoisonOutput();
  }

  absl::Status BeforeIteration(const IterationOptions& options) override {
    ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
    options_ = options;
    set_ = (set_ + 1) % problem_->num_input_sets();
    if (options.flush_cache) return cuda::FlushL2(device_, stream_);
    return absl::OkStatus();
  }

  absl::StatusOr<double> RunTimed() override {
    ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
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
    return static_cast<double>(ms) * 1e-3;
  }

  const AttentionInputs& Inputs() const override { return inputs_; }

  absl::StatusOr<FloatTensor> Output() override {
    if (!ran_) return absl::FailedPreconditionError("Output() before any RunTimed()");
    ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_));
    return problem_->DownloadOutput();
  }

  DeviceDescription Device() const override { return CudaDevices()[device_].description; }
  int CurrentClockMhz() const override { return cuda::SmClockMhz(device_); }
  std::string KernelName() const override {
    switch (kind_) {
      case Kind::kFlash: {
        const auto& d = CudaDevices()[device_];
        return cuda::FlashKernelName(problem_->Args(0), d.cc_major, d.cc_minor);
      }
      case Kind::kUnfused:
      case Kind::kReference:
        return "";  // one kernel family each
    }
    return "";
  }

 private:
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
  cudaStream_t stream_ = nullptr;
  cudaEvent_t start_ = nullptr;
  cudaEvent_t stop_ = nullptr;
  std::vector<cudaGraphExec_t> graphs_;
  IterationOptions options_;
  int set_ = 0;
  bool ran_ = false;
};

class CudaBackend : public Backend {
 public:
  explicit CudaBackend(Kind kind) : kind_(kind) {}

  std::string Name() const override {
    switch (kind_) {
      case Kind::kFlash:
        return kCudaFlashBackend;
      case Kind::kUnfused:
        return kCudaUnfusedBackend;
      case Kind::kReference:
        return kCudaReferenceBackend;
    }
    return "";
  }

  std::string Description() const override {
    switch (kind_) {
      case Kind::kFlash:
        return "Fused FlashAttention forward on tensor cores with float32 accumulation and an "
               "online softmax: on Hopper a wgmma + TMA kernel (FlashAttention-3 style) for "
               "fp16/bf16, D = 64 or 128 and no/causal/window masks; otherwise ldmatrix + "
               "mma.sync with K/V streamed by cp.async, masks skipping whole tiles, RoPE fused "
               "into the Q/K loads. RunResult.kernel names the one that ran.";
      case Kind::kUnfused:
        return "The textbook baseline: cuBLAS batched GEMM for Q K^T into float32 scores, a "
               "softmax kernel with masks and modifiers, cuBLAS for P V; long sequences in "
               "chunks of query rows.";
      case Kind::kReference:
        return "Plain float32 GPU attention, one query row per thread block, every layout, mask "
               "and modifier: the check for the fast paths at sizes the CPU is too slow for.";
    }
    return "";
  }

  std::vector<DeviceDescription> Devices() const override {
    std::vector<DeviceDescription> out;
    for (const CudaDeviceInfo& d : CudaDevices()) out.push_back(d.description);
    return out;
  }

  BackendSupport Support() const override {
    BackendSupport s;
    s.dtypes = {DType::kFloat16, DType::kBFloat16};
    if (kind_ != Kind::kFlash) s.dtypes.push_back(DType::kFloat32);
    s.phases = {Phase::kPrefill, Phase::kDecode};
    s.scopes = {Scope::kCore};
    s.layouts = {LayoutKind::kMha,   LayoutKind::kMqa,          LayoutKind::kGqa,
                 LayoutKind::kSqa,   LayoutKind::kSymmetricSqa, LayoutKind::kExtremeSqa,
                 LayoutKind::kGqkva, LayoutKind::kExplicit};
    s.masks = {MaskKind::kNone, MaskKind::kCausal, MaskKind::kSlidingWindow, MaskKind::kBlockSparse,
               MaskKind::kProbabilisticBlockSparse};
    s.modifiers = {"rope", "alibi", "softcap"};
    s.cache_formats = {CacheFormat::kNative};
    s.cuda_graphs = true;
    s.limitations = {"forward only: no PHASE_BACKWARD", "core scope only: no SCOPE_LAYER",
                     "decode: contiguous native cache only (no paging, no int8/int4/SAQ)",
                     "no float8 storage"};
    switch (kind_) {
      case Kind::kFlash:
        s.head_dims = {64, 96, 128, 192, 256};
        s.limitations.emplace_back(
            "head dims up to 256; other dims run on the next compiled size, zero-padded");
        s.auto_priority = 30;
        break;
      case Kind::kUnfused:
        s.limitations.emplace_back("computes every score: masks do not skip work");
        s.auto_priority = 20;
        break;
      case Kind::kReference:
        s.limitations.emplace_back("one query row per block: slow by design");
        s.auto_priority = 10;
        break;
    }
    return s;
  }

  absl::Status CheckSupported(const Problem& problem) const override {
    const std::string name = Name();
    if (absl::Status s = cuda::CheckDeviceExpressible(problem, name.c_str()); !s.ok()) return s;
    absl::StatusOr<ProblemShapes> shapes = ShapesOf(problem);
    if (!shapes.ok()) return shapes.status();
    const AttentionArgs args = cuda::ShapeArgs(problem, *shapes);
    std::string why;
    if (kind_ == Kind::kFlash) {
      const CudaDeviceInfo& d = CudaDevices().front();
      why = cuda::FlashUnsupportedReason(args, d.cc_major, d.cc_minor);
    } else if (kind_ == Kind::kUnfused) {
      why = cuda::UnfusedAttention::UnsupportedReason(args);
    }
    if (!why.empty()) {
      return absl::FailedPreconditionError(absl::StrCat("backend ", name, ": ", why));
    }
    return absl::OkStatus();
  }

  uint64_t EstimateBytes(const Problem& problem) const override {
    absl::StatusOr<ProblemShapes> shapes = ShapesOf(problem);
    if (!shapes.ok()) return 0;
    uint64_t bytes =
        cuda::DeviceProblem::EstimateBytes(problem, *shapes, CudaDevices().front().l2_bytes);
    if (kind_ == Kind::kUnfused) {
      bytes +=
          kCublasWorkspaceBytes + cuda::UnfusedAttention::ScratchBytes(
                                      cuda::ShapeArgs(problem, *shapes), kUnfusedMaxScratchBytes);
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
    absl::StatusOr<AttentionInputs> inputs = GenerateInputs(problem);
    if (!inputs.ok()) return inputs.status();
    ATTNBENCH_CUDA_RETURN_IF_ERROR(cudaSetDevice(device_index));
    absl::StatusOr<std::unique_ptr<cuda::DeviceProblem>> resident =
        cuda::DeviceProblem::Create(problem, *shapes, *inputs, devices[device_index].l2_bytes);
    if (!resident.ok()) return resident.status();
    auto workload =
        std::make_unique<CudaWorkload>(device_index, *std::move(inputs), *std::move(resident));
    if (absl::Status s = workload->Init(kind_); !s.ok()) return s;
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
