#include "tests/server/test_util.h"

#include "kernels/registry.h"

namespace attnbench::server::testing {

pb::AttentionSpec SmallSpec(int64_t seq, int heads, int dim) {
  pb::AttentionSpec spec;
  spec.set_batch_size(1);
  spec.set_seq_len_q(seq);
  spec.set_seq_len_kv(seq);
  spec.set_head_dim_qk(dim);
  spec.mutable_layout()->mutable_mha()->set_num_heads(heads);
  spec.set_dtype(pb::DTYPE_FLOAT32);
  spec.set_seed(7);
  return spec;
}

pb::MeasurementSettings FastMeasurement(int iterations) {
  pb::MeasurementSettings m;
  m.set_warmup_iterations(1);
  m.set_min_iterations(iterations);
  m.set_max_iterations(iterations);
  m.set_cache_mode(pb::CACHE_MODE_WARM);
  return m;
}

pb::RunRequest SmallRequest(int64_t seq, int heads, int dim) {
  pb::RunRequest request;
  *request.mutable_spec() = SmallSpec(seq, heads, dim);
  *request.mutable_measurement() = FastMeasurement();
  return request;
}

InProcessServer::InProcessServer(ServerOptions options, BackendList backends,
                                 std::shared_ptr<const Authenticator> authenticator)
    : options_(options), metrics_(std::make_shared<Metrics>()) {
  if (backends.empty()) backends = CreateBackends(RegistryOptions{2});
  service_ = std::make_unique<AttnBenchService>(std::move(backends), options_, metrics_,
                                                std::move(authenticator));
  grpc::ServerBuilder builder;
  builder.SetMaxReceiveMessageSize(options_.max_message_bytes);
  builder.SetMaxSendMessageSize(options_.max_message_bytes);
  builder.RegisterService(service_.get());
  server_ = builder.BuildAndStart();
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options_.max_message_bytes);
  args.SetMaxSendMessageSize(options_.max_message_bytes);
  channel_ = server_->InProcessChannel(args);
  stub_ = pb::AttnBench::NewStub(channel_);
}

InProcessServer::~InProcessServer() {
  server_->Shutdown();
  server_->Wait();
}

double MetricValue(const Metrics& metrics, const std::string& name,
                   const std::map<std::string, std::string>& labels) {
  for (const prometheus::MetricFamily& family : metrics.registry()->Collect()) {
    if (family.name != name) continue;
    for (const prometheus::ClientMetric& metric : family.metric) {
      std::map<std::string, std::string> have;
      for (const auto& label : metric.label) have[label.name] = label.value;
      if (have != labels) continue;
      if (family.type == prometheus::MetricType::Counter) return metric.counter.value;
      if (family.type == prometheus::MetricType::Gauge) return metric.gauge.value;
      if (family.type == prometheus::MetricType::Histogram) {
        return static_cast<double>(metric.histogram.sample_count);
      }
    }
  }
  return -1;
}

}  // namespace attnbench::server::testing
