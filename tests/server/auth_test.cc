// Bearer-token authentication: the Authenticator on raw metadata (every accepted and rejected
// form), then the service in process: every AttnBench RPC refuses a caller without a valid token
// (UNAUTHENTICATED) or of a disabled tenant (PERMISSION_DENIED), accepts a good token, and never
// writes a token into the log.
#include "server/auth.h"

#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/log.h"
#include "tests/server/test_util.h"

namespace attnbench::server {
namespace {

namespace pb = ::attnbench::v1;

using ::testing::HasSubstr;
using testing::InProcessServer;
using testing::MetricValue;
using ::testing::Not;
using testing::SmallRequest;

constexpr char kTokens[] =
    "s3cret-alice-token alice 2\n"
    "s3cret-bob-token bob\n"
    "s3cret-mallory-token mallory 0\n";
constexpr char kWrongToken[] = "s3cret-wrong-token";

std::shared_ptr<const Authenticator> TokenAuthenticator() {
  absl::StatusOr<TokenTable> table = ParseTokens(kTokens);
  EXPECT_TRUE(table.ok()) << table.status();
  return std::make_shared<const Authenticator>(*std::move(table));
}

// Holds the strings a ClientMetadata's string_refs point into.
class Metadata {
 public:
  Metadata& Add(std::string key, std::string value) {
    entries_.emplace_back(std::move(key), std::move(value));
    return *this;
  }
  ClientMetadata Map() const {
    ClientMetadata map;
    for (const auto& [k, v] : entries_) map.emplace(k, v);
    return map;
  }

 private:
  std::vector<std::pair<std::string, std::string>> entries_;
};

absl::StatusCode CodeOf(const Authenticator& auth, const Metadata& metadata) {
  return auth.Authenticate(metadata.Map()).status().code();
}

TEST(AuthenticatorTest, TokenModeAcceptsAGoodBearerToken) {
  auto auth = TokenAuthenticator();
  EXPECT_TRUE(auth->requires_token());
  for (const char* value :
       {"Bearer s3cret-alice-token", "bearer s3cret-alice-token", "BEARER  s3cret-alice-token "}) {
    absl::StatusOr<Principal> principal =
        auth->Authenticate(Metadata().Add("authorization", value).Map());
    ASSERT_TRUE(principal.ok()) << value << ": " << principal.status();
    EXPECT_EQ(principal->tenant, "alice");
    EXPECT_EQ(principal->weight, 2);
    EXPECT_TRUE(principal->authenticated);
  }
  // The tenant header cannot override the token's tenant.
  absl::StatusOr<Principal> bob =
      auth->Authenticate(Metadata()
                             .Add("authorization", "Bearer s3cret-bob-token")
                             .Add("x-attnbench-tenant", "alice")
                             .Map());
  ASSERT_TRUE(bob.ok());
  EXPECT_EQ(bob->tenant, "bob");
  EXPECT_EQ(bob->weight, 1);
}

TEST(AuthenticatorTest, TokenModeRejections) {
  auto auth = TokenAuthenticator();
  const auto unauthenticated = absl::StatusCode::kUnauthenticated;
  EXPECT_EQ(CodeOf(*auth, Metadata()), unauthenticated);
  EXPECT_EQ(CodeOf(*auth, Metadata().Add("x-attnbench-tenant", "alice")), unauthenticated);
  for (const char* value :
       {"", "Bearer", "Bearer ", "s3cret-alice-token", "Basic s3cret-alice-token",
        "Bearers3cret-alice-token", "Bearer s3cret-alice-token extra"}) {
    EXPECT_EQ(CodeOf(*auth, Metadata().Add("authorization", value)), unauthenticated) << value;
  }
  EXPECT_EQ(CodeOf(*auth, Metadata().Add("authorization", std::string("Bearer ") + kWrongToken)),
            unauthenticated);
  EXPECT_EQ(CodeOf(*auth, Metadata().Add("authorization", "Bearer s3cret-alice-toke")),
            unauthenticated);
  EXPECT_EQ(CodeOf(*auth, Metadata()
                              .Add("authorization", "Bearer s3cret-alice-token")
                              .Add("authorization", "Bearer s3cret-bob-token")),
            unauthenticated);
  absl::Status disabled =
      auth->Authenticate(Metadata().Add("authorization", "Bearer s3cret-mallory-token").Map())
          .status();
  EXPECT_EQ(disabled.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(disabled.message(), HasSubstr("mallory"));
  EXPECT_THAT(disabled.message(), Not(HasSubstr("s3cret")));
}

TEST(AuthenticatorTest, HeaderModeTakesTheTenantHeader) {
  Authenticator auth;
  EXPECT_FALSE(auth.requires_token());
  absl::StatusOr<Principal> none = auth.Authenticate(Metadata().Map());
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->tenant, "default");
  EXPECT_FALSE(none->authenticated);
  absl::StatusOr<Principal> team = auth.Authenticate(
      Metadata().Add("x-attnbench-tenant", "team-a").Add("authorization", "Bearer x").Map());
  ASSERT_TRUE(team.ok());
  EXPECT_EQ(team->tenant, "team-a");
  EXPECT_EQ(CodeOf(auth, Metadata().Add("x-attnbench-tenant", "a b")),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CodeOf(auth, Metadata().Add("x-attnbench-tenant", "a").Add("x-attnbench-tenant", "b")),
            absl::StatusCode::kInvalidArgument);
}

// Every AttnBench RPC with the given authorization value (none when empty); returns the codes.
std::vector<grpc::StatusCode> CallAll(InProcessServer& server, const std::string& authorization) {
  auto prepare = [&](grpc::ClientContext* context) {
    if (!authorization.empty()) context->AddMetadata("authorization", authorization);
  };
  std::vector<grpc::StatusCode> codes;
  {
    grpc::ClientContext context;
    prepare(&context);
    pb::RunResponse response;
    codes.push_back(server.stub().Run(&context, SmallRequest(), &response).error_code());
  }
  {
    grpc::ClientContext context;
    prepare(&context);
    auto reader = server.stub().StreamRun(&context, SmallRequest());
    pb::StreamRunResponse item;
    while (reader->Read(&item)) {
    }
    codes.push_back(reader->Finish().error_code());
  }
  {
    grpc::ClientContext context;
    prepare(&context);
    pb::SweepRequest request;
    *request.mutable_base() = SmallRequest();
    request.add_axes()->mutable_seq_len()->add_values(16);
    auto reader = server.stub().Sweep(&context, request);
    pb::SweepResponse item;
    while (reader->Read(&item)) {
    }
    codes.push_back(reader->Finish().error_code());
  }
  {
    grpc::ClientContext context;
    prepare(&context);
    pb::GetCapabilitiesResponse response;
    codes.push_back(server.stub()
                        .GetCapabilities(&context, pb::GetCapabilitiesRequest(), &response)
                        .error_code());
  }
  return codes;
}

// Collects every log line while installed.
class LogCapture {
 public:
  LogCapture() {
    Text().clear();
    SetLogSink(&Append);
    SetLogLevel(LogLevel::kDebug);
  }
  ~LogCapture() {
    SetLogSink(nullptr);
    SetLogLevel(LogLevel::kInfo);
  }
  std::string text() const {
    absl::MutexLock lock(&Mu());
    return Text();
  }

