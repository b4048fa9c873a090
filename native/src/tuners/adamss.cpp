// AdaMSS. The initialisation is PEFT's, step by step: the f32 weight [out, in (+ bias column)] goes through
// torch.svd_lowrank(q = min(r, out, in'), niter 2) under torch.manual_seed(random_seed) (torch_svd.h), the rows of U
// are clustered by scikit-learn's K-means (adamss_kmeans, seed 123456789, 10 iterations), and per cluster (in label
// order) A_i = Qᵀ of qr(Uᵢᵀ U_gram) with U_gram from a randomized SVD of the cluster's Gram matrix (global generator, as
// PEFT's torch.svd_lowrank there is unseeded), B_i = 0 ("orthogonal") or N(0, 0.01²). A loaded adapter re-clusters the
// same way, so the subspaces match the file's B_i shapes. ASA is PEFT's update_and_allocate, run after each optimizer
// step (Tuner::after_optimizer_step) while the gradients are still there.
#include "peft4j/tuners/adamss.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "peft4j/tuners/config.h"
#include "peft4j/tuners/linear_target.h"
#include "peft4j/tuners/torch_svd.h"

namespace peft4j::tuners {

namespace {

// Every field of PEFT 0.21's AdamssConfig with its default.
const nlohmann::json kDefaults = {
    {"peft_type", "ADAMSS"}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"auto_mapping", nullptr}, {"r", 100}, {"num_subspaces", 5}, {"subspace_rank", 1},
    {"target_modules", nullptr}, {"init_weights", "orthogonal"}, {"modules_to_save", nullptr},
    {"layers_to_transform", nullptr}, {"layers_pattern", nullptr}, {"use_asa", false}, {"asa_target_subspaces", 50},
    {"init_warmup", 50}, {"final_warmup", 1000}, {"mask_interval", 100}, {"asa_importance_beta", 0.85},
    {"asa_uncertainty_beta", 0.85}, {"asa_schedule_exponent", 3.0}, {"use_dynamic_rank", false},
    {"svd_threshold", 0.1}, {"random_seed", 0}};

// numpy's legacy RandomState(seed).random_sample(): 53-bit doubles from two MT19937 outputs (std::mt19937 seeds as
// numpy's mt19937_seed does).
double legacy_double(std::mt19937& mt) {
  const uint32_t a = mt() >> 5, b = mt() >> 6;
  return (a * 67108864.0 + b) / 9007199254740992.0;
}

// RandomState.choice(n, size=k, replace=False, p=uniform f32), as scikit-learn's random init calls it: rounds of
// uniform draws against the f32 cdf of the remaining probability, keeping each new index's first occurrence.
std::vector<int64_t> choose_without_replacement(std::mt19937& mt, int64_t n, int64_t k) {
  std::vector<float> p(n, 1.0f / static_cast<float>(n));
  std::vector<int64_t> found;
  while (static_cast<int64_t>(found.size()) < k) {
    std::vector<double> x(k - found.size());
    for (auto& v : x) v = legacy_double(mt);
    for (int64_t i : found) p[i] = 0.0f;
    std::vector<float> cdf(n);
    float total = 0.0f;
    for (int64_t i = 0; i < n; ++i) cdf[i] = total += p[i];
    for (auto& c : cdf) c /= cdf.back();
    std::vector<int64_t> fresh;
    for (double v : x) {
      int64_t index = std::upper_bound(cdf.begin(), cdf.end(), v, [](double a, float c) { return a < c; }) - cdf.begin();
      if (std::find(fresh.begin(), fresh.end(), index) == fresh.end()) fresh.push_back(index);
    }
    found.insert(found.end(), fresh.begin(), fresh.end());
  }
  return found;
}

// Each row's nearest centre: argmin_j ‖c_j‖² − 2 x·c_j (the first on ties), as scikit-learn's Lloyd step ranks them.
std::vector<int64_t> assign(const at::Tensor& X, const at::Tensor& centers) {
  at::Tensor distances = (centers * centers).sum(1).unsqueeze(0) - 2.0 * at::matmul(X, centers.t());
  at::Tensor labels = distances.argmin(1);
  return std::vector<int64_t>(labels.data_ptr<int64_t>(), labels.data_ptr<int64_t>() + labels.numel());
}

class AdamssTuner : public WrappingTuner<AdamssLayer> {
 public:
  // init_weights "orthogonal": B_i = 0, so ΔW = 0.
  AdamssTuner() : WrappingTuner({"ADAMSS", kDefaults, kLinear, {{"init_weights", "orthogonal"}}}) {}

