#include "client/target.h"

#include <cstdint>
#include <vector>

#include "absl/algorithm/container.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace attnbench::client {
namespace {

absl::Status Bad(absl::string_view target, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("target '", target, "': ", why));
}

bool IsPort(absl::string_view text) {
  uint32_t port = 0;
  return !text.empty() && absl::SimpleAtoi(text, &port) && port >= 1 && port <= 65535 &&
         absl::c_all_of(text, [](char c) { return absl::ascii_isdigit(c); });
}

bool IsIpv4(absl::string_view text) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, '.');
  if (parts.size() != 4) return false;
  for (absl::string_view part : parts) {
    uint32_t value = 0;
    if (part.empty() || part.size() > 3 || !absl::SimpleAtoi(part, &value) || value > 255) {
      return false;
    }
  }
  return true;
}

// "addr:port" for ipv4:, "[addr]:port" for ipv6:.
absl::Status CheckAddressList(absl::string_view target, absl::string_view list, bool ipv6) {
  if (list.empty()) return Bad(target, "no addresses after the scheme");
  for (absl::string_view item : absl::StrSplit(list, ',')) {
    const size_t colon = item.rfind(':');
    if (colon == absl::string_view::npos || !IsPort(item.substr(colon + 1))) {
      return Bad(target, absl::StrCat("'", item, "' is not address:port with a port 1-65535"));
    }
    absl::string_view address = item.substr(0, colon);
    const bool ok = ipv6 ? (address.size() > 2 && address.front() == '[' && address.back() == ']')
                         : IsIpv4(address);
    if (!ok) {
      return Bad(target,
                 absl::StrCat("'", address, "' is not an ", ipv6 ? "[IPv6]" : "IPv4", " address"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckTarget(absl::string_view target) {
  if (target.empty()) return absl::InvalidArgumentError("empty target");
  for (char c : target) {
    if (absl::ascii_isspace(c) || absl::ascii_iscntrl(c)) {
      return Bad(target, "contains whitespace or control characters");
    }
  }
  const size_t colon = target.find(':');
  if (colon == absl::string_view::npos) {
    return absl::OkStatus();  // A bare host name: gRPC adds the default port.
  }
  const absl::string_view scheme = target.substr(0, colon);
  absl::string_view rest = target.substr(colon + 1);
  if (scheme == "dns") {
    if (absl::StartsWith(rest, "//")) {
      // dns://authority/host:port: the authority names a DNS server and may be empty.
      const size_t slash = rest.find('/', 2);
      if (slash == absl::string_view::npos) return Bad(target, "expected dns://[dns-server]/host");
      rest = rest.substr(slash + 1);
    }
    if (rest.empty() || rest.front() == ':') return Bad(target, "no host name");
    const size_t port_colon = rest.rfind(':');
    if (port_colon != absl::string_view::npos && rest.find(']') == absl::string_view::npos &&
        !IsPort(rest.substr(port_colon + 1))) {
      return Bad(target, "the port must be 1-65535");
    }
    return absl::OkStatus();
  }
  if (scheme == "ipv4") return CheckAddressList(target, rest, /*ipv6=*/false);
  if (scheme == "ipv6") return CheckAddressList(target, rest, /*ipv6=*/true);
  if (scheme == "unix" || scheme == "unix-abstract") {
    if (rest.empty() || rest == "//" || rest == "///") return Bad(target, "no socket path");
    return absl::OkStatus();
  }
  return absl::OkStatus();
}

}  // namespace attnbench::client
