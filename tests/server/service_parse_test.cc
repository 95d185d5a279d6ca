// Request bytes that do not parse (issue #4): every method of attnbench.v1.AttnBench, found from
// the proto's service descriptor so a method added later is covered too, answers them with
// INVALID_ARGUMENT naming the method and the request type, counted under its own method label;
// callers are authenticated before their bytes are looked at; well-formed bytes still run.
#include <chrono>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "grpcpp/generic/generic_stub.h"
#include "gtest/gtest.h"
#include "tests/server/test_util.h"

namespace attnbench::server {
namespace {

namespace pb = ::attnbench::v1;

using ::testing::HasSubstr;
using testing::InProcessServer;
using testing::MetricValue;
using testing::SmallRequest;

struct RawAnswer {
  grpc::Status status;
  std::vector<std::string> messages;  // every response message, serialized
};

// One call of `method` ("/attnbench.v1.AttnBench/Run") carrying `bytes` as its only request
// message, through gRPC's generic stub (no serialization on the client side). Works for unary and
// server-streaming methods alike: on the wire both are one request message then half-close.
RawAnswer CallRaw(const std::shared_ptr<grpc::Channel>& channel, const std::string& method,
                  const std::string& bytes, const std::string& tenant = "") {
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  if (!tenant.empty()) context.AddMetadata("x-attnbench-tenant", tenant);
  grpc::CompletionQueue cq;
  // Each step waits for its own completion: one operation in flight at a time.
  auto step = [&cq](int tag) {
    void* got = nullptr;
    bool ok = false;
    EXPECT_TRUE(cq.Next(&got, &ok));
    EXPECT_EQ(got, reinterpret_cast<void*>(static_cast<intptr_t>(tag)));
    return ok;
  };
  auto tag = [](int t) { return reinterpret_cast<void*>(static_cast<intptr_t>(t)); };
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call =
      stub.PrepareCall(&context, method, &cq);
  call->StartCall(tag(1));
  step(1);
  grpc::Slice slice(bytes);
  grpc::ByteBuffer request(&slice, 1);
  call->Write(request, tag(2));
  step(2);
  call->WritesDone(tag(3));
  step(3);
  RawAnswer answer;
  while (true) {
    grpc::ByteBuffer response;
    call->Read(&response, tag(4));
    if (!step(4)) break;
    std::vector<grpc::Slice> slices;
    EXPECT_TRUE(response.Dump(&slices).ok());
    std::string joined;
    for (const grpc::Slice& s : slices) joined.append(s.begin(), s.end());
    answer.messages.push_back(std::move(joined));
  }
  call->Finish(&answer.status, tag(5));
  step(5);
  cq.Shutdown();
  return answer;
}

const google::protobuf::ServiceDescriptor& AttnBenchDescriptor() {
  const google::protobuf::ServiceDescriptor* service =
      pb::RunRequest::descriptor()->file()->FindServiceByName("AttnBench");
  EXPECT_NE(service, nullptr);
  return *service;
}

std::string PathOf(const google::protobuf::MethodDescriptor& method) {
  return absl::StrCat("/", method.service()->full_name(), "/", method.name());
}

// Payloads no protobuf parser accepts, each for its own reason.
const std::vector<std::pair<std::string, std::string>>& Garbage() {
  static const auto* payloads = new std::vector<std::pair<std::string, std::string>>{
      {"field number 0", std::string("\x00\x01", 2)},
      {"varint cut short", "\x08\xff"},
      {"length past the end", "\x0a\x10short"},
      {"end-group without a start", "\x0c"},
      {"reserved wire type 7", "\x0f\x00"},
      {"random bytes", "\xde\xad\xbe\xef\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"},
  };
  return *payloads;
}

TEST(ServiceParseTest, EveryMethodAnswersUnparseableBytesWithInvalidArgument) {
  InProcessServer server;
  const google::protobuf::ServiceDescriptor& service = AttnBenchDescriptor();
  ASSERT_GE(service.method_count(), 4);
  for (int m = 0; m < service.method_count(); ++m) {
    const google::protobuf::MethodDescriptor& method = *service.method(m);
    for (const auto& [why, bytes] : Garbage()) {
      SCOPED_TRACE(absl::StrCat(method.name(), ": ", why));
      const RawAnswer answer = CallRaw(server.channel(), PathOf(method), bytes);
      EXPECT_EQ(answer.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
          << answer.status.error_message();
      EXPECT_THAT(answer.status.error_message(), HasSubstr("request: bytes do not parse as"));
      EXPECT_THAT(answer.status.error_message(), HasSubstr(method.input_type()->full_name()));
      EXPECT_THAT(answer.status.error_message(), HasSubstr(method.name()));
      EXPECT_TRUE(answer.messages.empty());
    }
    // Counted under the method's own label, like any other refusal.
    EXPECT_EQ(MetricValue(server.metrics(), "attnbench_requests_total",
                          {{"method", method.name()}, {"code", "INVALID_ARGUMENT"}}),
              static_cast<double>(Garbage().size()))
        << method.name();
  }
}

TEST(ServiceParseTest, WellFormedBytesStillRun) {
  InProcessServer server;
  const RawAnswer run =
      CallRaw(server.channel(), "/attnbench.v1.AttnBench/Run", SmallRequest().SerializeAsString());
  ASSERT_TRUE(run.status.ok()) << run.status.error_message();
  ASSERT_EQ(run.messages.size(), 1u);
  pb::RunResponse response;
  ASSERT_TRUE(response.ParseFromString(run.messages[0]));
  EXPECT_EQ(response.result().backend(), "cpu_reference");
  EXPECT_GT(response.result().timing().median_ms(), 0);

  const RawAnswer stream = CallRaw(server.channel(), "/attnbench.v1.AttnBench/StreamRun",
                                   SmallRequest().SerializeAsString());
  ASSERT_TRUE(stream.status.ok()) << stream.status.error_message();
  ASSERT_FALSE(stream.messages.empty());
  pb::StreamRunResponse last;
  ASSERT_TRUE(last.ParseFromString(stream.messages.back()));
  EXPECT_TRUE(last.has_result());

  // An empty message is a valid GetCapabilitiesRequest (and all-default request of any type).
  const RawAnswer caps = CallRaw(server.channel(), "/attnbench.v1.AttnBench/GetCapabilities", "");
  ASSERT_TRUE(caps.status.ok()) << caps.status.error_message();
  pb::GetCapabilitiesResponse capabilities;
  ASSERT_EQ(caps.messages.size(), 1u);
  ASSERT_TRUE(capabilities.ParseFromString(caps.messages[0]));
  EXPECT_GT(capabilities.backends_size(), 0);
  EXPECT_EQ(MetricValue(server.metrics(), "attnbench_requests_total",
                        {{"method", "Run"}, {"code", "OK"}}),
            1);
}

TEST(ServiceParseTest, CallersAreAuthenticatedBeforeTheirBytesAreRead) {
  // Tenant "blocked" has weight 0: refused whatever it sends.
  InProcessServer server(ServerOptions(), {},
                         std::make_shared<const Authenticator>(
                             absl::flat_hash_map<std::string, double>{{"blocked", 0}}));
  const RawAnswer answer = CallRaw(server.channel(), "/attnbench.v1.AttnBench/Run",
                                   std::string("\x0a\x10short"), "blocked");
  EXPECT_EQ(answer.status.error_code(), grpc::StatusCode::PERMISSION_DENIED)
      << answer.status.error_message();
}

}  // namespace
}  // namespace attnbench::server
