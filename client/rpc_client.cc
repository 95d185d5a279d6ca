#include "client/rpc_client.h"

#include <chrono>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"

namespace attnbench::client {
namespace {

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

}  // namespace

RpcClient::RpcClient(const std::string& target, ConnectionSettings settings)
    : deadline_seconds_(settings.deadline_seconds), tenant_(std::move(settings.tenant)) {
  if (!settings.token.empty()) authorization_ = absl::StrCat("Bearer ", settings.token);
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (settings.tls) {
    grpc::SslCredentialsOptions tls;
    tls.pem_root_certs = std::move(settings.tls_root_certs);
    tls.pem_cert_chain = std::move(settings.tls_cert_chain);
    tls.pem_private_key = std::move(settings.tls_private_key);
    credentials = grpc::SslCredentials(tls);
  } else {
    credentials = grpc::InsecureChannelCredentials();
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(-1);  // The server's own limit bounds what it sends.
  args.SetServiceConfigJSON(kRoundRobinServiceConfig);
  channel_ = grpc::CreateCustomChannel(target, credentials, args);
  stub_ = v1::AttnBench::NewStub(channel_);
  health_stub_ = grpc::health::v1::Health::NewStub(channel_);
}

bool RpcClient::WaitForServers(double timeout_seconds, double settle_seconds) {
  const bool connected =
      channel_->WaitForConnected(std::chrono::system_clock::now() +
                                 std::chrono::duration_cast<std::chrono::system_clock::duration>(
                                     std::chrono::duration<double>(timeout_seconds)));
  if (connected) std::this_thread::sleep_for(std::chrono::duration<double>(settle_seconds));
  return connected;
}

void CallCanceller::Cancel() {
  std::lock_guard<std::mutex> lock(mu_);
  cancelled_ = true;
  for (grpc::ClientContext* context : live_) context->TryCancel();
}

bool CallCanceller::cancelled() const {
  std::lock_guard<std::mutex> lock(mu_);
  return cancelled_;
}

bool CallCanceller::Register(grpc::ClientContext* context) {
  std::lock_guard<std::mutex> lock(mu_);
  if (cancelled_) return false;
  live_.insert(context);
  return true;
}

void CallCanceller::Unregister(grpc::ClientContext* context) {
  std::lock_guard<std::mutex> lock(mu_);
  live_.erase(context);
}

void RpcClient::PrepareContext(grpc::ClientContext* context) const {
  if (!authorization_.empty()) context->AddMetadata("authorization", authorization_);
  if (!tenant_.empty()) context->AddMetadata("x-attnbench-tenant", tenant_);
  if (deadline_seconds_.has_value()) {
    context->set_deadline(std::chrono::system_clock::now() +
                          std::chrono::duration_cast<std::chrono::system_clock::duration>(
                              std::chrono::duration<double>(*deadline_seconds_)));
  }
}

absl::StatusOr<v1::RunResponse> RpcClient::Run(const v1::RunRequest& request) {
  grpc::ClientContext context;
  PrepareContext(&context);
  v1::RunResponse response;
  absl::Status status = FromGrpc(stub_->Run(&context, request, &response));
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<v1::RunResult> RpcClient::StreamRunToFiles(const v1::RunRequest& request,
                                                          std::vector<TensorFile> files,
                                                          std::vector<WrittenTensor>* written) {
  absl::StatusOr<std::unique_ptr<TensorFileSink>> sink = TensorFileSink::Open(std::move(files));
  if (!sink.ok()) return sink.status();
  grpc::ClientContext context;
  PrepareContext(&context);
  std::unique_ptr<grpc::ClientReader<v1::StreamRunResponse>> reader =
      stub_->StreamRun(&context, request);
  v1::StreamRunResponse item;
  std::optional<v1::RunResult> result;
  absl::Status failure;
  while (reader->Read(&item)) {
    if (!failure.ok()) continue;  // Drain the stream so Finish() reports the server's status.
    if (item.has_result()) {
      result = std::move(*item.mutable_result());
      continue;
    }
    if (result.has_value()) {
      failure = absl::DataLossError(
          absl::StrCat(item.chunk().name(), " chunk after the result (the result comes last)"));
      continue;
    }
    failure = (*sink)->Add(item.chunk());
  }
  absl::Status status = FromGrpc(reader->Finish());
  if (!status.ok()) return status;
  if (!failure.ok()) return failure;
  absl::StatusOr<std::vector<WrittenTensor>> done = (*sink)->Finish();
  if (!done.ok()) return done.status();
  if (!result.has_value()) return absl::DataLossError("StreamRun ended without a result");
  *written = *std::move(done);
  return *std::move(result);
}

absl::Status RpcClient::Sweep(const v1::SweepRequest& request,
                              const std::function<void(const v1::SweepResponse&)>& on_response,
                              CallCanceller* canceller) {
  grpc::ClientContext context;
  PrepareContext(&context);
  if (canceller != nullptr && !canceller->Register(&context)) {
    return absl::CancelledError("sweep cancelled");
  }
  std::unique_ptr<grpc::ClientReader<v1::SweepResponse>> reader = stub_->Sweep(&context, request);
  v1::SweepResponse response;
  while (reader->Read(&response)) on_response(response);
  absl::Status status = FromGrpc(reader->Finish());
  if (canceller != nullptr) canceller->Unregister(&context);
  return status;
}

absl::StatusOr<v1::GetCapabilitiesResponse> RpcClient::GetCapabilities() {
  grpc::ClientContext context;
  PrepareContext(&context);
  v1::GetCapabilitiesResponse response;
  absl::Status status =
      FromGrpc(stub_->GetCapabilities(&context, v1::GetCapabilitiesRequest(), &response));
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> RpcClient::CheckHealth(
    const std::string& service) {
  grpc::ClientContext context;
  PrepareContext(&context);
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  absl::Status status = FromGrpc(health_stub_->Check(&context, request, &response));
  if (!status.ok()) return status;
  return response.status();
}

}  // namespace attnbench::client
