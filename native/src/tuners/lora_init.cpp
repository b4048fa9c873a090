// LoRA's initialisations from the weight (PiSSA, OLoRA, MiCA), random orthogonal factors, and from data (CorDA, EVA,
// LoRA-GA), as PEFT 0.21's peft/tuners/lora/{layer,corda,eva,loraga}.py compute them, operation for operation: the
// same dtypes, the same order of products, the same draws from the default generator (torch.randn for orthogonal and
// the randomised SVDs, torch.randperm for LoRA-GA's "random" direction), so that one seed gives PEFT's numbers. What
// no implementation can reproduce is the sign LAPACK gives each singular vector pair; PiSSA, MiCA, CorDA and LoRA-GA
// inherit it (python-parity/README.md, "Initialisations").
#include "peft4j/tuners/lora_init.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <set>

#include "peft4j/error.h"
#include "peft4j/files.h"
#include "peft4j/models/conv1d.h"
#include "peft4j/safetensors.h"
#include "peft4j/train/training_data.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/linear_target.h"
#include "peft4j/tuners/lora.h"
#include "peft4j/tuners/peft_model.h"
#include "peft4j/warnings.h"

namespace peft4j::tuners {

namespace {

// PEFT 0.21's EvaConfig, CordaConfig and LoraGAConfig: every field with its default.
const nlohmann::json kEvaDefaults = {{"rho", 2.0},           {"tau", 0.99},   {"use_label_mask", true},
                                     {"label_mask_value", -100}, {"whiten", false}, {"adjust_scaling_factors", true}};
const nlohmann::json kCordaDefaults = {{"cache_file", nullptr},       {"covariance_file", nullptr},
                                       {"corda_method", "ipm"},       {"verbose", false},
                                       {"use_float16_for_covariance", false}, {"prune_temporary_fields", true}};
const nlohmann::json kLoraGaDefaults = {{"direction", "ArB2r"}, {"scale", "stable"}, {"stable_gamma", 16}};

std::string field_text(const std::string& field) { return "LORA config field '" + field + "'"; }

std::string init_of(const nlohmann::json& config) {
  const auto& init = config["init_lora_weights"];
  return init.is_string() ? init.get<std::string>() : std::string();
}

// The sub-config's fields as "<field>.<name>" of a LORA config, so that the typed reads name them that way.
nlohmann::json flattened(const nlohmann::json& config, const std::string& field) {
  nlohmann::json flat = {{"peft_type", "LORA"}};
  for (auto it = config[field].begin(); it != config[field].end(); ++it) flat[field + "." + it.key()] = it.value();
  return flat;
}

// A given sub-config becomes PEFT's dataclass: unknown fields refused (the dataclass's TypeError), absent ones filled.
void complete(nlohmann::json& config, const std::string& field, const nlohmann::json& defaults,
              const std::string& peft_class) {
  nlohmann::json& sub = config[field];
  if (sub.is_null()) return;
  if (!sub.is_object())
    fail(ErrorKind::InvalidArgument, field_text(field) + " must be an object (PEFT's " + peft_class + "), got " + sub.dump());
  for (auto it = sub.begin(); it != sub.end(); ++it)
    if (!defaults.contains(it.key()))
      fail(ErrorKind::InvalidArgument, field_text(field + "." + it.key()) + " is not a field of PEFT's " + peft_class);
  for (auto it = defaults.begin(); it != defaults.end(); ++it)
    if (!sub.contains(it.key())) sub[it.key()] = it.value();
}

// pissa_niter_<K>: K, a non-negative integer.
int64_t pissa_niter(const std::string& init) {
  const std::string prefix = "pissa_niter_";
  std::string digits = init.substr(prefix.size());
  if (digits.empty() || digits.size() > 9 || !std::all_of(digits.begin(), digits.end(), ::isdigit))
    fail(ErrorKind::InvalidArgument, field_text("init_lora_weights") + " = \"" + init +
                                         "\": the number of subspace iterations after pissa_niter_ must be a "
                                         "non-negative integer");
  return std::stoll(digits);
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

std::string prepared_key(const std::string& module, const std::string& name) { return module + "|" + name; }

// transformers' transpose(weight, fan_in_fan_out): the [out, in] view of a Conv1D's [in, out] weight.
at::Tensor out_in(const at::Tensor& stored, bool fan_in_fan_out) { return fan_in_fan_out ? stored.t() : stored; }

at::Device model_device(models::Model& model) {
  for (const auto& p : model.parameters(true)) return p.device();
  return at::Device(at::kCPU);
}

models::ModelInputs on_device(const models::ModelInputs& batch, const at::Device& device) {
  models::ModelInputs in;
  in.input_ids = batch.input_ids.to(device);
  if (batch.attention_mask.defined()) in.attention_mask = batch.attention_mask.to(device);
  if (batch.token_type_ids.defined()) in.token_type_ids = batch.token_type_ids.to(device);
  if (batch.labels.defined()) in.labels = batch.labels.to(device);
  return in;
}

// The Linear and Conv1D layers among the config's targets, in module order (PEFT's data-driven inits see only those).
std::vector<std::string> linear_targets(models::Model& model, const nlohmann::json& config,
                                        const std::function<bool(const torch::nn::Module&)>& wrappable) {
  std::vector<std::string> out;
  for (const auto& key : find_target_modules(model, config, wrappable))
    if (linear_shape(*module_at(model, key))) out.push_back(key);
  if (out.empty())
    fail(ErrorKind::InvalidArgument, "init_lora_weights '" + init_of(config) +
                                         "' initialises Linear and Conv1D layers from data, and the targets have none");
  return out;
}

// A module standing in for a target during a data pass: hands the input to `record` (while it is set), then runs the
// module it replaced. As PEFT's forward hooks, it sees what the target sees.
class InputRecorder : public torch::nn::Module, public models::TensorModule {
 public:
  InputRecorder(std::shared_ptr<torch::nn::Module> inner, std::function<void(const at::Tensor&)> record)
      : inner_(std::move(inner)), record_(std::move(record)) {
    register_module("inner", inner_);
  }
  at::Tensor forward(const at::Tensor& input) override {
    if (record_ && enabled_) record_(input);
    return models::forward_module(*inner_, input);
  }
  void set_enabled(bool enabled) { enabled_ = enabled; }
  const std::shared_ptr<torch::nn::Module>& inner() const { return inner_; }

 private:
  std::shared_ptr<torch::nn::Module> inner_;
  std::function<void(const at::Tensor&)> record_;
  bool enabled_ = true;
};

// Recorders at `paths` for the length of one data pass; the original modules come back however the pass ends.
class Recording {
 public:
  Recording(models::Model& model, const std::vector<std::string>& paths,
            const std::function<void(size_t, const at::Tensor&)>& record)
      : model_(model), paths_(paths) {
    for (size_t i = 0; i < paths.size(); ++i) {
      auto [parent, child] = parent_of(model, paths[i]);
      auto recorder = std::make_shared<InputRecorder>(module_at(model, paths[i]),
                                                      [record, i](const at::Tensor& x) { record(i, x); });
      parent->replace_module(child, recorder);
      recorders_.push_back(recorder);
    }
  }
  ~Recording() {
    for (size_t i = 0; i < recorders_.size(); ++i) {
      auto [parent, child] = parent_of(model_, paths_[i]);
      parent->replace_module(child, recorders_[i]->inner());
    }
  }
  void set_enabled(size_t i, bool enabled) { recorders_[i]->set_enabled(enabled); }

 private:
  models::Model& model_;
  std::vector<std::string> paths_;
  std::vector<std::shared_ptr<InputRecorder>> recorders_;
};

// The model in eval or train mode for one pass, its mode restored afterwards.
class ModeScope {
 public:
  ModeScope(models::Model& model, bool train) : model_(model), was_training_(model.is_training()) { model.train(train); }
  ~ModeScope() { model_.train(was_training_); }

 private:
  models::Model& model_;
  bool was_training_;
};

void check_finite(const at::Tensor& t, const std::string& what) {
  if (!t.isfinite().all().item<bool>()) fail(ErrorKind::InvalidArgument, "CorDA: invalid value (NaN or inf) found in " + what);
}

// ---- CorDA (peft/tuners/lora/corda.py) ----------------------------------------------------------------------

void prepare_corda(const nlohmann::json& config, models::Model& model, const std::vector<models::ModelInputs>& data,
                   std::map<std::string, at::Tensor>& prepared,
                   const std::function<bool(const torch::nn::Module&)>& wrappable) {
  const nlohmann::json corda = flattened(config, "corda_config");
  const bool float16 = config_bool(corda, "corda_config.use_float16_for_covariance");
  const std::string method = config_string(corda, "corda_config.corda_method");
  const std::vector<std::string> targets = linear_targets(model, config, wrappable);
  std::vector<at::Tensor> covariance(targets.size());
  std::vector<int64_t> samples(targets.size(), 0);
  {
    at::NoGradGuard no_grad;
    ModeScope eval(model, false);
    Recording recording(model, targets, [&](size_t i, const at::Tensor& x) {
      // calib_cov_distribution's hook: one sequence per forward, scaled by its largest entry (max, then abs).
      at::Tensor input = x.detach().squeeze(0);
      if (!float16) input = input.to(at::kFloat);
      input = input / input.max().abs();
      check_finite(input, "the input of " + targets[i] + ", please check your input data");
      at::Tensor c = input.t().matmul(input);
      check_finite(c, "the covariance of " + targets[i]);
      samples[i] += 1;
      covariance[i] = covariance[i].defined() ? covariance[i] + c : c;
    });
    const at::Device device = model_device(model);
    for (const auto& batch : data) {
      // PEFT's hook takes one sequence per forward: each row runs alone, its padding left out.
      for (int64_t row = 0; row < batch.input_ids.size(0); ++row) {
        models::ModelInputs one = train::unpadded_row(batch, row, device);
        one.labels = at::Tensor();  // CorDA reads the layers' inputs only
        model.forward(one);
      }
    }
  }
  at::NoGradGuard no_grad;
  for (size_t i = 0; i < targets.size(); ++i) {
    const std::string& key = targets[i];
    if (!samples[i]) fail(ErrorKind::InvalidArgument, "CorDA: the data never reached " + key);
    at::Tensor cov = (covariance[i] / samples[i]).to(at::kFloat);
    auto module = module_at(model, key);
    const bool conv1d = linear_shape(*module)->fan_in_fan_out;
    // collect_eigens_for_layer: W·C with C damped until it inverts well, its SVD, V = (Vh·C⁻¹)ᵀ.
    at::Tensor w = linear_weight(*module).detach().to(at::kFloat);
    if (conv1d) w = w.t();
    const int64_t n = cov.size(0);
    double damp = 0.01;
    at::Tensor fixed, inverse;
    for (;;) {
      at::Tensor compensate = at::diag(at::ones({n}, cov.options()) * at::mean(at::diag(cov)) * damp);
      fixed = cov + compensate;
      inverse = at::linalg_inv(fixed);
      double error = at::dist(at::matmul(fixed, inverse), at::eye(n, cov.options())).item<double>();
      if (error < 0.05) break;
      damp *= 2;
    }
    w = at::matmul(w, fixed);
    auto [u, s, vh] = at::linalg_svd(w, false);
    at::Tensor v = at::matmul(vh, inverse).transpose(0, 1);
    const int64_t r = pattern_int(config, "rank_pattern", key, "r");
    if (r > s.size(0))
      fail(ErrorKind::InvalidArgument, "CorDA: rank " + std::to_string(r) + " of " + key + " exceeds its " +
                                           std::to_string(s.size(0)) + " singular values");
    // crop_corda_eigens: IPM keeps the largest r, KPM the smallest r.
    const int64_t from = method == "ipm" ? 0 : s.size(0) - r;
    prepared[prepared_key(key, "corda_S")] = s.slice(0, from, from + r).clone();
    prepared[prepared_key(key, "corda_U")] = u.slice(1, from, from + r).clone();
    prepared[prepared_key(key, "corda_V")] = v.slice(1, from, from + r).clone();
  }
}

// ---- LoRA-GA (peft/tuners/lora/loraga.py) ---------------------------------------------------------------------

void prepare_lora_ga(const nlohmann::json& config, models::Model& model, const std::vector<models::ModelInputs>& data,
                     std::map<std::string, at::Tensor>& prepared,
                     const std::function<bool(const torch::nn::Module&)>& wrappable) {
  if (config["lora_ga_config"].is_null())
    fail(ErrorKind::InvalidArgument, field_text("lora_ga_config") +
                                         " is required with init_lora_weights 'lora_ga' (PEFT's LoraGAConfig; {} for its "
                                         "defaults)");
  const std::vector<std::string> targets = linear_targets(model, config, wrappable);
  // estimate_gradients: gradients for the target weights only, in training mode, averaged over the batches.
  std::vector<std::pair<at::Tensor, bool>> saved;
  for (auto& p : model.parameters(true)) saved.emplace_back(p, p.requires_grad());
  for (auto& [p, requires] : saved) p.set_requires_grad(false);
  std::vector<at::Tensor> weights;
  for (const auto& key : targets) {
    at::Tensor w = linear_weight(*module_at(model, key));
    w.mutable_grad() = at::Tensor();
    w.set_requires_grad(true);
    weights.push_back(w);
  }
  auto restore = [&] {
    for (auto& w : weights) w.mutable_grad() = at::Tensor();
    for (auto& [p, requires] : saved) p.set_requires_grad(requires);
  };
  int64_t steps = 0;
  try {
    ModeScope train(model, true);
    const at::Device device = model_device(model);
    for (const auto& batch : data) {
      if (!batch.labels.defined()) fail(ErrorKind::InvalidArgument, "LoRA-GA computes gradients of the loss: the data needs labels");
      at::Tensor loss = model.forward(on_device(batch, device)).loss;
      loss.backward();
      ++steps;
    }
    for (size_t i = 0; i < targets.size(); ++i)
      if (weights[i].grad().defined())
        prepared[prepared_key(targets[i], "lora_ga_grad")] = weights[i].grad().detach() / steps;
  } catch (...) {
    restore();
    throw;
  }
  restore();
}

// ---- EVA (peft/tuners/lora/eva.py, peft/utils/incremental_pca.py) --------------------------------------------

// The default generator of `device` seeded for the length of a scope, its state restored afterwards (torch's
// fork_rng + manual_seed, as IncrementalPCA's lowrank_seed uses it).
class SeededScope {
 public:
  SeededScope(const at::Device& device, uint64_t seed) : generator_(at::globalContext().defaultGenerator(device)) {
    std::lock_guard<std::mutex> lock(generator_.mutex());
    state_ = generator_.get_state();
    generator_.set_current_seed(seed);
  }
  ~SeededScope() {
    std::lock_guard<std::mutex> lock(generator_.mutex());
    generator_.set_state(state_);
  }

 private:
  at::Generator generator_;
  at::Tensor state_;
};

// PEFT's IncrementalPCA with lowrank=True, lowrank_seed=42, lowrank_niter=4, lowrank_q = 2·n_components.
struct IncrementalPca {
  int64_t n_components = 0;
  at::Tensor mean, var, samples_seen, components, singular_values, explained_variance_ratio;

  bool fitted() const { return components.defined(); }

  void partial_fit(at::Tensor x) {
    const bool first = !fitted();
    x = x.clone();
    const int64_t n_samples = x.size(0), n_features = x.size(1);
    if (n_components > n_features)
      fail(ErrorKind::InvalidArgument, "EVA: n_components=" + std::to_string(n_components) + " invalid for n_features=" +
                                           std::to_string(n_features) + " (eva_config.rho or r too large)");
    if (n_components > n_samples)
      fail(ErrorKind::Internal, "EVA: fewer samples than components in one batch");
    if (x.scalar_type() != at::kFloat && x.scalar_type() != at::kDouble) x = x.to(at::kFloat);
    if (first) samples_seen = at::zeros({1}, at::TensorOptions().dtype(at::kLong).device(x.device()));
    auto [col_mean, col_var, total] = incremental_mean_and_var(x);
    if (first) {
      x.sub_(col_mean);
    } else {
      at::Tensor batch_mean = at::mean(x, 0);
      x.sub_(batch_mean);
      at::Tensor factor = at::sqrt((samples_seen.to(at::kDouble) / total) * n_samples);
      at::Tensor correction = factor * (mean - batch_mean);
      x = at::vstack({singular_values.view({-1, 1}) * components, x, correction});
    }
    at::Tensor u, s, v;
    {
      SeededScope seeded(x.device(), 42);
      std::tie(u, s, v) = svd_lowrank(x, n_components * 2, 4);
    }
    at::Tensor vt = v.transpose(0, 1);
    // _svd_flip with u_based_decision=False: each row of Vt gets the sign of its largest-magnitude entry.
    at::Tensor rows = at::arange(vt.size(0), at::TensorOptions().dtype(at::kLong).device(vt.device()));
    at::Tensor signs = at::sign(vt.index({rows, at::argmax(at::abs(vt), 1)}));
    vt = vt * signs.view({-1, 1});
    at::Tensor ratio = s.pow(2) / at::sum(col_var * total);
    samples_seen = total;
    components = vt.slice(0, 0, n_components);
    singular_values = s.slice(0, 0, n_components);
    mean = col_mean;
    var = col_var;
    explained_variance_ratio = ratio.slice(0, 0, n_components);
  }

  // _incremental_mean_and_var, with its float64 sums.
  std::tuple<at::Tensor, at::Tensor, at::Tensor> incremental_mean_and_var(const at::Tensor& x) const {
    at::Tensor new_count = at::full({1}, x.size(0), at::TensorOptions().dtype(at::kLong).device(x.device()));
    at::Tensor updated_count = samples_seen + new_count;
    at::Tensor last_sum = mean.defined() ? mean * samples_seen
                                         : at::zeros({x.size(1)}, x.options().dtype(at::kDouble));
    at::Tensor new_sum = at::sum(x, {0}, false, at::kDouble);
    at::Tensor updated_mean = (last_sum + new_sum) / updated_count;
    at::Tensor t = new_sum / new_count;
    at::Tensor temp = x - t;
    at::Tensor correction = at::sum(temp, {0}, false, at::kDouble).square();
    temp.square_();
    at::Tensor new_unnormalized = at::sum(temp, {0}, false, at::kDouble);
    new_unnormalized.sub_(correction / new_count);
    at::Tensor updated_var;
    if (!var.defined()) {
      updated_var = new_unnormalized / updated_count;
    } else {
      at::Tensor last_unnormalized = var * samples_seen;
      at::Tensor last_over_new = samples_seen.to(at::kDouble) / new_count;
      at::Tensor updated_unnormalized =
          last_unnormalized + new_unnormalized + last_over_new / updated_count * (last_sum / last_over_new - new_sum).square();
      updated_var = updated_unnormalized / updated_count;
    }
    return {updated_mean, updated_var, updated_count};
  }
};

// One layer's SVDHook: the incremental PCA of its inputs and which components have converged.
struct EvaHook {
  std::string name;
  IncrementalPca pca;
  at::Tensor converged;  // bool [n_components]
  double tau = 0.99;

  void operator()(const at::Tensor& states) {
    if (states.size(0) < pca.n_components) {
      warn("EVA: skipping SVD for " + name + " because there are less than " + std::to_string(pca.n_components) +
           " examples");
      return;
    }
    at::Tensor previous = pca.fitted() ? pca.components.clone() : at::Tensor();
    pca.partial_fit(states.to(at::kFloat));
    if (!previous.defined()) return;
    at::Tensor sim = at::cosine_similarity(pca.components, previous.to(pca.components.scalar_type()), 1);
    converged = sim.ge(tau);
  }
};

// Python's round() of a float: halves to even.
int64_t round_half_even(double x) { return static_cast<int64_t>(std::nearbyint(x)); }

// PEFT's _find_minimal_target_modules.
std::vector<std::string> minimal_target_modules(const std::vector<std::string>& targets,
                                                const std::set<std::string>& others) {
  auto suffixes = [](const std::string& s) {
    std::vector<std::string> parts, out;
    size_t start = 0;
    for (;;) {
      size_t dot = s.find('.', start);
      parts.push_back(s.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
      if (dot == std::string::npos) break;
      start = dot + 1;
    }
    for (size_t i = 0; i < parts.size(); ++i) {
      std::string suffix;
      for (size_t j = i; j < parts.size(); ++j) suffix += (j > i ? "." : "") + parts[j];
      out.push_back(suffix);
    }
    std::reverse(out.begin(), out.end());
    return out;
  };
  std::set<std::string> other_suffixes;
  for (const auto& o : others)
    for (const auto& s : suffixes(o)) other_suffixes.insert(s);
  std::vector<std::pair<std::vector<std::string>, std::string>> items;
  for (const auto& t : std::set<std::string>(targets.begin(), targets.end())) items.emplace_back(suffixes(t), t);
  std::sort(items.begin(), items.end());
  std::set<std::string> required;
  for (const auto& entry : items) {
    const std::string& item = entry.second;  // (a structured binding cannot be captured by the lambda in C++17)
    for (const auto& suffix : entry.first) {
      if (required.count(suffix) || other_suffixes.count(suffix)) continue;
      bool covered = std::any_of(required.begin(), required.end(), [&](const std::string& r) {
        return item.size() > r.size() + 1 && item.compare(item.size() - r.size() - 1, r.size() + 1, "." + r) == 0;
      });
      if (!covered) {
        required.insert(suffix);
        break;
      }
    }
  }
  if (required.empty()) return targets;
  return {required.begin(), required.end()};
}

nlohmann::json prepare_eva(const nlohmann::json& input, models::Model& model, const std::vector<models::ModelInputs>& data,
                           std::map<std::string, at::Tensor>& prepared,
                           const std::function<bool(const torch::nn::Module&)>& wrappable) {
  nlohmann::json config = input;
  const nlohmann::json eva = flattened(config, "eva_config");
  const double tau = config_double(eva, "eva_config.tau");
  const bool use_label_mask = config_bool(eva, "eva_config.use_label_mask");
  const int64_t label_mask_value = config_int(eva, "eva_config.label_mask_value");
  const int64_t r = config_int(config, "r");
  const double lora_alpha = config_double(config, "lora_alpha");
  double rho = config_double(eva, "eva_config.rho");
  if (rho > 1000) {
    int64_t max_dim = 0;
    for (const auto& p : model.parameters(true))
      for (auto d : p.sizes()) max_dim = std::max<int64_t>(max_dim, d);
    rho = std::min(rho, static_cast<double>(max_dim / r));
  }
  std::vector<std::string> all_targets = find_target_modules(model, config, wrappable);
  std::vector<std::string> layers;  // the Linear/Conv1D targets: PEFT's EVA leaves Embedding layers out
  for (const auto& key : all_targets)
    if (linear_shape(*module_at(model, key))) layers.push_back(key);
  if (layers.empty())
    fail(ErrorKind::InvalidArgument, "init_lora_weights 'eva' initialises Linear and Conv1D layers, and the targets have none");
  std::map<std::string, int64_t> max_components;
  int64_t rank_budget = 0;
  for (const auto& key : layers) {
    int64_t layer_rank = pattern_int(config, "rank_pattern", key, "r");
    max_components[key] = round_half_even(static_cast<double>(layer_rank) * rho);
    rank_budget += layer_rank;
  }

  at::NoGradGuard no_grad;
  ModeScope eval(model, false);
  const at::Device device = model_device(model);
  // prepare_model_inputs_fn_language_modeling: the positions that count (attention mask, and labels other than
  // label_mask_value when use_label_mask); the layers see their inputs at those positions, in (row, position) order.
  at::Tensor positions;
  auto select_positions = [&](const models::ModelInputs& batch) {
    at::Tensor mask = batch.attention_mask.defined() ? batch.attention_mask.to(at::kBool) : at::ones_like(batch.input_ids, at::kBool);
    if (use_label_mask && batch.labels.defined() && batch.labels.sizes() == batch.input_ids.sizes())
      mask = at::logical_and(mask, batch.labels.ne(label_mask_value));
    positions = mask;
  };
  auto layer_states = [&](const at::Tensor& x) {
    at::Tensor states = x.dim() > 2 ? x.index({positions}) : x;
    return states;
  };

  // The first batch finds layers whose inputs are equal (q/k/v share theirs): one SVD serves them all.
  std::vector<at::Tensor> first_inputs(layers.size());
  {
    Recording recording(model, layers, [&](size_t i, const at::Tensor& x) { first_inputs[i] = layer_states(x).cpu(); });
    models::ModelInputs batch = on_device(data.at(0), device);
    select_positions(batch);
    model.forward(batch);
  }
  std::vector<std::string> hook_names;                 // layers with their own SVD, in module order
  std::vector<std::pair<std::string, std::string>> equal_map;  // layer -> the layer whose SVD it shares
  {
    std::vector<std::vector<size_t>> groups;
    for (size_t i = 0; i < layers.size(); ++i) {
      bool placed = false;
      for (auto& g : groups)
        if (first_inputs[g[0]].sizes() == first_inputs[i].sizes() && at::equal(first_inputs[g[0]], first_inputs[i])) {
          g.push_back(i);
          placed = true;
          break;
        }
      if (!placed) groups.push_back({i});
    }
    std::set<std::string> shared;
    for (const auto& g : groups) {
      if (g.size() < 2) continue;
      int64_t most = 0;
      for (size_t i : g) most = std::max(most, max_components[layers[i]]);
      for (size_t i : g) max_components[layers[i]] = most;
      for (size_t k = 1; k < g.size(); ++k) {
        equal_map.emplace_back(layers[g[k]], layers[g[0]]);
        shared.insert(layers[g[k]]);
      }
    }
    for (const auto& key : layers)
      if (!shared.count(key)) hook_names.push_back(key);
  }
  std::vector<EvaHook> hooks(hook_names.size());
  for (size_t i = 0; i < hooks.size(); ++i) {
    hooks[i].name = hook_names[i];
    hooks[i].pca.n_components = max_components[hook_names[i]];
    hooks[i].converged = at::zeros({hooks[i].pca.n_components}, at::kBool);
    hooks[i].tau = tau;
  }
  // layer_hook_map: every hook layer to itself, then the layers sharing another's SVD.
  std::vector<std::pair<std::string, size_t>> layer_hook;
  for (size_t i = 0; i < hook_names.size(); ++i) layer_hook.emplace_back(hook_names[i], i);
  for (const auto& [layer, hook] : equal_map)
    layer_hook.emplace_back(layer, std::find(hook_names.begin(), hook_names.end(), hook) - hook_names.begin());

  // _get_rank_distribution: the rank budget goes to the largest explained-variance ratios over all layers (sorted as
  // torch.argsort(descending=True) sorts on the CPU, an std::sort on (value, index)), and a layer sharing another's
  // SVD never gets more rank than the layer whose SVD it is.
  auto rank_distribution = [&]() {
    std::vector<std::pair<double, int64_t>> values;
    std::vector<std::string> owners;
    for (const auto& [layer, h] : layer_hook) {
      at::Tensor ratios = hooks[h].pca.explained_variance_ratio.slice(0, 0, max_components[hook_names[h]]).to(at::kDouble).cpu();
      auto acc = ratios.accessor<double, 1>();
      for (int64_t c = 0; c < ratios.size(0); ++c) {
        values.emplace_back(acc[c], static_cast<int64_t>(values.size()));
        owners.push_back(layer);
      }
    }
    std::sort(values.begin(), values.end(), [](const auto& a, const auto& b) {
      return (std::isnan(a.first) && !std::isnan(b.first)) || a.first > b.first;
    });
    std::map<std::string, int64_t> counts;
    for (const auto& [layer, h] : layer_hook) counts[layer] = 0;
    for (int64_t i = 0; i < rank_budget && i < static_cast<int64_t>(values.size()); ++i) counts[owners[values[i].second]] += 1;
    for (const auto& [layer, hook] : equal_map) {
      int64_t rank = counts[layer], rank_hook = counts[hook];
      if (rank_hook >= rank) continue;
      counts[hook] = rank;
      counts[layer] = rank_hook;
    }
    return counts;
  };

  std::map<std::string, int64_t> rank_dist = max_components;
  std::vector<bool> converged_layer(hooks.size(), false);
  {
    Recording recording(model, hook_names, [&](size_t i, const at::Tensor& x) { hooks[i](layer_states(x)); });
    // PEFT cycles through the data until every layer's components up to its rank have converged; a pass that never
    // gets there would cycle forever, so after kMaxPasses passes over the data peft4j stops and says so.
    constexpr int64_t kMaxPasses = 1000;
    const int64_t limit = kMaxPasses * static_cast<int64_t>(data.size());
    for (int64_t step = 0;; ++step) {
      for (size_t i = 0; i < hooks.size(); ++i) {
        const int64_t rank = rank_dist[hook_names[i]];
        const bool converged = hooks[i].converged.slice(0, 0, rank).all().item<bool>();
        if (!converged_layer[i] && converged) {
          converged_layer[i] = true;
          recording.set_enabled(i, false);
        } else if (converged_layer[i] && !converged) {
          converged_layer[i] = false;
          recording.set_enabled(i, true);
        }
      }
      if (std::all_of(converged_layer.begin(), converged_layer.end(), [](bool b) { return b; })) break;
      if (step >= limit)
        fail(ErrorKind::InvalidArgument, "EVA: the layer inputs' components did not converge within " +
                                             std::to_string(kMaxPasses) + " passes over the data (eva_config.tau " +
                                             std::to_string(tau) + "; more data or a lower tau helps)");
      models::ModelInputs batch = on_device(data[step % data.size()], device);
      select_positions(batch);
      model.forward(batch);
      if (!std::all_of(hooks.begin(), hooks.end(), [](const EvaHook& h) { return h.pca.fitted(); })) continue;
      rank_dist = rank_distribution();
    }
  }

  // _get_eva_state_dict's end: each layer's first rank components, in rank_dist order (layer_hook_map's). Whitening
  // divides in place, as PEFT's `u /= ...` on a view of the shared components does: a layer sharing another's SVD is
  // whitened again, and every view sees the final values.
  const bool whiten = config_bool(eva, "eva_config.whiten");
  std::map<std::string, at::Tensor> components;
  for (const auto& [layer, h] : layer_hook) {
    const int64_t rank = rank_dist.at(layer);
    EvaHook& hook = hooks[h];
    if (!hook.converged.slice(0, 0, rank).all().item<bool>())
      fail(ErrorKind::Internal, "EVA: layer " + layer + " has not converged but was assigned rank " + std::to_string(rank));
    at::Tensor u = hook.pca.components.slice(0, 0, rank);
    if (whiten) u.div_(hook.pca.singular_values.slice(0, 0, rank).sqrt().reshape({-1, 1}));
    components[layer] = u;
  }
  // _load_eva_state_dict's result: layers of rank 0 are no longer targeted, the others get their new rank (and, with
  // adjust_scaling_factors, an alpha scaled by new_rank / r), recorded in rank_pattern / alpha_pattern as PEFT saves.
  const bool adjust = config_bool(eva, "eva_config.adjust_scaling_factors");
  nlohmann::json rank_pattern = nlohmann::json::object(), alpha_pattern = nlohmann::json::object();
  std::vector<std::string> new_targets, missing;
  for (const auto& key : all_targets) {
    const int64_t layer_r = pattern_int(config, "rank_pattern", key, "r");
    double alpha = pattern_double(config, "alpha_pattern", key, "lora_alpha");
    bool scaled = false;  // an alpha EVA did not scale keeps its JSON type (Python's int stays an int)
    int64_t new_rank = layer_r;
    auto found = components.find(key);
    if (found != components.end()) {
      new_rank = found->second.size(0);
      if (new_rank == 0) continue;
      if (new_rank != layer_r && adjust) {
        alpha *= static_cast<double>(new_rank) / static_cast<double>(layer_r);
        scaled = true;
      }
      prepared[prepared_key(key, "eva_components")] = found->second.clone();
      new_targets.push_back(key);
    } else {
      missing.push_back(key);
    }
    if (new_rank != r) rank_pattern[key] = new_rank;
    if (alpha != lora_alpha) {
      auto given = pattern_key(config["alpha_pattern"], key);
      alpha_pattern[key] = scaled ? nlohmann::json(alpha) : given ? config["alpha_pattern"][*given] : config["lora_alpha"];
    }
  }
  if (!missing.empty()) {
    std::string names;
    for (const auto& m : missing) names += (names.empty() ? "" : ", ") + m;
    warn("EVA: the following layers were initialized with init_lora_weights=True because they were not found in the eva "
         "state_dict: " + names + " (EVA initialises Linear and Conv1D layers)");
  }
  new_targets.insert(new_targets.end(), missing.begin(), missing.end());
  // MIN_TARGET_MODULES_FOR_OPTIMIZATION: from 20 targets on PEFT condenses the list to distinguishing suffixes.
  if (new_targets.size() >= 20) {
    std::set<std::string> others = {"", "base_model", "base_model.model"};
    for (const auto& item : model.named_modules("", false))
      if (!std::count(all_targets.begin(), all_targets.end(), item.key())) others.insert(item.key());
    new_targets = minimal_target_modules(new_targets, others);
  }
  config["target_modules"] = new_targets;
  config["rank_pattern"] = rank_pattern;
  config["alpha_pattern"] = alpha_pattern;
  return config;
}

// Copies `value` into a LoRA factor (dtype and device of the adapter, as PEFT's _move_adapter_to_device_of_base_layer).
void assign(at::Tensor target, const at::Tensor& value) {
  if (target.sizes() != value.sizes())
    fail(ErrorKind::Internal, "LoRA init: factor of shape " + c10::str(value.sizes()) + " for a parameter of shape " +
                                  c10::str(target.sizes()));
  target.copy_(value);
}

void check_rank_fits(int64_t r, int64_t limit, const std::string& init, const std::string& key) {
  if (r > limit)
    fail(ErrorKind::InvalidArgument, field_text("r") + " = " + std::to_string(r) + ": init_lora_weights '" + init +
                                         "' needs r <= " + std::to_string(limit) + " for " + key);
}

}  // namespace

const std::vector<std::string>& lora_init_fields() {
  static const std::vector<std::string> fields = {"eva_config", "corda_config", "lora_ga_config", "loftq_config"};
  return fields;
}

void check_lora_init(nlohmann::json& config) {
  const auto& init = config["init_lora_weights"];
  static const std::vector<std::string> kNames = {"gaussian", "pissa",      "olora", "orthogonal",
                                                  "mica",     "corda",      "eva",   "lora_ga"};
  if (init.is_string()) {
    const std::string name = init.get<std::string>();
    if (name == "loftq")
      fail(ErrorKind::Unsupported, field_text("init_lora_weights") +
                                       " = \"loftq\" (LoftQ) is not supported by peft4j (quantised bases are a separate "
                                       "issue)");
    if (starts_with(name, "pissa_niter_"))
      pissa_niter(name);
    else if (!std::count(kNames.begin(), kNames.end(), name))
      fail(ErrorKind::InvalidArgument, field_text("init_lora_weights") + " = \"" + name +
                                           "\" is not one of true, false, \"gaussian\", \"pissa\", \"pissa_niter_<K>\", "
                                           "\"olora\", \"orthogonal\", \"mica\", \"corda\", \"eva\", \"lora_ga\"");
  } else if (!init.is_boolean()) {
    fail(ErrorKind::InvalidArgument, field_text("init_lora_weights") + " must be a boolean or a string, got " + init.dump());
  }
  const auto& loftq = config["loftq_config"];
  if (!(loftq.is_null() || (loftq.is_object() && loftq.empty())))
    fail(ErrorKind::Unsupported, field_text("loftq_config") + " is not supported by peft4j (value " + loftq.dump() + ")");
  complete(config, "eva_config", kEvaDefaults, "EvaConfig");
  complete(config, "corda_config", kCordaDefaults, "CordaConfig");
  complete(config, "lora_ga_config", kLoraGaDefaults, "LoraGAConfig");
  // LoraConfig.__post_init__'s chain: the default EvaConfig() / CordaConfig() where the init asks for one and none
  // is given; a sub-config the init does not use is ignored with PEFT's warning (only the first case of the chain).
  const std::string name = init_of(config);
  if (name == "eva" && config["eva_config"].is_null()) {
    warn("`init_lora_weights` is 'eva' but `eva_config` is not specified. Using default EVA config.");
    config["eva_config"] = kEvaDefaults;
  } else if (name != "eva" && !config["eva_config"].is_null()) {
    warn("`eva_config` specified but will be ignored when `init_lora_weights` is not 'eva'.");
  } else if (name == "corda" && config["corda_config"].is_null()) {
    warn("`init_lora_weights` is 'corda' but `corda_config` is not specified. Using default CorDA config.");
    config["corda_config"] = kCordaDefaults;
  } else if (name != "corda" && !config["corda_config"].is_null()) {
    warn("`corda_config` specified but will be ignored when `init_lora_weights` is not 'corda'.");
  }
  if (!config["eva_config"].is_null()) {
    nlohmann::json eva = flattened(config, "eva_config");
    if (config_double(eva, "eva_config.rho") < 1.0)
      fail(ErrorKind::InvalidArgument, field_text("eva_config.rho") + " must be >= 1.0, got " + eva["eva_config.rho"].dump());
    double tau = config_double(eva, "eva_config.tau");
    if (tau < 0.0 || tau > 1.0)
      fail(ErrorKind::InvalidArgument, field_text("eva_config.tau") + " must be between 0.0 and 1.0, got " + eva["eva_config.tau"].dump());
    for (const char* f : {"eva_config.use_label_mask", "eva_config.whiten", "eva_config.adjust_scaling_factors"}) config_bool(eva, f);
    config_int(eva, "eva_config.label_mask_value");
  }
  if (!config["corda_config"].is_null()) {
    nlohmann::json corda = flattened(config, "corda_config");
    config_choice(corda, "corda_config.corda_method", {"ipm", "kpm"});
    for (const char* f : {"corda_config.verbose", "corda_config.use_float16_for_covariance",
                          "corda_config.prune_temporary_fields"})
      config_bool(corda, f);
    // PEFT caches the covariance and the decomposition with torch.save (pickle); peft4j writes no pickles.
    for (const char* f : {"cache_file", "covariance_file"})
      if (!config["corda_config"][f].is_null())
        fail(ErrorKind::Unsupported, field_text(std::string("corda_config.") + f) +
                                         " is not supported by peft4j (PEFT's torch.save cache; value " +
                                         config["corda_config"][f].dump() + ")");
  }
  if (!config["lora_ga_config"].is_null()) {
    nlohmann::json ga = flattened(config, "lora_ga_config");
    config_choice(ga, "lora_ga_config.direction", {"ArBr", "A2rBr", "ArB2r", "random"});
    config_choice(ga, "lora_ga_config.scale", {"stable", "weight_svd", "gd_scale", "unit"});
    config_positive_int(ga, "lora_ga_config.stable_gamma");
  }
  if (config_bool(config, "lora_bias") && !init.is_boolean())
    fail(ErrorKind::InvalidArgument, "LORA config field 'lora_bias' = true is only supported with init_lora_weights true "
                                     "or false, got " + init.dump());
  if (name == "mica" && config_bool(config, "use_dora"))
    fail(ErrorKind::InvalidArgument, "LORA config fields 'init_lora_weights' = \"mica\" and 'use_dora': PEFT has no "
                                     "variant combining MiCA and DoRA");
}

bool init_mutates_base(const nlohmann::json& config) {
  const std::string name = init_of(config);
  return starts_with(name, "pissa") || name == "olora" || name == "corda" || name == "lora_ga";
}

bool init_needs_data(const nlohmann::json& config) {
  const std::string name = init_of(config);
  return name == "corda" || name == "eva" || name == "lora_ga";
}

bool init_is_default(const nlohmann::json& config, const std::string& key,
                     const std::map<std::string, at::Tensor>& prepared) {
  const auto& init = config["init_lora_weights"];
  if (init.is_boolean()) return init.get<bool>();
  // LoRA-GA without a gradient for the layer (no data, or one the data never reached): PEFT's fallback to the default.
  return init.get<std::string>() == "lora_ga" && !prepared.count(prepared_key(key, "lora_ga_grad"));
}

nlohmann::json prepare_lora_init(const nlohmann::json& config, models::Model& model,
                                 const std::vector<models::ModelInputs>& data, std::map<std::string, at::Tensor>& prepared,
                                 const std::function<bool(const torch::nn::Module&)>& wrappable) {
  const std::string name = init_of(config);
  if (!init_needs_data(config))
    fail(ErrorKind::InvalidArgument, "initialisation data was given, but init_lora_weights " +
                                         config["init_lora_weights"].dump() +
                                         " takes none (only \"corda\", \"eva\" and \"lora_ga\" initialise from data)");
  if (name == "corda") {
    prepare_corda(config, model, data, prepared, wrappable);
    return config;
  }
  if (name == "lora_ga") {
    prepare_lora_ga(config, model, data, prepared, wrappable);
    return config;
  }
  return prepare_eva(config, model, data, prepared, wrappable);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> svd_lowrank(const at::Tensor& input, int64_t q, int64_t niter) {
  const int64_t m = input.size(-2), n = input.size(-1);
  // _svd_lowrank: the tall orientation; get_approximate_basis: Q with q orthonormal columns, Q·Qᴴ·A ≈ A.
  const at::Tensor a = m < n ? input.transpose(-2, -1) : input;
  const at::Tensor ah = a.transpose(-2, -1);
  at::Tensor r = at::randn({a.size(-1), q}, a.options());
  at::Tensor basis = std::get<0>(at::linalg_qr(at::matmul(a, r)));
  for (int64_t i = 0; i < niter; ++i) {
    basis = std::get<0>(at::linalg_qr(at::matmul(ah, basis)));
    basis = std::get<0>(at::linalg_qr(at::matmul(a, basis)));
  }
  at::Tensor b = at::matmul(basis.transpose(-2, -1), a);
  auto [u, s, vh] = at::linalg_svd(b, false);
  at::Tensor v = vh.transpose(-2, -1);
  u = basis.matmul(u);
  if (m < n) std::swap(u, v);
  return {u, s, v};
}

void initialise_lora_layer(LoraLayer& layer, const std::string& adapter, const nlohmann::json& config,
                           const std::string& key, const std::map<std::string, at::Tensor>& prepared) {
  const std::string init = init_of(config);
  if (init.empty() || init == "gaussian" || init_is_default(config, key, prepared)) return;
  at::NoGradGuard no_grad;
  const int64_t r = layer.r_.at(adapter);
  const double scaling = layer.scaling_.at(adapter);
  at::Tensor stored = layer.base_weight();
  const auto dtype = stored.scalar_type();
  if (layer.embedding_) {
    // PEFT's Embedding initialises only MiCA from the weight; the other inits leave it as LoRA's default made it.
    if (init != "mica") return;
    at::Tensor w = stored.to(at::kFloat).t();  // the effective projection [embedding_dim, num_embeddings]
    check_rank_fits(r, std::min(w.size(0), w.size(1)), init, key);
    at::Tensor u = std::get<0>(at::linalg_svd(w, false));
    assign(layer.lora_embedding_A_->parameter(adapter), at::zeros({r, w.size(1)}));
    layer.lora_embedding_B_->put_buffer(adapter, u.slice(1, u.size(1) - r, u.size(1)).contiguous().to(stored.options()));
    return;
  }
  at::Tensor a_param = layer.lora_a(adapter), b_param = layer.lora_b(adapter);
  const bool fifo = layer.fan_in_fan_out_;
  if (starts_with(init, "pissa")) {
    // pissa_init: the principal r singular triplets of W move into the adapter, scaled so that s·B·A is their sum.
    at::Tensor w = out_in(stored.to(at::kFloat), fifo);
    check_rank_fits(r, std::min(w.size(0), w.size(1)), init, key);
    at::Tensor vr, sr, uhr;
    if (init == "pissa") {
      auto [v, s, uh] = at::linalg_svd(w, false);
      vr = v.slice(1, 0, r);
      sr = s.slice(0, 0, r) / scaling;
      uhr = uh.slice(0, 0, r);
    } else {
      auto [v, s, u] = svd_lowrank(w, r, pissa_niter(init));
      vr = v;
      sr = s / scaling;
      uhr = u.t();
    }
    at::Tensor a = at::matmul(at::diag(at::sqrt(sr)), uhr);
    at::Tensor b = at::matmul(vr, at::diag(at::sqrt(sr)));
    assign(a_param, a);
    assign(b_param, b);
    stored.copy_(out_in((w - at::matmul(b * scaling, a)).to(dtype), fifo));
  } else if (init == "olora") {
    // olora_init factors the weight as stored, which for Conv1D ([in, out]) would not be the layer's map: PEFT's
    // adapter would then not start where the base model is (or, with in != out, not fit at all).
    if (fifo)
      fail(ErrorKind::Unsupported, "init_lora_weights 'olora' on GPT-2's Conv1D (" + key +
                                       "): PEFT 0.21 factors its stored [in, out] weight without transposing it, so the "
                                       "adapter would not start at the base model; peft4j refuses it");
    at::Tensor w = stored.to(at::kFloat);
    check_rank_fits(r, std::min(w.size(0), w.size(1)), init, key);
    auto [q, rr] = at::linalg_qr(w);
    at::Tensor a = rr.slice(0, 0, r).contiguous();
    at::Tensor b = q.slice(1, 0, r).contiguous();
    assign(a_param, a);
    assign(b_param, b);
    stored.copy_((w - at::matmul(b * scaling, a)).to(dtype));
  } else if (init == "orthogonal") {
    // orthogonal_init: the rows of one random orthogonal r×r matrix split between A (odd) and B (even), from CPU draws.
    if (r % 2 != 0)
      fail(ErrorKind::InvalidArgument, "init_lora_weights 'orthogonal' requires the LoRA rank to be even, got " +
                                           std::to_string(r) + " for " + key);
    at::Tensor q = std::get<0>(at::linalg_qr(at::randn({r, r}, at::kFloat)));
    at::Tensor q_odd = q.slice(0, 0, r, 2), q_even = q.slice(0, 1, r, 2);
    at::Tensor a = at::randn({layer.in_features_, r / 2}, at::kFloat).mm(q_odd).t() / 10.0;
    at::Tensor b = at::randn({r / 2, layer.out_features_}, at::kFloat).t().mm(q_even) / 10.0;
    assign(a_param, a.contiguous().to(dtype));
    assign(b_param, b.contiguous().to(dtype));
  } else if (init == "mica") {
    // mica_init: B from the r minor left singular vectors (frozen), A = 0: the base weight stays as it is.
    at::Tensor w = out_in(stored.to(at::kFloat), fifo);
    check_rank_fits(r, std::min(w.size(0), w.size(1)), init, key);
    at::Tensor u = std::get<0>(at::linalg_svd(w, false));
    assign(b_param, u.slice(1, u.size(1) - r, u.size(1)).contiguous().to(dtype));
    assign(a_param, at::zeros({r, w.size(1)}).to(dtype));
    layer.lora_B_->freeze(adapter);
  } else if (init == "corda") {
    auto u_it = prepared.find(prepared_key(key, "corda_U"));
    if (u_it == prepared.end())
      fail(ErrorKind::InvalidArgument, "init_lora_weights 'corda' initialises from data: pass the data the base model "
                                       "runs over (CorDA's covariance) when adding the adapter");
    at::Tensor u = u_it->second;
    at::Tensor s = prepared.at(prepared_key(key, "corda_S")) / scaling;
    at::Tensor v = prepared.at(prepared_key(key, "corda_V"));
    at::Tensor a = v.t().mul(s.sqrt().view({-1, 1})).contiguous();
    at::Tensor b = u.mul(s.sqrt()).contiguous();
    assign(a_param, a);
    assign(b_param, b);
    stored.copy_((stored.to(at::kFloat) - out_in(at::matmul(b * scaling, a), fifo)).to(dtype));
  } else if (init == "lora_ga") {
    // lora_ga_init: A and B from the randomised SVD of the layer's mean gradient, 2r components split by direction.
    const nlohmann::json ga = flattened(config, "lora_ga_config");
    const std::string direction = config_string(ga, "lora_ga_config.direction");
    const std::string scale = config_string(ga, "lora_ga_config.scale");
    at::Tensor grad = out_in(prepared.at(prepared_key(key, "lora_ga_grad")).to(at::kFloat), fifo);
    check_rank_fits(2 * r, std::min(grad.size(0), grad.size(1)), init, key);
    auto [u, s, v] = svd_lowrank(grad, std::min<int64_t>(4 * r, std::min(grad.size(0), grad.size(1))), 4);
    at::Tensor vh = v.t().slice(0, 0, 2 * r);
    u = u.slice(1, 0, 2 * r);
    s = s.slice(0, 0, 2 * r);
    at::Tensor a, b, s_b;
    if (direction == "ArBr") {
      a = vh.slice(0, 1, 2 * r, 2);
      s_b = s.slice(0, 0, 2 * r, 2);
      b = u.slice(1, 0, 2 * r, 2).matmul(at::diag(s_b));
    } else if (direction == "A2rBr") {
      a = vh.slice(0, r, 2 * r);
      s_b = s.slice(0, 0, r);
      b = u.slice(1, 0, r).matmul(at::diag(s_b));
    } else if (direction == "ArB2r") {
      a = vh.slice(0, 0, r);
      s_b = s.slice(0, r, 2 * r);
      b = u.slice(1, r, 2 * r).matmul(at::diag(s_b));
    } else {
      at::Tensor indices = at::randperm(2 * r, at::kLong).slice(0, 0, r).to(vh.device());
      a = vh.index_select(0, indices);
      s_b = s.index_select(0, indices);
      b = u.index_select(1, indices).matmul(at::diag(s_b));
    }
    if (scale == "stable") {
      // PEFT takes out_features as the stored weight's first dimension (for Conv1D that is in_features).
      const double out_features = static_cast<double>(stored.size(0));
      const double gamma = static_cast<double>(config_int(ga, "lora_ga_config.stable_gamma"));
      b = b * (std::pow(out_features, 0.25) / std::pow(gamma, 0.5));
    } else if (scale == "weight_svd") {
      at::Tensor weight_s = std::get<1>(svd_lowrank(out_in(stored.to(at::kFloat), fifo), r, 4));
      if (s_b[0].item<double>() > 0) b = b * (weight_s[0] / s_b[0]);
    } else if (scale == "gd_scale") {
      a = a / scaling;
      b = b / scaling;
    }
    a = a.to(dtype);
    b = b.to(dtype);
    assign(a_param, a.contiguous());
    assign(b_param, b.contiguous());
    at::Tensor offset = scaling * at::matmul(b.to(at::kFloat), a.to(at::kFloat));
    stored.copy_(out_in((out_in(stored.to(at::kFloat), fifo) - offset).to(dtype), fifo));
  } else if (init == "eva") {
    // EVA: A holds the layer inputs' principal directions (from the data pass), B = 0. Without data, PEFT's
    // get_peft_model state before initialize_lora_eva_weights: B = 0, A as created.
    auto it = prepared.find(prepared_key(key, "eva_components"));
    if (it != prepared.end()) assign(a_param, it->second.to(a_param.scalar_type()));
    b_param.zero_();
  }
}

void save_converted_adapter(const PeftModel& model, const std::string& dir, const std::string& name,
                            const std::string& initial_dir) {
  nlohmann::json config = model.adapter_config(name);
  if (config.value("peft_type", std::string()) != "LORA")
    fail(ErrorKind::Unsupported, "path_initial_model_for_weight_conversion converts LORA adapters; '" + name + "' is " +
                                     config.value("peft_type", std::string("?")));
  const bool rslora = config_bool(config, "use_rslora");
  if (rslora && (!config["rank_pattern"].empty() || !config["alpha_pattern"].empty()))
    fail(ErrorKind::InvalidArgument, "Passing `path_initial_model_for_weight_conversion` to `save_pretrained` is not "
                                     "supported when using `rank_pattern` or `alpha_pattern` at the same time as "
                                     "`use_rslora=True`.");
  if (!(init_mutates_base(config) || (config["init_lora_weights"].is_boolean() && config["init_lora_weights"].get<bool>())))
    warn("`path_initial_model_for_weight_conversion` only works for converting a PiSSA/CorDA/OLoRA/LoRA-GA adapter to "
         "a LoRA adapter");
  const std::string initial_weights = io::join_path(initial_dir, "adapter_model.safetensors");
  if (!io::is_regular_file(initial_weights))
    fail(ErrorKind::NotFound, "path_initial_model_for_weight_conversion '" + initial_dir +
                                  "' holds no adapter_model.safetensors: save the adapter there right after its "
                                  "initialisation, before training");
  io::TensorMap initial = io::read_safetensors(initial_weights);
  io::TensorMap now = model.adapter_state_dict(name);
  // subtract_mutated_init: ΔW = B·A − B₀·A₀ = [B | −B₀]·[A; A₀] for the lora_A / lora_B tensors. PEFT keeps only
  // those, which leaves a SEQ_CLS adapter without its classifier (modules_to_save) and unloadable; peft4j keeps the
  // other tensors as they are, since they do not depend on the residual.
  io::TensorMap converted;
  for (const auto& [key, value] : now) {
    const bool is_a = key.find("lora_A") != std::string::npos, is_b = key.find("lora_B") != std::string::npos;
    if (!is_a && !is_b) {
      converted[key] = value.contiguous();
      continue;
    }
    auto it = initial.find(key);
    if (it == initial.end())
      fail(ErrorKind::Format, "path_initial_model_for_weight_conversion '" + initial_dir + "' has no '" + key +
                                  "': it is not this adapter's initial state");
    at::Tensor start = it->second.to(value.device(), value.scalar_type());
    if (start.sizes() != value.sizes())
      fail(ErrorKind::Format, "path_initial_model_for_weight_conversion '" + initial_dir + "': '" + key + "' has shape " +
                                  c10::str(start.sizes()) + ", the adapter " + c10::str(value.sizes()));
    converted[key] = (is_a ? at::cat({value, start}, 0) : at::cat({value, -start}, 1)).contiguous();
  }
  // The initial adapter's config says init_lora_weights true, so that loading it never decomposes the base again.
  nlohmann::json initial_config = config;
  initial_config["init_lora_weights"] = true;
  initial_config["inference_mode"] = true;
  io::write_text_file_atomic(io::join_path(initial_dir, "adapter_config.json"), initial_config.dump(2) + "\n");
  config["init_lora_weights"] = true;
  config["inference_mode"] = true;
  config["r"] = config_int(config, "r") * 2;
  // Python's arithmetic: an int alpha stays an int when doubled.
  auto doubled = [](const nlohmann::json& v) {
    return v.is_number_integer() ? nlohmann::json(v.get<int64_t>() * 2) : nlohmann::json(v.get<double>() * 2);
  };
  config["lora_alpha"] = rslora ? nlohmann::json(config_double(config, "lora_alpha") * std::sqrt(2.0)) : doubled(config["lora_alpha"]);
  for (const char* pattern : {"rank_pattern", "alpha_pattern"})
    for (auto it = config[pattern].begin(); it != config[pattern].end(); ++it) it.value() = doubled(it.value());
  io::make_directories(dir);
  io::write_safetensors(io::join_path(dir, "adapter_model.safetensors"), converted, {{"format", "pt"}});
  io::write_text_file_atomic(io::join_path(dir, "adapter_config.json"), config.dump(2) + "\n");
}

}  // namespace peft4j::tuners
