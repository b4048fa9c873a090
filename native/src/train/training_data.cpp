#include "peft4j/train/training_data.h"

#include <algorithm>
#include <numeric>
#include <random>

#include "peft4j/error.h"

namespace peft4j::train {

void TrainingData::check_kind(bool classified, int64_t length) {
  if (length <= 0) fail(ErrorKind::InvalidArgument, "a training example needs at least one token");
  if (!examples_.empty() && classified != classified_)
    fail(ErrorKind::InvalidArgument, std::string("training data holds ") +
                                         (classified_ ? "classified examples" : "sequences") + "; cannot add " +
                                         (classified ? "a classified example" : "a sequence") + " to it");
  classified_ = classified;
}

void TrainingData::add_sequence(const int64_t* input_ids, const int64_t* labels, int64_t length) {
  check_kind(false, length);
  if (!input_ids || !labels) fail(ErrorKind::InvalidArgument, "a sequence needs input ids and labels");
  Example e;
  e.input_ids.assign(input_ids, input_ids + length);
  e.labels.assign(labels, labels + length);
  examples_.push_back(std::move(e));
}

void TrainingData::add_classified(const int64_t* input_ids, int64_t length, int64_t label) {
  check_kind(true, length);
  if (!input_ids) fail(ErrorKind::InvalidArgument, "a classified example needs input ids");
  if (label < 0) fail(ErrorKind::InvalidArgument, "class label must be >= 0, got " + std::to_string(label));
  Example e;
  e.input_ids.assign(input_ids, input_ids + length);
  e.label = label;
  examples_.push_back(std::move(e));
}

void check_examples(const TrainingData& data, const std::string& which, int64_t vocab_size, int64_t num_labels) {
  const auto& examples = data.examples();
  for (size_t i = 0; i < examples.size(); ++i) {
    const Example& e = examples[i];
    const std::string where = which + " example " + std::to_string(i);
    auto outside = [&](const char* what, size_t position, int64_t value, const std::string& allowed) {
      fail(ErrorKind::InvalidArgument, where + ": " + what + " " + std::to_string(value) + " at position " +
                                           std::to_string(position) + " is outside " + allowed);
    };
    const std::string vocabulary = "the model's vocabulary [0, " + std::to_string(vocab_size) + ")";
    for (size_t t = 0; t < e.input_ids.size(); ++t)
      if (e.input_ids[t] < 0 || e.input_ids[t] >= vocab_size) outside("input id", t, e.input_ids[t], vocabulary);
    for (size_t t = 0; t < e.labels.size(); ++t)
      if (e.labels[t] != -100 && (e.labels[t] < 0 || e.labels[t] >= vocab_size))
        outside("label", t, e.labels[t], vocabulary + " (-100: no loss)");
    if (e.labels.empty() && num_labels > 1 && e.label >= num_labels)
      fail(ErrorKind::InvalidArgument, where + ": class label " + std::to_string(e.label) + " is outside the model's " +
                                           std::to_string(num_labels) + " labels (config.json num_labels / id2label)");
  }
}

void check_learnable(const std::vector<Example>& prepared, const TrainingData& data, int64_t max_length, bool packing) {
  if (data.classified()) return;
  for (size_t i = 0; i < prepared.size(); ++i) {
    const auto& labels = prepared[i].labels;
    if (std::any_of(labels.begin() + std::min<size_t>(1, labels.size()), labels.end(), [](int64_t l) { return l != -100; }))
      continue;
    const bool cut = !packing && data.examples()[i].input_ids.size() > prepared[i].input_ids.size();
    fail(ErrorKind::InvalidArgument,
         (packing ? "training data packed into " + std::to_string(max_length) + "-token blocks: block "
                  : std::string("training example ")) +
             std::to_string(i) + " has no token to learn: its labels after the first position are all -100" +
             (cut ? " once truncated to " + std::to_string(max_length) + " tokens" : "") +
             (labels.size() == 1 ? " (a single token is never predicted)" : ""));
  }
}

std::vector<Example> prepare_examples(const TrainingData& data, int64_t max_length, bool packing, int64_t* truncated) {
  std::vector<Example> out;
  if (truncated) *truncated = 0;
  if (!packing) {
    for (const Example& e : data.examples()) {
      Example cut = e;
      if (static_cast<int64_t>(cut.input_ids.size()) > max_length) {
        cut.input_ids.resize(max_length);
        if (!cut.labels.empty()) cut.labels.resize(max_length);
        if (truncated) ++*truncated;
      }
      out.push_back(std::move(cut));
    }
    return out;
  }
  if (data.classified()) fail(ErrorKind::InvalidArgument, "packing applies to causal-LM sequences, not classified examples");
  Example block;
  for (const Example& e : data.examples()) {
    for (size_t i = 0; i < e.input_ids.size(); ++i) {
      block.input_ids.push_back(e.input_ids[i]);
      block.labels.push_back(e.labels[i]);
      if (static_cast<int64_t>(block.input_ids.size()) == max_length) out.push_back(std::exchange(block, Example{}));
    }
  }
  if (!block.input_ids.empty()) out.push_back(std::move(block));
  return out;
}

std::vector<int64_t> epoch_order(int64_t count, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(count);
  std::iota(order.begin(), order.end(), 0);
  // A local generator, so nothing else that draws random numbers changes the data order. Fisher-Yates by hand:
  // std::shuffle's algorithm differs between standard libraries.
  std::mt19937_64 generator(seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(epoch));
  for (int64_t i = count - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(generator() % static_cast<uint64_t>(i + 1));
    std::swap(order[i], order[j]);
  }
  return order;
}

models::ModelInputs collate(const std::vector<const Example*>& examples, int64_t pad_token_id, const at::Device& device) {
  if (examples.empty()) fail(ErrorKind::Internal, "collate: empty batch");
  const bool classified = examples.front()->labels.empty();
  const auto rows = static_cast<int64_t>(examples.size());
  int64_t length = 0;
  for (const Example* e : examples) length = std::max<int64_t>(length, static_cast<int64_t>(e->input_ids.size()));
  at::Tensor ids = at::full({rows, length}, pad_token_id, at::kLong);
  at::Tensor mask = at::zeros({rows, length}, at::kLong);
  at::Tensor labels = classified ? at::empty({rows}, at::kLong) : at::full({rows, length}, -100, at::kLong);
  auto ids_a = ids.accessor<int64_t, 2>();
  auto mask_a = mask.accessor<int64_t, 2>();
  for (int64_t r = 0; r < rows; ++r) {
    const Example& e = *examples[r];
    for (size_t t = 0; t < e.input_ids.size(); ++t) {
      ids_a[r][t] = e.input_ids[t];
      mask_a[r][t] = 1;
    }
    if (classified) {
      labels.accessor<int64_t, 1>()[r] = e.label;
    } else {
      auto labels_a = labels.accessor<int64_t, 2>();
      for (size_t t = 0; t < e.labels.size(); ++t) labels_a[r][t] = e.labels[t];
    }
  }
  models::ModelInputs in;
  in.input_ids = ids.to(device);
  in.attention_mask = mask.to(device);
  in.labels = labels.to(device);
  return in;
}

models::ModelInputs unpadded_row(const models::ModelInputs& batch, int64_t row, const at::Device& device) {
  auto unpadded = [&](const at::Tensor& t) {
    at::Tensor r = t[row];
    if (batch.attention_mask.defined()) r = r.masked_select(batch.attention_mask[row].ne(0));
    return r.unsqueeze(0).to(device);
  };
  models::ModelInputs one;
  one.input_ids = unpadded(batch.input_ids);
  if (batch.token_type_ids.defined()) one.token_type_ids = unpadded(batch.token_type_ids);
  if (batch.labels.defined())
    one.labels = batch.labels.dim() == 1 ? batch.labels.narrow(0, row, 1).to(device) : unpadded(batch.labels);
  return one;
}

int64_t loss_items(const models::ModelInputs& batch, models::Task task) {
  switch (task) {
    case models::Task::CausalLM:
      return batch.labels.slice(1, 1).ne(-100).sum().item<int64_t>();
    case models::Task::Seq2SeqLM:
      return batch.labels.ne(-100).sum().item<int64_t>();
    case models::Task::SequenceClassification:
      return batch.labels.size(0);
  }
  fail(ErrorKind::Internal, "loss_items: unknown task");
}

}  // namespace peft4j::train
