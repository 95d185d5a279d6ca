// --aux files -> float32 Tensors: .npy of every dtype read (and the ones refused), the text
// format's shapes, and every malformed file a precise error; and the name=FILE list syntax.
#include "client/aux_files.h"

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace attnbench::client {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// An .npy file: magic, version, header length, the header dict padded to 64 bytes with a final
// newline (as numpy writes it), then `data`.
std::string Npy(const std::string& descr, const std::string& shape, const std::string& data,
                int major = 1, const std::string& fortran = "False") {
  std::string header = absl::StrCat("{'descr': '", descr, "', 'fortran_order': ", fortran,
                                    ", 'shape': ", shape, ", }");
  const size_t prefix = major == 1 ? 10 : 12;
  while ((prefix + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string out = "\x93NUMPY";
  out += static_cast<char>(major);
  out += '\0';
  const size_t length = header.size();
  for (size_t k = 0; k < (major == 1 ? 2u : 4u); ++k) out += static_cast<char>(length >> (8 * k));
  return out + header + data;
}

template <typename T>
std::string Bytes(const std::vector<T>& values) {
  std::string out(values.size() * sizeof(T), '\0');
  std::memcpy(out.data(), values.data(), out.size());  // the test hosts are little-endian
  return out;
}

std::vector<float> Floats(const v1::Tensor& t) {
  std::vector<float> out(t.data().size() / 4);
  std::memcpy(out.data(), t.data().data(), t.data().size());
  return out;
}

TEST(NpyTest, Float32OneDimensionIsCopied) {
  absl::StatusOr<v1::Tensor> t = TensorFromNpy(Npy("<f4", "(3,)", Bytes<float>({0.5f, -2, 1e30f})));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->dtype(), v1::DTYPE_FLOAT32);
  EXPECT_THAT(t->shape(), ElementsAre(3));
  EXPECT_THAT(Floats(*t), ElementsAre(0.5f, -2.0f, 1e30f));
}

TEST(NpyTest, Float64TwoDimensionsRoundToFloat32) {
  absl::StatusOr<v1::Tensor> t =
      TensorFromNpy(Npy("<f8", "(2, 3)", Bytes<double>({0.1, 1, 2, 3, 4, -5.25}), 2));
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(t->shape(), ElementsAre(2, 3));
  EXPECT_THAT(Floats(*t), ElementsAre(0.1f, 1.0f, 2.0f, 3.0f, 4.0f, -5.25f));
}

TEST(NpyTest, IntegersBecomeExactFloats) {
  absl::StatusOr<v1::Tensor> i32 =
      TensorFromNpy(Npy("<i4", "(4,)", Bytes<int32_t>({0, 7, -3, 16777216})));
  ASSERT_TRUE(i32.ok()) << i32.status();
  EXPECT_THAT(Floats(*i32), ElementsAre(0.0f, 7.0f, -3.0f, 16777216.0f));
  absl::StatusOr<v1::Tensor> i64 =
      TensorFromNpy(Npy("<i8", "(1, 2)", Bytes<int64_t>({-16777216, 42}), 3));
  ASSERT_TRUE(i64.ok()) << i64.status();
  EXPECT_THAT(i64->shape(), ElementsAre(1, 2));
  EXPECT_THAT(Floats(*i64), ElementsAre(-16777216.0f, 42.0f));
}

struct BadNpy {
  std::string name;
  std::string bytes;
  std::string message;
};

void PrintTo(const BadNpy& c, std::ostream* os) { *os << c.name; }

class BadNpyTest : public ::testing::TestWithParam<BadNpy> {};

TEST_P(BadNpyTest, IsRefusedWithTheReason) {
  absl::StatusOr<v1::Tensor> t = TensorFromNpy(GetParam().bytes);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(t.status().message()), HasSubstr(GetParam().message));
}

INSTANTIATE_TEST_SUITE_P(
    Files, BadNpyTest,
    ::testing::Values(
        BadNpy{"NotNpy", "1 2 3\n", "not an .npy file"},
        BadNpy{"Truncated", std::string("\x93NUMPY\x01\x00\x40", 9), "ends inside its header"},
        BadNpy{"HeaderPastEnd", Npy("<f4", "(1,)", "").substr(0, 30), "ends inside its header"},
        BadNpy{"Version4", std::string("\x93NUMPY\x04\x00\x00\x00", 10), "version 4.0"},
        BadNpy{"ThreeDimensions", Npy("<f4", "(2, 2, 2)", Bytes<float>(std::vector<float>(8))),
               "has 3 dimensions (shape (2, 2, 2)); an aux tensor has 1 or 2"},
        BadNpy{"Scalar", Npy("<f4", "()", Bytes<float>({1})), "has 0 dimensions"},
        BadNpy{"Empty", Npy("<f4", "(0,)", ""), "is empty"},
        BadNpy{"Float16", Npy("<f2", "(2,)", std::string(4, '\0')),
               ".npy dtype '<f2' is not read: use float32, float64, int32 or int64"},
        BadNpy{"BigEndian", Npy(">f4", "(1,)", std::string(4, '\0')), "'>f4' is not read"},
        BadNpy{"Bool", Npy("|b1", "(1,)", std::string(1, '\0')), "'|b1' is not read"},
        BadNpy{"FortranOrder", Npy("<f4", "(2, 2)", Bytes<float>({1, 2, 3, 4}), 1, "True"),
               "fortran_order is True; save a C-order array"},
        BadNpy{"ShortData", Npy("<f4", "(3,)", Bytes<float>({1, 2})),
               "data has 8 bytes; shape (3,) of 4-byte elements needs 12"},
        BadNpy{"LongData", Npy("<i8", "(1,)", Bytes<int64_t>({1, 2})), "data has 16 bytes"},
        BadNpy{"NaN", Npy("<f4", "(2, 2)", Bytes<float>({1, 2, 3, std::nanf("")})),
               "element 3 [1, 1] is NaN; aux tensors must be finite"},
        BadNpy{"Infinity", Npy("<f8", "(2,)", Bytes<double>({1, -1.0 / 0.0})),
               "element 1 is infinite"},
        BadNpy{"Float64OverFloat32", Npy("<f8", "(1,)", Bytes<double>({1e39})),
               "outside float32's range"},
        BadNpy{"InexactInt32", Npy("<i4", "(2,)", Bytes<int32_t>({1, 16777217})),
               "element 1 is the integer 16777217, not exact in float32"},
        BadNpy{"InexactInt64", Npy("<i8", "(1,)", Bytes<int64_t>({-(int64_t{1} << 40)})),
               "is the integer -1099511627776"}),
    [](const ::testing::TestParamInfo<BadNpy>& info) { return info.param.name; });

TEST(TextTest, OneLineIsOneDimension) {
  absl::StatusOr<v1::Tensor> t = TensorFromText("0.5 -1 2e3\n");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->dtype(), v1::DTYPE_FLOAT32);
  EXPECT_THAT(t->shape(), ElementsAre(3));
  EXPECT_THAT(Floats(*t), ElementsAre(0.5f, -1.0f, 2000.0f));
}

