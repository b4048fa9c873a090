// peft4j-native: the core's commands for machines without a JDK (the GPU machine). The Java CLI calls
// the same core functions.
#include <iostream>
#include <string>
#include <vector>

#include "peft4j/error.h"
#include "peft4j/inspect.h"
#include "peft4j/runtime.h"

namespace {

int usage() {
  std::cerr << "usage: peft4j-native inspect PATH\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) return usage();
  try {
    peft4j::runtime::init();
    if (args[0] == "inspect" && args.size() == 2) {
      std::cout << peft4j::io::inspect(args[1]);
      return 0;
    }
    return usage();
  } catch (const std::exception& e) {
    std::cerr << "peft4j-native: " << e.what() << "\n";
    return 1;
  }
}
