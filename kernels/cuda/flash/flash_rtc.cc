#include "kernels/cuda/flash/flash_rtc.h"

#include <sys/stat.h>

#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/cuda/expr/expression_module.h"
#include "kernels/cuda/flash/flash_rtc_embedded.h"
#include "kernels/expr/cuda_source.h"

namespace attnbench::cuda::flash {
namespace {

// What the kernel headers take from the system and driver headers, which NVRTC cannot read
// (they include host C library headers): the fixed-width integers, size_t, and CUtensorMap (an
// opaque 128-byte, 64-byte aligned struct passed to the kernel as a __grid_constant__ parameter).
constexpr char kCudaH[] = R"(#pragma once
typedef unsigned long long cuuint64_t;
typedef struct CUtensorMap_st {
  alignas(64) cuuint64_t opaque[16];
} CUtensorMap;
)";
constexpr char kCstdint[] = R"(#pragma once
#include <cuda/std/cstdint>
namespace std {
using cuda::std::int8_t; using cuda::std::int16_t; using cuda::std::int32_t;
using cuda::std::int64_t; using cuda::std::uint8_t; using cuda::std::uint16_t;
using cuda::std::uint32_t; using cuda::std::uint64_t; using cuda::std::intptr_t;
using cuda::std::uintptr_t;
}
using std::int8_t; using std::int16_t; using std::int32_t; using std::int64_t;
using std::uint8_t; using std::uint16_t; using std::uint32_t; using std::uint64_t;
using std::intptr_t; using std::uintptr_t;
)";
constexpr char kCstddef[] = R"(#pragma once
#include <cuda/std/cstddef>
namespace std {
using cuda::std::size_t; using cuda::std::ptrdiff_t;
}
using std::size_t; using std::ptrdiff_t;
)";

bool Exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

std::string StorageType(Storage s) { return s == Storage::kBFloat16 ? "__nv_bfloat16" : "__half"; }

const char* Bool(bool b) { return b ? "true" : "false"; }

// The hook type the kernel is instantiated with (common/expr_hooks.cuh): calls of the emitted
// functions, whose integer parameters are int or long long as the program's ranges allow.
std::string HookType(const expr::Program* score_mod, const expr::Program* mask_mod) {
  std::string out = absl::StrCat(
      "namespace attnbench::cuda {\nstruct ClientExpressions {\n"
      "  static constexpr bool kScoreMod = ",
      Bool(score_mod != nullptr),
      ";\n  static constexpr bool kMaskMod = ", Bool(mask_mod != nullptr), ";\n");
  const auto ints = [](const expr::Program* p) {
    const std::string t = p->ints_fit_32 ? "(int)" : "(long long)";
    std::string out;
    for (const char* n : {"b", "h", "q", "kv", "hq", "hkv"}) absl::StrAppend(&out, t, n, ", ");
    return out;
  };
  constexpr char kParams[] = "int64_t b, int64_t h, int64_t q, int64_t kv, int64_t hq, int64_t hkv";
  if (score_mod != nullptr) {
    absl::StrAppend(&out, "  static __device__ __forceinline__ float ScoreMod(float s, ", kParams,
                    ", const void* aux) {\n    return attnbench_score_mod(s, ", ints(score_mod),
                    "static_cast<const AttnbenchAux*>(aux));\n  }\n");
  }
  if (mask_mod != nullptr) {
    absl::StrAppend(&out, "  static __device__ __forceinline__ bool MaskMod(", kParams,
                    ", const void* aux) {\n    return attnbench_mask_mod(", ints(mask_mod),
                    "static_cast<const AttnbenchAux*>(aux));\n  }\n");
  }
  out += "};\n}  // namespace attnbench::cuda\n";
  return out;
}

}  // namespace

