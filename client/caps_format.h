// Renders a GetCapabilitiesResponse as readable text (one block per backend) or as CSV (one line
// per backend device). JSON goes through FormatJson in result_format.h.
#ifndef ATTNBENCH_CLIENT_CAPS_FORMAT_H_
#define ATTNBENCH_CLIENT_CAPS_FORMAT_H_

#include <string>

#include "attnbench/v1/attnbench.pb.h"

namespace attnbench::client {

std::string FormatCapabilitiesText(const v1::GetCapabilitiesResponse& caps);
std::string FormatCapabilitiesCsv(const v1::GetCapabilitiesResponse& caps);

}  // namespace attnbench::client

#endif  // ATTNBENCH_CLIENT_CAPS_FORMAT_H_