  // PEFT's update_and_allocate for one adapter.
  void after_optimizer_step(const NamedLayers& layers, const std::string& adapter, nlohmann::json& config,
                            int64_t step) const override {
    if (!config_bool(config, "use_asa")) return;
    std::vector<AdamssLayer*> asa;
    int64_t total = 0;
    for (const auto& [path, layer] : layers)
      if (auto* a = dynamic_cast<AdamssLayer*>(layer); a && a->has_adapter(adapter)) {
        asa.push_back(a);
        total += static_cast<int64_t>(a->subspace_rows(adapter).size());
      }
    const int64_t init = config_int(config, "init_warmup"), final_step = config_int(config, "final_warmup");
    if (asa.empty() || step < init || step > final_step) return;
    for (auto* layer : asa)
      layer->update_importance(adapter, config_double(config, "asa_importance_beta"),
                               config_double(config, "asa_uncertainty_beta"));
    if (step % config_int(config, "mask_interval") != 0) return;
    const int64_t target = config_int(config, "asa_target_subspaces");
    const double progress = std::clamp(1.0 - static_cast<double>(step - init) / static_cast<double>(final_step - init),
                                       0.0, 1.0);
    const auto keep = static_cast<int64_t>(static_cast<double>(target) + static_cast<double>(total - target) *
                                                                             std::pow(progress, config_double(config, "asa_schedule_exponent")));
    std::vector<std::tuple<AdamssLayer*, size_t, at::Tensor>> scored;
    for (auto* layer : asa)
      for (auto& [i, score] : layer->subspace_scores(adapter)) scored.emplace_back(layer, i, score);
    if (!scored.empty()) {
      std::vector<at::Tensor> all;
      for (const auto& s : scored) all.push_back(std::get<2>(s));
      // The keep-th largest score; PEFT keeps the subspaces scoring strictly above it.
      double threshold = -std::numeric_limits<double>::infinity();
      if (keep < static_cast<int64_t>(scored.size()))
        threshold = -std::get<0>(at::kthvalue(-at::stack(all), keep)).item<double>();
      for (const auto& [layer, i, score] : scored) layer->set_subspace_active(adapter, i, score.item<double>() > threshold);
    }
    for (auto* layer : asa) layer->reset_importance(adapter);
  }

 protected:
  void validate(nlohmann::json& config) const override {
    config_positive_int(config, "r");
    config_positive_int(config, "num_subspaces");
    config_positive_int(config, "subspace_rank");
    // PEFT reads init_weights false as None (random B).
    if (config["init_weights"] == false) config["init_weights"] = nullptr;
    if (!config["init_weights"].is_null() && config["init_weights"] != "orthogonal")
      fail(ErrorKind::InvalidArgument, "ADAMSS config field 'init_weights' must be \"orthogonal\" or null, got " +
                                           config["init_weights"].dump());
    config_bool(config, "use_dynamic_rank");
    config_double(config, "svd_threshold");
    config_int(config, "random_seed");
    config_double(config, "asa_importance_beta");
    config_double(config, "asa_uncertainty_beta");
    if (config_bool(config, "use_asa")) {
      config_positive_int(config, "mask_interval");
      config_positive_int(config, "asa_target_subspaces");
      if (config_int(config, "init_warmup") >= config_int(config, "final_warmup"))
        fail(ErrorKind::InvalidArgument, "ADAMSS config field 'init_warmup' must be smaller than 'final_warmup' when "
                                         "use_asa is true, got " + config["init_warmup"].dump() + " and " +
                                             config["final_warmup"].dump());
      if (config_double(config, "asa_schedule_exponent") <= 0)
        fail(ErrorKind::InvalidArgument, "ADAMSS config field 'asa_schedule_exponent' must be positive when use_asa "
                                         "is true, got " + config["asa_schedule_exponent"].dump());
    }
  }

