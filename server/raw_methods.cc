#include "server/raw_methods.h"

#include "absl/strings/str_cat.h"
#include "grpcpp/support/proto_buffer_reader.h"

namespace attnbench::server {

absl::Status ParseRequest(absl::string_view method, const grpc::ByteBuffer& bytes,
                          google::protobuf::Message* request) {
  const std::string& type = request->GetDescriptor()->full_name();
  if (!bytes.Valid()) {
    return absl::InvalidArgumentError(
        absl::StrCat("request: the call to ", method, " carried no ", type, " message"));
  }
  // The reader takes a mutable buffer; a copy shares the same slices.
  grpc::ByteBuffer copy(bytes);
  grpc::ProtoBufferReader reader(&copy);
  if (!reader.status().ok() || !request->ParseFromZeroCopyStream(&reader)) {
    return absl::InvalidArgumentError(
        absl::StrCat("request: bytes do not parse as ", type, " (the request of ", method, ")"));
  }
  return absl::OkStatus();
}

}  // namespace attnbench::server
