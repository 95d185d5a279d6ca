#include "server/auth.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace attnbench::server {
namespace {

absl::string_view View(const grpc::string_ref& ref) {
  return absl::string_view(ref.data(), ref.size());
}

// The token of "Bearer <token>" (scheme case-insensitive, RFC 7235), or nullopt.
std::optional<absl::string_view> BearerToken(absl::string_view value) {
  constexpr absl::string_view kScheme = "bearer";
  if (value.size() <= kScheme.size() || !absl::StartsWithIgnoreCase(value, kScheme) ||
      value[kScheme.size()] != ' ') {
    return std::nullopt;
  }
  absl::string_view token = absl::StripAsciiWhitespace(value.substr(kScheme.size()));
  if (token.empty()) return std::nullopt;
  for (char c : token) {
    if (c < 0x21 || c > 0x7e) return std::nullopt;
  }
  return token;
}

}  // namespace

std::vector<std::string> Authenticator::KnownTenants() const {
  std::vector<std::string> names;
  if (tokens_.has_value()) names = tokens_->Tenants();
  for (const auto& [name, weight] : header_weights_) names.push_back(name);
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

absl::StatusOr<Principal> Authenticator::WeighHeaderTenant(Principal principal) const {
  auto it = header_weights_.find(principal.tenant);
  if (it != header_weights_.end()) {
    if (it->second == 0) {
      return absl::PermissionDeniedError(
          absl::StrCat("tenant '", principal.tenant, "' is disabled"));
    }
    principal.weight = it->second;
  }
  return principal;
}

absl::StatusOr<Principal> Authenticator::Authenticate(const ClientMetadata& metadata) const {
  Principal principal;
  if (!tokens_.has_value()) {
    auto [first, last] = metadata.equal_range(kTenantKey);
    if (first == last) return WeighHeaderTenant(std::move(principal));
    if (std::next(first) != last) {
      return absl::InvalidArgumentError(absl::StrCat("more than one ", kTenantKey, " entry"));
    }
    const absl::string_view tenant = View(first->second);
    if (!IsValidTenantName(tenant)) {
      return absl::InvalidArgumentError(
          absl::StrCat(kTenantKey, ": a tenant is 1 to 64 characters of [A-Za-z0-9._-]"));
    }
    principal.tenant = std::string(tenant);
    return WeighHeaderTenant(std::move(principal));
  }

  auto [first, last] = metadata.equal_range(kAuthorizationKey);
  if (first == last) {
    return absl::UnauthenticatedError(
        "missing credentials: send metadata 'authorization: Bearer <token>'");
  }
  if (std::next(first) != last) {
    return absl::UnauthenticatedError("more than one authorization entry");
  }
  const std::optional<absl::string_view> token = BearerToken(View(first->second));
  if (!token.has_value()) {
    return absl::UnauthenticatedError("malformed authorization entry: expected 'Bearer <token>'");
  }
  const std::optional<TenantGrant> grant = tokens_->Find(*token);
  if (!grant.has_value()) return absl::UnauthenticatedError("invalid bearer token");
  if (grant->disabled()) {
    return absl::PermissionDeniedError(absl::StrCat("tenant '", grant->tenant, "' is disabled"));
  }
  principal.tenant = grant->tenant;
  principal.weight = grant->weight;
  principal.authenticated = true;
  return principal;
}

}  // namespace attnbench::server
