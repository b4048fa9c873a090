#include "peft4j/train/trainer.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/cuda.h>
#include <torch/serialize.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <mutex>
#include <set>

#include "peft4j/compat.h"
#include "peft4j/error.h"
#include "peft4j/fault_injection.h"
#include "peft4j/files.h"
#include "peft4j/models/config_fields.h"
#include "peft4j/safetensors.h"
#include "peft4j/train/checkpoint_dirs.h"
#include "peft4j/train/lr_schedule.h"
#include "peft4j/train/train_step.h"

namespace peft4j::train {

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// bf16 autocast over the forward passes while alive (CUDA only; the constructor refuses bf16 elsewhere).
class Bf16Autocast {
 public:
  explicit Bf16Autocast(bool enabled) : enabled_(enabled) {
    if (enabled_) compat::set_cuda_autocast(true, at::kBFloat16);
  }
  ~Bf16Autocast() {
    if (enabled_) compat::set_cuda_autocast(false, at::kBFloat16);
  }
  Bf16Autocast(const Bf16Autocast&) = delete;
  Bf16Autocast& operator=(const Bf16Autocast&) = delete;

 private:
  bool enabled_;
};

std::string to_hex(const at::Tensor& bytes) {
  static const char* digits = "0123456789abcdef";
  at::Tensor b = bytes.contiguous().to(at::kByte);
  const uint8_t* data = b.data_ptr<uint8_t>();
  std::string out;
  out.reserve(static_cast<size_t>(b.numel()) * 2);
  for (int64_t i = 0; i < b.numel(); ++i) {
    out.push_back(digits[data[i] >> 4]);
    out.push_back(digits[data[i] & 15]);
  }
  return out;
}

at::Tensor from_hex(const std::string& text, const std::string& what) {
  auto nibble = [&](char c) -> uint8_t {
    if (c >= '0' && c <= '9') return static_cast<uint8_t>(c - '0');
    if (c >= 'a' && c <= 'f') return static_cast<uint8_t>(c - 'a' + 10);
    fail(ErrorKind::Format, what + " is not hexadecimal");
  };
  if (text.size() % 2) fail(ErrorKind::Format, what + " has an odd number of hex digits");
  at::Tensor out = at::empty({static_cast<int64_t>(text.size() / 2)}, at::kByte);
  uint8_t* data = out.data_ptr<uint8_t>();
  for (size_t i = 0; i < text.size() / 2; ++i) data[i] = static_cast<uint8_t>(nibble(text[2 * i]) << 4 | nibble(text[2 * i + 1]));
  return out;
}

at::Generator cuda_generator(int64_t index) {
  return at::globalContext().defaultGenerator(at::Device(at::kCUDA, static_cast<at::DeviceIndex>(index)));
}

// The global generators dropout draws from: the CPU one and each CUDA device's.
nlohmann::json rng_states() {
  nlohmann::json out;
  {
    at::Generator cpu = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(cpu.mutex());
    out["cpu"] = to_hex(cpu.get_state());
  }
  out["cuda"] = nlohmann::json::array();
  if (torch::cuda::is_available()) {
    for (int64_t i = 0; i < static_cast<int64_t>(torch::cuda::device_count()); ++i) {
      at::Generator g = cuda_generator(i);
      std::lock_guard<std::mutex> lock(g.mutex());
      out["cuda"].push_back(to_hex(g.get_state()));
    }
  }
  return out;
}

void restore_rng_states(const nlohmann::json& states, const std::string& source) {
  {
    at::Generator cpu = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(cpu.mutex());
    cpu.set_state(from_hex(states.at("cpu").get<std::string>(), source + " rng.cpu"));
  }
  const auto& cuda = states.at("cuda");
  if (!cuda.empty() && !torch::cuda::is_available())
    fail(ErrorKind::Unsupported, source + " holds CUDA random states, but this process has no CUDA device");
  for (size_t i = 0; i < cuda.size() && static_cast<int64_t>(i) < static_cast<int64_t>(torch::cuda::device_count()); ++i) {
    at::Generator g = cuda_generator(static_cast<int64_t>(i));
    std::lock_guard<std::mutex> lock(g.mutex());
    g.set_state(from_hex(cuda[i].get<std::string>(), source + " rng.cuda"));
  }
}

models::Task expected_task(const TrainConfig& config) {
  return config.classification() ? models::Task::SequenceClassification : models::Task::CausalLM;
}

void check_setup(tuners::PeftModel& model, const TrainingData& train, const TrainingData& eval,
                 const TrainConfig& config, const at::Device& device) {
  if (model.task() == models::Task::Seq2SeqLM)
    fail(ErrorKind::Unsupported, "the trainer trains causal-LM and sequence-classification models; " +
                                     model.model_type() + " is a seq2seq model");
  if (model.task() != expected_task(config))
    fail(ErrorKind::InvalidArgument, "training config field 'task' is " + config.task + ", but the " +
                                         model.model_type() + " model is " +
                                         (model.task() == models::Task::CausalLM ? "causal_lm" : "seq_cls"));
  if (train.empty()) fail(ErrorKind::InvalidArgument, "training data is empty");
  const int64_t labels = config.classification() ? models::num_labels(model.config(), model.model_type()) : 0;
  for (const auto* data : {&train, &eval}) {
    const std::string which = data == &train ? "training" : "eval";
    if (!data->empty() && data->classified() != config.classification())
      fail(ErrorKind::InvalidArgument, which + " data holds " +
                                           (data->classified() ? "classified examples" : "sequences") +
                                           ", but task is " + config.task);
    check_examples(*data, which, model.vocab_size(), labels);
  }
  if (config.early_stopping_patience > 0 && eval.empty())
    fail(ErrorKind::InvalidArgument, "early_stopping_patience needs eval data");
  if (config.bf16 && device.type() != at::kCUDA)
    fail(ErrorKind::Unsupported, "training config field 'bf16': bf16 autocast runs on CUDA only; the model is on " +
                                     device.str() + " (compute in f32 on CPU)");
}

// "3 of 40 training examples were longer than 64 tokens and were truncated to 64 (max_seq_length)", or empty.
std::string truncation_warning(int64_t cut, int64_t total, const std::string& which, int64_t max_length,
                               const TrainConfig& config) {
  if (cut == 0) return "";
  const std::string limit = max_length < config.max_seq_length
                                ? "the model's " + std::to_string(max_length) + " positions, fewer than max_seq_length " +
                                      std::to_string(config.max_seq_length)
                                : "max_seq_length";
  return std::to_string(cut) + " of " + std::to_string(total) + " " + which + " examples were longer than " +
         std::to_string(max_length) + " tokens and were truncated to " + std::to_string(max_length) + " (" + limit + ")";
}

}  // namespace

