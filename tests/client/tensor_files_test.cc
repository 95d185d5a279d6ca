// The files `attnbench run --output` writes: which tensors go where, and StreamRun chunks
// reassembled per tensor, in order and whole, or refused as DATA_LOSS naming the tensor.
#include "client/tensor_files.h"

#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace attnbench::client {
namespace {

using ::testing::ElementsAre;

v1::TensorChunk Chunk(const std::string& name, uint64_t offset, uint64_t total,
                      const std::string& data, std::vector<int64_t> shape = {2, 2}) {
  v1::TensorChunk c;
  c.set_name(name);
  c.set_dtype(v1::DTYPE_FLOAT16);
  for (int64_t d : shape) c.add_shape(d);
  c.set_offset_bytes(offset);
  c.set_total_bytes(total);
  c.set_data(data);
  return c;
}

std::string Contents(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
}

std::vector<TensorFile> Files(const std::string& stem, std::vector<std::string> names) {
  std::vector<TensorFile> files;
  for (const std::string& name : names) {
    files.push_back({name, ::testing::TempDir() + stem + "." + name});
  }
  return files;
}

TEST(OutputFilesTest, BackwardAddsOneFilePerGradient) {
  v1::AttentionSpec spec;
  std::vector<TensorFile> files = OutputFilesFor(spec, "/tmp/o.bin");
  ASSERT_EQ(files.size(), 1u);
  EXPECT_EQ(files[0].name, "output");
  EXPECT_EQ(files[0].path, "/tmp/o.bin");
  spec.set_phase(v1::PHASE_DECODE);
  EXPECT_EQ(OutputFilesFor(spec, "/tmp/o.bin").size(), 1u);
  spec.set_phase(v1::PHASE_BACKWARD);
  files = OutputFilesFor(spec, "/tmp/o.bin");
  std::vector<std::string> names, paths;
  for (const TensorFile& f : files) {
    names.push_back(f.name);
    paths.push_back(f.path);
  }
  EXPECT_THAT(names, ElementsAre("output", "dq", "dk", "dv"));
  EXPECT_THAT(paths, ElementsAre("/tmp/o.bin", "/tmp/o.bin.dq", "/tmp/o.bin.dk", "/tmp/o.bin.dv"));
  // A layer's backward returns dX and the weight gradients instead, in StreamRun's order.
  spec.set_scope(v1::SCOPE_LAYER);
  names.clear();
  paths.clear();
  for (const TensorFile& f : OutputFilesFor(spec, "/tmp/y.bin")) {
    names.push_back(f.name);
    paths.push_back(f.path);
  }
  EXPECT_THAT(names, ElementsAre("output", "dx", "dw_q", "dw_k", "dw_v", "dw_o"));
  EXPECT_THAT(paths, ElementsAre("/tmp/y.bin", "/tmp/y.bin.dx", "/tmp/y.bin.dw_q",
                                 "/tmp/y.bin.dw_k", "/tmp/y.bin.dw_v", "/tmp/y.bin.dw_o"));
  spec.set_phase(v1::PHASE_PREFILL);  // a layer's forward: Y alone
  EXPECT_EQ(OutputFilesFor(spec, "/tmp/y.bin").size(), 1u);
}

TEST(TensorFileSinkTest, EachTensorToItsFileInOrder) {
  const std::vector<TensorFile> files = Files("sink_ok", {"output", "dq"});
  auto sink = TensorFileSink::Open(files);
  ASSERT_TRUE(sink.ok()) << sink.status();
  for (const v1::TensorChunk& c :
       {Chunk("output", 0, 8, "abc"), Chunk("output", 3, 8, "defgh"),
        Chunk("extra", 0, 2, "zz"),  // not asked for: skipped
        Chunk("dq", 0, 4, "12", {1, 2}), Chunk("dq", 2, 4, "34", {1, 2})}) {
    ASSERT_TRUE((*sink)->Add(c).ok()) << c.name() << " " << c.offset_bytes();
  }
  absl::StatusOr<std::vector<WrittenTensor>> written = (*sink)->Finish();
  ASSERT_TRUE(written.ok()) << written.status();
  ASSERT_EQ(written->size(), 2u);
  EXPECT_EQ((*written)[0].name, "output");
  EXPECT_EQ((*written)[0].path, files[0].path);
  EXPECT_EQ((*written)[0].bytes, 8u);
  EXPECT_EQ((*written)[0].dtype, v1::DTYPE_FLOAT16);
  EXPECT_THAT((*written)[0].shape, ElementsAre(2, 2));
  EXPECT_EQ((*written)[1].name, "dq");
  EXPECT_THAT((*written)[1].shape, ElementsAre(1, 2));
  EXPECT_EQ(Contents(files[0].path), "abcdefgh");
  EXPECT_EQ(Contents(files[1].path), "1234");
}

TEST(TensorFileSinkTest, ChunksThatDoNotTileTheirTensorAreDataLoss) {
  struct Case {
    std::vector<v1::TensorChunk> chunks;
    std::string message;
  };
  const Case cases[] = {
      {{Chunk("dk", 0, 4, "ab"), Chunk("dk", 3, 4, "c")},
       "dk chunk at offset 3 out of order (expected 2)"},
      {{Chunk("dk", 0, 4, "abcde")}, "dk chunk at offset 0 runs past its total of 4 bytes"},
      {{Chunk("dk", 0, 4, "ab"), Chunk("dk", 2, 4, "cd", {4})},
       "dk chunk at offset 2 describes another tensor (4 bytes of [4]) than its first (4 bytes "
       "of [2,2])"},
  };
  for (const Case& c : cases) {
    auto sink = TensorFileSink::Open(Files("sink_bad", {"dk"}));
    ASSERT_TRUE(sink.ok());
    absl::Status status;
    for (const v1::TensorChunk& chunk : c.chunks) {
      status = (*sink)->Add(chunk);
      if (!status.ok()) break;
    }
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << c.message;
    EXPECT_EQ(status.message(), c.message);
  }
}

TEST(TensorFileSinkTest, MissingOrShortTensorsFailTheFinish) {
  auto sink = TensorFileSink::Open(Files("sink_missing", {"dq", "dv"}));
  ASSERT_TRUE(sink.ok());
  ASSERT_TRUE((*sink)->Add(Chunk("dq", 0, 4, "abcd")).ok());
  absl::StatusOr<std::vector<WrittenTensor>> written = (*sink)->Finish();
  EXPECT_EQ(written.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(written.status().message(), "StreamRun sent no dv chunks");

  sink = TensorFileSink::Open(Files("sink_short", {"dq"}));
  ASSERT_TRUE(sink.ok());
  ASSERT_TRUE((*sink)->Add(Chunk("dq", 0, 4, "abc")).ok());
  written = (*sink)->Finish();
  EXPECT_EQ(written.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(written.status().message(), "dq has 3 bytes, expected 4");
}

TEST(TensorFileSinkTest, AnUnwritableFileFailsTheOpen) {
  auto sink = TensorFileSink::Open({{"output", "/nonexistent/dir/o.bin"}});
  EXPECT_EQ(sink.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(sink.status().message(), "cannot write /nonexistent/dir/o.bin");
}

}  // namespace
}  // namespace attnbench::client
