#include "peft4j/warnings.h"

#include <iostream>
#include <mutex>

namespace peft4j {

namespace {
std::mutex& handler_mutex() {
  static std::mutex m;
  return m;
}
WarningHandler& handler() {
  static WarningHandler h;
  return h;
}
}  // namespace

void warn(const std::string& message) {
  std::lock_guard<std::mutex> lock(handler_mutex());
  if (handler())
    handler()(message);
  else
    std::cerr << "peft4j: warning: " << message << std::endl;
}

WarningHandler set_warning_handler(WarningHandler next) {
  std::lock_guard<std::mutex> lock(handler_mutex());
  WarningHandler previous = std::move(handler());
  handler() = std::move(next);
  return previous;
}

}  // namespace peft4j
