// Run-time compilation of CUDA C++ to a CUBIN with NVRTC, which is loaded with dlopen the first
// time it is needed (like cuBLAS, kernels/cuda/backend/cublas_loader.cc), so that a server
// without NVRTC still starts and only expression requests on CUDA backends fail. NVRTC needs no
// GPU: the host tests compile for sm_80 and sm_90a in CI.
#ifndef ATTNBENCH_KERNELS_CUDA_EXPR_NVRTC_COMPILER_H_
#define ATTNBENCH_KERNELS_CUDA_EXPR_NVRTC_COMPILER_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace attnbench::cuda {

struct CompiledCubin {
  std::string cubin;   // the image for cudaLibraryLoadData
  std::string log;     // NVRTC's log (warnings), for the server's log only
  double seconds = 0;  // wall time of nvrtcCompileProgram
  // The lowered (mangled) names of NvrtcProgram::name_expressions, in their order.
  std::vector<std::string> lowered_names;
};

// A program beyond one plain source: in-memory headers (include name, text) that #include finds
// before any -I directory, and name expressions ("&ns::Kernel<...>") whose template instances
// NVRTC is to compile and whose lowered names it returns.
struct NvrtcProgram {
  std::string source;
  std::vector<std::pair<std::string, std::string>> headers;
  std::vector<std::string> name_expressions;
  std::vector<std::string> options;  // added to CompileToCubin's defaults
};

// Whether libnvrtc could be loaded (and every entry point resolved).
bool NvrtcAvailable();

// Compiles `source` (named `name` in messages) for `arch` ("sm_80", "sm_90a") with `options`
// added to the defaults (-std=c++17, --fmad=false so + - * / round as the interpreter's do).
// FAILED_PRECONDITION when NVRTC is missing; INTERNAL "NVRTC could not compile <name>" when the
// source does not compile, with the log in `*log_out` (never in the status: it is the server's,
// not the client's).
absl::StatusOr<CompiledCubin> CompileToCubin(const std::string& source, absl::string_view name,
                                             absl::string_view arch,
                                             const std::vector<std::string>& options = {},
                                             std::string* log_out = nullptr);

// The same for `program`; INTERNAL also when a name expression has no lowered name.
absl::StatusOr<CompiledCubin> CompileProgram(const NvrtcProgram& program, absl::string_view name,
                                             absl::string_view arch,
                                             std::string* log_out = nullptr);

}  // namespace attnbench::cuda

#endif  // ATTNBENCH_KERNELS_CUDA_EXPR_NVRTC_COMPILER_H_