 private:
  static absl::Mutex& Mu() {
    static absl::Mutex mu(absl::kConstInit);
    return mu;
  }
  static std::string& Text() {
    static std::string text;
    return text;
  }
  static void Append(absl::string_view line) {
    absl::MutexLock lock(&Mu());
    Text().append(line.data(), line.size());
  }
};

TEST(ServiceAuthTest, EveryRpcNeedsAValidToken) {
  LogCapture log;
  InProcessServer server(ServerOptions(), {}, TokenAuthenticator());
  using C = grpc::StatusCode;
  const std::vector<C> all_unauthenticated(4, C::UNAUTHENTICATED);
  EXPECT_EQ(CallAll(server, ""), all_unauthenticated);
  EXPECT_EQ(CallAll(server, std::string("Bearer ") + kWrongToken), all_unauthenticated);
  EXPECT_EQ(CallAll(server, std::string("Basic ") + kWrongToken), all_unauthenticated);
  EXPECT_EQ(CallAll(server, "Bearer s3cret-mallory-token"),
            std::vector<C>(4, C::PERMISSION_DENIED));
  EXPECT_EQ(CallAll(server, "Bearer s3cret-alice-token"), std::vector<C>(4, C::OK));

  EXPECT_GE(MetricValue(server.metrics(), "attnbench_requests_total",
                        {{"method", "Run"}, {"code", "UNAUTHENTICATED"}}),
            3);
  const std::string text = log.text();
  // The capture works: rejections and the authenticated tenant are logged...
  EXPECT_THAT(text, HasSubstr("Run UNAUTHENTICATED"));
  EXPECT_THAT(text, HasSubstr("Run tenant=alice OK"));
  EXPECT_THAT(text, HasSubstr("PERMISSION_DENIED"));
  // ...and no token, good or bad, is.
  EXPECT_THAT(text, Not(HasSubstr("s3cret")));
}

TEST(ServiceAuthTest, WithoutTokensTheTenantHeaderIsUsed) {
  LogCapture log;
  InProcessServer server;
  grpc::ClientContext context;
  context.AddMetadata("x-attnbench-tenant", "team-b");
  pb::RunResponse response;
  ASSERT_TRUE(server.stub().Run(&context, SmallRequest(), &response).ok());
  EXPECT_THAT(log.text(), HasSubstr("Run tenant=team-b OK"));
  grpc::ClientContext bad;
  bad.AddMetadata("x-attnbench-tenant", "team/b");
  EXPECT_EQ(server.stub().Run(&bad, SmallRequest(), &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(CallAll(server, ""), std::vector<grpc::StatusCode>(4, grpc::StatusCode::OK));
}

}  // namespace
}  // namespace attnbench::server
