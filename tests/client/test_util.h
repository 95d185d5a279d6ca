// Helpers shared by the client tests: proto literals from text format, and applying CLI
// arguments to freshly reset flags.
#ifndef ATTNBENCH_TESTS_CLIENT_TEST_UTIL_H_
#define ATTNBENCH_TESTS_CLIENT_TEST_UTIL_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "client/flags.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"

namespace attnbench::client::testing {

// Parses a text-format literal, failing the test on a syntax error.
template <typename Message>
Message Proto(const std::string& text) {
  Message message;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &message)) << text;
  return message;
}

// Resets every CLI flag, then applies `args` as `subcommand` would.
inline absl::Status Apply(Subcommand subcommand, const std::vector<std::string>& args) {
  ResetFlags();
  return ApplyArgs(subcommand, args);
}

MATCHER_P(EqualsProto, expected, "") {
  std::string diff;
  google::protobuf::util::MessageDifferencer differencer;
  differencer.ReportDifferencesToString(&diff);
  if (differencer.Compare(expected, arg)) return true;
  *result_listener << "differences:\n" << diff << "actual:\n" << arg.DebugString();
  return false;
}

}  // namespace attnbench::client::testing

#endif  // ATTNBENCH_TESTS_CLIENT_TEST_UTIL_H_
