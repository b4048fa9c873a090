#include "peft4j/fault_injection.h"

#include <csignal>
#include <cstdlib>

namespace peft4j {

void kill_point(const std::string& phase, const std::string& detail) {
  const char* at = std::getenv("PEFT4J_TEST_KILL_AT");
  if (at && phase + ":" + detail == at) std::raise(SIGKILL);
}

}  // namespace peft4j
