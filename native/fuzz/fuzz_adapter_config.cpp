// libFuzzer target: reading an adapter directory's adapter_config.json as PeftModel::load_adapter does, through
// public functions only: read_adapter_config, the registered method's normalize_config (PEFT's defaults and checks)
// and, for model-level methods, config_for_load. Arbitrary bytes must end in a config or a peft4j::Error; any other
// exception, a crash or a sanitizer report is a bug.
#include "fuzz_testing.h"
#include "peft4j/error.h"
#include "peft4j/tuners/model_level.h"
#include "peft4j/tuners/peft_model.h"
#include "peft4j/tuners/tuner.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace peft4j::tuners;
  fuzz_testing::write_input("adapter_config.json", data, size);
  try {
    nlohmann::json config = read_adapter_config(fuzz_testing::scratch_dir());
    const Tuner& tuner = tuner_for(config["peft_type"].get<std::string>());
    if (const ModelLevelTuner* level = as_model_level(tuner)) config = level->config_for_load(config);
    tuner.normalize_config(config);
  } catch (const peft4j::Error&) {
  }
  return 0;
}
