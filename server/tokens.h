// The bearer-token table behind --tokens_file: which token belongs to which tenant, and the
// tenant's scheduling weight. Parsing is separate from the server so it can be tested alone.
//
// Tokens file format, one entry per line, fields separated by spaces or tabs:
//
//     token tenant [weight]
//
//   - token: the bearer token clients send as `authorization: Bearer <token>`; printable ASCII
//     without whitespace, not starting with '#'.
//   - tenant: [A-Za-z0-9._-], 1 to 64 characters. A tenant may have several tokens (rotation);
//     all of its lines must then give the same weight.
//   - weight: a finite number >= 0, default 1; the tenant's share for fair scheduling. 0 disables
//     the tenant: its tokens still authenticate, but every call gets PERMISSION_DENIED.
//   - '#' at the start of a line or after whitespace starts a comment; blank lines are skipped.
//
// Malformed lines and duplicate tokens are errors naming the line number. No error message ever
// contains a token (or any other field that might be one, except tenant names in weight conflicts).
// The table keeps SHA-256 digests of the tokens, not the tokens themselves, and looks tokens up by
// digest, so a lookup's timing says nothing about how much of a token matched.
#ifndef ATTNBENCH_SERVER_TOKENS_H_
#define ATTNBENCH_SERVER_TOKENS_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace attnbench::server {

struct TenantGrant {
  std::string tenant;
  double weight = 1;  // 0: disabled.
  bool disabled() const { return weight == 0; }
};

class TokenTable {
 public:
  // The grant of `token`, or nullopt when the token is unknown.
  std::optional<TenantGrant> Find(absl::string_view token) const;
  size_t num_tokens() const { return grants_.size(); }
  // Distinct tenants.
  size_t num_tenants() const;
  // Their names, sorted.
  std::vector<std::string> Tenants() const;

 private:
  friend absl::StatusOr<TokenTable> ParseTokens(absl::string_view text);
  absl::flat_hash_map<std::string, TenantGrant> grants_;  // Keyed by SHA-256 of the token.
};

// Parses the tokens file format above. An empty table (no entries) is an error.
absl::StatusOr<TokenTable> ParseTokens(absl::string_view text);

// Reads and parses `path`; errors name the path and, for parse errors, the line
// ("<path>: line <n>: ...").
absl::StatusOr<TokenTable> LoadTokensFile(const std::string& path);

// Weights of tenants named by x-attnbench-tenant when auth is off (--tenant_weights):
// "alice=2,bob=1,guest=0.5"; weight 0 disables a tenant. Names must be valid tenant names,
// weights finite and >= 0, each tenant named once; an empty string is an empty map.
absl::StatusOr<absl::flat_hash_map<std::string, double>> ParseTenantWeights(absl::string_view text);

// Whether `name` is a valid tenant name ([A-Za-z0-9._-], 1 to 64 characters).
bool IsValidTenantName(absl::string_view name);

}  // namespace attnbench::server

#endif  // ATTNBENCH_SERVER_TOKENS_H_
