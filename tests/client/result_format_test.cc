// Table, CSV and JSON renderings of hand-built results, including a failed sweep point.
#include "client/result_format.h"

#include <algorithm>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "tests/client/test_util.h"

namespace attnbench::client {
namespace {

using ::attnbench::client::testing::EqualsProto;
using ::attnbench::client::testing::Proto;
using ::testing::HasSubstr;

v1::RunResult CheckedGqaResult() {
  return Proto<v1::RunResult>(R"pb(
    spec {
      batch_size: 2
      seq_len_q: 128
      seq_len_kv: 256
      head_dim_qk: 64
      layout { gqa { num_query_heads: 8 num_kv_heads: 2 } }
      mask { causal {} }
      dtype: DTYPE_FLOAT16
    }
    backend: "cpu_reference"
    timing { count: 10 p10_ms: 1.25 median_ms: 1.5 p90_ms: 2.0 }
    throughput { achieved_tflops: 0.0123 achieved_gbps: 12.5 }
    correctness { checked: true relative_error: 0.00015 passed: true }
    server: "attnbench-7d9f-x2k4p"
    kernel: "mma.sync D=64/64, common"
    device { kind: "cuda" index: 1 name: "NVIDIA H100" }
  )pb");
}

v1::RunResult UncheckedMhaResult() {
  return Proto<v1::RunResult>(R"pb(
    spec {
      batch_size: 1
      seq_len_q: 64
      seq_len_kv: 64
      head_dim_qk: 64
      head_dim_v: 32
      layout { mha { num_heads: 4 } }
      dtype: DTYPE_FLOAT32
    }
    backend: "cpu_reference"
    timing { count: 3 p10_ms: 0.2 median_ms: 0.25 p90_ms: 0.3 }
    throughput { achieved_tflops: 1.5 achieved_gbps: 100 }
  )pb");
}

std::vector<ResultRow> Rows() {
  return {ResultRow{0, CheckedGqaResult(), absl::OkStatus()},
          ResultRow{1, UncheckedMhaResult(), absl::OkStatus()},
          ResultRow{2, std::nullopt, absl::InvalidArgumentError("kv_heads must divide, really")}};
}

// Cells joined by the table's two-space separator.
std::string Line(const std::vector<std::string>& cells) {
  return absl::StrJoin(cells, "  ") + "\n";
}

TEST(ResultFormatTest, TableAlignsColumns) {
  const std::string expected =
      Line({"point", "backend      ", "layout ", "mask  ", "dtype", "B", "S_q", "S_kv", "H",
            "    D", "median ms", " p10-p90 ms", "TFLOP/s", "  GB/s", " rel err", "pass",
            "server              ", "device"}) +
      Line({"    0", "cpu_reference", "gqa:8/2", "causal", "fp16 ", "2", "128", " 256", "8",
            "   64", "    1.500", "1.250-2.000", "  0.012", " 12.50", "1.50e-04", "yes ",
            "attnbench-7d9f-x2k4p", "cuda:1"}) +
      Line({"    1", "cpu_reference", "mha:4  ", "none  ", "fp32 ", "1", " 64", "  64", "4",
            "64/32", "    0.250", "0.200-0.300", "  1.500", "100.00", "       -", "-   ",
            "-                   ", "-"}) +
      "    2  error INVALID_ARGUMENT: kv_heads must divide, really\n";
  EXPECT_EQ(FormatTable(Rows()), expected);
}

TEST(ResultFormatTest, TableUsesTheHeadMapWhenPresent) {
  v1::RunResult result = UncheckedMhaResult();
  for (int h = 0; h < 3; ++h) result.add_head_map();
  EXPECT_THAT(FormatTable({ResultRow{0, result, absl::OkStatus()}}), HasSubstr("  3  64/32"));
}

TEST(ResultFormatTest, EmptyTableIsTheHeader) {
  EXPECT_THAT(FormatTable({}), ::testing::StartsWith("point  backend  layout"));
}

TEST(ResultFormatTest, Csv) {
  EXPECT_EQ(
      FormatCsv(Rows()),
      "point,backend,layout,mask,dtype,batch,seq_len_q,seq_len_kv,heads,head_dim_qk,"
      "head_dim_v,median_ms,p10_ms,p90_ms,tflops,gbps,rel_err,passed,server,device,kernel,"
      "error,non_finite_elements,phase,backward_timing,dq_rel_err,dq_passed,dk_rel_err,"
      "dk_passed,dv_rel_err,dv_passed,score_mod,mask_mod,kv_heads,pca_key_err,pca_value_err,"
      "pca_output_err,pca_median_ms,mean_pool_key_err,mean_pool_value_err,mean_pool_output_err,"
      "mean_pool_median_ms,dx_rel_err,dx_passed,dw_q_rel_err,dw_q_passed,dw_k_rel_err,"
      "dw_k_passed,dw_v_rel_err,dw_v_passed,dw_o_rel_err,dw_o_passed,kernel_rel_err,"
      "kernel_passed,quantization_rel_err,deterministic\n"
      "0,cpu_reference,gqa:8/2,causal,fp16,2,128,256,8,64,64,1.5,1.25,2,0.0123,12.5,"
      "0.00015,true,attnbench-7d9f-x2k4p,cuda:1,\"mma.sync D=64/64, common\",,0,prefill,"
      ",,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,false\n"
      "1,cpu_reference,mha:4,none,fp32,1,64,64,4,64,32,0.25,0.2,0.3,1.5,100,,,,,,,0,prefill,"
      ",,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,false\n"
      "2,,,,,,,,,,,,,,,,,,,,,\"INVALID_ARGUMENT: kv_heads must divide, really\",,,,,,,,,,,,,,,,,,,,"
      ",,,,,,,,,,,,,,\n");
}

// A failed check caused by NaN or infinity says so, and an unchecked run with one is not "-".
TEST(ResultFormatTest, NonFiniteOutputsAreShown) {
  v1::RunResult checked = CheckedGqaResult();
  checked.mutable_correctness()->set_passed(false);
  checked.mutable_output_summary()->set_non_finite_elements(3);
  v1::RunResult unchecked = UncheckedMhaResult();
  unchecked.mutable_output_summary()->set_non_finite_elements(1);
  const std::vector<ResultRow> rows = {ResultRow{0, checked, absl::OkStatus()},
                                       ResultRow{1, unchecked, absl::OkStatus()}};
  const std::string table = FormatTable(rows);
  EXPECT_THAT(table, HasSubstr("  NO (3 non-finite)  attnbench-7d9f-x2k4p"));
  EXPECT_THAT(table, HasSubstr("  - (1 non-finite)   -"));
  const std::string csv = FormatCsv(rows);
  EXPECT_THAT(csv, HasSubstr(",false,attnbench-7d9f-x2k4p,cuda:1,\"mma.sync D=64/64, common\",,3,"
                             "prefill,"));
  EXPECT_THAT(csv, HasSubstr(",100,,,,,,,1,prefill,"));
}

// A checked backward run: O [B, S_q, H_out, D_v] summarized, dQ, dK, dV compared one by one.
v1::RunResult CheckedBackwardResult() {
  return Proto<v1::RunResult>(R"pb(
    spec {
      batch_size: 1
      seq_len_q: 64
      seq_len_kv: 64
      head_dim_qk: 32
      layout { mha { num_heads: 2 } }
      dtype: DTYPE_BFLOAT16
      phase: PHASE_BACKWARD
    }
    backend: "cuda_flash"
    measurement { backward_timing: BACKWARD_TIMING_TRAINING_STEP }
    timing { count: 10 p10_ms: 0.5 median_ms: 0.75 p90_ms: 1.0 }
    throughput { achieved_tflops: 2 achieved_gbps: 30 }
    correctness {
      checked: true
      relative_error: 0.004
      passed: false
      tensors { name: "dq" relative_error: 0.001 passed: true }
      tensors { name: "dk" relative_error: 0.004 passed: false non_finite_elements: 2 }
      tensors { name: "dv" relative_error: 0.0025 passed: true }
    }
  )pb");
}

TEST(ResultFormatTest, TableAddsGradientColumnsWhenARowHasThem) {
  const std::vector<ResultRow> rows = {ResultRow{0, CheckedBackwardResult(), absl::OkStatus()},
                                       ResultRow{1, UncheckedMhaResult(), absl::OkStatus()}};
  const std::string expected = Line({"point",     "backend      ",
                                     "layout",    "mask",
                                     "dtype",     "B",
                                     "S_q",       "S_kv",
                                     "H",         "    D",
                                     "median ms", " p10-p90 ms",
                                     "TFLOP/s",   "  GB/s",
                                     " rel err",  "pass             ",
                                     "server",    "device",
                                     "  dQ err",  "  dK err",
                                     "  dV err"}) +
                               Line({"    0",     "cuda_flash   ",
                                     "mha:2 ",    "none",
                                     "bf16 ",     "1",
                                     " 64",       "  64",
                                     "2",         "   32",
                                     "    0.750", "0.500-1.000",
                                     "  2.000",   " 30.00",
                                     "4.00e-03",  "NO (2 non-finite)",
                                     "-     ",    "-     ",
                                     "1.00e-03",  "4.00e-03",
                                     "2.50e-03"}) +
                               Line({"    1",     "cpu_reference",
                                     "mha:4 ",    "none",
                                     "fp32 ",     "1",
                                     " 64",       "  64",
                                     "4",         "64/32",
                                     "    0.250", "0.200-0.300",
                                     "  1.500",   "100.00",
                                     "       -",  "-                ",
                                     "-     ",    "-     ",
                                     "       -",  "       -",
                                     "       -"});
  EXPECT_EQ(FormatTable(rows), expected);
  // Forward rows alone: the table as it always was.
  EXPECT_THAT(FormatTable({ResultRow{0, UncheckedMhaResult(), absl::OkStatus()}}),
              ::testing::Not(HasSubstr("dQ err")));
}

// A checked layer backward: dX and the four weight gradients compared one by one (dW_k failed,
// dW_o held 7 non-finite elements), no dQ, dK, dV.
v1::RunResult CheckedLayerBackwardResult() {
  v1::RunResult layer = CheckedBackwardResult();
  layer.set_backend("cpu_reference");
  layer.mutable_spec()->set_scope(v1::SCOPE_LAYER);
  layer.mutable_spec()->set_d_model(48);
  v1::Correctness& c = *layer.mutable_correctness();
  c.clear_tensors();
  const char* names[] = {"dx", "dw_q", "dw_k", "dw_v", "dw_o"};
  for (int k = 0; k < 5; ++k) {
    v1::TensorCheck& t = *c.add_tensors();
    t.set_name(names[k]);
    t.set_relative_error(0.001 * (k + 1));
    t.set_passed(k != 2);
    t.set_non_finite_elements(k == 4 ? 7 : 0);
  }
  return layer;
}

// A layer's backward reports dX and the weight gradients: their columns, and only theirs.
TEST(ResultFormatTest, TableAddsTheLayersGradientColumnsForALayerBackward) {
  const std::string table =
      FormatTable({ResultRow{0, CheckedLayerBackwardResult(), absl::OkStatus()}});
  EXPECT_THAT(table, HasSubstr("  dX err  dW_q err  dW_k err  dW_v err  dW_o err"));
  EXPECT_THAT(table, HasSubstr("1.00e-03  2.00e-03  3.00e-03  4.00e-03  5.00e-03"));
  EXPECT_THAT(table, HasSubstr("NO (7 non-finite)"));  // a gradient's non-finite count shows
  EXPECT_THAT(table, ::testing::Not(HasSubstr("dQ err")));
}

TEST(ResultFormatTest, CsvAppendsPhaseTimingAndEveryGradientsCheck) {
  EXPECT_EQ(
      FormatCsv({ResultRow{0, CheckedBackwardResult(), absl::OkStatus()}}),
      "point,backend,layout,mask,dtype,batch,seq_len_q,seq_len_kv,heads,head_dim_qk,"
      "head_dim_v,median_ms,p10_ms,p90_ms,tflops,gbps,rel_err,passed,server,device,kernel,"
      "error,non_finite_elements,phase,backward_timing,dq_rel_err,dq_passed,dk_rel_err,"
      "dk_passed,dv_rel_err,dv_passed,score_mod,mask_mod,kv_heads,pca_key_err,pca_value_err,"
      "pca_output_err,pca_median_ms,mean_pool_key_err,mean_pool_value_err,mean_pool_output_err,"
      "mean_pool_median_ms,dx_rel_err,dx_passed,dw_q_rel_err,dw_q_passed,dw_k_rel_err,"
      "dw_k_passed,dw_v_rel_err,dw_v_passed,dw_o_rel_err,dw_o_passed,kernel_rel_err,"
      "kernel_passed,quantization_rel_err,deterministic\n"
      "0,cuda_flash,mha:2,none,bf16,1,64,64,2,32,32,0.75,0.5,1,2,30,0.004,false,,,,,0,"
      "backward,training_step,0.001,true,0.004,false,0.0025,true,,,,,,,,,,,,,,,,,,,,,,,,,false\n");
}

// Layer, core backward and forward rows together: each row's own gradients, "-" elsewhere.
TEST(ResultFormatTest, TableShowsEachRowsGradientsBesideTheOthers) {
  const std::string table =
      FormatTable({ResultRow{0, CheckedLayerBackwardResult(), absl::OkStatus()},
                   ResultRow{1, CheckedBackwardResult(), absl::OkStatus()},
                   ResultRow{2, UncheckedMhaResult(), absl::OkStatus()}});
  const std::vector<std::string> lines = absl::StrSplit(table, '\n');
  ASSERT_EQ(lines.size(), 5u) << table;  // the header, three rows, and the final newline
  EXPECT_THAT(lines[0], ::testing::EndsWith("  device    dQ err    dK err    dV err    dX err  "
                                            "dW_q err  dW_k err  dW_v err  dW_o err"));
  EXPECT_THAT(lines[1], ::testing::EndsWith("         -         -         -  1.00e-03  2.00e-03  "
                                            "3.00e-03  4.00e-03  5.00e-03"));
  EXPECT_THAT(lines[2], ::testing::EndsWith("  1.00e-03  4.00e-03  2.50e-03         -         -  "
                                            "       -         -         -"));
  EXPECT_THAT(lines[3], ::testing::EndsWith("         -         -         -         -         -  "
                                            "       -         -         -"));
}

// The CSV's header names and each line's cells split at commas (for lines without quoted text).
std::vector<std::vector<std::string>> CsvCells(const std::string& csv) {
  std::vector<std::vector<std::string>> lines;
  for (absl::string_view line : absl::StrSplit(csv, '\n', absl::SkipEmpty())) {
    lines.push_back(absl::StrSplit(line, ','));
  }
  return lines;
}

// The cell of `column` in row `row` (1 = the first after the header); fails the test if absent.
std::string CsvCell(const std::vector<std::vector<std::string>>& cells, size_t row,
                    absl::string_view column) {
  const std::vector<std::string>& header = cells.at(0);
  const auto it = std::find(header.begin(), header.end(), column);
  if (it == header.end()) {
    ADD_FAILURE() << "no CSV column " << column;
    return "<absent>";
  }
  return cells.at(row).at(it - header.begin());
}

constexpr const char* kLayerGradients[] = {"dx", "dw_q", "dw_k", "dw_v", "dw_o"};

// A layer backward's dX and weight gradient checks, appended after every older column.
TEST(ResultFormatTest, CsvAppendsTheLayersGradientChecksLast) {
  const std::vector<ResultRow> rows = {
      ResultRow{0, CheckedLayerBackwardResult(), absl::OkStatus()},
      ResultRow{1, CheckedBackwardResult(), absl::OkStatus()},
      ResultRow{2, UncheckedMhaResult(), absl::OkStatus()},
      ResultRow{3, std::nullopt, absl::InvalidArgumentError("d_model too small")}};
  const std::string csv = FormatCsv(rows);
  const std::vector<std::vector<std::string>> cells = CsvCells(csv);
  ASSERT_EQ(cells.size(), 5u) << csv;
  // The old columns where they were, the ten new ones after mean_pool_median_ms (and the
  // quantization split and deterministic after them).
  const std::vector<std::string> tail(cells[0].end() - 15, cells[0].end() - 4);
  EXPECT_THAT(
      tail, ::testing::ElementsAre("mean_pool_median_ms", "dx_rel_err", "dx_passed", "dw_q_rel_err",
                                   "dw_q_passed", "dw_k_rel_err", "dw_k_passed", "dw_v_rel_err",
                                   "dw_v_passed", "dw_o_rel_err", "dw_o_passed"));
  EXPECT_EQ(cells[0].at(25), "dq_rel_err");
  for (const std::vector<std::string>& line : cells) {
    EXPECT_EQ(line.size(), cells[0].size()) << absl::StrJoin(line, ",");
  }
  // The layer row: its five checks, and no dQ, dK, dV.
  EXPECT_THAT(csv, HasSubstr("\n0,cpu_reference,mha:2,none,bf16,1,64,64,2,32,32,0.75,0.5,1,2,30,"
                             "0.004,false,,,,,0,backward,training_step,,,,,,,,,,,,,,,,,,"
                             "0.001,true,0.002,true,0.003,false,0.004,true,0.005,true,,,,"
                             "false\n"));
  const char* expected_errors[] = {"0.001", "0.002", "0.003", "0.004", "0.005"};
  const char* expected_passed[] = {"true", "true", "false", "true", "true"};
  for (int k = 0; k < 5; ++k) {
    const std::string g = kLayerGradients[k];
    EXPECT_EQ(CsvCell(cells, 1, g + "_rel_err"), expected_errors[k]) << g;
    EXPECT_EQ(CsvCell(cells, 1, g + "_passed"), expected_passed[k]) << g;
  }
  for (const char* g : {"dq", "dk", "dv"}) {
    EXPECT_EQ(CsvCell(cells, 1, absl::StrCat(g, "_rel_err")), "") << g;
    EXPECT_EQ(CsvCell(cells, 1, absl::StrCat(g, "_passed")), "") << g;
  }
  // A core backward, a forward run and a failed point: the layer's cells empty.
  for (size_t row = 2; row <= 4; ++row) {
    for (const char* g : kLayerGradients) {
      EXPECT_EQ(CsvCell(cells, row, absl::StrCat(g, "_rel_err")), "") << row << " " << g;
      EXPECT_EQ(CsvCell(cells, row, absl::StrCat(g, "_passed")), "") << row << " " << g;
    }
  }
  EXPECT_EQ(CsvCell(cells, 2, "dk_passed"), "false");  // the core backward's own, unmoved
}

// A result whose spec carries expressions shows them, in the table only when some row has one.
v1::RunResult ExpressionResult() {
  v1::RunResult r = CheckedGqaResult();
  r.mutable_spec()->mutable_score_mod()->set_expression("30 * tanh(s / 30)");
  r.mutable_spec()->mutable_mask_mod()->set_expression("doc[q] == doc[kv]");
  return r;
}

TEST(ResultFormatTest, TableShowsExpressionsWhenSomeRowHasOne) {
  v1::RunResult mask_only = UncheckedMhaResult();
  mask_only.mutable_spec()->mutable_mask_mod()->set_expression("kv < 4 || q - kv < 1024");
  const std::string table = FormatTable({ResultRow{0, ExpressionResult(), absl::OkStatus()},
                                         ResultRow{1, mask_only, absl::OkStatus()}});
  const std::vector<std::string> lines = absl::StrSplit(table, '\n');
  ASSERT_GE(lines.size(), 3u);
  EXPECT_THAT(lines[0], ::testing::EndsWith("  score_mod          mask_mod"));
  EXPECT_THAT(lines[1], ::testing::EndsWith("  30 * tanh(s / 30)  doc[q] == doc[kv]"));
  EXPECT_THAT(lines[2], ::testing::EndsWith("  -                  kv < 4 || q - kv < 1024"));
  EXPECT_THAT(FormatTable({ResultRow{0, CheckedGqaResult(), absl::OkStatus()}}),
              ::testing::Not(HasSubstr("score_mod")));
}

TEST(ResultFormatTest, CsvQuotesExpressionsLikeAnyText) {
  v1::RunResult r = ExpressionResult();
  r.mutable_spec()->mutable_score_mod()->set_expression("s + bias[h, min(max(q - kv, 0), 127)]");
  const std::string csv = FormatCsv({ResultRow{0, r, absl::OkStatus()}});
  // The expressions, then the (empty) KV-compression, layer-gradient and quantization columns
  // and `deterministic`.
  EXPECT_THAT(csv, ::testing::EndsWith(
                       ",\"s + bias[h, min(max(q - kv, 0), 127)]\",doc[q] == doc[kv],,,,,,,,,"
                       ",,,,,,,,,,,,,,false\n"));
}

// A quantized cache's decode: the kernel's error, its pass and the quantization's error after
// every older column, then whether the run was deterministic; empty (and "false") elsewhere.
TEST(ResultFormatTest, CsvAppendsTheQuantizationSplitAndDeterministic) {
  v1::RunResult decode = UncheckedMhaResult();  // no quoted text: the cells split at commas
  decode.mutable_correctness()->set_checked(true);
  v1::QuantizationErrors* q = decode.mutable_correctness()->mutable_quantization();
  q->set_kernel_relative_error(0.0002);
  q->set_kernel_passed(true);
  q->set_quantization_relative_error(0.15);
  decode.mutable_measurement()->set_deterministic(true);
  const std::vector<ResultRow> rows = {
      ResultRow{0, decode, absl::OkStatus()}, ResultRow{1, UncheckedMhaResult(), absl::OkStatus()},
      ResultRow{2, std::nullopt, absl::InvalidArgumentError("no")}};
  const std::string csv = FormatCsv(rows);
  const std::vector<std::vector<std::string>> cells = CsvCells(csv);
  ASSERT_EQ(cells.size(), 4u) << csv;
  const std::vector<std::string> tail(cells[0].end() - 5, cells[0].end());
  EXPECT_THAT(tail, ::testing::ElementsAre("dw_o_passed", "kernel_rel_err", "kernel_passed",
                                           "quantization_rel_err", "deterministic"));
  for (const std::vector<std::string>& line : cells) {
    EXPECT_EQ(line.size(), cells[0].size()) << absl::StrJoin(line, ",");
  }
  EXPECT_EQ(CsvCell(cells, 1, "kernel_rel_err"), "0.0002");
  EXPECT_EQ(CsvCell(cells, 1, "kernel_passed"), "true");
  EXPECT_EQ(CsvCell(cells, 1, "quantization_rel_err"), "0.15");
  EXPECT_EQ(CsvCell(cells, 1, "deterministic"), "true");
  for (const char* column : {"kernel_rel_err", "kernel_passed", "quantization_rel_err"}) {
    EXPECT_EQ(CsvCell(cells, 2, column), "") << column;
    EXPECT_EQ(CsvCell(cells, 3, column), "") << column;
  }
  EXPECT_EQ(CsvCell(cells, 2, "deterministic"), "false");
  EXPECT_EQ(CsvCell(cells, 3, "deterministic"), "");
}

TEST(ResultFormatTest, RunJsonRoundTrips) {
  v1::RunResponse response;
  *response.mutable_result() = CheckedGqaResult();
  absl::StatusOr<std::string> json = FormatJson(response);
  ASSERT_TRUE(json.ok());
  EXPECT_THAT(*json, HasSubstr("\"medianMs\": 1.5"));
  v1::RunResponse parsed;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(*json, &parsed).ok());
  EXPECT_THAT(parsed, EqualsProto(response));
}

TEST(ResultFormatTest, SweepJsonIsAnArrayOfResponses) {
  std::vector<v1::SweepResponse> responses(2);
  responses[0].set_point_index(0);
  responses[0].set_total_points(2);
  responses[0].set_completed_points(1);
  *responses[0].mutable_result() = CheckedGqaResult();
  responses[1].set_point_index(1);
  responses[1].set_total_points(2);
  responses[1].set_completed_points(2);
  responses[1].mutable_error()->set_code(3);
  responses[1].mutable_error()->set_message("bad");
  absl::StatusOr<std::string> json = FormatSweepJson(responses);
  ASSERT_TRUE(json.ok());
  google::protobuf::ListValue list;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(*json, &list).ok()) << *json;
  ASSERT_EQ(list.values_size(), 2);
  for (int i = 0; i < 2; ++i) {
    std::string item_json;
    ASSERT_TRUE(google::protobuf::util::MessageToJsonString(list.values(i), &item_json).ok());
    v1::SweepResponse item;
    ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(item_json, &item).ok());
    EXPECT_THAT(item, EqualsProto(responses[i]));
  }
  EXPECT_EQ(*FormatSweepJson({}), "[]\n");
}