Trainer::Trainer(std::shared_ptr<tuners::PeftModel> model, const TrainingData& train, const TrainingData& eval,
                 TrainConfig config)
    : model_(std::move(model)), config_(std::move(config)), device_(at::kCPU),
      best_eval_loss_(std::numeric_limits<double>::infinity()) {
  if (!model_) fail(ErrorKind::InvalidArgument, "the trainer needs a PEFT model");
  if (model_->active_adapters().empty()) fail(ErrorKind::InvalidArgument, "the PEFT model has no active adapter to train");
  adapter_ = model_->active_adapters().front();
  // Tensors whose method sets their own learning rate (diff pruning's gates) form a parameter group per rate.
  const auto trainable = model_->trainable_parameters();
  if (trainable.empty()) fail(ErrorKind::InvalidArgument, "the PEFT model has no trainable parameters");
  device_ = trainable.front().second.device();
  std::vector<at::Tensor> params;
  std::map<double, std::vector<at::Tensor>> own_rate;
  for (const auto& [name, p] : trainable) {
    if (auto rate = model_->learning_rate(name))
      own_rate[*rate].push_back(p);
    else
      params.push_back(p);
  }
  check_setup(*model_, train, eval, config_, device_);
  const int64_t positions = models::max_positions(model_->config(), model_->model_type());
  const int64_t max_length = positions > 0 ? std::min(config_.max_seq_length, positions) : config_.max_seq_length;
  int64_t train_cut = 0, eval_cut = 0;
  train_ = prepare_examples(train, max_length, config_.packing, &train_cut);
  eval_ = prepare_examples(eval, max_length, config_.packing, &eval_cut);
  check_learnable(train_, train, max_length, config_.packing);
  for (const auto& warning : {truncation_warning(train_cut, train.size(), "training", max_length, config_),
                              truncation_warning(eval_cut, eval.size(), "eval", max_length, config_)})
    if (!warning.empty()) warnings_.push_back(warning);
  check_output_dir(config_.output_dir);
  remove_leftovers(config_.output_dir);
  const auto examples = static_cast<int64_t>(train_.size());
  batches_per_epoch_ = (examples + config_.per_device_train_batch_size - 1) / config_.per_device_train_batch_size;
  max_steps_ = config_.max_steps > 0
                   ? config_.max_steps
                   : std::max<int64_t>(1, static_cast<int64_t>(std::ceil(
                                              config_.num_train_epochs * static_cast<double>(batches_per_epoch_) /
                                              static_cast<double>(config_.gradient_accumulation_steps))));
  OptimizerSettings settings;
  settings.name = config_.optimizer;
  settings.learning_rate = config_.learning_rate;
  settings.weight_decay = config_.weight_decay;
  settings.beta1 = config_.adam_beta1;
  settings.beta2 = config_.adam_beta2;
  settings.epsilon = config_.adam_epsilon;
  settings.momentum = config_.momentum;
  // The trainer's rate applies to the first group (empty when every tensor has a rate of its own).
  optimizer_ = make_optimizer(params.empty() ? own_rate.begin()->second : params, settings);
  group_rates_ = {params.empty() ? own_rate.begin()->first : config_.learning_rate};
  for (const auto& [rate, tensors] : own_rate) {
    if (params.empty() && rate == own_rate.begin()->first) continue;
    add_parameter_group(*optimizer_, tensors, rate);
    group_rates_.push_back(rate);
  }
  model_->before_training(max_steps_);
  order_ = epoch_order(examples, config_.seed, epoch_index_);
  at::manual_seed(config_.seed);  // dropout's generator, as transformers' Trainer calls set_seed

  metrics_.max_steps = max_steps_;
  metrics_.eval_loss = kNaN;
  metrics_.eval_accuracy = kNaN;
  metrics_.loss = kNaN;
  metrics_.grad_norm = kNaN;
  metrics_.learning_rate = config_.learning_rate * lr_factor(config_.lr_scheduler_type, 0, config_.warmup_steps, max_steps_);
}

