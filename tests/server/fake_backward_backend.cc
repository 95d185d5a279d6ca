#include "tests/server/fake_backward_backend.h"

#include <utility>

#include "kernels/backend_support.h"

namespace attnbench::server::testing {
namespace {

class FakeBackwardWorkload : public Workload {
 public:
  FakeBackwardWorkload(const Problem& problem, ProblemShapes shapes, DeviceDescription device,
                       FakeBackwardLog* log, const FakeBackwardOptions& options)
      : problem_(problem),
        shapes_(std::move(shapes)),
        device_(std::move(device)),
        log_(log),
        options_(options) {}

  absl::Status BeforeIteration(const IterationOptions&) override { return absl::OkStatus(); }
  absl::StatusOr<double> RunTimed() override {
    if (log_ != nullptr) {
      absl::MutexLock lock(&log_->mu);
      ++log_->iterations;
    }
    return 1e-5;
  }
  const AttentionInputs& Inputs() const override { return inputs_; }
  absl::StatusOr<FloatTensor> Output() override {
    return FakeTensor(FakeTensorKind::kOutput, shapes_.output, problem_.dtype);
  }
  absl::StatusOr<GradientTensors> Gradients() override {
    if (!options_.gradients_status.ok()) return options_.gradients_status;
    GradientTensors g;
    g.dq = FakeTensor(FakeTensorKind::kDq, shapes_.query, problem_.dtype);
    Shape key = shapes_.key;
    if (options_.short_dk) --key[1];
    g.dk = FakeTensor(FakeTensorKind::kDk, key, problem_.dtype);
    g.dv = FakeTensor(FakeTensorKind::kDv, shapes_.value, problem_.dtype);
    return g;
  }
  DeviceDescription Device() const override { return device_; }

 private:
  Problem problem_;
  ProblemShapes shapes_;
  DeviceDescription device_;
  FakeBackwardLog* log_;
  FakeBackwardOptions options_;
  AttentionInputs inputs_;
};

}  // namespace

FloatTensor FakeTensor(FakeTensorKind kind, const Shape& shape, DType dtype) {
  FloatTensor t;
  t.dtype = dtype;
  t.shape = shape;
  t.values.resize(static_cast<size_t>(NumElements(shape)));
  const int offset = static_cast<int>(kind) * 3;
  for (size_t i = 0; i < t.values.size(); ++i) {
    t.values[i] = static_cast<float>(static_cast<int>((i * 7 + offset) % 11) - 5) * 0.125f;
  }
  return t;
}

std::vector<DeviceDescription> FakeBackwardBackend::Devices() const {
  std::vector<DeviceDescription> devices;
  for (int i = 0; i < options_.devices; ++i) {
    DeviceDescription d;
    d.name = "fake";
    d.kind = "cpu";
    d.index = i;
    d.compute_units = 1;
    devices.push_back(d);
  }
  return devices;
}

BackendSupport FakeBackwardBackend::Support() const {
  BackendSupport s;
  s.dtypes = {DType::kFloat32, DType::kFloat16, DType::kBFloat16};
  s.phases = {Phase::kPrefill, Phase::kBackward};
  s.scopes = {Scope::kCore};
  s.layouts = {LayoutKind::kMha,   LayoutKind::kMqa,          LayoutKind::kGqa,
               LayoutKind::kSqa,   LayoutKind::kSymmetricSqa, LayoutKind::kExtremeSqa,
               LayoutKind::kGqkva, LayoutKind::kExplicit};
  s.masks = {MaskKind::kNone, MaskKind::kCausal};
  // Like cuda_flash: its forward deterministic, its backward not (float atomics, say).
  s.deterministic_phases = {Phase::kPrefill};
  return s;
}

absl::Status FakeBackwardBackend::CheckSupported(const Problem& problem) const {
  return CheckSupport(Support(), problem, Name());
}

uint64_t FakeBackwardBackend::EstimateBytes(const Problem& problem) const {
  absl::StatusOr<ProblemShapes> s = ShapesOf(problem);
  if (!s.ok()) return 0;
  const int64_t elements =
      2 * (NumElements(s->query) + NumElements(s->key) + NumElements(s->value)) +
      2 * NumElements(s->output);
  return static_cast<uint64_t>(elements) * static_cast<uint64_t>(DTypeBytes(problem.dtype));
}

absl::StatusOr<std::unique_ptr<Workload>> FakeBackwardBackend::Prepare(const Problem& problem,
                                                                       int device_index) {
  absl::StatusOr<ProblemShapes> shapes = ShapesOf(problem);
  if (!shapes.ok()) return shapes.status();
  if (device_index < 0 || device_index >= options_.devices) {
    return absl::InvalidArgumentError("no such device");
  }
  if (log_ != nullptr) {
    absl::MutexLock lock(&log_->mu);
    log_->prepared.push_back(problem);
  }
  return std::unique_ptr<Workload>(std::make_unique<FakeBackwardWorkload>(
      problem, *std::move(shapes), Devices()[device_index], log_, options_));
}

}  // namespace attnbench::server::testing
