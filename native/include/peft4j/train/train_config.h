// The trainer's settings. Field names and defaults follow HF TrainingArguments where one exists, so a
// training config reads the same in both worlds.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace peft4j::train {

struct TrainConfig {
  std::string optimizer = "adamw";  // "adamw" (torch's AdamW, decoupled decay) or "sgd"
  double learning_rate = 1e-4;
  double weight_decay = 0.0;
  double adam_beta1 = 0.9;
  double adam_beta2 = 0.999;
  double adam_epsilon = 1e-8;
  double momentum = 0.0;                        // sgd only
  std::string lr_scheduler_type = "linear";     // "constant", "linear" or "cosine", each after warmup_steps
  int64_t warmup_steps = 0;
  int64_t max_steps = -1;                       // -1: num_train_epochs decides
  double num_train_epochs = 1.0;
  int64_t per_device_train_batch_size = 8;
  int64_t per_device_eval_batch_size = 8;
  int64_t gradient_accumulation_steps = 1;
  double max_grad_norm = 1.0;                   // 0: no clipping
  int64_t eval_steps = 0;                       // 0: evaluate only at the end
  int64_t early_stopping_patience = 0;          // evaluations without a lower eval loss; 0: off
  int64_t save_steps = 0;                       // 0: checkpoint only at the end
  int64_t save_total_limit = 2;                 // newest checkpoints kept; 0: all
  std::string output_dir;                       // required
  uint64_t seed = 42;
  bool packing = false;                         // concatenate examples into max_seq_length blocks
  int64_t max_seq_length = 512;                 // longer examples are truncated
  int64_t pad_token_id = 0;
  bool bf16 = false;                            // bf16 autocast (CUDA only)
  bool gradient_checkpointing = false;
  std::string task = "causal_lm";               // "causal_lm" or "seq_cls"

  // Every field optional; an unknown field, a wrong type or a value out of range -> Error(InvalidArgument)
  // naming the field.
  static TrainConfig from_json(const nlohmann::json& json);
  nlohmann::json to_json() const;
  bool classification() const { return task == "seq_cls"; }
};

}  // namespace peft4j::train
