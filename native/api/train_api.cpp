#include "train_api.h"

#include "access.h"
#include "guard.h"
#include "peft4j/train/checkpoint_dirs.h"
#include "peft4j/models/config_fields.h"
#include "peft4j/train/training_data.h"
#include "peft4j/train/trainer.h"

namespace peft4j::api {

struct TrainingDataState {
  train::TrainingData data;
};

struct TrainerState {
  std::unique_ptr<train::Trainer> trainer;
};

namespace {

train::TrainingData& data_of(const std::shared_ptr<TrainingDataState>& state) {
  if (!state) fail(ErrorKind::InvalidArgument, "training data handle is empty (closed or never made)");
  return state->data;
}

train::Trainer& trainer_of(const std::shared_ptr<TrainerState>& state) {
  if (!state || !state->trainer) fail(ErrorKind::InvalidArgument, "trainer handle is empty (closed or never made)");
  return *state->trainer;
}

}  // namespace

TrainingDataHandle::TrainingDataHandle() : state_(std::make_shared<TrainingDataState>()) {}

void TrainingDataHandle::addSequence(const int64_t* inputIds, const int64_t* labels, int64_t length) {
  guard([&] { data_of(state_).add_sequence(inputIds, labels, length); });
}

void TrainingDataHandle::addClassified(const int64_t* inputIds, int64_t length, int64_t label) {
  guard([&] { data_of(state_).add_classified(inputIds, length, label); });
}

int64_t TrainingDataHandle::size() const {
  return guard([&] { return data_of(state_).size(); });
}

void PeftModelHandle::addAdapter(const std::string& name, const std::string& configJson, int64_t seed,
                                 const TrainingDataHandle& data, int64_t batchSize, int64_t maxLength,
                                 int64_t padTokenId) {
  guard([&] {
    auto peft = std::dynamic_pointer_cast<tuners::PeftModel>(Access::model(model()).model);
    if (!peft) fail(ErrorKind::InvalidArgument, "PEFT model handle is empty (closed, unloaded or never made)");
    if (batchSize <= 0) fail(ErrorKind::InvalidArgument, "batch size must be positive, got " + std::to_string(batchSize));
    if (maxLength <= 0) fail(ErrorKind::InvalidArgument, "max length must be positive, got " + std::to_string(maxLength));
    const train::TrainingData& examples = data_of(data.state_);
    train::check_examples(examples, "initialisation", peft->vocab_size(),
                          examples.classified() ? models::num_labels(peft->config(), peft->model_type()) : 0);
    std::vector<train::Example> cut = train::prepare_examples(examples, maxLength, /*packing=*/false);
    const at::Device device = peft->base_model().parameters().at(0).device();
    std::vector<models::ModelInputs> batches;
    for (size_t start = 0; start < cut.size(); start += static_cast<size_t>(batchSize)) {
      std::vector<const train::Example*> rows;
      for (size_t i = start; i < cut.size() && i < start + static_cast<size_t>(batchSize); ++i) rows.push_back(&cut[i]);
      batches.push_back(train::collate(rows, padTokenId, device));
    }
    add_seeded_adapter(*peft, name, configJson, seed, batches);
  });
}

TrainerHandle::TrainerHandle() = default;

TrainerHandle TrainerHandle::create(const PeftModelHandle& model, const TrainingDataHandle& train,
                                    const TrainingDataHandle& eval, const std::string& configJson) {
  return guard([&] {
    auto peft = std::dynamic_pointer_cast<tuners::PeftModel>(Access::model(model.model()).model);
    if (!peft) fail(ErrorKind::InvalidArgument, "the trainer needs a PEFT model");
    nlohmann::json config;
    try {
      config = nlohmann::json::parse(configJson);
    } catch (const nlohmann::json::exception& e) {  // parse_error, or out_of_range for a number such as 1e999
      fail(ErrorKind::InvalidArgument, std::string("training config is not valid JSON: ") + e.what());
    }
    TrainerHandle h;
    h.state_ = std::make_shared<TrainerState>();
    h.state_->trainer = std::make_unique<train::Trainer>(
        peft, data_of(train.state_), eval.state_ ? eval.state_->data : train::TrainingData(),
        train::TrainConfig::from_json(config));
    return h;
  });
}

void TrainerHandle::resumeFromLatest() { guard([&] { trainer_of(state_).resume_from_latest(); }); }
void TrainerHandle::resumeFrom(const std::string& checkpointDir) {
  guard([&] { trainer_of(state_).resume_from(checkpointDir); });
}
bool TrainerHandle::step() { return guard([&] { return trainer_of(state_).step(); }); }
int64_t TrainerHandle::globalStep() const { return guard([&] { return trainer_of(state_).metrics().global_step; }); }
int64_t TrainerHandle::maxSteps() const { return guard([&] { return trainer_of(state_).metrics().max_steps; }); }
double TrainerHandle::epoch() const { return guard([&] { return trainer_of(state_).metrics().epoch; }); }
double TrainerHandle::loss() const { return guard([&] { return trainer_of(state_).metrics().loss; }); }
double TrainerHandle::learningRate() const { return guard([&] { return trainer_of(state_).metrics().learning_rate; }); }
double TrainerHandle::gradNorm() const { return guard([&] { return trainer_of(state_).metrics().grad_norm; }); }
int64_t TrainerHandle::tokensSeen() const { return guard([&] { return trainer_of(state_).metrics().tokens_seen; }); }
double TrainerHandle::tokensPerSecond() const {
  return guard([&] { return trainer_of(state_).metrics().tokens_per_second; });
}
bool TrainerHandle::evaluatedThisStep() const { return guard([&] { return trainer_of(state_).metrics().evaluated; }); }
double TrainerHandle::evalLoss() const { return guard([&] { return trainer_of(state_).metrics().eval_loss; }); }
double TrainerHandle::evalAccuracy() const { return guard([&] { return trainer_of(state_).metrics().eval_accuracy; }); }
bool TrainerHandle::stoppedEarly() const { return guard([&] { return trainer_of(state_).metrics().stopped_early; }); }
std::string TrainerHandle::lastCheckpoint() const {
  return guard([&] { return trainer_of(state_).metrics().checkpoint; });
}
double TrainerHandle::evaluate() { return guard([&] { return trainer_of(state_).evaluate().loss; }); }
std::string TrainerHandle::saveCheckpoint() { return guard([&] { return trainer_of(state_).save_checkpoint(); }); }
void TrainerHandle::saveAdapter(const std::string& dir) const {
  guard([&] { trainer_of(state_).save_adapter(dir); });
}

std::string TrainerHandle::logHistory() const {
  return guard([&] { return trainer_of(state_).log_history().dump(); });
}

std::string TrainerHandle::warnings() const {
  return guard([&] {
    std::string out;
    for (const auto& w : trainer_of(state_).warnings()) out += (out.empty() ? "" : "\n") + w;
    return out;
  });
}

void checkOutputDir(const std::string& dir) { guard([&] { train::check_output_dir(dir); }); }

}  // namespace peft4j::api