TEST(ResultFormatTest, RowOfSweepResponse) {
  v1::SweepResponse failed =
      Proto<v1::SweepResponse>("point_index: 4 error { code: 8 message: 'too big' }");
  ResultRow row = RowOf(failed);
  EXPECT_EQ(row.point, 4);
  EXPECT_FALSE(row.result.has_value());
  EXPECT_EQ(StatusText(row.error), "RESOURCE_EXHAUSTED: too big");

  v1::SweepResponse measured;
  measured.set_point_index(1);
  *measured.mutable_result() = UncheckedMhaResult();
  row = RowOf(measured);
  EXPECT_EQ(row.point, 1);
  ASSERT_TRUE(row.result.has_value());
  EXPECT_TRUE(row.error.ok());
}

TEST(ResultFormatTest, OutputFormats) {
  EXPECT_EQ(*ParseOutputFormat("table"), OutputFormat::kTable);
  EXPECT_EQ(*ParseOutputFormat("csv"), OutputFormat::kCsv);
  EXPECT_EQ(*ParseOutputFormat("json"), OutputFormat::kJson);
  EXPECT_THAT(std::string(ParseOutputFormat("yaml").status().message()),
              HasSubstr("table|csv|json"));
}

// spec.kv_compression's results: a second table under the main one, and CSV columns per method.
TEST(ResultFormatTest, KvCompressionResults) {
  v1::RunResult r = UncheckedMhaResult();
  r.mutable_spec()->mutable_kv_compression()->set_target_kv_heads(2);
  const struct {
    const char* method;
    double key, value, output, median;
  } methods[] = {{"pca", 0.125, 0.25, 0.0625, 0.125}, {"mean_pool", 0.5, 0.75, 0.375, 0.2}};
  for (const auto& m : methods) {
    v1::KvCompressionResult* c = r.add_kv_compression();
    c->set_method(m.method);
    c->set_kv_heads(2);
    c->set_key_error(m.key);
    c->set_value_error(m.value);
    c->set_output_error(m.output);
    c->mutable_timing()->set_median_ms(m.median);
    c->mutable_correctness()->set_checked(true);
    c->mutable_correctness()->set_passed(true);
  }
  const std::vector<ResultRow> rows = {ResultRow{0, r, absl::OkStatus()}};
  const std::string table = FormatTable(rows);
  EXPECT_THAT(table, HasSubstr("\nKV-head compression\n"));
  EXPECT_THAT(table, HasSubstr("    0  pca               2  1.25e-01   2.50e-01    6.25e-02      "
                               "0.125     2.00x  yes"));
  EXPECT_THAT(table, HasSubstr("    0  mean_pool         2  5.00e-01   7.50e-01    3.75e-01      "
                               "0.200     1.25x  yes"));
  EXPECT_THAT(FormatTable({ResultRow{0, UncheckedMhaResult(), absl::OkStatus()}}),
              ::testing::Not(HasSubstr("KV-head compression")));
  EXPECT_THAT(
      FormatCsv(rows),
      HasSubstr(
          ",0,prefill,,,,,,,,,,2,0.125,0.25,0.0625,0.125,0.5,0.75,0.375,0.2,,,,,,,,,,,,,,false\n"));
}

}  // namespace
}  // namespace attnbench::client