std::string RtcKernelExpression(const RtcInstance& i) {
  const std::string t = StorageType(i.storage);
  if (i.route == FlashRoute::kSm90) {
    return absl::StrCat("&attnbench::cuda::flash::Sm90ForwardKernel<", t,
                        ", attnbench::cuda::flash::Sm90Config<", i.tile, ", ", Bool(i.rope),
                        ">, attnbench::cuda::flash::Sm90Policy<", i.mods, ", ", Bool(i.rope), ", ",
                        Bool(i.tile_lists),
                        ", attnbench::cuda::flash::kSm90PackedTanh, "
                        "attnbench::cuda::ClientExpressions>>");
  }
  return absl::StrCat("&attnbench::cuda::flash::FlashForwardKernel<", t,
                      ", attnbench::cuda::flash::Sm80Config<", i.tile,
                      ">, true, attnbench::cuda::ClientExpressions>");
}

const std::vector<std::pair<std::string, std::string>>& FlashRtcHeaders() {
  static const auto* headers = [] {
    auto* h = new std::vector<std::pair<std::string, std::string>>();
    for (int k = 0; k < kNumEmbeddedHeaders; ++k) {
      h->emplace_back(kEmbeddedHeaders[k].name, kEmbeddedHeaders[k].text);
    }
    h->emplace_back("cuda.h", kCudaH);
    h->emplace_back("cstdint", kCstdint);
    h->emplace_back("cstddef", kCstddef);
    return h;
  }();
  return *headers;
}

absl::StatusOr<std::vector<std::string>> FlashRtcIncludeDirs() {
  std::vector<std::string> candidates;
  for (const char* env : {"CUDA_HOME", "CUDA_PATH"}) {
    const char* root = std::getenv(env);
    if (root != nullptr && *root != '\0') candidates.push_back(absl::StrCat(root, "/include"));
  }
#ifdef ATTNBENCH_CUDA_INCLUDE_DIR
  candidates.push_back(ATTNBENCH_CUDA_INCLUDE_DIR);
#endif
  candidates.push_back("/usr/local/cuda/include");
  for (const std::string& dir : candidates) {
    if (!Exists(dir + "/cuda_fp16.h") || !Exists(dir + "/cuda_bf16.h")) continue;
    if (Exists(dir + "/cccl/cuda/ptx")) return std::vector<std::string>{dir, dir + "/cccl"};
    if (Exists(dir + "/cuda/ptx")) return std::vector<std::string>{dir};
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "cuda_flash compiles client expressions into its kernel with NVRTC, which needs the CUDA "
      "toolkit's headers (cuda_fp16.h, cuda_bf16.h and CCCL's cuda/ptx); none of ",
      absl::StrJoin(candidates, ", "), " has them (set CUDA_HOME)"));
}

NvrtcProgram FlashRtcProgram(const RtcInstance& instance, const expr::Program* score_mod,
                             const expr::Program* mask_mod,
                             const std::vector<std::string>& include_dirs) {
  NvrtcProgram p;
  p.source =
      "// cuda_flash with a request's client expressions, for NVRTC (kernels/cuda/flash/"
      "flash_rtc.h).\n"
      // ptx.cuh's kNegInf; NVRTC has no __builtin_huge_valf.
      "#define __builtin_huge_valf() __builtin_bit_cast(float, 0x7f800000u)\n";
  p.source += instance.route == FlashRoute::kSm90
                  ? "#include \"kernels/cuda/flash/kernel_sm90.cuh\"\n"
                  : "#include \"kernels/cuda/flash/kernel_sm80.cuh\"\n";
  p.source += expr::CudaPrelude();
  if (score_mod != nullptr) p.source += expr::CudaFunction(*score_mod, "attnbench_score_mod");
  if (mask_mod != nullptr) p.source += expr::CudaFunction(*mask_mod, "attnbench_mask_mod");
  p.source += HookType(score_mod, mask_mod);
  p.headers = FlashRtcHeaders();
  p.name_expressions = {RtcKernelExpression(instance)};
  // Unannotated constexpr helpers of configs.h are used in device code.
  p.options = {"-default-device"};
  for (const std::string& dir : include_dirs) p.options.push_back("-I" + dir);
  return p;
}

std::string FlashRtcKey(const RtcInstance& instance, const expr::Program* score_mod,
                        const expr::Program* mask_mod, const std::string& arch) {
  return absl::StrCat("flash|", RtcKernelExpression(instance), "|",
                      ExpressionModuleKey(score_mod, mask_mod, arch));
}

}  // namespace attnbench::cuda::flash
