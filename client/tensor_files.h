// Tensors a StreamRun sends (TensorChunk: "output", and for PHASE_BACKWARD "dq", "dk", "dv", or at
// SCOPE_LAYER "dx", "dw_q", "dw_k", "dw_v", "dw_o"), each
// written to its own file as the raw little-endian bytes of its dtype, the format --output
// writes: the chunks of each tensor must arrive in offset order and tile it exactly.
#ifndef ATTNBENCH_CLIENT_TENSOR_FILES_H_
#define ATTNBENCH_CLIENT_TENSOR_FILES_H_

#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "attnbench/v1/attnbench.pb.h"

namespace attnbench::client {

// One tensor to write: its TensorChunk name and the file it goes to.
struct TensorFile {
  std::string name;
  std::string path;
};

// What was written of one tensor.
struct WrittenTensor {
  std::string name;
  std::string path;
  v1::DType dtype = v1::DTYPE_UNSPECIFIED;
  std::vector<int64_t> shape;
  uint64_t bytes = 0;
};

// The files `attnbench run --output=FILE` writes for a spec: FILE gets "output"; a PHASE_BACKWARD
// spec adds FILE.dq, FILE.dk and FILE.dv for dQ, dK and dV, or at SCOPE_LAYER FILE.dx,
// FILE.dw_q, FILE.dw_k, FILE.dw_v and FILE.dw_o for dX and the weight gradients.
std::vector<TensorFile> OutputFilesFor(const v1::AttentionSpec& spec, const std::string& path);

// Writes the chunks of the tensors it was opened for, in arrival order, to their files.
class TensorFileSink {
 public:
  // Creates (truncates) every file; FAILED_PRECONDITION naming the first that cannot be written.
  static absl::StatusOr<std::unique_ptr<TensorFileSink>> Open(std::vector<TensorFile> files);

  // Writes one chunk. A chunk of a tensor not opened for is skipped; DATA_LOSS for a chunk out of
  // order (its offset is not the bytes written so far) or whose dtype, shape or total differ from
  // its tensor's first chunk.
  absl::Status Add(const v1::TensorChunk& chunk);

  // After the last chunk: closes the files, and returns what each holds, in the order opened, or
  // DATA_LOSS when a tensor never came, came short of its total, or a file could not be written.
  absl::StatusOr<std::vector<WrittenTensor>> Finish();

 private:
  struct Entry {
    WrittenTensor written;
    std::ofstream file;
    bool started = false;
    uint64_t total = 0;
  };
  explicit TensorFileSink(std::vector<Entry> entries) : entries_(std::move(entries)) {}

  std::vector<Entry> entries_;
};

}  // namespace attnbench::client

#endif  // ATTNBENCH_CLIENT_TENSOR_FILES_H_
