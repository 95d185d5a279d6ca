#include "kernels/cuda/expr/nvrtc_compiler.h"

#include <dlfcn.h>
#include <nvrtc.h>

#include <chrono>
#include <type_traits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace attnbench::cuda {
namespace {

// The NVRTC entry points used, resolved once.
struct Nvrtc {
  decltype(&nvrtcCreateProgram) create = nullptr;
  decltype(&nvrtcCompileProgram) compile = nullptr;
  decltype(&nvrtcGetProgramLogSize) log_size = nullptr;
  decltype(&nvrtcGetProgramLog) log = nullptr;
  decltype(&nvrtcGetCUBINSize) cubin_size = nullptr;
  decltype(&nvrtcGetCUBIN) cubin = nullptr;
  decltype(&nvrtcDestroyProgram) destroy = nullptr;
  decltype(&nvrtcGetErrorString) error_string = nullptr;
  decltype(&nvrtcAddNameExpression) add_name = nullptr;
  decltype(&nvrtcGetLoweredName) lowered_name = nullptr;
  bool ok = false;
};

const Nvrtc& Api() {
  static const Nvrtc api = [] {
    Nvrtc n;
    void* lib = dlopen("libnvrtc.so.13", RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) lib = dlopen("libnvrtc.so", RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) return n;
    const auto resolve = [&](auto& fn, const char* symbol) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, symbol));
      return fn != nullptr;
    };
    n.ok = resolve(n.create, "nvrtcCreateProgram") && resolve(n.compile, "nvrtcCompileProgram") &&
           resolve(n.log_size, "nvrtcGetProgramLogSize") && resolve(n.log, "nvrtcGetProgramLog") &&
           resolve(n.cubin_size, "nvrtcGetCUBINSize") && resolve(n.cubin, "nvrtcGetCUBIN") &&
           resolve(n.destroy, "nvrtcDestroyProgram") &&
           resolve(n.error_string, "nvrtcGetErrorString") &&
           resolve(n.add_name, "nvrtcAddNameExpression") &&
           resolve(n.lowered_name, "nvrtcGetLoweredName");
    return n;
  }();
  return api;
}

}  // namespace

bool NvrtcAvailable() { return Api().ok; }

absl::StatusOr<CompiledCubin> CompileToCubin(const std::string& source, absl::string_view name,
                                             absl::string_view arch,
                                             const std::vector<std::string>& options,
                                             std::string* log_out) {
  NvrtcProgram program;
  program.source = source;
  program.options = options;
  return CompileProgram(program, name, arch, log_out);
}

absl::StatusOr<CompiledCubin> CompileProgram(const NvrtcProgram& input, absl::string_view name,
                                             absl::string_view arch, std::string* log_out) {
  const std::string& source = input.source;
  const std::vector<std::string>& options = input.options;
  const Nvrtc& api = Api();
  if (!api.ok) {
    return absl::FailedPreconditionError(
        "NVRTC (libnvrtc.so.13) is not available on this server: client expressions cannot be "
        "compiled for the GPU");
  }
  const std::string program_name = absl::StrCat(name, ".cu");
  nvrtcProgram program = nullptr;
  std::vector<const char*> header_texts, header_names;
  for (const auto& [include_name, text] : input.headers) {
    header_names.push_back(include_name.c_str());
    header_texts.push_back(text.c_str());
  }
  nvrtcResult r =
      api.create(&program, source.c_str(), program_name.c_str(),
                 static_cast<int>(header_texts.size()), header_texts.data(), header_names.data());
  if (r != NVRTC_SUCCESS) {
    return absl::InternalError(
        absl::StrCat("nvrtcCreateProgram for ", name, ": ", api.error_string(r)));
  }
  for (const std::string& e : input.name_expressions) {
    if ((r = api.add_name(program, e.c_str())) != NVRTC_SUCCESS) {
      api.destroy(&program);
      return absl::InternalError(
          absl::StrCat("nvrtcAddNameExpression for ", name, ": ", api.error_string(r)));
    }
  }
  std::vector<std::string> all = {"-std=c++17", "--fmad=false", absl::StrCat("-arch=", arch)};
  all.insert(all.end(), options.begin(), options.end());
  std::vector<const char*> argv;
  for (const std::string& o : all) argv.push_back(o.c_str());
  const auto start = std::chrono::steady_clock::now();
  r = api.compile(program, static_cast<int>(argv.size()), argv.data());
  CompiledCubin out;
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  size_t log_size = 0;
  if (api.log_size(program, &log_size) == NVRTC_SUCCESS && log_size > 1) {
    out.log.resize(log_size);
    api.log(program, out.log.data());
    out.log.resize(log_size - 1);  // the terminating NUL
  }
  if (log_out != nullptr) *log_out = out.log;
  if (r != NVRTC_SUCCESS) {
    api.destroy(&program);
    return absl::InternalError(absl::StrCat("NVRTC could not compile ", name, " for ", arch, ": ",
                                            api.error_string(r), " (log in the server's log)"));
  }
  for (const std::string& e : input.name_expressions) {
    const char* lowered = nullptr;
    if (api.lowered_name(program, e.c_str(), &lowered) != NVRTC_SUCCESS || lowered == nullptr) {
      api.destroy(&program);
      return absl::InternalError(absl::StrCat("NVRTC gave no lowered name for ", e, " in ", name));
    }
    out.lowered_names.emplace_back(lowered);  // owned by the program: copied before destroy
  }
  size_t size = 0;
  if (api.cubin_size(program, &size) != NVRTC_SUCCESS || size == 0) {
    api.destroy(&program);
    return absl::InternalError(absl::StrCat("NVRTC produced no CUBIN for ", name));
  }
  out.cubin.resize(size);
  r = api.cubin(program, out.cubin.data());
  api.destroy(&program);
  if (r != NVRTC_SUCCESS) {
    return absl::InternalError(absl::StrCat("nvrtcGetCUBIN for ", name, ": ", api.error_string(r)));
  }
  return out;
}

}  // namespace attnbench::cuda
