#include "client/aux_files.h"

#include <algorithm>
#include <cctype>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "client/file_bytes.h"

namespace attnbench::client {
namespace {

constexpr absl::string_view kNpyMagic = "\x93NUMPY";
// The largest integer magnitude below which every integer is exact in float32.
constexpr double kExactIntLimit = 16777216.0;  // 2^24

absl::Status Invalid(absl::string_view message) { return absl::InvalidArgumentError(message); }

bool IsIdentifier(absl::string_view name) {
  if (name.empty() || !(std::isalpha(static_cast<unsigned char>(name[0])) || name[0] == '_')) {
    return false;
  }
  for (char c : name) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_') return false;
  }
  return true;
}

// "element 7" of a 1-D tensor, "element 7 [1, 3]" of a 2-D one: where a bad value is.
std::string Where(int64_t index, const std::vector<int64_t>& shape) {
  if (shape.size() < 2) return absl::StrCat("element ", index);
  return absl::StrCat("element ", index, " [", index / shape[1], ", ", index % shape[1], "]");
}

// Appends `v` as a little-endian float32, whatever the host's byte order.
void AppendFloat32(float v, std::string* out) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  for (int k = 0; k < 4; ++k) out->push_back(static_cast<char>((bits >> (8 * k)) & 0xff));
}

// What is wrong with one value of a float32 tensor, or "" when nothing is; `integer` says it
// came from an integer (an npy int dtype, or a text token of digits), which must then be exact.
std::string ValueProblem(double v, bool integer) {
  if (std::isnan(v)) return "is NaN; aux tensors must be finite";
  if (std::isinf(v)) return "is infinite; aux tensors must be finite";
  if (integer && std::fabs(v) > kExactIntLimit) {
    return absl::StrCat("is the integer ", static_cast<int64_t>(v),
                        ", not exact in float32 (|v| <= 16777216)");
  }
  if (std::fabs(v) > FLT_MAX) {
    return absl::StrCat("is ", v, ", outside float32's range (largest 3.4028235e38)");
  }
  return "";
}

v1::Tensor Float32Tensor(const std::vector<int64_t>& shape, const std::vector<double>& values) {
  v1::Tensor t;
  t.set_dtype(v1::DTYPE_FLOAT32);
  for (int64_t d : shape) t.add_shape(d);
  std::string data;
  data.reserve(values.size() * 4);
  for (double v : values) AppendFloat32(static_cast<float>(v), &data);
  t.set_data(std::move(data));
  return t;
}

uint64_t LittleEndian(absl::string_view bytes) {
  uint64_t v = 0;
  for (size_t k = bytes.size(); k-- > 0;) v = (v << 8) | static_cast<unsigned char>(bytes[k]);
  return v;
}

// The value of `key` in the .npy header's Python dict literal, as written ("'<f4'", "False",
// "(3, 4)"), or empty when absent.
absl::string_view HeaderValue(absl::string_view header, absl::string_view key) {
  for (const char quote : {'\'', '"'}) {
    const std::string quoted = absl::StrCat(std::string(1, quote), key, std::string(1, quote));
    size_t at = header.find(quoted);
    if (at == absl::string_view::npos) continue;
    absl::string_view rest = absl::StripLeadingAsciiWhitespace(header.substr(at + quoted.size()));
    if (!absl::ConsumePrefix(&rest, ":")) return {};
    rest = absl::StripLeadingAsciiWhitespace(rest);
    if (rest.empty()) return {};
    size_t end;
    if (rest[0] == '(') {
      end = rest.find(')');
      end = end == absl::string_view::npos ? rest.size() : end + 1;
    } else if (rest[0] == '\'' || rest[0] == '"') {
      end = rest.find(rest[0], 1);
      end = end == absl::string_view::npos ? rest.size() : end + 1;
    } else {
      end = rest.find_first_of(",}");
      if (end == absl::string_view::npos) end = rest.size();
    }
    return absl::StripTrailingAsciiWhitespace(rest.substr(0, end));
  }
  return {};
}

}  // namespace

