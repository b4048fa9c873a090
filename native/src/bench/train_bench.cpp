#include <stdlib.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "peft4j/bench.h"
#include "peft4j/error.h"
#include "peft4j/models/model.h"
#include "peft4j/runtime.h"
#include "peft4j/train/trainer.h"
#include "peft4j/tuners/peft_model.h"

namespace peft4j::bench {

std::string TrainBenchResult::to_json() const {
  const TrainBenchOptions& o = options;
  auto round2 = [](double v) { return std::round(v * 100.0) / 100.0; };
  nlohmann::ordered_json line = {{"workload", "train-" + o.device},
                                 {"model", o.model_dir},
                                 {"r", o.lora_r},
                                 {"batch", o.batch},
                                 {"seq", o.seq},
                                 {"bf16", o.bf16},
                                 {"threads", threads},
                                 {"steps", o.steps},
                                 {"step_ms", round2(step_ms)},
                                 {"tokens_per_s", round2(tokens_per_s)},
                                 {"trainable", trainable},
                                 {"first_loss", first_loss},
                                 {"last_loss", last_loss}};
  return line.dump();
}

TrainBenchResult run_train_bench(const TrainBenchOptions& o) {
  runtime::init();
  for (const auto& [name, value] : {std::pair<const char*, int64_t>{"batch", o.batch}, {"seq", o.seq},
                                    {"steps", o.steps}, {"r", o.lora_r}})
    if (value <= 0) fail(ErrorKind::InvalidArgument, std::string("bench train: ") + name + " must be positive");
  if (o.warmup < 0) fail(ErrorKind::InvalidArgument, "bench train: warmup must be >= 0");
  if (o.device != "cpu" && o.device != "cuda")
    fail(ErrorKind::InvalidArgument, "bench train: device must be cpu or cuda, got '" + o.device + "'");

  auto model = std::make_shared<tuners::PeftModel>(models::load_model(o.model_dir));
  at::manual_seed(o.seed);  // the adapter's initialisation too, so that the reported losses repeat
  model->add_adapter("default", {{"peft_type", "LORA"},
                                 {"r", o.lora_r},
                                 {"lora_alpha", 2 * o.lora_r},
                                 {"target_modules", "all-linear"}});
  model->to(at::Device(o.device));

  std::mt19937_64 generator(o.seed);
  const int64_t vocab = model->vocab_size();
  train::TrainingData data;
  for (int64_t i = 0; i < o.batch * (o.warmup + o.steps); ++i) {
    std::vector<int64_t> ids(o.seq);
    for (auto& id : ids) id = static_cast<int64_t>(generator() % static_cast<uint64_t>(vocab));
    data.add_sequence(ids.data(), ids.data(), o.seq);
  }
  char scratch[] = "/tmp/peft4j-bench-train-XXXXXX";
  if (!::mkdtemp(scratch)) fail(ErrorKind::Io, "bench train: cannot create a temporary output dir");
  TrainBenchResult result;
  result.options = o;
  try {
    train::TrainConfig config = train::TrainConfig::from_json({{"output_dir", scratch},
                                                               {"learning_rate", 1e-4},
                                                               {"lr_scheduler_type", "constant"},
                                                               {"max_steps", o.warmup + o.steps},
                                                               {"per_device_train_batch_size", o.batch},
                                                               {"max_seq_length", o.seq},
                                                               {"bf16", o.bf16},
                                                               {"seed", o.seed}});
    train::Trainer trainer(model, data, {}, config);
    result.trainable = model->trainable_parameter_count();
    double seconds = 0;
    int64_t tokens = 0;
    while (trainer.step()) {
      const auto& m = trainer.metrics();
      if (m.global_step == 1) result.first_loss = m.loss;
      result.last_loss = m.loss;
      if (m.global_step <= o.warmup) continue;
      // tokens_per_second covers forward, backward and update only, not the final checkpoint.
      seconds += static_cast<double>(o.batch * o.seq) / m.tokens_per_second;
      tokens += o.batch * o.seq;
    }
    result.step_ms = 1000.0 * seconds / static_cast<double>(o.steps);
    result.tokens_per_s = static_cast<double>(tokens) / seconds;
  } catch (...) {
    std::error_code ignored;
    std::filesystem::remove_all(scratch, ignored);
    throw;
  }
  std::error_code ignored;
  std::filesystem::remove_all(scratch, ignored);
  result.threads = at::get_num_threads();
  return result;
}

}  // namespace peft4j::bench
