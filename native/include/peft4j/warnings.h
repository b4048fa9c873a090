// Warnings the core gives where PEFT or transformers warn (an unknown config field, for one): one line on standard
// error, "peft4j: warning: <message>", unless a handler takes them instead (tests; an embedding application's logger).
#pragma once

#include <functional>
#include <string>

namespace peft4j {

using WarningHandler = std::function<void(const std::string&)>;

void warn(const std::string& message);

// Installs `handler` (an empty one restores standard error) and returns the previous handler.
WarningHandler set_warning_handler(WarningHandler handler);

}  // namespace peft4j
