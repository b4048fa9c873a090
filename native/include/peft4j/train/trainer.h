// The training loop over a PeftModel's trainable parameters: optimizer steps with gradient accumulation and
// clipping, a learning-rate schedule, evaluation, early stopping and checkpoints that resume exactly.
//
// A checkpoint (output_dir/checkpoint-<step>/) holds
//   adapter_config.json, adapter_model.safetensors  the trained adapter in PEFT's format (loadable by HF PEFT)
//   optimizer.pt                                     the optimizer state, libtorch's archive (torch::save of the
//                                                    optimizer; read by libtorch, not by Python's torch.load)
//   trainer_state.json                               step, epoch and data position, the global RNG states, the
//                                                    schedule, best eval loss, patience and the loss history
// trainer_state.json is written last; resuming restores all of it, so an interrupted and resumed run ends with
// the losses and weights of an uninterrupted one. Checkpoints are renamed into place whole and renamed away
// before they are deleted (checkpoint_dirs.h); what a killed run left half-done is cleared when a trainer starts.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include <torch/optim/optimizer.h>

#include "peft4j/train/train_config.h"
#include "peft4j/train/training_data.h"
#include "peft4j/tuners/peft_model.h"

namespace peft4j::train {

// What one step() did; NaN where a value does not apply (eval values without an evaluation, accuracy outside
// classification).
struct StepMetrics {
  int64_t global_step = 0;
  int64_t max_steps = 0;
  double epoch = 0;               // epochs done, fractional
  double loss = 0;                // the step's mean training loss
  double learning_rate = 0;       // the rate the step's update used
  double grad_norm = 0;           // total gradient norm before clipping
  int64_t tokens_seen = 0;        // non-padding input tokens trained on so far
  double tokens_per_second = 0;   // the step's tokens over its forward/backward/update time
  bool evaluated = false;         // an evaluation ran after this step
  double eval_loss = 0;
  double eval_accuracy = 0;
  bool stopped_early = false;
  std::string checkpoint;         // newest checkpoint written (by any step), empty if none
};

struct EvalMetrics {
  double loss = 0;      // mean over the eval data's loss items (label tokens, or examples)
  double accuracy = 0;  // argmax == label over the examples (classification), else NaN
};

class Trainer {
 public:
  static constexpr const char* kStateFile = "trainer_state.json";
  static constexpr const char* kOptimizerFile = "optimizer.pt";

  // Trains the model's active adapter. `eval` may be empty. Before any work, and creating nothing, checks the
  // config against the model and the data (Error(InvalidArgument): token ids outside the vocabulary, class labels
  // beyond the model's, sequences with no token to learn) and that the output dir can be written (Error(Io)).
  // Examples are cut to max_seq_length, or to the model's positions where those are fewer (as HF truncates);
  // warnings() then says how many were cut. Clears what a killed run left in the output dir (remove_leftovers).
  Trainer(std::shared_ptr<tuners::PeftModel> model, const TrainingData& train, const TrainingData& eval,
          TrainConfig config);

  // One optimizer step (gradient_accumulation_steps micro-batches), then the evaluation and checkpoint due at it
  // (eval_steps, save_steps, and both after the last step or early stopping). Returns false, doing nothing, once
  // training is finished. A non-finite loss -> Error(Numerical) "loss is nan at step N"; the parameters keep
  // their values from before that step and the checkpoints on disk are untouched.
  bool step();
  bool finished() const;
  const StepMetrics& metrics() const { return metrics_; }

  EvalMetrics evaluate();
  // Writes a checkpoint of the current state now and returns its directory.
  std::string save_checkpoint();
  // Continues from a checkpoint this trainer's config and data produced (Error(InvalidArgument) otherwise).
  void resume_from(const std::string& checkpoint_dir);
  // The newest complete checkpoint under output_dir; Error(NotFound) when there is none.
  void resume_from_latest();
  // The adapter in PEFT's format (adapter_config.json + adapter_model.safetensors).
  void save_adapter(const std::string& dir) const;

  const TrainConfig& config() const { return config_; }
  // Things the caller should tell the user, found while setting up (examples truncated).
  const std::vector<std::string>& warnings() const { return warnings_; }
  // HF's log_history: one entry per step (step, epoch, loss, learning_rate, grad_norm, tokens_per_second) and per
  // evaluation (step, eval_loss, eval_accuracy for seq_cls), from step 1 on, a resumed run's included.
  const nlohmann::json& log_history() const { return log_history_; }

 private:
  std::vector<models::ModelInputs> next_micro_batches(int64_t* tokens);
  void maybe_evaluate_and_stop();
  nlohmann::json state_json() const;
  void restore_weights(const std::string& dir);

  std::shared_ptr<tuners::PeftModel> model_;
  std::string adapter_;
  TrainConfig config_;
  std::vector<Example> train_;
  std::vector<Example> eval_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  std::vector<double> group_rates_;  // each parameter group's learning rate before the schedule
  at::Device device_;
  int64_t batches_per_epoch_ = 0;
  int64_t max_steps_ = 0;

  // Data position: the current epoch's order and the micro-batches of it consumed.
  int64_t epoch_index_ = 0;
  int64_t batch_in_epoch_ = 0;
  std::vector<int64_t> order_;

  int64_t global_step_ = 0;
  int64_t tokens_seen_ = 0;
  double best_eval_loss_;
  int64_t evals_without_improvement_ = 0;
  bool stopped_early_ = false;
  nlohmann::json log_history_ = nlohmann::json::array();
  std::vector<std::string> warnings_;
  StepMetrics metrics_;
};

}  // namespace peft4j::train
