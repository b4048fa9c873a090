// peft4j-native: the core's commands for machines without a JDK (the GPU machine). The Java CLI calls
// the same core functions, so both print the same lines.
#include <iostream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "peft4j/bench.h"
#include "peft4j/files.h"
#include "peft4j/error.h"
#include "peft4j/inspect.h"
#include "peft4j/parity.h"
#include "peft4j/runtime.h"

namespace {

int usage() {
  std::cerr << "usage: peft4j-native inspect PATH\n"
               "       peft4j-native parity DIR [--case NAME]... [--save-adapters OUT]\n"
               "       peft4j-native count ADAPTER_CONFIG_JSON [shape options as for bench]\n"
               "       peft4j-native bench forward|lora-train [--r 16] [--hidden 2048] [--layers 16] [--heads 32] [--kv-heads 8]\n"
               "                                   [--intermediate 8192] [--vocab 128256] [--batch 1] [--seq 128]\n"
               "                                   [--steps 5] [--warmup 1] [--dtype f32|bf16|f16]\n"
               "       peft4j-native bench train --model DIR [--r 16] [--batch 4] [--seq 128] [--steps 5] [--warmup 1]\n"
               "                                 [--device cpu|cuda] [--bf16 0|1] [--seed 0]\n";
  return 2;
}

int parity(const std::vector<std::string>& args) {
  std::vector<std::string> only;
  std::string dir, save;
  for (size_t i = 1; i < args.size(); ++i) {
    if (args[i] == "--case" && i + 1 < args.size()) {
      only.push_back(args[++i]);
    } else if (args[i] == "--save-adapters" && i + 1 < args.size()) {
      save = args[++i];
    } else if (dir.empty() && args[i].rfind("--", 0) != 0) {
      dir = args[i];
    } else {
      return usage();
    }
  }
  if (dir.empty()) return usage();
  peft4j::parity::Runner runner(dir, only);
  if (!save.empty()) runner.save_adapters_to(save);
  for (const auto& name : runner.cases())
    for (const auto& result : runner.run_case(name)) std::cout << result.line() << std::endl;
  std::cout << runner.summary() << std::endl;
  return runner.failed() == 0 ? 0 : 1;
}

// Reads an option's integer value; false (after saying why) when it is none.
bool parse_integer(const std::string& command, const std::string& name, const std::string& value, int64_t* out) {
  try {
    size_t end = 0;
    *out = std::stoll(value, &end);
    if (end == value.size()) return true;
  } catch (const std::exception&) {  // std::invalid_argument or std::out_of_range
  }
  std::cerr << "peft4j-native " << command << ": " << name << " needs an integer, got '" << value << "'\n";
  return false;
}

// LoRA fine-tuning tokens/s of a model directory through the trainer: one JSON line (peft4j/bench.h).
int bench_train(const std::vector<std::string>& args) {
  peft4j::bench::TrainBenchOptions options;
  int64_t bf16 = 0, seed = 0;
  const std::map<std::string, int64_t*> sizes = {{"--r", &options.lora_r},     {"--batch", &options.batch},
                                                 {"--seq", &options.seq},      {"--steps", &options.steps},
                                                 {"--warmup", &options.warmup}, {"--bf16", &bf16},
                                                 {"--seed", &seed}};
  if (args.size() % 2 != 0) return usage();
  for (size_t i = 2; i < args.size(); i += 2) {
    if (args[i] == "--model") {
      options.model_dir = args[i + 1];
    } else if (args[i] == "--device") {
      options.device = args[i + 1];
    } else if (auto size = sizes.find(args[i]); size != sizes.end()) {
      if (!parse_integer("bench train", args[i], args[i + 1], size->second)) return 2;
    } else {
      return usage();
    }
  }
  if (options.model_dir.empty()) return usage();
  options.bf16 = bf16 != 0;
  options.seed = static_cast<uint64_t>(seed);
  std::cout << peft4j::bench::run_train_bench(options).to_json() << std::endl;
  return 0;
}

// One JSON line with the timing (see peft4j/bench.h for the fields).
int bench(const std::vector<std::string>& args) {
  if (args[0] == "bench" && args.size() > 1 && args[1] == "train") return bench_train(args);
  const bool count = args[0] == "count";
  if (args.size() < 2 || args.size() % 2 != 0 ||
      (!count && args[1] != "forward" && args[1] != "lora-train"))
    return usage();
  peft4j::bench::ForwardBenchOptions options;
  options.lora_train = args[1] == "lora-train";
  const std::map<std::string, int64_t*> sizes = {
      {"--hidden", &options.hidden},   {"--layers", &options.layers},
      {"--heads", &options.heads},     {"--kv-heads", &options.kv_heads},
      {"--intermediate", &options.intermediate}, {"--vocab", &options.vocab},
      {"--batch", &options.batch},     {"--seq", &options.seq},
      {"--steps", &options.steps},     {"--warmup", &options.warmup},
      {"--r", &options.lora_r}};
  for (size_t i = 2; i < args.size(); i += 2) {
    const std::string& name = args[i];
    const std::string& value = args[i + 1];
    if (name == "--dtype") {
      options.dtype = value;
      continue;
    }
    auto size = sizes.find(name);
    if (size == sizes.end()) return usage();
    if (!parse_integer("bench", name, value, size->second)) return 2;
  }
  if (count) {
    // The trainable parameters of an adapter config on the (default: Llama-3.2-1B-shaped) model.
    nlohmann::json config = peft4j::io::read_json_file(args[1]);
    std::cout << nlohmann::json({{"peft_type", config.value("peft_type", "")},
                                 {"trainable", peft4j::bench::count_trainable(options, config)}})
                     .dump()
              << std::endl;
    return 0;
  }
  std::cout << peft4j::bench::run_forward_bench(options).to_json() << std::endl;
  return 0;
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
    if (args[0] == "bench" || args[0] == "count") return bench(args);
    return usage();
  } catch (const std::exception& e) {
    std::cerr << "peft4j-native: " << e.what() << "\n";
    return 1;
  }
}
