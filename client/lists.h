// Parsers for the CLI's list-valued flags: integer and float lists ("512,1024", "0.5,0.25"), head
// maps ("0:0,1:0"), block lists ("0:0,1:1") and SAQ band lists ("512:native,2048:int8,rest:int4").
#ifndef ATTNBENCH_CLIENT_LISTS_H_
#define ATTNBENCH_CLIENT_LISTS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "attnbench/v1/attnbench.pb.h"

namespace attnbench::client {

// Splits a comma-separated list, rejecting empty lists and empty items.
absl::StatusOr<std::vector<std::string>> SplitList(absl::string_view text);

// One integer, rejecting trailing garbage.
absl::StatusOr<int64_t> ParseInt64(absl::string_view text);
absl::StatusOr<int32_t> ParseInt32(absl::string_view text);

// "512,1024": a non-empty list of integers.
absl::StatusOr<std::vector<int64_t>> ParseInt64List(absl::string_view text);
absl::StatusOr<std::vector<int32_t>> ParseInt32List(absl::string_view text);

// "0.5,0.25": a non-empty list of float32 values (their range is the server's to check).
absl::StatusOr<std::vector<float>> ParseFloatList(absl::string_view text);

// "qh:kh,qh:kh,...": output head h reads query head qh and key/value head kh.
absl::StatusOr<std::vector<v1::HeadLayout::HeadPair>> ParseHeadMap(absl::string_view text);

// "row:col,row:col,...": the kept blocks of an explicit block-sparse mask.
absl::StatusOr<std::vector<v1::Mask::Block>> ParseBlocks(absl::string_view text);

// "tokens:format,...,rest:format": SAQ bands from the newest token back; only the last band may
// be "rest" (all remaining tokens).
absl::StatusOr<std::vector<v1::KvCache::SaqBand>> ParseSaqBands(absl::string_view text);

}  // namespace attnbench::client

#endif  // ATTNBENCH_CLIENT_LISTS_H_
