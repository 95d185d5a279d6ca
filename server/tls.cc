#include "server/tls.h"

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/security/server_credentials.h"

namespace attnbench::server {
namespace {

constexpr std::streamsize kMaxPemBytes = 1 << 20;

struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using KeyPtr = std::unique_ptr<EVP_PKEY, KeyFree>;

// Zeroes the string's bytes before it is freed (for private keys).
struct SecretString {
  std::string text;
  ~SecretString() { OPENSSL_cleanse(text.data(), text.size()); }
};

absl::Status FlagError(absl::string_view flag, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", message));
}

absl::Status ReadPem(absl::string_view flag, const std::string& path, std::string* text) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return FlagError(flag, absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
  text->assign(static_cast<size_t>(kMaxPemBytes) + 1, '\0');
  file.read(text->data(), kMaxPemBytes + 1);
  if (file.bad()) return FlagError(flag, absl::StrCat("cannot read ", path));
  text->resize(static_cast<size_t>(file.gcount()));
  if (text->size() > static_cast<size_t>(kMaxPemBytes)) {
    return FlagError(flag, absl::StrCat(path, " is larger than 1 MiB"));
  }
  if (text->empty()) return FlagError(flag, absl::StrCat(path, " is empty"));
  return absl::OkStatus();
}

BioPtr MemoryBio(const std::string& text) {
  return BioPtr(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

// The certificates in `pem`, first one in *first; 0 when there are none or one is malformed.
int CountCertificates(const std::string& pem, X509Ptr* first) {
  BioPtr bio = MemoryBio(pem);
  int count = 0;
  while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
    if (count++ == 0 && first != nullptr) {
      first->reset(cert);
    } else {
      X509_free(cert);
    }
  }
  // The loop ends on "no start line" after the last certificate; anything else is damage.
  const auto error = ERR_peek_last_error();
  const bool clean_end =
      ERR_GET_LIB(error) == ERR_LIB_PEM && ERR_GET_REASON(error) == PEM_R_NO_START_LINE;
  ERR_clear_error();
  return count > 0 && clean_end ? count : 0;
}

// Refuses to prompt for a passphrase: encrypted keys are not supported.
int NoPassphrase(char*, int, int, void*) { return 0; }

}  // namespace

const char* TransportSecurityName(TransportSecurity security) {
  switch (security) {
    case TransportSecurity::kPlaintext:
      return "plaintext";
    case TransportSecurity::kTls:
      return "tls";
    case TransportSecurity::kMutualTls:
      return "mtls";
  }
  return "?";
}

absl::StatusOr<ServerTransport> LoadServerTransport(const TlsFiles& files) {
  ServerTransport transport;
  if (files.cert_file.empty() && files.key_file.empty()) {
    if (!files.client_ca_file.empty()) {
      return FlagError("tls_client_ca_file", "needs --tls_cert_file and --tls_key_file");
    }
    transport.credentials = grpc::InsecureServerCredentials();
    return transport;
  }
  if (files.cert_file.empty()) return FlagError("tls_cert_file", "needed with --tls_key_file");
  if (files.key_file.empty()) return FlagError("tls_key_file", "needed with --tls_cert_file");

  std::string cert_pem;
  if (absl::Status s = ReadPem("tls_cert_file", files.cert_file, &cert_pem); !s.ok()) return s;
  X509Ptr leaf;
  if (CountCertificates(cert_pem, &leaf) == 0) {
    return FlagError("tls_cert_file",
                     absl::StrCat(files.cert_file, " holds no valid PEM certificate"));
  }

  SecretString key_pem;
  if (absl::Status s = ReadPem("tls_key_file", files.key_file, &key_pem.text); !s.ok()) return s;
  KeyPtr key;
  {
    BioPtr bio = MemoryBio(key_pem.text);
    key.reset(PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassphrase, nullptr));
    ERR_clear_error();
  }
  if (key == nullptr) {
    return FlagError("tls_key_file",
                     absl::StrCat(files.key_file, " holds no unencrypted PEM private key"));
  }
  if (X509_check_private_key(leaf.get(), key.get()) != 1) {
    ERR_clear_error();
    return FlagError("tls_key_file", absl::StrCat(files.key_file,
                                                  " does not match the first certificate of "
                                                  "--tls_cert_file"));
  }

  grpc::SslServerCredentialsOptions options(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  transport.security = TransportSecurity::kTls;
  if (!files.client_ca_file.empty()) {
    std::string ca_pem;
    if (absl::Status s = ReadPem("tls_client_ca_file", files.client_ca_file, &ca_pem); !s.ok()) {
      return s;
    }
    if (CountCertificates(ca_pem, nullptr) == 0) {
      return FlagError("tls_client_ca_file",
                       absl::StrCat(files.client_ca_file, " holds no valid PEM certificate"));
    }
    options.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    options.pem_root_certs = std::move(ca_pem);
    transport.security = TransportSecurity::kMutualTls;
  }
  options.pem_key_cert_pairs.push_back({key_pem.text, cert_pem});
  transport.credentials = grpc::SslServerCredentials(options);
  OPENSSL_cleanse(options.pem_key_cert_pairs[0].private_key.data(),
                  options.pem_key_cert_pairs[0].private_key.size());
  return transport;
}

}  // namespace attnbench::server