  void add(AdamssLayer& layer, const InjectContext& ctx) const override {
    layer.add(ctx.adapter, ctx.config, ctx.initialise);
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<AdamssTuner>());

}  // namespace

at::Tensor adamss_kmeans(const at::Tensor& input, int64_t k, int64_t max_iter, uint32_t seed) {
  at::NoGradGuard no_grad;
  at::Tensor X = input.detach().to(at::kCPU, at::kFloat).contiguous().clone();
  const int64_t n = X.size(0), d = X.size(1);
  // numpy's f32 mean over axis 0 adds the rows in order.
  at::Tensor mean = at::zeros({d}, at::kFloat);
  for (int64_t i = 0; i < n; ++i) mean += X[i];
  X -= mean / static_cast<float>(n);
  const double tol = X.to(at::kDouble).var(0, /*unbiased=*/false).mean().item<double>() * 1e-4;
  std::mt19937 mt(seed);
  at::Tensor seeds = at::tensor(choose_without_replacement(mt, n, k), at::kLong);
  at::Tensor centers = X.index_select(0, seeds);
  std::vector<int64_t> labels, previous(n, -1);
  bool strict = false;
  for (int64_t it = 0; it < max_iter; ++it) {
    labels = assign(X, centers);
    at::Tensor sums = at::zeros({k, d}, at::kFloat);
    std::vector<float> counts(k, 0.0f);
    for (int64_t i = 0; i < n; ++i) {
      sums[labels[i]] += X[i];
      counts[labels[i]] += 1.0f;
    }
    // scikit-learn moves an emptied centre onto the point farthest from its own centre (farthest first).
    std::vector<int64_t> empty;
    for (int64_t j = 0; j < k; ++j)
      if (counts[j] == 0.0f) empty.push_back(j);
    if (!empty.empty()) {
      at::Tensor own = centers.index_select(0, at::tensor(labels, at::kLong));
      at::Tensor far = std::get<1>(((X - own) * (X - own)).sum(1).sort(0, /*descending=*/true));
      for (size_t e = 0; e < empty.size(); ++e) {
        const int64_t point = far[static_cast<int64_t>(e)].item<int64_t>();
        sums[labels[point]] -= X[point];
        counts[labels[point]] -= 1.0f;
        sums[empty[e]] = X[point];
        counts[empty[e]] = 1.0f;
      }
    }
    for (int64_t j = 0; j < k; ++j)
      if (counts[j] > 0) sums[j] /= counts[j];
    const double shift = (sums - centers).pow(2).sum().item<double>();
    centers = sums;
    if (labels == previous) {
      strict = true;
      break;
    }
    if (shift <= tol) break;
    previous = labels;
  }
  if (!strict) labels = assign(X, centers);
  return at::tensor(labels, at::kLong);
}

IndexedParameters::IndexedParameters(const std::vector<at::Tensor>& values) {
  for (size_t i = 0; i < values.size(); ++i) values_.push_back(register_parameter(std::to_string(i), values[i]));
}

AdamssLayer::AdamssLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : WeightDeltaLayer(base, std::move(state)) {
  const auto shape = wrapped_linear_shape(*base, "ADAMSS", /*conv1d=*/false);
  in_features_ = shape.in_features;
  out_features_ = shape.out_features;
  bias_ = linear_bias(*base).defined();
  adamss_A_ = register_module("adamss_A", std::make_shared<AdapterDict>());
  adamss_B_ = register_module("adamss_B", std::make_shared<AdapterDict>());
  adamss_newB_ = register_module("adamss_newB", std::make_shared<AdapterDict>());
}

void AdamssLayer::add(const std::string& adapter, const nlohmann::json& config, bool initialise) {
  const int64_t r = config_int(config, "r");
  const int64_t subspace_rank = config_int(config, "subspace_rank");
  const bool dynamic = config_bool(config, "use_dynamic_rank");
  const bool random_b = initialise && config["init_weights"].is_null();
  at::Tensor weight = linear_weight(*base_layer());
  at::Tensor b = linear_bias(*base_layer());
  const auto dtype = weight.scalar_type();
  at::NoGradGuard no_grad;
  at::Tensor W = (bias_ ? at::cat({weight, b.unsqueeze(1)}, 1) : weight).detach().to(at::kCPU, at::kFloat);
  const int64_t rank = std::min({r, W.size(0), W.size(1)});
  auto [U, S, V] = svd_lowrank(W, rank, 2,
                               at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(config_int(config, "random_seed"))));
  at::Tensor UU = U.slice(1, 0, rank);
  at::Tensor newB = V.slice(1, 0, rank).t().contiguous();
  const int64_t clusters = std::min(config_int(config, "num_subspaces"), out_features_);
  at::Tensor labels = adamss_kmeans(UU, clusters, 10, 123456789u);
  std::vector<at::Tensor> rows, A_params, B_params;
  for (int64_t i = 0; i < clusters; ++i) {
    at::Tensor members = at::nonzero(labels == i).view({-1});
    if (members.numel() == 0)
      fail(ErrorKind::InvalidArgument, "ADAMSS clustering left subspace " + std::to_string(i) + " of " +
                                           std::to_string(clusters) + " empty for a layer with " +
                                           std::to_string(out_features_) + " outputs; lower 'num_subspaces'");
    rows.push_back(members);
    at::Tensor data = UU.index_select(0, members);
    at::Tensor Z = at::matmul(data, data.t());
    int64_t actual = std::max<int64_t>(1, std::min(members.numel(), subspace_rank));
    if (dynamic) {
      at::Tensor s = std::get<1>(svd_lowrank(Z, std::min(Z.size(0), Z.size(1)), 2));
      const int64_t significant = (s > config_double(config, "svd_threshold") * s[0]).sum().item<int64_t>();
      actual = std::max<int64_t>(1, std::min({significant, subspace_rank, s.size(0)}));
    }
    at::Tensor gram = std::get<0>(svd_lowrank(Z, std::min(Z.size(0), actual), 2)).slice(1, 0, actual);
    at::Tensor Q = std::get<0>(at::linalg_qr(at::matmul(data.t(), gram)));
    A_params.push_back(Q.t().contiguous().to(weight.device(), dtype));
    B_params.push_back(random_b ? at::randn({members.numel(), actual}, weight.options()) * 0.01
                                : at::zeros({members.numel(), actual}, weight.options()));
  }
  adamss_A_->put_module(adapter, std::make_shared<IndexedParameters>(A_params));
  adamss_B_->put_module(adapter, std::make_shared<IndexedParameters>(B_params));
  adamss_newB_->put_buffer(adapter, newB.to(weight.device(), dtype));
  scatter_index_[adapter] = at::cat(rows).to(weight.device());
  rows_[adapter] = rows;
  if (config_bool(config, "use_asa")) {
    const size_t n = rows.size();
    importance_[adapter] = {std::vector<at::Tensor>(n), std::vector<at::Tensor>(n), std::vector<at::Tensor>(n),
                            std::vector<at::Tensor>(n)};
  }
}

