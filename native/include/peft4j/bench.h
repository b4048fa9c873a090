// Benchmarks of the core. They live here rather than in a tool so that peft4j-native and Java run the same code.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace peft4j::bench {

// Shape and run length of the forward benchmark; the defaults are Llama-3.2-1B's shape.
struct ForwardBenchOptions {
  int64_t hidden = 2048;
  int64_t layers = 16;
  int64_t heads = 32;
  int64_t kv_heads = 8;
  int64_t intermediate = 8192;
  int64_t vocab = 128256;
  int64_t batch = 1;
  int64_t seq = 128;
  int64_t steps = 5;   // timed forward calls
  int64_t warmup = 1;  // untimed forward calls before them
  std::string dtype = "f32";  // f32, bf16 or f16: the model's parameter and compute dtype
  uint64_t seed = 0;          // of the random weights and input ids
  // false: inference forward calls; true: LoRA training steps (r = lora_r, alpha = 2r on q,k,v,o,gate,up,down;
  // forward + backward + AdamW), as the GPU benchmark's LoRA workloads.
  bool lora_train = false;
  int64_t lora_r = 16;
};

struct ForwardBenchResult {
  ForwardBenchOptions options;
  int threads = 0;          // libtorch's intra-op threads
  double step_ms = 0;       // mean wall time of one timed forward call
  double tokens_per_s = 0;  // batch * seq / step time
  int64_t params = 0;       // distinct parameters (the tied LM head counts once)
  int64_t trainable = 0;    // LoRA's trainable parameters (0 for forward)
  // The process's peak resident set size (getrusage ru_maxrss) at the end: it covers the whole process
  // lifetime, so it includes everything allocated before the benchmark too.
  double peak_rss_gib = 0;

  // One line: {"workload":"forward-cpu" or "lora-train-cpu","hidden":...,"step_ms":...,"peak_rss_gib":...}
  std::string to_json() const;
};

// Builds a randomly initialised llama model of the given shape (tied embeddings, rope theta 500000 with
// Llama 3's rope scaling, as Llama-3.2-1B), on CPU, and times inference forward calls (eval mode, no
// gradients, no KV cache) over random input ids. Bad options -> Error(InvalidArgument).
ForwardBenchResult run_forward_bench(const ForwardBenchOptions& options);

// Trainable parameters of an adapter config (PEFT's adapter_config.json) on a llama model of the options' shape
// (weights left at zero: only the structure matters), as docs/methods.md lists them.
int64_t count_trainable(const ForwardBenchOptions& shape, const nlohmann::json& adapter_config);

// LoRA fine-tuning of an HF model directory through the trainer (train::Trainer) on synthetic data.
struct TrainBenchOptions {
  std::string model_dir;      // a causal-LM model directory (config.json + safetensors)
  int64_t lora_r = 16;        // LoRA r (alpha = 2r) on every linear layer but the head
  int64_t batch = 4;
  int64_t seq = 128;
  int64_t steps = 5;          // timed optimizer steps
  int64_t warmup = 1;         // optimizer steps before them
  std::string device = "cpu"; // "cpu" or "cuda"
  bool bf16 = false;          // bf16 autocast (CUDA)
  uint64_t seed = 0;          // of the synthetic token ids
};

struct TrainBenchResult {
  TrainBenchOptions options;
  int threads = 0;
  double step_ms = 0;       // mean time of a timed step's forward, backward and update
  double tokens_per_s = 0;  // the timed steps' tokens over their time
  int64_t trainable = 0;
  double first_loss = 0;
  double last_loss = 0;

  // One line: {"workload":"train-cpu" or "train-cuda","model":...,"step_ms":...,"tokens_per_s":...}
  std::string to_json() const;
};

// Trains warmup + steps optimizer steps (AdamW, lr 1e-4) on random token sequences of `seq` tokens, labels = ids,
// into a temporary output dir removed afterwards. Bad options or a non-causal-LM model -> Error.
TrainBenchResult run_train_bench(const TrainBenchOptions& options);

}  // namespace peft4j::bench
