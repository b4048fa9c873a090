#include "peft4j/error.h"

namespace peft4j {

const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::Io: return "IO";
    case ErrorKind::Format: return "FORMAT";
    case ErrorKind::InvalidArgument: return "INVALID_ARGUMENT";
    case ErrorKind::NotFound: return "NOT_FOUND";
    case ErrorKind::Unsupported: return "UNSUPPORTED";
    case ErrorKind::Numerical: return "NUMERICAL";
    case ErrorKind::Internal: return "INTERNAL";
  }
  return "INTERNAL";
}

}  // namespace peft4j