IndexedParameters& AdamssLayer::A(const std::string& adapter) const {
  return static_cast<IndexedParameters&>(adamss_A_->module(adapter));
}

IndexedParameters& AdamssLayer::B(const std::string& adapter) const {
  return static_cast<IndexedParameters&>(adamss_B_->module(adapter));
}

at::Tensor AdamssLayer::apply(const at::Tensor& x_in, const at::Tensor& result, const std::string& adapter) {
  const auto dtype = linear_weight(*base_layer()).scalar_type();
  at::Tensor x = x_in.to(dtype);
  if (bias_) {
    std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
    shape.back() = 1;
    x = at::cat({x, at::ones(shape, x.options())}, -1);
  }
  at::Tensor projected = at::linear(x, adamss_newB_->parameter(adapter).to(dtype));
  auto& A_list = A(adapter);
  auto& B_list = B(adapter);
  std::vector<at::Tensor> chunks;
  for (size_t i = 0; i < A_list.size(); ++i)
    chunks.push_back(at::linear(at::linear(projected, A_list.at(i).to(dtype)), B_list.at(i).to(dtype)));
  at::Tensor delta = at::cat(chunks, -1);
  std::vector<int64_t> shape(delta.sizes().begin(), delta.sizes().end());
  shape.back() = out_features_;
  at::Tensor index = scatter_index_.at(adapter).to(delta.device()).expand(delta.sizes());
  at::Tensor full = at::zeros(shape, delta.options()).scatter(-1, index, delta);
  return (result + full).to(x_in.scalar_type());
}

