#include "client/tensor_files.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace attnbench::client {

std::vector<TensorFile> OutputFilesFor(const v1::AttentionSpec& spec, const std::string& path) {
  std::vector<TensorFile> files = {{"output", path}};
  if (spec.phase() != v1::PHASE_BACKWARD) return files;
  // The gradients StreamRun sends after "output", in its order.
  const std::vector<const char*> names =
      spec.scope() == v1::SCOPE_LAYER
          ? std::vector<const char*>{"dx", "dw_q", "dw_k", "dw_v", "dw_o"}
          : std::vector<const char*>{"dq", "dk", "dv"};
  for (const char* name : names) files.push_back({name, absl::StrCat(path, ".", name)});
  return files;
}

absl::StatusOr<std::unique_ptr<TensorFileSink>> TensorFileSink::Open(
    std::vector<TensorFile> files) {
  std::vector<Entry> entries(files.size());
  for (size_t i = 0; i < files.size(); ++i) {
    Entry& e = entries[i];
    e.written.name = std::move(files[i].name);
    e.written.path = std::move(files[i].path);
    e.file.open(e.written.path, std::ios::binary | std::ios::trunc);
    if (!e.file)
      return absl::FailedPreconditionError(absl::StrCat("cannot write ", e.written.path));
  }
  return std::unique_ptr<TensorFileSink>(new TensorFileSink(std::move(entries)));
}

absl::Status TensorFileSink::Add(const v1::TensorChunk& chunk) {
  for (Entry& e : entries_) {
    if (e.written.name != chunk.name()) continue;
    const std::vector<int64_t> shape(chunk.shape().begin(), chunk.shape().end());
    if (!e.started) {
      e.started = true;
      e.total = chunk.total_bytes();
      e.written.dtype = chunk.dtype();
      e.written.shape = shape;
    } else if (chunk.total_bytes() != e.total || chunk.dtype() != e.written.dtype ||
               shape != e.written.shape) {
      return absl::DataLossError(absl::StrCat(
          chunk.name(), " chunk at offset ", chunk.offset_bytes(), " describes another tensor (",
          chunk.total_bytes(), " bytes of [", absl::StrJoin(shape, ","), "]) than its first (",
          e.total, " bytes of [", absl::StrJoin(e.written.shape, ","), "])"));
    }
    if (chunk.offset_bytes() != e.written.bytes) {
      return absl::DataLossError(absl::StrCat(chunk.name(), " chunk at offset ",
                                              chunk.offset_bytes(), " out of order (expected ",
                                              e.written.bytes, ")"));
    }
    if (chunk.data().size() > e.total - e.written.bytes) {
      return absl::DataLossError(absl::StrCat(chunk.name(), " chunk at offset ",
                                              chunk.offset_bytes(), " runs past its total of ",
                                              e.total, " bytes"));
    }
    e.file.write(chunk.data().data(), static_cast<std::streamsize>(chunk.data().size()));
    e.written.bytes += chunk.data().size();
    return absl::OkStatus();
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<WrittenTensor>> TensorFileSink::Finish() {
  std::vector<WrittenTensor> out;
  absl::Status failure;
  for (Entry& e : entries_) {
    e.file.close();
    if (!failure.ok()) continue;
    if (!e.file) {
      failure = absl::DataLossError(absl::StrCat("writing ", e.written.path, " failed"));
    } else if (!e.started) {
      failure = absl::DataLossError(absl::StrCat("StreamRun sent no ", e.written.name, " chunks"));
    } else if (e.written.bytes != e.total) {
      failure = absl::DataLossError(
          absl::StrCat(e.written.name, " has ", e.written.bytes, " bytes, expected ", e.total));
    }
    out.push_back(e.written);
  }
  if (!failure.ok()) return failure;
  return out;
}

}  // namespace attnbench::client
