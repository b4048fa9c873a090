// The facade over the trainer (peft4j/train/trainer.h): tokenized examples in, optimizer steps, metrics and
// checkpoints out. Torch-free like peft_api.h; the training config crosses as JSON text.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "peft_api.h"

namespace peft4j {
namespace api {

struct TrainingDataState;
struct TrainerState;

// Tokenized examples, owned by native code.
class TrainingDataHandle {
 public:
  TrainingDataHandle();
  // One causal-LM example: token ids and per-token labels (-100 = no loss; labels[i] is the target AT position i,
  // unshifted, as HF labels).
  void addSequence(const int64_t* inputIds, const int64_t* labels, int64_t length);
  // One classification example.
  void addClassified(const int64_t* inputIds, int64_t length, int64_t label);
  int64_t size() const;

 private:
  friend class TrainerHandle;
  friend class PeftModelHandle;
  std::shared_ptr<TrainingDataState> state_;
};

class TrainerHandle {
 public:
  TrainerHandle();
  // config JSON fields (all optional, defaults in brackets): optimizer "adamw"|"sgd" [adamw], learning_rate [1e-4],
  // weight_decay [0.0], adam_beta1 [0.9], adam_beta2 [0.999], adam_epsilon [1e-8], momentum [0.0] (sgd),
  // lr_scheduler_type "constant"|"linear"|"cosine" [linear] (each after warmup_steps), warmup_steps [0],
  // max_steps [-1 = from num_train_epochs], num_train_epochs [1], per_device_train_batch_size [8],
  // per_device_eval_batch_size [8], gradient_accumulation_steps [1], max_grad_norm [1.0; 0 = off],
  // eval_steps [0 = only at end], early_stopping_patience [0 = off] (in evaluations without eval-loss
  // improvement), save_steps [0 = only at end], save_total_limit [2; 0 = keep all], output_dir [required],
  // seed [42], packing [false] (concatenate examples into max_seq_length blocks, labels kept), max_seq_length
  // [512] (longer examples truncated), pad_token_id [0], bf16 [false] (CUDA only), gradient_checkpointing [false]
  // (llama/qwen2/mistral, gpt2 and bert layers recompute their activations in backward), task "causal_lm"|"seq_cls"
  // [causal_lm].
  // Names follow HF TrainingArguments where one exists. Unknown field -> InvalidArgument naming it. Trains the
  // model's active adapter; an output_dir that is a file -> Io before any work.
  static TrainerHandle create(const PeftModelHandle& model, const TrainingDataHandle& train,
                              const TrainingDataHandle& eval /* may be empty */, const std::string& configJson);
  // Continues from the newest complete checkpoint under output_dir (checkpoint-<step>/); NotFound if none.
  void resumeFromLatest();
  void resumeFrom(const std::string& checkpointDir);
  // One optimizer step (gradient_accumulation_steps micro-batches), with the evaluation and checkpoint due at it;
  // false, doing nothing, when training is finished (max steps reached or early stopping), so `while (step())`
  // sees every step's metrics. Throws Numerical on NaN/inf loss naming the step, after which the newest checkpoint
  // on disk is intact.
  bool step();
  // Metrics of the last step.
  int64_t globalStep() const;
  int64_t maxSteps() const;
  double epoch() const;
  double loss() const;
  double learningRate() const;
  double gradNorm() const;
  int64_t tokensSeen() const;
  double tokensPerSecond() const;
  bool evaluatedThisStep() const;
  double evalLoss() const;
  double evalAccuracy() const;  // NaN unless seq_cls
  bool stoppedEarly() const;
  std::string lastCheckpoint() const;  // directory of the newest checkpoint written, empty if none
  // Evaluation over the eval data now: loss (and accuracy for seq_cls, then in evalAccuracy()).
  double evaluate();
  // Writes a checkpoint now (atomically) and returns its directory.
  std::string saveCheckpoint();
  // Saves the final adapter in PEFT format into dir (adapter_config.json + adapter_model.safetensors).
  void saveAdapter(const std::string& dir) const;
  // HF's log_history as JSON text: an array of step entries (step, epoch, loss, learning_rate, grad_norm,
  // tokens_per_second) and evaluation entries (step, eval_loss[, eval_accuracy]), a resumed run's earlier ones too.
  std::string logHistory() const;
  // What setting up found to tell the user (examples truncated), one per line; empty when nothing.
  std::string warnings() const;

 private:
  std::shared_ptr<TrainerState> state_;
};

// Checks, creating nothing, that `dir` is a directory this process can write or can create (Io naming the problem:
// a file, a path below a file, no permission, a read-only file system), as the trainer does for its output_dir.
void checkOutputDir(const std::string& dir);

}  // namespace api
}  // namespace peft4j