at::Tensor AdamssLayer::full_delta(const std::string& adapter, at::ScalarType dtype) const {
  at::Tensor weight = linear_weight(*base_layer());
  auto options = weight.options().dtype(dtype);
  at::Tensor newB = adamss_newB_->parameter(adapter).to(options);
  auto& A_list = A(adapter);
  auto& B_list = B(adapter);
  std::vector<at::Tensor> chunks;
  for (size_t i = 0; i < A_list.size(); ++i)
    chunks.push_back(at::matmul(at::matmul(B_list.at(i).to(options), A_list.at(i).to(options)), newB));
  at::Tensor delta = at::zeros({out_features_, newB.size(1)}, options);
  return delta.index_copy(0, scatter_index_.at(adapter).to(weight.device()), at::cat(chunks, 0));
}

at::Tensor AdamssLayer::delta_weight(const std::string& adapter) const {
  at::Tensor weight = linear_weight(*base_layer());
  at::Tensor full = full_delta(adapter, upcast_on_cpu(weight) ? at::kFloat : weight.scalar_type());
  return (bias_ ? full.slice(1, 0, in_features_) : full).to(weight.scalar_type());
}

void AdamssLayer::merge_adapter(const std::string& adapter) {
  WeightDeltaLayer::merge_adapter(adapter);
  if (!bias_) return;
  at::NoGradGuard no_grad;
  at::Tensor b = linear_bias(*base_layer());
  b.add_(full_delta(adapter, upcast_on_cpu(b) ? at::kFloat : b.scalar_type()).select(1, in_features_).to(b.scalar_type()));
}

void AdamssLayer::unmerge_adapter(const std::string& adapter) {
  WeightDeltaLayer::unmerge_adapter(adapter);
  if (!bias_) return;
  at::NoGradGuard no_grad;
  at::Tensor b = linear_bias(*base_layer());
  b.sub_(full_delta(adapter, upcast_on_cpu(b) ? at::kFloat : b.scalar_type()).select(1, in_features_).to(b.scalar_type()));
}

void AdamssLayer::update_importance(const std::string& adapter, double importance_beta, double uncertainty_beta) {
  auto it = importance_.find(adapter);
  if (it == importance_.end()) return;
  at::NoGradGuard no_grad;
  auto& imp = it->second;
  for (auto [list, ipt, unc] : {std::make_tuple(&A(adapter), &imp.ipt_A, &imp.unc_A),
                                std::make_tuple(&B(adapter), &imp.ipt_B, &imp.unc_B)}) {
    for (size_t i = 0; i < list->size(); ++i) {
      at::Tensor p = list->at(i);
      if (!p.grad().defined()) continue;
      if (!(*ipt)[i].defined()) {
        (*ipt)[i] = at::zeros_like(p);
        (*unc)[i] = at::zeros_like(p);
      }
      at::Tensor now = (p * p.grad()).abs();
      // The uncertainty is updated first, from the previous importance (PEFT's order).
      (*unc)[i].mul_(uncertainty_beta).add_((now - (*ipt)[i]).abs(), 1.0 - uncertainty_beta);
      (*ipt)[i].mul_(importance_beta).add_(now, 1.0 - importance_beta);
    }
  }
}

void AdamssLayer::reset_importance(const std::string& adapter) {
  auto it = importance_.find(adapter);
  if (it == importance_.end()) return;
  for (auto* list : {&it->second.ipt_A, &it->second.ipt_B, &it->second.unc_A, &it->second.unc_B})
    for (auto& t : *list) t = at::Tensor();
}

std::vector<std::pair<size_t, at::Tensor>> AdamssLayer::subspace_scores(const std::string& adapter) const {
  std::vector<std::pair<size_t, at::Tensor>> out;
  auto it = importance_.find(adapter);
  if (it == importance_.end()) return out;
  const auto& imp = it->second;
  for (size_t i = 0; i < imp.ipt_A.size(); ++i)
    if (imp.ipt_A[i].defined() && imp.ipt_B[i].defined())
      out.emplace_back(i, (imp.ipt_A[i] * imp.unc_A[i]).mean() + (imp.ipt_B[i] * imp.unc_B[i]).mean());
  return out;
}

void AdamssLayer::set_subspace_active(const std::string& adapter, size_t subspace, bool active) {
  for (auto* list : {&A(adapter), &B(adapter)}) {
    at::Tensor p = list->at(subspace);
    p.set_requires_grad(active);
    if (!active) p.mutable_grad() = at::Tensor();
  }
}

void AdamssLayer::forget_adapter(const std::string& adapter) {
  rows_.erase(adapter);
  scatter_index_.erase(adapter);
  importance_.erase(adapter);
}

}  // namespace peft4j::tuners
