// Text and CSV renderings of a hand-built GetCapabilitiesResponse.
#include "client/caps_format.h"

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/client/test_util.h"

namespace attnbench::client {
namespace {

using ::attnbench::client::testing::Proto;
using ::testing::HasSubstr;

v1::GetCapabilitiesResponse Caps() {
  return Proto<v1::GetCapabilitiesResponse>(R"pb(
    server_version: "0.1.0"
    backends {
      name: "cpu_reference"
      description: "float32 reference"
      devices { name: "Xeon" kind: "cpu" index: 0 compute_units: 2 peak_tflops: 0.05 }
      dtypes: [ DTYPE_FLOAT32, DTYPE_FLOAT16 ]
      phases: [ PHASE_PREFILL, PHASE_DECODE ]
      deterministic_phases: [ PHASE_PREFILL ]
      scopes: [ SCOPE_CORE ]
      layouts: [ "mha", "gqa" ]
      masks: [ "none", "causal" ]
      modifiers: [ "rope" ]
      cache_formats: [ CACHE_FORMAT_NATIVE, CACHE_FORMAT_INT8 ]
      paged_kv_cache: true
      limitations: "slow"
    }
    backends {
      name: "cuda_flash"
      description: "fused"
      devices { name: "H100" kind: "cuda" index: 0 compute_capability: "9.0" }
      dtypes: [ DTYPE_FLOAT16, DTYPE_BFLOAT16 ]
      head_dims: [ 64, 128 ]
      kernels {
        name: "hopper wgmma+tma"
        compute_capabilities: "9.0"
        dtypes: [ DTYPE_FLOAT16, DTYPE_BFLOAT16 ]
        phases: [ PHASE_PREFILL ]
        masks: [ "none", "causal" ]
        head_dims { qk: 64 v: 64 }
        head_dims { qk: 128 v: 128 }
        requirements: "16-byte aligned rows"
        requirements: "no RoPE"
      }
      kernels {
        name: "mma.sync"
        compute_capabilities: "8.0+"
        dtypes: [ DTYPE_BFLOAT16 ]
        phases: [ PHASE_PREFILL, PHASE_DECODE ]
        masks: [ "none" ]
        modifiers: [ "rope", "alibi" ]
      }
    }
    limits { max_inline_output_bytes: 1048576 max_sweep_points: 256 }
  )pb");
}

TEST(CapsFormatTest, Text) {
  const std::string text = FormatCapabilitiesText(Caps());
  EXPECT_THAT(text, HasSubstr("server 0.1.0\n"));
  EXPECT_THAT(text, HasSubstr("max_inline_output_bytes=1048576"));
  EXPECT_THAT(text, HasSubstr("max_sweep_points=256"));
  EXPECT_THAT(text, HasSubstr("backend cpu_reference: float32 reference\n"));
  EXPECT_THAT(text, HasSubstr("  device    #0 Xeon (cpu, 2 compute units, 0.050 TFLOP/s)\n"));
  EXPECT_THAT(text, HasSubstr("  dtypes    fp32 fp16\n"));
  EXPECT_THAT(text, HasSubstr("  phases    prefill decode (deterministic: prefill)\n"));
  // cuda_flash lists no phases ("-") and so none deterministic.
  EXPECT_THAT(text, HasSubstr("  phases    - (deterministic: none)\n"));
  EXPECT_THAT(text, HasSubstr("  layouts   mha gqa\n"));
  EXPECT_THAT(text, HasSubstr("  kv cache  native int8, paged\n"));
  EXPECT_THAT(text, HasSubstr("  head dims any\n"));
  EXPECT_THAT(text, HasSubstr("  limit     slow\n"));
}

// Each kernel on one line in the order a request is matched against them, its requirements
// below it; empty lists read as the proto defines them (modifiers: none, head dims: any).
TEST(CapsFormatTest, TextListsKernels) {
  const std::string text = FormatCapabilitiesText(Caps());
  EXPECT_THAT(text, HasSubstr("  head dims 64 128\n"
                              "  kernel    hopper wgmma+tma: sm 9.0; fp16 bf16; prefill; masks "
                              "none causal; modifiers none; head dims 64/64 128/128\n"
                              "            requires 16-byte aligned rows\n"
                              "            requires no RoPE\n"
                              "  kernel    mma.sync: sm 8.0+; bf16; prefill decode; masks none; "
                              "modifiers rope alibi; head dims any\n"));
  EXPECT_LT(text.find("kernel    hopper"), text.find("kernel    mma.sync"));
  // A backend without kernels prints none.
  EXPECT_EQ(text.find("kernel "), text.find("kernel    hopper"));
}

TEST(CapsFormatTest, CsvHasOneLinePerDevice) {
  const std::string csv = FormatCapabilitiesCsv(Caps());
  std::vector<std::string> lines = absl::StrSplit(csv, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[1],
            "cpu_reference,0,Xeon,cpu,2,0,0.05,0,fp32 fp16,prefill decode,core,mha gqa,"
            "none causal,rope,");
  EXPECT_EQ(lines[2], "cuda_flash,0,H100,cuda,0,0,0,0,fp16 bf16,,,,,,hopper wgmma+tma;mma.sync");
  for (const std::string& line : lines) {
    EXPECT_EQ(std::vector<std::string>(absl::StrSplit(lines[0], ',')).size(),
              std::vector<std::string>(absl::StrSplit(line, ',')).size())
        << line;
  }
}

}  // namespace
}  // namespace attnbench::client
