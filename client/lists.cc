#include "client/lists.h"

#include <limits>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/names.h"

namespace attnbench::client {
namespace {

// Splits "a:b" into exactly two non-empty halves.
absl::StatusOr<std::pair<std::string, std::string>> SplitPair(absl::string_view item) {
  std::vector<std::string> parts = absl::StrSplit(item, ':');
  if (parts.size() != 2 || parts[0].empty() || parts[1].empty()) {
    return absl::InvalidArgumentError(absl::StrCat("'", item, "' is not of the form a:b"));
  }
  return std::make_pair(parts[0], parts[1]);
}

}  // namespace

absl::StatusOr<std::vector<std::string>> SplitList(absl::string_view text) {
  if (text.empty()) return absl::InvalidArgumentError("empty list");
  std::vector<std::string> items = absl::StrSplit(text, ',');
  for (const std::string& item : items) {
    if (item.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("empty item in list '", text, "'"));
    }
  }
  return items;
}

absl::StatusOr<int64_t> ParseInt64(absl::string_view text) {
  int64_t value = 0;
  if (!absl::SimpleAtoi(text, &value)) {
    return absl::InvalidArgumentError(absl::StrCat("'", text, "' is not an integer"));
  }
  return value;
}

absl::StatusOr<int32_t> ParseInt32(absl::string_view text) {
  int32_t value = 0;
  if (!absl::SimpleAtoi(text, &value)) {
    return absl::InvalidArgumentError(absl::StrCat("'", text, "' is not a 32-bit integer"));
  }
  return value;
}

absl::StatusOr<std::vector<int64_t>> ParseInt64List(absl::string_view text) {
  absl::StatusOr<std::vector<std::string>> items = SplitList(text);
  if (!items.ok()) return items.status();
  std::vector<int64_t> values;
  for (const std::string& item : *items) {
    absl::StatusOr<int64_t> value = ParseInt64(item);
    if (!value.ok()) return value.status();
    values.push_back(*value);
  }
  return values;
}

absl::StatusOr<std::vector<float>> ParseFloatList(absl::string_view text) {
  absl::StatusOr<std::vector<std::string>> items = SplitList(text);
  if (!items.ok()) return items.status();
  std::vector<float> values;
  for (const std::string& item : *items) {
    float value = 0;
    if (!absl::SimpleAtof(item, &value)) {
      return absl::InvalidArgumentError(absl::StrCat("\"", item, "\" is not a number"));
    }
    values.push_back(value);
  }
  return values;
}

absl::StatusOr<std::vector<int32_t>> ParseInt32List(absl::string_view text) {
  absl::StatusOr<std::vector<std::string>> items = SplitList(text);
  if (!items.ok()) return items.status();
  std::vector<int32_t> values;
  for (const std::string& item : *items) {
    absl::StatusOr<int32_t> value = ParseInt32(item);
    if (!value.ok()) return value.status();
    values.push_back(*value);
  }
  return values;
}

absl::StatusOr<std::vector<v1::HeadLayout::HeadPair>> ParseHeadMap(absl::string_view text) {
  absl::StatusOr<std::vector<std::string>> items = SplitList(text);
  if (!items.ok()) return items.status();
  std::vector<v1::HeadLayout::HeadPair> pairs;
  for (const std::string& item : *items) {
    auto halves = SplitPair(item);
    if (!halves.ok()) return halves.status();
    absl::StatusOr<int32_t> query_head = ParseInt32(halves->first);
    if (!query_head.ok()) return query_head.status();
    absl::StatusOr<int32_t> kv_head = ParseInt32(halves->second);
    if (!kv_head.ok()) return kv_head.status();
    v1::HeadLayout::HeadPair& pair = pairs.emplace_back();
    pair.set_query_head(*query_head);
    pair.set_kv_head(*kv_head);
  }
  return pairs;
}

absl::StatusOr<std::vector<v1::Mask::Block>> ParseBlocks(absl::string_view text) {
  absl::StatusOr<std::vector<std::string>> items = SplitList(text);
  if (!items.ok()) return items.status();
  std::vector<v1::Mask::Block> blocks;
  for (const std::string& item : *items) {
    auto halves = SplitPair(item);
    if (!halves.ok()) return halves.status();
    absl::StatusOr<int64_t> row = ParseInt64(halves->first);
    if (!row.ok()) return row.status();
    absl::StatusOr<int64_t> col = ParseInt64(halves->second);
    if (!col.ok()) return col.status();
    v1::Mask::Block& block = blocks.emplace_back();
    block.set_query_block(*row);
    block.set_kv_block(*col);
  }
  return blocks;
}

absl::StatusOr<std::vector<v1::KvCache::SaqBand>> ParseSaqBands(absl::string_view text) {
  absl::StatusOr<std::vector<std::string>> items = SplitList(text);
  if (!items.ok()) return items.status();
  std::vector<v1::KvCache::SaqBand> bands;
  for (size_t i = 0; i < items->size(); ++i) {
    auto halves = SplitPair((*items)[i]);
    if (!halves.ok()) return halves.status();
    v1::KvCache::SaqBand& band = bands.emplace_back();
    if (halves->first == "rest") {
      if (i + 1 != items->size()) {
        return absl::InvalidArgumentError("only the last SAQ band may be 'rest'");
      }
    } else {
      absl::StatusOr<int64_t> tokens = ParseInt64(halves->first);
      if (!tokens.ok()) return tokens.status();
      band.set_num_tokens(*tokens);
    }
    absl::StatusOr<v1::CacheFormat> format = ParseCacheFormat(halves->second);
    if (!format.ok()) return format.status();
    band.set_format(*format);
  }
  return bands;
}

}  // namespace attnbench::client
