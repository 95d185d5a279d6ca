// The files `--aux=name=FILE` reads into spec.aux: the auxiliary tensors that score_mod and
// mask_mod expressions index by name (docs/expressions.md). Two formats, told apart by content:
//
//   .npy  NumPy's format (versions 1.0, 2.0, 3.0): dtype <f4, <f8, <i4 or <i8 (little-endian),
//         C order, 1 or 2 dimensions, at least one element.
//   text  anything else: whitespace-separated numbers, one row per line; '#' starts a comment;
//         blank lines are skipped. One line, or one number on every line, is a 1-D tensor;
//         otherwise a 2-D tensor of [lines, numbers per line] whose lines must all be as long.
//
// Either becomes a DTYPE_FLOAT32 Tensor (the server widens every aux tensor to float anyway):
// float64 values are rounded to float32, and must fit its range; integers must be exact in
// float32 (|v| <= 2^24), so a document id or a table index never silently changes. NaN and
// infinities are refused here, as the server would refuse them, but with the file and element.
#ifndef ATTNBENCH_CLIENT_AUX_FILES_H_
#define ATTNBENCH_CLIENT_AUX_FILES_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "attnbench/v1/attnbench.pb.h"

namespace attnbench::client {

// One item of --aux.
struct AuxFile {
  std::string name;
  std::string path;
};

// "name=FILE,name=FILE,...": names are identifiers ([A-Za-z_][A-Za-z0-9_]*) given once each;
// whether one collides with a variable or function of the language is the server's to say.
// Paths cannot contain commas. InvalidArgument naming the bad item otherwise.
absl::StatusOr<std::vector<AuxFile>> ParseAuxList(absl::string_view text);

// The bytes of an .npy file, or of a text file, as a float32 Tensor (see above). Errors are
// InvalidArgument without the file name, which the caller adds.
absl::StatusOr<v1::Tensor> TensorFromNpy(absl::string_view bytes);
absl::StatusOr<v1::Tensor> TensorFromText(absl::string_view text);

// Reads `path`: .npy when it starts with NumPy's magic string (or is named *.npy, so that a
// damaged .npy file is reported as one), text otherwise. Errors start with the path.
absl::StatusOr<v1::Tensor> ReadAuxTensor(const std::string& path);

}  // namespace attnbench::client

#endif  // ATTNBENCH_CLIENT_AUX_FILES_H_
