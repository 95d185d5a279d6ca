// The compact text form of head layouts ("gqa:8/2") and masks ("window:128/0") used by sweep axes
// and by every result table, in both directions.
//
// Layouts (H = baseline heads, Hq/Hkv = query/key-value heads, Gq/Gkv = groups):
//   mha:H  mqa:H  gqa:Hq/Hkv  sqa:H/Hq/Hkv  ssqa:H  xsqa:H  xsqa:H/Hq  gqkva:Gq/Gkv
//   explicit:Hq/Hkv/q-k+q-k+...   (output head h reads query head q and key/value head k)
// Masks: none  causal  window:L/R (an empty side is unbounded)  block_sparse:Bq/Bkv
//   prob_block_sparse:Bq/Bkv (display only: parsing those takes the block flags, see
//   request_builder.h).
#ifndef ATTNBENCH_CLIENT_LAYOUT_SYNTAX_H_
#define ATTNBENCH_CLIENT_LAYOUT_SYNTAX_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "attnbench/v1/attnbench.pb.h"

namespace attnbench::client {

// The layout names the CLI accepts, joined with '|'.
inline constexpr absl::string_view kLayoutNames = "mha|mqa|gqa|sqa|ssqa|xsqa|gqkva|explicit";

absl::StatusOr<v1::HeadLayout> ParseLayoutSpec(absl::string_view text);
std::string LayoutToString(const v1::HeadLayout& layout);

// Parses "window:L/R" (either side may be empty: unbounded).
absl::StatusOr<v1::Mask> ParseWindowSpec(absl::string_view text);
std::string MaskToString(const v1::Mask& mask);

// The head counts of a layout (H_q, H_kv, H_out of docs/variants.md §2); zeros when it is unset.
struct HeadCounts {
  int query = 0;
  int kv = 0;
  int output = 0;
};
HeadCounts HeadsOf(const v1::HeadLayout& layout);

// Output heads of a layout (H_out), or 0 when the layout is unset.
int OutputHeads(const v1::HeadLayout& layout);

}  // namespace attnbench::client

#endif  // ATTNBENCH_CLIENT_LAYOUT_SYNTAX_H_