TEST(TextTest, OneNumberPerLineIsOneDimension) {
  absl::StatusOr<v1::Tensor> t = TensorFromText("# document ids\n0\n0\n\n1  # second\r\n2\n");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(t->shape(), ElementsAre(4));
  EXPECT_THAT(Floats(*t), ElementsAre(0.0f, 0.0f, 1.0f, 2.0f));
}

TEST(TextTest, RowsAreTwoDimensions) {
  absl::StatusOr<v1::Tensor> t = TensorFromText("1 2 3\n\t4 5 6   \n");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(t->shape(), ElementsAre(2, 3));
  EXPECT_THAT(Floats(*t), ElementsAre(1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f));
}

TEST(TextTest, MalformedTextNamesTheLine) {
  const std::pair<std::string, std::string> cases[] = {
      {"", "no numbers"},
      {"# only a comment\n\n", "no numbers"},
      {"1 2\n3\n", "line 2 has 1 numbers, but line 1 has 2"},
      {"1\n2 3\n", "line 2 has 2 numbers, but line 1 has 1"},
      {"1 2\n3 x\n", "line 2: 'x' is not a number"},
      {"1,2\n", "line 1: '1,2' is not a number"},
      {"1\nnan\n", "line 2: 'nan' is NaN"},
      {"inf\n", "line 1: 'inf' is infinite"},
      {"1e39\n", "outside float32's range"},
      {"16777217\n", "line 1: '16777217' is the integer 16777217, not exact in float32"},
  };
  for (const auto& [text, message] : cases) {
    absl::StatusOr<v1::Tensor> t = TensorFromText(text);
    ASSERT_FALSE(t.ok()) << text;
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(t.status().message()), HasSubstr(message)) << text;
  }
  // A float that is not an integer token is rounded, not refused.
  EXPECT_TRUE(TensorFromText("16777217.0\n").ok());
}

