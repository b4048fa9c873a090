// peft4j-native: the core's commands for machines without a JDK (the GPU machine). The Java CLI calls
// the same core functions, so both print the same lines.
#include <iostream>
#include <string>
#include <vector>

#include "peft4j/error.h"
#include "peft4j/inspect.h"
#include "peft4j/parity.h"
#include "peft4j/runtime.h"

namespace {

int usage() {
  std::cerr << "usage: peft4j-native inspect PATH\n"
               "       peft4j-native parity DIR [--case NAME]...\n";
  return 2;
}

int parity(const std::vector<std::string>& args) {
  std::vector<std::string> only;
  std::string dir;
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--case" && i + 1 < args.size()) {
      only.push_back(args[++i]);
    } else if (dir.empty() && args[i].rfind("--", 0) != 0) {
      dir = args[i];
    } else {
      return usage();
    }
  }
  if (dir.empty()) return usage();
  peft4j::parity::Runner runner(dir, only);
  for (const auto& name : runner.cases())
    for (const auto& result : runner.run_case(name)) std::cout << result.line() << std::endl;
  std::cout << runner.summary() << std::endl;
  return runner.failed() == 0 ? 0 : 1;
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
    if (args[0] == "parity") return parity(args);
    return usage();
  } catch (const std::exception& e) {
    std::cerr << "peft4j-native: " << e.what() << "\n";
    return 1;
  }
}
