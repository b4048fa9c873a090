// Tokenized training examples and how they become batches: truncation or packing, the per-epoch order and
// right-padded collation.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

#include "peft4j/models/model.h"

namespace peft4j::train {

// A causal-LM example (labels: the target at each position, unshifted as HF labels; -100 = no loss) or a
// classification example (label >= 0, labels empty).
struct Example {
  std::vector<int64_t> input_ids;
  std::vector<int64_t> labels;
  int64_t label = -1;
};

class TrainingData {
 public:
  // Lengths must match and be > 0; the data holds either kind of example, not both (Error(InvalidArgument)).
  void add_sequence(const int64_t* input_ids, const int64_t* labels, int64_t length);
  void add_classified(const int64_t* input_ids, int64_t length, int64_t label);
  int64_t size() const { return static_cast<int64_t>(examples_.size()); }
  bool empty() const { return examples_.empty(); }
  bool classified() const { return classified_; }
  const std::vector<Example>& examples() const { return examples_; }

 private:
  void check_kind(bool classified, int64_t length);
  std::vector<Example> examples_;
  bool classified_ = false;
};

// Checks every example against the model before training: input ids in [0, vocab_size), sequence labels in
// [0, vocab_size) or -100, class labels below num_labels (any >= 0 when num_labels is 1: regression).
// Error(InvalidArgument) naming `which` data ("training", "eval"), the example (0-based), the position and value.
void check_examples(const TrainingData& data, const std::string& which, int64_t vocab_size, int64_t num_labels);

// The examples a trainer iterates: each cut to max_length tokens, or (packing, causal LM only) all of them
// concatenated in order and split into blocks of max_length, the last block shorter. `truncated` (optional)
// receives how many examples were cut.
std::vector<Example> prepare_examples(const TrainingData& data, int64_t max_length, bool packing,
                                      int64_t* truncated = nullptr);

// Causal-LM sequences must each have a token to learn (a label other than -100 after the first position: the
// first token is never predicted); otherwise a batch of them has no loss. Error(InvalidArgument) naming the
// example (or packed block) and max_length when truncation removed its labels.
void check_learnable(const std::vector<Example>& prepared, const TrainingData& data, int64_t max_length, bool packing);

// The example order of one epoch: a permutation of 0..count-1 that depends only on (seed, epoch).
std::vector<int64_t> epoch_order(int64_t count, uint64_t seed, int64_t epoch);

// One right-padded batch on `device`: input_ids (pad_token_id), attention_mask, and labels (-100 under padding
// for sequences; the class ids for classified examples).
models::ModelInputs collate(const std::vector<const Example*>& examples, int64_t pad_token_id, const at::Device& device);

// Row `row` of a collated batch as a batch of its own on `device`, its padding (attention_mask 0) left out:
// input_ids, token_type_ids and labels (a sequence's, or its class id); no attention_mask.
models::ModelInputs unpadded_row(const models::ModelInputs& batch, int64_t row, const at::Device& device);

// The number of items a batch's mean loss averages over: label tokens that are predicted (labels after the first
// position that are not -100) for causal LM, examples for classification.
int64_t loss_items(const models::ModelInputs& batch, models::Task task);

}  // namespace peft4j::train
