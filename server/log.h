// A tiny leveled logger for the server: lines to stderr with a level letter and a timestamp.
// Abseil 20220623 has no absl/log, and the server needs little more than this.
#ifndef ATTNBENCH_SERVER_LOG_H_
#define ATTNBENCH_SERVER_LOG_H_

#include <sstream>
#include <string>

#include "absl/strings/string_view.h"

namespace attnbench::server {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Parses "debug", "info", "warning" or "error"; false on anything else.
bool ParseLogLevel(absl::string_view text, LogLevel* level);
void SetLogLevel(LogLevel level);
bool LogEnabled(LogLevel level);

// Where finished lines (with their newline) go: stderr by default. Tests install a sink to read
// what the server logs; nullptr restores stderr. A sink may be called from any thread.
using LogSink = void (*)(absl::string_view line);
void SetLogSink(LogSink sink);

// Collects one line and writes it, whole, to stderr when destroyed (one write per line so lines
// from concurrent requests do not interleave).
class LogLine {
 public:
  LogLine(LogLevel level, const char* file, int line);
  ~LogLine();
  LogLine(const LogLine&) = delete;
  LogLine& operator=(const LogLine&) = delete;
  std::ostream& stream() { return stream_; }

 private:
  std::ostringstream stream_;
};

}  // namespace attnbench::server

// The stream expression is only evaluated when the level is enabled.
#define ATTNBENCH_LOG(level)                                                    \
  if (!::attnbench::server::LogEnabled(::attnbench::server::LogLevel::level)) { \
  } else                                                                        \
    ::attnbench::server::LogLine(::attnbench::server::LogLevel::level, __FILE__, __LINE__).stream()

#endif  // ATTNBENCH_SERVER_LOG_H_
