// Who is calling: authenticates each attnbench.v1.AttnBench call from its metadata and names the
// tenant it runs for (for per-tenant accounting and, later, fair scheduling).
//
// With a token table (--tokens_file), a call must carry `authorization: Bearer <token>`:
//   - no authorization entry, more than one, or one that is not "Bearer <token>": UNAUTHENTICATED
//   - a token not in the table: UNAUTHENTICATED
//   - a known token whose tenant is disabled (weight 0): PERMISSION_DENIED
// The tenant and weight then come from the table; x-attnbench-tenant is ignored.
// Without a table, no credentials are checked and the tenant is the `x-attnbench-tenant` entry
// (default "default"), weighted by --tenant_weights (default 1; weight 0: PERMISSION_DENIED); a
// malformed tenant name is INVALID_ARGUMENT.
// Status messages never contain the token. Health and reflection are separate services and never
// call this, so probes need no token.
#ifndef ATTNBENCH_SERVER_AUTH_H_
#define ATTNBENCH_SERVER_AUTH_H_

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/string_ref.h"
#include "server/tokens.h"

namespace attnbench::server {

inline constexpr char kAuthorizationKey[] = "authorization";
inline constexpr char kTenantKey[] = "x-attnbench-tenant";
inline constexpr char kDefaultTenant[] = "default";

// The caller of one RPC.
struct Principal {
  std::string tenant = kDefaultTenant;
  double weight = 1;
  bool authenticated = false;  // true when a bearer token was checked
};

using ClientMetadata = std::multimap<grpc::string_ref, grpc::string_ref>;

class Authenticator {
 public:
  // No token table: tenants come from x-attnbench-tenant, weighted by header_weights.
  Authenticator() = default;
  explicit Authenticator(absl::flat_hash_map<std::string, double> header_weights)
      : header_weights_(std::move(header_weights)) {}
  explicit Authenticator(TokenTable tokens) : tokens_(std::move(tokens)) {}

  // Tenants configured by name (token table or header weights), for metric labels.
  std::vector<std::string> KnownTenants() const;

  bool requires_token() const { return tokens_.has_value(); }

  absl::StatusOr<Principal> Authenticate(const ClientMetadata& metadata) const;
  absl::StatusOr<Principal> Authenticate(const grpc::ServerContext& context) const {
    return Authenticate(context.client_metadata());
  }

 private:
  absl::StatusOr<Principal> WeighHeaderTenant(Principal principal) const;

  std::optional<TokenTable> tokens_;
  absl::flat_hash_map<std::string, double> header_weights_;
};

}  // namespace attnbench::server

#endif  // ATTNBENCH_SERVER_AUTH_H_
