#include "peft4j/train/train_config.h"

#include <functional>
#include <map>

#include "peft4j/error.h"

namespace peft4j::train {

namespace {

[[noreturn]] void bad(const std::string& field, const std::string& problem) {
  fail(ErrorKind::InvalidArgument, "training config field '" + field + "' " + problem);
}

// One reader per field: checks the JSON type and stores the value.
using FieldReader = std::function<void(TrainConfig&, const nlohmann::json&, const std::string&)>;

FieldReader number(double TrainConfig::*member) {
  return [member](TrainConfig& c, const nlohmann::json& v, const std::string& name) {
    if (!v.is_number()) bad(name, "must be a number, got " + v.dump());
    c.*member = v.get<double>();
  };
}

FieldReader integer(int64_t TrainConfig::*member) {
  return [member](TrainConfig& c, const nlohmann::json& v, const std::string& name) {
    if (!v.is_number_integer()) bad(name, "must be an integer, got " + v.dump());
    c.*member = v.get<int64_t>();
  };
}

FieldReader text(std::string TrainConfig::*member) {
  return [member](TrainConfig& c, const nlohmann::json& v, const std::string& name) {
    if (!v.is_string()) bad(name, "must be a string, got " + v.dump());
    c.*member = v.get<std::string>();
  };
}

FieldReader flag(bool TrainConfig::*member) {
  return [member](TrainConfig& c, const nlohmann::json& v, const std::string& name) {
    if (!v.is_boolean()) bad(name, "must be true or false, got " + v.dump());
    c.*member = v.get<bool>();
  };
}

const std::map<std::string, FieldReader>& readers() {
  static const std::map<std::string, FieldReader> fields = {
      {"optimizer", text(&TrainConfig::optimizer)},
      {"learning_rate", number(&TrainConfig::learning_rate)},
      {"weight_decay", number(&TrainConfig::weight_decay)},
      {"adam_beta1", number(&TrainConfig::adam_beta1)},
      {"adam_beta2", number(&TrainConfig::adam_beta2)},
      {"adam_epsilon", number(&TrainConfig::adam_epsilon)},
      {"momentum", number(&TrainConfig::momentum)},
      {"lr_scheduler_type", text(&TrainConfig::lr_scheduler_type)},
      {"warmup_steps", integer(&TrainConfig::warmup_steps)},
      {"max_steps", integer(&TrainConfig::max_steps)},
      {"num_train_epochs", number(&TrainConfig::num_train_epochs)},
      {"per_device_train_batch_size", integer(&TrainConfig::per_device_train_batch_size)},
      {"per_device_eval_batch_size", integer(&TrainConfig::per_device_eval_batch_size)},
      {"gradient_accumulation_steps", integer(&TrainConfig::gradient_accumulation_steps)},
      {"max_grad_norm", number(&TrainConfig::max_grad_norm)},
      {"eval_steps", integer(&TrainConfig::eval_steps)},
      {"early_stopping_patience", integer(&TrainConfig::early_stopping_patience)},
      {"save_steps", integer(&TrainConfig::save_steps)},
      {"save_total_limit", integer(&TrainConfig::save_total_limit)},
      {"output_dir", text(&TrainConfig::output_dir)},
      {"seed",
       [](TrainConfig& c, const nlohmann::json& v, const std::string& name) {
         if (!v.is_number_integer() || v.get<int64_t>() < 0) bad(name, "must be a non-negative integer, got " + v.dump());
         c.seed = v.get<uint64_t>();
       }},
      {"packing", flag(&TrainConfig::packing)},
      {"max_seq_length", integer(&TrainConfig::max_seq_length)},
      {"pad_token_id", integer(&TrainConfig::pad_token_id)},
      {"bf16", flag(&TrainConfig::bf16)},
      {"gradient_checkpointing", flag(&TrainConfig::gradient_checkpointing)},
      {"task", text(&TrainConfig::task)},
  };
  return fields;
}

void check_ranges(const TrainConfig& c) {
  if (c.optimizer != "adamw" && c.optimizer != "sgd") bad("optimizer", "must be adamw or sgd, got '" + c.optimizer + "'");
  if (c.lr_scheduler_type != "constant" && c.lr_scheduler_type != "linear" && c.lr_scheduler_type != "cosine")
    bad("lr_scheduler_type", "must be constant, linear or cosine, got '" + c.lr_scheduler_type + "'");
  if (c.task != "causal_lm" && c.task != "seq_cls") bad("task", "must be causal_lm or seq_cls, got '" + c.task + "'");
  if (!(c.learning_rate >= 0)) bad("learning_rate", "must be >= 0");
  if (!(c.weight_decay >= 0)) bad("weight_decay", "must be >= 0");
  if (!(c.adam_beta1 >= 0 && c.adam_beta1 < 1)) bad("adam_beta1", "must be in [0, 1)");
  if (!(c.adam_beta2 >= 0 && c.adam_beta2 < 1)) bad("adam_beta2", "must be in [0, 1)");
  if (!(c.adam_epsilon > 0)) bad("adam_epsilon", "must be > 0");
  if (!(c.momentum >= 0)) bad("momentum", "must be >= 0");
  if (c.warmup_steps < 0) bad("warmup_steps", "must be >= 0");
  if (c.max_steps == 0 || c.max_steps < -1) bad("max_steps", "must be -1 (from num_train_epochs) or > 0");
  if (c.max_steps == -1 && !(c.num_train_epochs > 0)) bad("num_train_epochs", "must be > 0");
  if (c.per_device_train_batch_size < 1) bad("per_device_train_batch_size", "must be >= 1");
  if (c.per_device_eval_batch_size < 1) bad("per_device_eval_batch_size", "must be >= 1");
  if (c.gradient_accumulation_steps < 1) bad("gradient_accumulation_steps", "must be >= 1");
  if (!(c.max_grad_norm >= 0)) bad("max_grad_norm", "must be >= 0 (0: no clipping)");
  if (c.eval_steps < 0) bad("eval_steps", "must be >= 0");
  if (c.early_stopping_patience < 0) bad("early_stopping_patience", "must be >= 0");
  if (c.save_steps < 0) bad("save_steps", "must be >= 0");
  if (c.save_total_limit < 0) bad("save_total_limit", "must be >= 0 (0: keep all)");
  if (c.output_dir.empty()) bad("output_dir", "is required");
  if (c.max_seq_length < 1) bad("max_seq_length", "must be >= 1");
}

}  // namespace

TrainConfig TrainConfig::from_json(const nlohmann::json& json) {
  if (!json.is_object()) fail(ErrorKind::InvalidArgument, "training config must be a JSON object, got " + json.dump());
  TrainConfig config;
  for (auto it = json.begin(); it != json.end(); ++it) {
    auto reader = readers().find(it.key());
    if (reader == readers().end()) bad(it.key(), "is unknown");
    reader->second(config, it.value(), it.key());
  }
  check_ranges(config);
  return config;
}

nlohmann::json TrainConfig::to_json() const {
  return {{"optimizer", optimizer},
          {"learning_rate", learning_rate},
          {"weight_decay", weight_decay},
          {"adam_beta1", adam_beta1},
          {"adam_beta2", adam_beta2},
          {"adam_epsilon", adam_epsilon},
          {"momentum", momentum},
          {"lr_scheduler_type", lr_scheduler_type},
          {"warmup_steps", warmup_steps},
          {"max_steps", max_steps},
          {"num_train_epochs", num_train_epochs},
          {"per_device_train_batch_size", per_device_train_batch_size},
          {"per_device_eval_batch_size", per_device_eval_batch_size},
          {"gradient_accumulation_steps", gradient_accumulation_steps},
          {"max_grad_norm", max_grad_norm},
          {"eval_steps", eval_steps},
          {"early_stopping_patience", early_stopping_patience},
          {"save_steps", save_steps},
          {"save_total_limit", save_total_limit},
          {"output_dir", output_dir},
          {"seed", seed},
          {"packing", packing},
          {"max_seq_length", max_seq_length},
          {"pad_token_id", pad_token_id},
          {"bf16", bf16},
          {"gradient_checkpointing", gradient_checkpointing},
          {"task", task}};
}

}  // namespace peft4j::train