std::string WriteFile(const std::string& name, const std::string& bytes) {
  const std::string path = ::testing::TempDir() + name;
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  return path;
}

TEST(ReadAuxTensorTest, TellsTheFormatsApartByContent) {
  // An .npy file under any name, and text under any name but *.npy.
  const std::string npy = WriteFile("aux_slopes.bin", Npy("<f4", "(2,)", Bytes<float>({1, 2})));
  absl::StatusOr<v1::Tensor> t = ReadAuxTensor(npy);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(Floats(*t), ElementsAre(1.0f, 2.0f));
  const std::string text = WriteFile("aux_table.txt", "1 2\n3 4\n");
  t = ReadAuxTensor(text);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_THAT(t->shape(), ElementsAre(2, 2));
}

TEST(ReadAuxTensorTest, ErrorsStartWithThePath) {
  const std::string not_npy = WriteFile("aux_broken.npy", "1 2 3\n");
  absl::StatusOr<v1::Tensor> t = ReadAuxTensor(not_npy);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().message(),
            not_npy + ": not an .npy file (it does not start with \\x93NUMPY and a version)");
  t = ReadAuxTensor("/nonexistent/doc.npy");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().message(), "cannot read /nonexistent/doc.npy: No such file or directory");
}

TEST(AuxListTest, ParsesNamesAndPaths) {
  absl::StatusOr<std::vector<AuxFile>> list = ParseAuxList("slopes=a.npy,_doc2=/tmp/d=1.txt");
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].name, "slopes");
  EXPECT_EQ((*list)[0].path, "a.npy");
  EXPECT_EQ((*list)[1].name, "_doc2");
  EXPECT_EQ((*list)[1].path, "/tmp/d=1.txt");  // only the first '=' separates
}

TEST(AuxListTest, RefusesMalformedItems) {
  const std::pair<std::string, std::string> cases[] = {
      {"", "expected name=FILE"},
      {"slopes", "'slopes' is not of the form name=FILE"},
      {"a=x.npy,", "'' is not of the form name=FILE"},
      {"=x.npy", "'' is not a tensor name"},
      {"2d=x.npy", "'2d' is not a tensor name"},
      {"my-bias=x.npy", "'my-bias' is not a tensor name"},
      {"bias=", "'bias=' has no file after '='"},
      {"doc=a.npy,doc=b.npy", "tensor 'doc' is given twice"},
  };
  for (const auto& [text, message] : cases) {
    absl::StatusOr<std::vector<AuxFile>> list = ParseAuxList(text);
    ASSERT_FALSE(list.ok()) << text;
    EXPECT_THAT(std::string(list.status().message()), HasSubstr(message)) << text;
  }
}

}  // namespace
}  // namespace attnbench::client
