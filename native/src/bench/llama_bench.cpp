#include <ATen/CPUGeneratorImpl.h>
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "peft4j/bench.h"
#include "peft4j/error.h"
#include "peft4j/models/model.h"
#include "peft4j/runtime.h"
#include "peft4j/tuners/peft_model.h"
#include <torch/optim/adamw.h>

namespace peft4j::bench {

namespace {

at::ScalarType dtype_from_name(const std::string& name) {
  if (name == "f32") return at::kFloat;
  if (name == "bf16") return at::kBFloat16;
  if (name == "f16") return at::kHalf;
  fail(ErrorKind::InvalidArgument, "bench: dtype must be f32, bf16 or f16, got '" + name + "'");
}

nlohmann::json llama_config(const ForwardBenchOptions& o) {
  // Llama-3.2-1B's config.json apart from the shape fields, which come from the options.
  return {{"model_type", "llama"},
          {"hidden_size", o.hidden},
          {"num_hidden_layers", o.layers},
          {"num_attention_heads", o.heads},
          {"num_key_value_heads", o.kv_heads},
          {"intermediate_size", o.intermediate},
          {"vocab_size", o.vocab},
          {"max_position_embeddings", 131072},
          {"rms_norm_eps", 1e-5},
          {"hidden_act", "silu"},
          {"tie_word_embeddings", true},
          {"rope_theta", 500000.0},
          {"rope_scaling",
           {{"rope_type", "llama3"},
            {"factor", 32.0},
            {"low_freq_factor", 1.0},
            {"high_freq_factor", 4.0},
            {"original_max_position_embeddings", 8192}}}};
}

// As transformers' _init_weights: matrices (projections, the embedding) from N(0, 0.02), and the 1-D
// parameters, which in this bias-free llama are the RMSNorm weights, at one. Realistic magnitudes keep the
// activations normal, so no denormal arithmetic slows the measured steps. Returns the distinct parameters'
// element count.
int64_t init_weights(models::Model& model, at::Generator& generator) {
  at::NoGradGuard no_grad;
  std::unordered_set<const void*> seen;  // the tied LM head is the embedding's tensor under a second name
  int64_t count = 0;
  for (auto& p : model.parameters(/*recurse=*/true)) {
    if (!seen.insert(p.unsafeGetTensorImpl()).second) continue;
    if (p.dim() >= 2)
      p.normal_(0.0, 0.02, generator);
    else
      p.fill_(1.0);
    count += p.numel();
  }
  return count;
}

double peak_rss_gib() {
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / (1024.0 * 1024.0);  // ru_maxrss is in KiB on Linux
}

double rounded(double value, int decimals) {
  const double scale = std::pow(10.0, decimals);
  return std::round(value * scale) / scale;
}

}  // namespace

std::string ForwardBenchResult::to_json() const {
  const ForwardBenchOptions& o = options;
  nlohmann::ordered_json line = {{"workload", o.lora_train ? "lora-train-cpu" : "forward-cpu"},
                                 {"hidden", o.hidden},
                                 {"layers", o.layers},
                                 {"heads", o.heads},
                                 {"kv_heads", o.kv_heads},
                                 {"intermediate", o.intermediate},
                                 {"vocab", o.vocab},
                                 {"batch", o.batch},
                                 {"seq", o.seq},
                                 {"dtype", o.dtype},
                                 {"threads", threads},
                                 {"steps", o.steps},
                                 {"step_ms", rounded(step_ms, 2)},
                                 {"tokens_per_s", rounded(tokens_per_s, 2)},
                                 {"params", params},
                                 {"trainable", trainable},
                                 {"peak_rss_gib", rounded(peak_rss_gib, 3)}};
  return line.dump();
}

ForwardBenchResult run_forward_bench(const ForwardBenchOptions& options) {
  runtime::init();
  for (const auto& [name, value] : {std::pair<const char*, int64_t>{"batch", options.batch},
                                    {"seq", options.seq},
                                    {"steps", options.steps}})
    if (value <= 0) fail(ErrorKind::InvalidArgument, std::string("bench: ") + name + " must be positive");
  if (options.warmup < 0) fail(ErrorKind::InvalidArgument, "bench: warmup must be >= 0");
  const at::ScalarType dtype = dtype_from_name(options.dtype);

  ForwardBenchResult result;
  result.options = options;
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(options.seed);
  std::shared_ptr<models::Model> model = models::create_model(llama_config(options));
  result.params = init_weights(*model, generator);
  model->to(dtype);
  model->eval();

  models::ModelInputs inputs;
  inputs.input_ids = at::randint(options.vocab, {options.batch, options.seq}, generator, at::TensorOptions(at::kLong));
  std::function<void()> step;
  std::shared_ptr<tuners::PeftModel> peft;
  std::unique_ptr<torch::optim::AdamW> adamw;
  std::unique_ptr<at::NoGradGuard> no_grad;
  if (options.lora_train) {
    // One LoRA training step as the GPU workloads define it: LoRA on q,k,v,o,gate,up,down, labels = inputs,
    // forward + backward + AdamW over the trainable parameters.
    peft = std::make_shared<tuners::PeftModel>(model);
    peft->add_adapter("default", {{"peft_type", "LORA"},
                                  {"r", options.lora_r},
                                  {"lora_alpha", 2 * options.lora_r},
                                  {"target_modules", {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                      "down_proj"}}});
    result.trainable = peft->trainable_parameter_count();
    std::vector<at::Tensor> params;
    for (auto& [name, p] : peft->trainable_parameters()) params.push_back(p);
    adamw = std::make_unique<torch::optim::AdamW>(params, torch::optim::AdamWOptions(1e-4));
    peft->train();
    inputs.labels = inputs.input_ids;
    step = [&] {
      adamw->zero_grad();
      peft->forward(inputs).loss.backward();
      adamw->step();
    };
  } else {
    no_grad = std::make_unique<at::NoGradGuard>();
    step = [&] { model->forward(inputs); };
  }
  for (int64_t i = 0; i < options.warmup; ++i) step();
  // CPU kernels run synchronously: the results exist when a step returns.
  const auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < options.steps; ++i) step();
  const std::chrono::duration<double, std::milli> elapsed = std::chrono::steady_clock::now() - start;

  result.threads = at::get_num_threads();
  result.step_ms = elapsed.count() / static_cast<double>(options.steps);
  result.tokens_per_s = static_cast<double>(options.batch * options.seq) / (result.step_ms / 1000.0);
  result.peak_rss_gib = peak_rss_gib();
  return result;
}

int64_t count_trainable(const ForwardBenchOptions& shape, const nlohmann::json& adapter_config) {
  runtime::init();
  auto peft = std::make_shared<tuners::PeftModel>(models::create_model(llama_config(shape)));
  peft->add_adapter("default", adapter_config);
  return peft->trainable_parameter_count();
}

}  // namespace peft4j::bench