absl::StatusOr<std::vector<AuxFile>> ParseAuxList(absl::string_view text) {
  std::vector<AuxFile> out;
  std::set<std::string> names;
  if (text.empty()) return Invalid("expected name=FILE[,name=FILE...]");
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    const size_t eq = item.find('=');
    if (eq == absl::string_view::npos) {
      return Invalid(absl::StrCat("'", item, "' is not of the form name=FILE"));
    }
    AuxFile f{std::string(item.substr(0, eq)), std::string(item.substr(eq + 1))};
    if (!IsIdentifier(f.name)) {
      return Invalid(absl::StrCat(
          "'", f.name, "' is not a tensor name (an identifier: [A-Za-z_][A-Za-z0-9_]*)"));
    }
    if (f.path.empty()) return Invalid(absl::StrCat("'", item, "' has no file after '='"));
    if (!names.insert(f.name).second) {
      return Invalid(absl::StrCat("tensor '", f.name, "' is given twice"));
    }
    out.push_back(std::move(f));
  }
  return out;
}

absl::StatusOr<v1::Tensor> TensorFromNpy(absl::string_view bytes) {
  if (!absl::StartsWith(bytes, kNpyMagic)) {
    return Invalid("not an .npy file (it does not start with \\x93NUMPY and a version)");
  }
  if (bytes.size() < 10) return Invalid(".npy file ends inside its header");
  const int major = static_cast<unsigned char>(bytes[6]);
  if (major < 1 || major > 3) {
    return Invalid(absl::StrCat(".npy format version ", major, ".",
                                static_cast<unsigned char>(bytes[7]),
                                " (1.0, 2.0 and 3.0 are read)"));
  }
  const size_t length_bytes = major == 1 ? 2 : 4;
  if (bytes.size() < 8 + length_bytes) return Invalid(".npy file ends inside its header");
  const uint64_t header_length = LittleEndian(bytes.substr(8, length_bytes));
  const size_t data_start = 8 + length_bytes + header_length;
  if (header_length > bytes.size() || data_start > bytes.size()) {
    return Invalid(".npy file ends inside its header");
  }
  const absl::string_view header = bytes.substr(8 + length_bytes, header_length);

  const absl::string_view descr = HeaderValue(header, "descr");
  int width = 0;
  bool integer = false;
  if (descr == "'<f4'" || descr == "\"<f4\"") {
    width = 4;
  } else if (descr == "'<f8'" || descr == "\"<f8\"") {
    width = 8;
  } else if (descr == "'<i4'" || descr == "\"<i4\"") {
    width = 4;
    integer = true;
  } else if (descr == "'<i8'" || descr == "\"<i8\"") {
    width = 8;
    integer = true;
  } else {
    return Invalid(absl::StrCat(".npy dtype ", descr.empty() ? "(missing)" : descr,
                                " is not read: use float32, float64, int32 or int64, "
                                "little-endian (<f4, <f8, <i4, <i8)"));
  }
  const absl::string_view fortran = HeaderValue(header, "fortran_order");
  if (fortran != "False") {
    return Invalid(absl::StrCat(".npy fortran_order is ", fortran.empty() ? "(missing)" : fortran,
                                "; save a C-order array (numpy.ascontiguousarray)"));
  }
  absl::string_view shape_text = HeaderValue(header, "shape");
  if (!absl::ConsumePrefix(&shape_text, "(") || !absl::ConsumeSuffix(&shape_text, ")")) {
    return Invalid(".npy header has no shape tuple");
  }
  std::vector<int64_t> shape;
  for (absl::string_view d : absl::StrSplit(shape_text, ',', absl::SkipWhitespace())) {
    int64_t n;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(d), &n) || n < 0) {
      return Invalid(absl::StrCat(".npy shape (", shape_text, ") is not a tuple of sizes"));
    }
    shape.push_back(n);
  }
  if (shape.empty() || shape.size() > 2) {
    return Invalid(absl::StrCat(".npy array has ", shape.size(), " dimensions (shape (", shape_text,
                                ")); an aux tensor has 1 or 2"));
  }
  int64_t elements = 1;
  for (int64_t d : shape) {
    // Bounded so the product cannot overflow; the server's own limit is far lower.
    if (d > (int64_t{1} << 40) || elements > (int64_t{1} << 40)) {
      return Invalid(absl::StrCat(".npy shape (", shape_text, ") is too large"));
    }
    elements *= d;
  }
  if (elements == 0)
    return Invalid(absl::StrCat(".npy array of shape (", shape_text, ") is empty"));
  const absl::string_view data = bytes.substr(data_start);
  if (static_cast<int64_t>(data.size()) != elements * width) {
    return Invalid(absl::StrCat(".npy data has ", data.size(), " bytes; shape (", shape_text,
                                ") of ", width, "-byte elements needs ", elements * width));
  }
  std::vector<double> values(elements);
  for (int64_t i = 0; i < elements; ++i) {
    const uint64_t raw = LittleEndian(data.substr(i * width, width));
    double v;
    if (integer) {
      v = width == 4 ? static_cast<double>(static_cast<int32_t>(static_cast<uint32_t>(raw)))
                     : static_cast<double>(static_cast<int64_t>(raw));
      // int64 values past 2^53 lose bits in the double, but they are refused as inexact anyway.
    } else if (width == 4) {
      const uint32_t bits = static_cast<uint32_t>(raw);
      float f;
      std::memcpy(&f, &bits, sizeof(f));
      v = f;
    } else {
      std::memcpy(&v, &raw, sizeof(v));
    }
    if (std::string problem = ValueProblem(v, integer); !problem.empty()) {
      return Invalid(absl::StrCat(Where(i, shape), " ", problem));
    }
    values[i] = v;
  }
  return Float32Tensor(shape, values);
}

