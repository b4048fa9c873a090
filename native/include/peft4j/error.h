// Errors raised by the core. The facade turns each into a message that Java maps to a typed
// PeftException, so every message names the thing (file, tensor, field) and the problem.
#pragma once

#include <stdexcept>
#include <string>

namespace peft4j {

enum class ErrorKind {
  Io,               // a file could not be opened, read, written or renamed
  Format,           // a file exists but its contents are malformed or lie about themselves
  InvalidArgument,  // a caller passed a value that cannot work (shape, dtype, name, option)
  NotFound,         // a named thing (file, tensor, module, adapter) does not exist
  Unsupported,      // valid input that peft4j does not handle (model type, dtype, operation)
  Numerical,        // NaN/inf where a finite value is required
  Internal          // a bug or an unexpected torch error
};

const char* error_kind_name(ErrorKind kind);

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

[[noreturn]] inline void fail(ErrorKind kind, const std::string& message) { throw Error(kind, message); }

}  // namespace peft4j
