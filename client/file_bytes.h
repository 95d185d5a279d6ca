// The whole of a file the client sends or reads (a tensor, an aux table, a certificate, a token),
// with the one error text every flag that names a file reports: "cannot read PATH: reason".
#ifndef ATTNBENCH_CLIENT_FILE_BYTES_H_
#define ATTNBENCH_CLIENT_FILE_BYTES_H_

#include <string>

#include "absl/status/statusor.h"

namespace attnbench::client {

// The file's bytes; INVALID_ARGUMENT "cannot read PATH: reason" when it cannot be opened or read.
absl::StatusOr<std::string> ReadFileBytes(const std::string& path);

}  // namespace attnbench::client

#endif  // ATTNBENCH_CLIENT_FILE_BYTES_H_
