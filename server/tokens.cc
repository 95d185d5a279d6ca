#include "server/tokens.h"

#include <openssl/sha.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace attnbench::server {
namespace {

constexpr size_t kMaxTenantName = 64;
constexpr std::streamsize kMaxFileBytes = 1 << 20;

std::string Digest(absl::string_view token) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(token.data()), token.size(), digest);
  return std::string(reinterpret_cast<const char*>(digest), sizeof(digest));
}

bool IsValidToken(absl::string_view token) {
  if (token.empty() || token.front() == '#') return false;
  for (char c : token) {
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

// The line without its comment: '#' at the start or after whitespace.
absl::string_view StripComment(absl::string_view line) {
  for (size_t i = 0; i < line.size(); ++i) {
    if (line[i] == '#' &&
        (i == 0 || absl::ascii_isspace(static_cast<unsigned char>(line[i - 1])))) {
      return line.substr(0, i);
    }
  }
  return line;
}

absl::Status LineError(int line, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat("line ", line, ": ", message));
}

}  // namespace

bool IsValidTenantName(absl::string_view name) {
  if (name.empty() || name.size() > kMaxTenantName) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') {
      return false;
    }
  }
  return true;
}

std::optional<TenantGrant> TokenTable::Find(absl::string_view token) const {
  auto it = grants_.find(Digest(token));
  if (it == grants_.end()) return std::nullopt;
  return it->second;
}

size_t TokenTable::num_tenants() const {
  absl::flat_hash_set<absl::string_view> tenants;
  for (const auto& [digest, grant] : grants_) tenants.insert(grant.tenant);
  return tenants.size();
}

std::vector<std::string> TokenTable::Tenants() const {
  absl::flat_hash_set<std::string> tenants;
  for (const auto& [digest, grant] : grants_) tenants.insert(grant.tenant);
  std::vector<std::string> names(tenants.begin(), tenants.end());
  std::sort(names.begin(), names.end());
  return names;
}

absl::StatusOr<absl::flat_hash_map<std::string, double>> ParseTenantWeights(
    absl::string_view text) {
  absl::flat_hash_map<std::string, double> weights;
  if (absl::StripAsciiWhitespace(text).empty()) return weights;
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    item = absl::StripAsciiWhitespace(item);
    const std::vector<absl::string_view> parts = absl::StrSplit(item, absl::MaxSplits('=', 1));
    double weight = 0;
    if (parts.size() != 2 || !IsValidTenantName(parts[0]) || !absl::SimpleAtod(parts[1], &weight) ||
        !std::isfinite(weight) || weight < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tenant_weights: '", item,
                       "' is not tenant=weight (a tenant name of [A-Za-z0-9._-], 1 to 64 "
                       "characters, and a finite weight >= 0)"));
    }
    if (!weights.emplace(std::string(parts[0]), weight).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tenant_weights: tenant '", parts[0], "' named twice"));
    }
  }
  return weights;
}

absl::StatusOr<TokenTable> ParseTokens(absl::string_view text) {
  TokenTable table;
  absl::flat_hash_map<std::string, int> token_line;                    // digest -> line
  absl::flat_hash_map<std::string, std::pair<double, int>> weight_of;  // tenant -> weight, line
  int number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++number;
    const std::vector<absl::string_view> fields =
        absl::StrSplit(StripComment(line), absl::ByAnyChar(" \t\r\f\v"), absl::SkipEmpty());
    if (fields.empty()) continue;
    if (fields.size() < 2 || fields.size() > 3) {
      return LineError(
          number, absl::StrCat("expected 'token tenant [weight]', found ", fields.size(), " field",
                               fields.size() == 1 ? "" : "s"));
    }
    if (!IsValidToken(fields[0])) {
      return LineError(number, "the token must be printable ASCII without whitespace");
    }
    if (!IsValidTenantName(fields[1])) {
      return LineError(number, "the tenant must be 1 to 64 characters of [A-Za-z0-9._-]");
    }
    TenantGrant grant;
    grant.tenant = std::string(fields[1]);
    if (fields.size() == 3) {
      double weight = 0;
      if (!absl::SimpleAtod(fields[2], &weight) || !std::isfinite(weight) || weight < 0) {
        return LineError(number, "the weight must be a finite number >= 0 (0 disables the tenant)");
      }
      grant.weight = weight;
    }
    std::string digest = Digest(fields[0]);
    if (auto it = token_line.find(digest); it != token_line.end()) {
      return LineError(number, absl::StrCat("duplicate token (first on line ", it->second, ")"));
    }
    auto [it, inserted] = weight_of.try_emplace(grant.tenant, grant.weight, number);
    if (!inserted && it->second.first != grant.weight) {
      return LineError(
          number, absl::StrCat("tenant '", grant.tenant, "' has weight ", grant.weight,
                               " here but ", it->second.first, " on line ", it->second.second));
    }
    token_line.emplace(digest, number);
    table.grants_.emplace(std::move(digest), std::move(grant));
  }
  if (table.grants_.empty()) return absl::InvalidArgumentError("no tokens");
  return table;
}

absl::StatusOr<TokenTable> LoadTokensFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return absl::NotFoundError(absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
  }
  std::string text(static_cast<size_t>(kMaxFileBytes) + 1, '\0');
  file.read(text.data(), kMaxFileBytes + 1);
  if (file.bad()) return absl::DataLossError(absl::StrCat("cannot read ", path));
  text.resize(static_cast<size_t>(file.gcount()));
  if (text.size() > static_cast<size_t>(kMaxFileBytes)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": larger than 1 MiB"));
  }
  absl::StatusOr<TokenTable> table = ParseTokens(text);
  if (!table.ok()) {
    return absl::Status(table.status().code(), absl::StrCat(path, ": ", table.status().message()));
  }
  return table;
}

}  // namespace attnbench::server