bool Trainer::finished() const { return global_step_ >= max_steps_ || stopped_early_; }

std::vector<models::ModelInputs> Trainer::next_micro_batches(int64_t* tokens) {
  std::vector<models::ModelInputs> out;
  const auto examples = static_cast<int64_t>(train_.size());
  for (int64_t i = 0; i < config_.gradient_accumulation_steps; ++i) {
    if (batch_in_epoch_ == batches_per_epoch_) {
      ++epoch_index_;
      batch_in_epoch_ = 0;
      order_ = epoch_order(examples, config_.seed, epoch_index_);
    }
    const int64_t begin = batch_in_epoch_ * config_.per_device_train_batch_size;
    const int64_t end = std::min(examples, begin + config_.per_device_train_batch_size);
    std::vector<const Example*> rows;
    for (int64_t r = begin; r < end; ++r) {
      rows.push_back(&train_[order_[r]]);
      *tokens += static_cast<int64_t>(train_[order_[r]].input_ids.size());
    }
    out.push_back(collate(rows, config_.pad_token_id, device_));
    ++batch_in_epoch_;
  }
  return out;
}

bool Trainer::step() {
  if (finished()) return false;
  const int64_t step = global_step_ + 1;
  const double factor = lr_factor(config_.lr_scheduler_type, global_step_, config_.warmup_steps, max_steps_);
  const double lr = config_.learning_rate * factor;
  for (size_t i = 0; i < group_rates_.size(); ++i)
    optimizer_->param_groups()[i].options().set_lr(group_rates_[i] * factor);
  const int64_t epoch_before = epoch_index_, batch_before = batch_in_epoch_;
  const std::vector<int64_t> order_before = order_;
  const auto start = std::chrono::steady_clock::now();
  int64_t tokens = 0;
  StepResult result;
  try {
    auto batches = next_micro_batches(&tokens);
    Bf16Autocast autocast(config_.bf16);
    result = optimizer_step(*model_, *optimizer_, batches,
                            {step, config_.max_grad_norm, true, config_.gradient_checkpointing});
  } catch (...) {
    // The step did not happen: the next attempt reads the same data.
    epoch_index_ = epoch_before;
    batch_in_epoch_ = batch_before;
    order_ = order_before;
    throw;
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  global_step_ = step;
  tokens_seen_ += tokens;
  metrics_.global_step = step;
  metrics_.epoch = static_cast<double>(epoch_index_) +
                   static_cast<double>(batch_in_epoch_) / static_cast<double>(batches_per_epoch_);
  metrics_.loss = result.loss;
  metrics_.learning_rate = lr;
  metrics_.grad_norm = result.grad_norm;
  metrics_.tokens_seen = tokens_seen_;
  metrics_.tokens_per_second = seconds > 0 ? static_cast<double>(tokens) / seconds : 0.0;
  metrics_.evaluated = false;
  log_history_.push_back({{"step", step},
                          {"epoch", metrics_.epoch},
                          {"loss", result.loss},
                          {"learning_rate", lr},
                          {"grad_norm", result.grad_norm},
                          {"tokens_per_second", metrics_.tokens_per_second}});
  maybe_evaluate_and_stop();
  if ((config_.save_steps > 0 && step % config_.save_steps == 0) || finished()) save_checkpoint();
  return true;
}

void Trainer::maybe_evaluate_and_stop() {
  if (eval_.empty()) return;
  const bool due = (config_.eval_steps > 0 && global_step_ % config_.eval_steps == 0) || global_step_ >= max_steps_;
  if (!due) return;
  EvalMetrics eval = evaluate();
  metrics_.evaluated = true;
  // transformers' EarlyStoppingCallback with threshold 0: a lower eval loss resets the count.
  if (eval.loss < best_eval_loss_) {
    best_eval_loss_ = eval.loss;
    evals_without_improvement_ = 0;
  } else {
    ++evals_without_improvement_;
  }
  if (config_.early_stopping_patience > 0 && evals_without_improvement_ >= config_.early_stopping_patience)
    stopped_early_ = true;
  metrics_.stopped_early = stopped_early_;
  nlohmann::json entry = {{"step", global_step_}, {"eval_loss", eval.loss}};
  if (config_.classification()) entry["eval_accuracy"] = eval.accuracy;
  log_history_.push_back(entry);
}

EvalMetrics Trainer::evaluate() {
  if (eval_.empty()) fail(ErrorKind::InvalidArgument, "evaluation needs eval data; the trainer has none");
  at::NoGradGuard no_grad;
  Bf16Autocast autocast(config_.bf16);
  model_->eval();
  double loss_sum = 0;
  int64_t items = 0, correct = 0;
  const auto examples = static_cast<int64_t>(eval_.size());
  for (int64_t begin = 0; begin < examples; begin += config_.per_device_eval_batch_size) {
    std::vector<const Example*> rows;
    for (int64_t r = begin; r < std::min(examples, begin + config_.per_device_eval_batch_size); ++r) rows.push_back(&eval_[r]);
    models::ModelInputs batch = collate(rows, config_.pad_token_id, device_);
    models::ModelOutput out = model_->forward(batch);
    const int64_t n = loss_items(batch, model_->task());
    if (n > 0) loss_sum += out.loss.item<double>() * static_cast<double>(n);
    items += n;
    if (config_.classification()) correct += out.logits.argmax(-1).eq(batch.labels).sum().item<int64_t>();
  }
  model_->train();
  EvalMetrics result;
  result.loss = items > 0 ? loss_sum / static_cast<double>(items) : kNaN;
  result.accuracy = config_.classification() ? static_cast<double>(correct) / static_cast<double>(examples) : kNaN;
  metrics_.eval_loss = result.loss;
  metrics_.eval_accuracy = result.accuracy;
  return result;
}

nlohmann::json Trainer::state_json() const {
  nlohmann::json best = std::isfinite(best_eval_loss_) ? nlohmann::json(best_eval_loss_) : nlohmann::json(nullptr);
  return {{"global_step", global_step_},
          {"max_steps", max_steps_},
          {"epoch", metrics_.epoch},
          {"data",
           {{"epoch_index", epoch_index_},
            {"batch_in_epoch", batch_in_epoch_},
            {"batches_per_epoch", batches_per_epoch_},
            {"train_examples", static_cast<int64_t>(train_.size())},
            {"order", "epoch_order(seed, epoch_index)"}}},
          {"rng", rng_states()},
          {"lr_scheduler",
           {{"type", config_.lr_scheduler_type},
            {"warmup_steps", config_.warmup_steps},
            {"total_steps", max_steps_},
            {"last_step", global_step_}}},
          {"tokens_seen", tokens_seen_},
          {"best_eval_loss", best},
          {"evals_without_improvement", evals_without_improvement_},
          {"stopped_early", stopped_early_},
          {"adapter", adapter_},
          {"config", config_.to_json()},
          {"log_history", log_history_}};
}

std::string Trainer::save_checkpoint() {
  metrics_.checkpoint =
      write_checkpoint(config_.output_dir, global_step_, config_.save_total_limit, kStateFile, [&](const std::string& dir) {
        model_->save_adapter(dir, adapter_);
        kill_point("checkpoint-partial", std::to_string(global_step_));
        torch::save(*optimizer_, io::join_path(dir, kOptimizerFile));
        io::write_text_file_atomic(io::join_path(dir, kStateFile), state_json().dump(1) + "\n");
      });
  return metrics_.checkpoint;
}

void Trainer::save_adapter(const std::string& dir) const { model_->save_adapter(dir, adapter_); }

// Copies the checkpoint's adapter tensors into the live parameters, which the optimizer holds.
void Trainer::restore_weights(const std::string& dir) {
  const std::string path = io::join_path(dir, "adapter_model.safetensors");
  if (!io::is_regular_file(path)) fail(ErrorKind::NotFound, "checkpoint '" + dir + "' has no adapter_model.safetensors");
  io::TensorMap saved = io::read_safetensors(path);
  io::TensorMap live = model_->adapter_state_dict(adapter_);
  std::set<const void*> restored;
  for (const auto& [key, tensor] : live) {
    auto it = saved.find(key);
    if (it == saved.end()) fail(ErrorKind::Format, "checkpoint '" + dir + "' lacks adapter tensor '" + key + "'");
    if (it->second.sizes() != tensor.sizes())
      fail(ErrorKind::Format, "checkpoint '" + dir + "': adapter tensor '" + key + "' has shape " +
                                  c10::str(it->second.sizes()) + ", the model's has " + c10::str(tensor.sizes()));
    restored.insert(tensor.storage().data());
  }
  for (const auto& [name, p] : model_->trainable_parameters())
    if (!restored.count(p.storage().data()))
      fail(ErrorKind::Unsupported, "cannot resume: trainable tensor '" + name + "' is not saved as itself in the " +
                                       "adapter file (its method transforms it on saving)");
  at::NoGradGuard no_grad;
  for (auto& [key, tensor] : live) tensor.copy_(saved.at(key));
}

void Trainer::resume_from(const std::string& dir) {
  const std::string state_path = io::join_path(dir, kStateFile);
  if (!io::is_regular_file(state_path)) fail(ErrorKind::NotFound, "'" + dir + "' is no checkpoint: it has no " + kStateFile);
  nlohmann::json state = io::read_json_file(state_path);
  try {
    const auto& saved = state.at("config");
    const TrainConfig& c = config_;
    const std::vector<std::pair<std::string, nlohmann::json>> must_match = {
        {"seed", c.seed},
        {"per_device_train_batch_size", c.per_device_train_batch_size},
        {"gradient_accumulation_steps", c.gradient_accumulation_steps},
        {"packing", c.packing},
        {"max_seq_length", c.max_seq_length},
        {"task", c.task}};
    for (const auto& [field, value] : must_match)
      if (saved.at(field) != value)
        fail(ErrorKind::InvalidArgument, "checkpoint '" + dir + "' was trained with " + field + " " +
                                             saved.at(field).dump() + ", this trainer has " + value.dump());
    const auto& data = state.at("data");
    if (data.at("train_examples").get<int64_t>() != static_cast<int64_t>(train_.size()))
      fail(ErrorKind::InvalidArgument, "checkpoint '" + dir + "' was trained on " + data.at("train_examples").dump() +
                                           " examples, this trainer has " + std::to_string(train_.size()));
    if (state.at("adapter").get<std::string>() != adapter_)
      fail(ErrorKind::InvalidArgument, "checkpoint '" + dir + "' trained adapter '" +
                                           state.at("adapter").get<std::string>() + "', this trainer trains '" +
                                           adapter_ + "'");
    restore_weights(dir);
    const std::string optimizer_path = io::join_path(dir, kOptimizerFile);
    if (!io::is_regular_file(optimizer_path))
      fail(ErrorKind::NotFound, "checkpoint '" + dir + "' has no " + std::string(kOptimizerFile));
    torch::load(*optimizer_, optimizer_path);
    restore_rng_states(state.at("rng"), state_path);
    global_step_ = state.at("global_step").get<int64_t>();
    epoch_index_ = data.at("epoch_index").get<int64_t>();
    batch_in_epoch_ = data.at("batch_in_epoch").get<int64_t>();
    order_ = epoch_order(static_cast<int64_t>(train_.size()), config_.seed, epoch_index_);
    tokens_seen_ = state.at("tokens_seen").get<int64_t>();
    best_eval_loss_ = state.at("best_eval_loss").is_null() ? std::numeric_limits<double>::infinity()
                                                            : state.at("best_eval_loss").get<double>();
    evals_without_improvement_ = state.at("evals_without_improvement").get<int64_t>();
    stopped_early_ = state.at("stopped_early").get<bool>();
    log_history_ = state.at("log_history");
  } catch (const nlohmann::json::exception& e) {
    fail(ErrorKind::Format, "checkpoint state '" + state_path + "' is malformed: " + e.what());
  }
  metrics_.global_step = global_step_;
  metrics_.epoch = state.value("epoch", 0.0);
  metrics_.tokens_seen = tokens_seen_;
  metrics_.stopped_early = stopped_early_;
  metrics_.evaluated = false;
  metrics_.checkpoint = dir;
  for (const auto& entry : log_history_)
    if (entry.contains("loss")) {
      metrics_.loss = entry.at("loss").get<double>();
      metrics_.learning_rate = entry.at("learning_rate").get<double>();
      metrics_.grad_norm = entry.at("grad_norm").get<double>();
    }
}

void Trainer::resume_from_latest() {
  remove_leftovers(config_.output_dir);
  auto checkpoints = list_checkpoints(config_.output_dir, kStateFile);
  if (checkpoints.empty())
    fail(ErrorKind::NotFound, "output_dir '" + config_.output_dir + "' holds no complete checkpoint-<step> directory");
  resume_from(checkpoints.back().path);
}

}  // namespace peft4j::train
