// The server's transport credentials from its TLS flags: plaintext, TLS (--tls_cert_file and
// --tls_key_file) or mutual TLS (also --tls_client_ca_file: every client must present a
// certificate that chains to one of those CAs). Every file is read and checked here, at startup,
// so a bad combination, an unreadable file, a file that is not PEM or a key that does not match
// the certificate is an error naming the flag, and the server never falls back to plaintext.
// Errors never contain a file's contents.
#ifndef ATTNBENCH_SERVER_TLS_H_
#define ATTNBENCH_SERVER_TLS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/security/server_credentials.h"

namespace attnbench::server {

struct TlsFiles {
  std::string cert_file;       // --tls_cert_file: PEM certificate chain, leaf first
  std::string key_file;        // --tls_key_file: PEM private key, unencrypted
  std::string client_ca_file;  // --tls_client_ca_file: PEM CA certificates; enables mTLS
};

enum class TransportSecurity { kPlaintext, kTls, kMutualTls };

struct ServerTransport {
  TransportSecurity security = TransportSecurity::kPlaintext;
  std::shared_ptr<grpc::ServerCredentials> credentials;
};

// Plaintext when every path is empty; otherwise TLS or mTLS, or an error naming the flag.
absl::StatusOr<ServerTransport> LoadServerTransport(const TlsFiles& files);

// "plaintext", "tls" or "mtls".
const char* TransportSecurityName(TransportSecurity security);

}  // namespace attnbench::server

#endif  // ATTNBENCH_SERVER_TLS_H_
