#include "client/command_common.h"

#include <cstring>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "client/commands.h"
#include "client/file_bytes.h"
#include "client/target.h"

namespace attnbench::client {

absl::StatusOr<OutputFormat> FormatFromFlags() {
  absl::StatusOr<OutputFormat> format = ParseOutputFormat(absl::GetFlag(FLAGS_format));
  if (!format.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--format: ", format.status().message()));
  }
  return format;
}

namespace {

absl::Status FlagError(absl::string_view flag, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", message));
}

// The whole file named by a path flag; errors name the flag, never the contents.
absl::Status ReadFlagFile(absl::string_view flag, const std::string& path, std::string* text) {
  if (path.empty()) return FlagError(flag, "empty path");
  absl::StatusOr<std::string> read = ReadFileBytes(path);
  if (!read.ok()) return FlagError(flag, read.status().message());
  *text = *std::move(read);
  if (text->empty()) return FlagError(flag, absl::StrCat(path, " is empty"));
  return absl::OkStatus();
}

// A bearer token: printable ASCII without whitespace.
absl::Status CheckToken(absl::string_view flag, absl::string_view token) {
  if (token.empty()) return FlagError(flag, "empty token");
  for (char c : token) {
    if (c < 0x21 || c > 0x7e) {
      return FlagError(flag, "a token is printable ASCII without whitespace");
    }
  }
  return absl::OkStatus();
}

absl::Status SecurityFromFlags(ConnectionSettings* settings) {
  const std::optional<std::string> ca = absl::GetFlag(FLAGS_tls_ca_file);
  const std::optional<std::string> cert = absl::GetFlag(FLAGS_tls_cert_file);
  const std::optional<std::string> key = absl::GetFlag(FLAGS_tls_key_file);
  if (cert.has_value() != key.has_value()) {
    return cert.has_value() ? FlagError("tls_key_file", "needed with --tls_cert_file")
                            : FlagError("tls_cert_file", "needed with --tls_key_file");
  }
  settings->tls = absl::GetFlag(FLAGS_tls) || ca.has_value() || cert.has_value();
  if (ca.has_value()) {
    if (absl::Status s = ReadFlagFile("tls_ca_file", *ca, &settings->tls_root_certs); !s.ok()) {
      return s;
    }
  }
  if (cert.has_value()) {
    if (absl::Status s = ReadFlagFile("tls_cert_file", *cert, &settings->tls_cert_chain); !s.ok()) {
      return s;
    }
    if (absl::Status s = ReadFlagFile("tls_key_file", *key, &settings->tls_private_key); !s.ok()) {
      return s;
    }
  }

  const std::optional<std::string> token = absl::GetFlag(FLAGS_token);
  const std::optional<std::string> token_file = absl::GetFlag(FLAGS_token_file);
  if (token.has_value() && token_file.has_value()) {
    return FlagError("token_file", "give --token or --token_file, not both");
  }
  if (token.has_value()) {
    if (absl::Status s = CheckToken("token", *token); !s.ok()) return s;
    settings->token = *token;
  } else if (token_file.has_value()) {
    std::string text;
    if (absl::Status s = ReadFlagFile("token_file", *token_file, &text); !s.ok()) return s;
    settings->token = std::string(absl::StripAsciiWhitespace(text));
    if (absl::Status s = CheckToken("token_file", settings->token); !s.ok()) return s;
  }
  if (const std::optional<std::string> tenant = absl::GetFlag(FLAGS_tenant); tenant.has_value()) {
    if (tenant->empty()) return FlagError("tenant", "empty tenant");
    settings->tenant = *tenant;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<RpcClient>> ClientFromFlags() {
  const std::string server = absl::GetFlag(FLAGS_server);
  if (absl::Status s = CheckTarget(server); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--server: ", s.message()));
  }
  ConnectionSettings settings;
  settings.deadline_seconds = absl::GetFlag(FLAGS_deadline_seconds);
  if (settings.deadline_seconds.has_value() && !(*settings.deadline_seconds > 0)) {
    return absl::InvalidArgumentError("--deadline_seconds: must be positive");
  }
  if (absl::Status s = SecurityFromFlags(&settings); !s.ok()) return s;
  return std::make_unique<RpcClient>(server, std::move(settings));
}

int ReportUsageError(Subcommand subcommand, const absl::Status& status, std::ostream& err) {
  err << "attnbench " << SubcommandName(subcommand) << ": " << status.message() << "\n"
      << "Run 'attnbench " << SubcommandName(subcommand) << " --help' for usage.\n";
  return kExitUsage;
}

int ReportFailure(const absl::Status& status, std::ostream& err) {
  err << "attnbench: " << StatusText(status) << "\n";
  return kExitFailure;
}

}  // namespace attnbench::client