absl::StatusOr<v1::Tensor> TensorFromText(absl::string_view text) {
  std::vector<std::vector<double>> rows;
  std::vector<int> line_numbers;  // of each row, for errors
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    const size_t hash = line.find('#');
    if (hash != absl::string_view::npos) line = line.substr(0, hash);
    std::vector<double> row;
    for (absl::string_view token :
         absl::StrSplit(line, absl::ByAnyChar(" \t\r\v\f"), absl::SkipEmpty())) {
      double v;
      if (!absl::SimpleAtod(token, &v)) {
        return Invalid(absl::StrCat("line ", line_number, ": '", token, "' is not a number"));
      }
      // A token of digits ("12", "-3") is an integer and must be exact; "1e9" and "2.5" are
      // floats, rounded to float32.
      const bool integer = token.find_first_not_of("+-0123456789") == absl::string_view::npos;
      if (std::string problem = ValueProblem(v, integer); !problem.empty()) {
        return Invalid(absl::StrCat("line ", line_number, ": '", token, "' ", problem));
      }
      row.push_back(v);
    }
    if (row.empty()) continue;
    rows.push_back(std::move(row));
    line_numbers.push_back(line_number);
  }
  if (rows.empty()) return Invalid("no numbers (a text aux tensor is numbers, one row per line)");
  const bool column = std::all_of(rows.begin(), rows.end(),
                                  [](const std::vector<double>& r) { return r.size() == 1; });
  std::vector<double> values;
  for (size_t r = 0; r < rows.size(); ++r) {
    if (!column && rows[r].size() != rows[0].size()) {
      return Invalid(absl::StrCat("line ", line_numbers[r], " has ", rows[r].size(),
                                  " numbers, but line ", line_numbers[0], " has ", rows[0].size(),
                                  " (the rows of a 2-D tensor must be as long)"));
    }
    values.insert(values.end(), rows[r].begin(), rows[r].end());
  }
  std::vector<int64_t> shape = {static_cast<int64_t>(values.size())};
  if (rows.size() > 1 && !column) {
    shape = {static_cast<int64_t>(rows.size()), static_cast<int64_t>(rows[0].size())};
  }
  return Float32Tensor(shape, values);
}

absl::StatusOr<v1::Tensor> ReadAuxTensor(const std::string& path) {
  absl::StatusOr<std::string> read = ReadFileBytes(path);
  if (!read.ok()) return Invalid(std::string(read.status().message()));
  const std::string bytes = *std::move(read);
  const bool npy = absl::StartsWith(bytes, kNpyMagic) || absl::EndsWith(path, ".npy");
  absl::StatusOr<v1::Tensor> tensor = npy ? TensorFromNpy(bytes) : TensorFromText(bytes);
  if (!tensor.ok()) return Invalid(absl::StrCat(path, ": ", tensor.status().message()));
  return tensor;
}

}  // namespace attnbench::client
