// FRoD. The shared tensors are built as PEFT's _init_frod_projections builds them: targets grouped by category and
// ordered by layer index (PEFT's _layer_index_from_key; a later module with the same index and category replaces an
// earlier one), categories in sorted order, each V from the f32 weights on CPU, and the sparse positions drawn with one
// CPU generator seeded with projection_prng_key (randperm over the off-diagonal positions, category by category). U and
// the initial λ_l solve W = B Vᵀ in f64 (pseudo-inverse where V is singular): λ_l = column norms of B, U = B / λ_l.
#include "peft4j/tuners/frod.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <set>

#include "peft4j/tuners/config.h"
#include "peft4j/tuners/model_level_dicts.h"
#include "peft4j/tuners/torch_svd.h"

namespace peft4j::tuners {

namespace {

// Every field of PEFT 0.21's FrodConfig with its default.
const nlohmann::json kDefaults = {
    {"peft_type", "FROD"}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"auto_mapping", nullptr}, {"target_modules", nullptr}, {"projection_prng_key", 0},
    {"save_projection", true}, {"frod_dropout", 0.0}, {"fan_in_fan_out", false}, {"bias", "none"},
    {"modules_to_save", nullptr}, {"init_weights", true}, {"layers_to_transform", nullptr},
    {"layers_pattern", nullptr}, {"sparse_rate", 0.01}, {"regularization_alpha", 1e-3}, {"progressbar", true},
    {"runtime_offload_base_weight", false}};

bool is_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

std::vector<std::string> split(const std::string& key) {
  std::vector<std::string> parts;
  size_t start = 0;
  for (size_t dot; (dot = key.find('.', start)) != std::string::npos; start = dot + 1) parts.push_back(key.substr(start, dot - start));
  parts.push_back(key.substr(start));
  return parts;
}

// PEFT's _layer_index_from_key: the index after "layers", else the first numeric part, else `fallback`.
int64_t layer_index(const std::string& key, int64_t fallback) {
  auto parts = split(key);
  auto layers = std::find(parts.begin(), parts.end(), "layers");
  if (layers != parts.end() && layers + 1 != parts.end() && is_digits(*(layers + 1))) return std::stoll(*(layers + 1));
  for (const auto& part : parts)
    if (is_digits(part)) return std::stoll(part);
  return fallback;
}

// PEFT's _projection_from_weights on the f32 weights [out_i, in] of one category.
at::Tensor projection(const std::vector<at::Tensor>& matrices, double regularization_alpha) {
  at::Tensor stacked = at::cat(matrices, 0);
  if (stacked.size(0) < stacked.size(1)) return std::get<2>(torch_linalg_svd(stacked, /*full_matrices=*/true)).t();
  auto [q, r] = at::linalg_qr(stacked);
  const int64_t dim = r.size(1);
  at::Tensor eye = at::eye(dim, r.options());
  at::Tensor t_pi = at::zeros({dim, dim}, r.options());
  int64_t start = 0;
  for (const auto& m : matrices) {
    at::Tensor slice = q.slice(0, start, start + m.size(0));
    start += m.size(0);
    t_pi += at::linalg_inv(at::matmul(slice.t(), slice) + regularization_alpha * eye);
  }
  t_pi /= static_cast<double>(matrices.size());
  return at::matmul(r.t(), std::get<1>(at::linalg_eigh(t_pi)));
}

// sparse_rate of the off-diagonal positions of an n × n matrix (at least one when the rate is positive), chosen by a
// randperm of their row-major order: [2, nnz].
at::Tensor sparse_positions(int64_t n, double sparse_rate, at::Generator& generator) {
  const int64_t off_diagonal = n * (n - 1);
  int64_t nnz = std::min(static_cast<int64_t>(static_cast<double>(n * n) * sparse_rate), off_diagonal);
  if (sparse_rate > 0 && off_diagonal > 0) nnz = std::max<int64_t>(1, nnz);
  if (nnz == 0) return at::empty({2, 0}, at::kLong);
  at::Tensor k = at::randperm(off_diagonal, generator, at::kLong).slice(0, 0, nnz);
  at::Tensor row = at::div(k, n - 1, "floor");
  at::Tensor col = at::remainder(k, n - 1);
  col = col + (col >= row).to(at::kLong);
  return at::stack({row, col}).contiguous();
}

// PEFT's _calculate_frod_u_and_lambda: B = W V⁻ᵀ in f64 (W V⁺ᵀ, rtol 1e-6, where V is singular), λ = its column
// norms, U = B / λ (zero columns where λ <= 1e-12); both returned in f32.
std::pair<at::Tensor, at::Tensor> factor(const at::Tensor& W, const at::Tensor& V) {
  at::NoGradGuard no_grad;
  at::Tensor w = W.detach().to(at::kCPU, at::kDouble), v = V.detach().to(at::kCPU, at::kDouble);
  at::Tensor b;
  try {
    b = at::linalg_solve(v, w.t()).t();
  } catch (const c10::Error&) {
    b = at::matmul(w, at::linalg_pinv(v, c10::optional<double>(), c10::optional<double>(1e-6), false).t());
  }
  at::Tensor lambda = at::linalg_vector_norm(b, 2, at::IntArrayRef{0});
  at::Tensor u = at::where(lambda > 1e-12, b / lambda, at::zeros_like(b));
  return {u.to(at::kFloat), lambda.to(at::kFloat)};
}

class FrodTuner : public WrappingTuner<FrodLayer> {
 public:
  // No identity: with init_weights true (S = 0, λ_l from the weight) W' = U diag(λ_l) Vᵀ equals W only up to f32
  // rounding, and the layer computes W' x in place of W x, as PEFT's does.
  FrodTuner() : WrappingTuner({"FROD", kDefaults, kLinear | kConv1D, nullptr}) {}

  void prepare(torch::nn::Module& tuner_module, models::Model& model, const std::vector<std::string>& targets,
               InjectContext& ctx) const override {
    std::map<int64_t, std::map<std::string, at::Tensor>> weights;
    int64_t fallback = 0;
    for (const auto& key : targets) {
      auto module = module_at(model, key);
      auto shape = linear_shape(*module);
      if (!shape) continue;
      at::Tensor w = linear_weight(*module).detach();
      weights[layer_index(key, fallback++)][frod_category(key)] = shape->fan_in_fan_out ? w.t() : w;
    }
    std::set<std::string> categories;
    for (const auto& [index, by_category] : weights)
      for (const auto& [category, w] : by_category) categories.insert(category);
    const bool persistent = config_bool(ctx.config, "save_projection");
    const double alpha = config_double(ctx.config, "regularization_alpha");
    const double rate = config_double(ctx.config, "sparse_rate");
    auto generator =
        at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(config_int(ctx.config, "projection_prng_key")));
    at::NoGradGuard no_grad;
    for (const auto& category : categories) {
      std::vector<at::Tensor> matrices;
      at::Tensor example;
      for (const auto& [index, by_category] : weights) {
        auto it = by_category.find(category);
        if (it == by_category.end()) continue;
        matrices.push_back(it->second.to(at::kCPU, at::kFloat));
        if (!example.defined()) example = it->second;
      }
      at::Tensor V = projection(matrices, alpha).to(example.scalar_type());
      at::Tensor indices = sparse_positions(V.size(0), rate, generator);
      at::Tensor size = at::tensor(std::vector<int64_t>{V.size(0), V.size(0)}, at::kLong);
      for (const auto& [group, t] : std::vector<std::pair<std::string, at::Tensor>>{
               {"frod_V", V}, {"frod_s_indices", indices}, {"frod_s_size", size}}) {
        auto dict = model_level_dict(tuner_module, group, category);
        dict->put_buffer(ctx.adapter, t, persistent);
        ctx.shared[group + "." + category] = dict->parameter(ctx.adapter);
      }
    }
  }

 protected:
  void validate(nlohmann::json& config) const override {
    check_linear_method_config(config, /*has_bias=*/true, "frod_dropout");
    config_int(config, "projection_prng_key");
    config_bool(config, "save_projection");
    config_bool(config, "fan_in_fan_out");
    config_bool(config, "init_weights");
    config_probability(config, "sparse_rate", /*one_allowed=*/true);
    config_double(config, "regularization_alpha");
    config_bool(config, "progressbar");  // PEFT's tqdm bar over the categories; peft4j shows none
    if (config_bool(config, "runtime_offload_base_weight"))
      fail(ErrorKind::Unsupported, "FROD config field 'runtime_offload_base_weight' = true (keeping base weights on "
                                   "the CPU between forwards) is not supported by peft4j");
  }

  void add(FrodLayer& layer, const InjectContext& ctx) const override {
    const std::string category = frod_category(ctx.key);
    layer.add(ctx.adapter, ctx.config, ctx.shared.at("frod_V." + category), ctx.shared.at("frod_s_indices." + category),
              ctx.shared.at("frod_s_size." + category), ctx.initialise);
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<FrodTuner>());

}  // namespace

std::string frod_category(const std::string& key) {
  auto parts = split(key);
  if (parts.size() == 1) return parts[0];
  const std::string& last = parts.back();
  const std::string& second = parts[parts.size() - 2];
  if (is_digits(second)) return last;
  std::string category = second + "_" + last;
  if (category == "output_dense" && parts.size() >= 3 && parts[parts.size() - 3] == "attention") return "attention_output";
  return category;
}

FrodLayer::FrodLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : WeightDeltaLayer(base, std::move(state)) {
  shape_ = wrapped_linear_shape(*base, "FROD");
  frod_lambda_l_ = register_module("frod_lambda_l", std::make_shared<AdapterDict>());
  frod_lambda_s_values_ = register_module("frod_lambda_s_values", std::make_shared<AdapterDict>());
}

void FrodLayer::add(const std::string& adapter, const nlohmann::json& config, const at::Tensor& V,
                    const at::Tensor& s_indices, const at::Tensor& s_size, bool initialise) {
  if (V.size(0) != shape_.in_features)
    fail(ErrorKind::InvalidArgument, "FROD basis " + c10::str(V.sizes()) + " does not fit a layer with " +
                                         std::to_string(shape_.in_features) + " inputs");
  at::Tensor weight = linear_weight(*base_layer());
  auto [u, lambda] = factor(unmerged_weight(), V);
  at::Tensor values = at::zeros({s_indices.size(1)}, at::kFloat);
  if (initialise && !config_bool(config, "init_weights")) {
    at::NoGradGuard no_grad;
    values.normal_(0.0, 0.1);
    lambda.add_(at::randn_like(lambda) * 0.1);
  }
  frod_lambda_s_values_->put_parameter(adapter, values.to(weight.device(), weight.scalar_type()));
  frod_lambda_l_->put_parameter(adapter, lambda.to(weight.device(), weight.scalar_type()));
  V_[adapter] = V;
  s_indices_[adapter] = s_indices;
  s_size_[adapter] = s_size;
  dropout_[adapter] = config_double(config, "frod_dropout");
  U_[adapter] = {V._version(), u.to(weight.device())};
}

at::Tensor FrodLayer::unmerged_weight() const {
  at::Tensor w = weight_before_merge_.defined() ? weight_before_merge_ : linear_weight(*base_layer()).detach();
  return shape_.fan_in_fan_out ? w.t() : w;
}

at::Tensor FrodLayer::U(const std::string& adapter) const {
  const at::Tensor& V = V_.at(adapter);
  auto& cached = U_.at(adapter);
  if (cached.first != V._version()) cached = {V._version(), factor(unmerged_weight(), V).first.to(V.device())};
  return cached.second;
}

at::Tensor FrodLayer::sparse_part(const std::string& adapter, at::ScalarType dtype) const {
  at::Tensor values = frod_lambda_s_values_->parameter(adapter).to(dtype);
  at::Tensor indices = s_indices_.at(adapter).to(values.device(), at::kLong);
  at::Tensor size = s_size_.at(adapter).to(at::kCPU, at::kLong);
  return at::zeros({size[0].item<int64_t>(), size[1].item<int64_t>()}, values.options())
      .index_put({indices[0], indices[1]}, values);
}

// PEFT's forward for one adapter: z = h V, then (z Sᵀ + z ⊙ λ_l) Uᵀ, in the input's dtype.
at::Tensor FrodLayer::reconstructed(const at::Tensor& h, const std::string& adapter) const {
  auto options = h.options();
  at::Tensor V = V_.at(adapter).to(options);
  at::Tensor z = at::matmul(h.reshape({-1, h.size(-1)}), V);
  at::Tensor z_s = at::matmul(z, sparse_part(adapter, h.scalar_type()).to(h.device()).t());
  at::Tensor z_l = z * frod_lambda_l_->parameter(adapter).to(options);
  at::Tensor out = at::linear(z_s + z_l, U(adapter).to(options));
  std::vector<int64_t> shape(h.sizes().begin(), h.sizes().end() - 1);
  shape.push_back(out.size(-1));
  return out.reshape(shape);
}

// With one active adapter and no dropout at work PEFT skips the base layer: W' x + b. Otherwise each adapter adds
// W' h − W h to the base output, h the (dropped-out) input.
at::Tensor FrodLayer::adapted_forward(const at::Tensor& x) {
  std::vector<std::string> active;
  for (const auto& adapter : state_->active)
    if (has_adapter(adapter)) active.push_back(adapter);
  if (active.empty()) return base_forward(x);
  at::Tensor bias = linear_bias(*base_layer());
  auto dropping = [&](const std::string& adapter) { return dropout_.at(adapter) > 0 && is_training(); };
  const bool skip_base = active.size() == 1 && !dropping(active[0]);
  at::Tensor result, base_out;
  if (!skip_base) {
    result = base_forward(x);
    base_out = bias.defined() ? result - bias : result;
  }
  for (const auto& adapter : active) {
    at::Tensor h = dropping(adapter) ? at::dropout(x, dropout_.at(adapter), true) : x;
    at::Tensor out = reconstructed(h, adapter);
    if (skip_base) {
      result = bias.defined() ? out + bias : out;
    } else {
      at::Tensor without = base_out;
      if (dropping(adapter)) {
        at::Tensor w = linear_weight(*base_layer());
        without = at::linear(h, (shape_.fan_in_fan_out ? w.t() : w).to(x.options()));
      }
      result = result + out - without;
    }
  }
  return result.to(x.scalar_type());
}

at::Tensor FrodLayer::apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) {
  at::Tensor bias = linear_bias(*base_layer());
  at::Tensor without = bias.defined() ? result - bias : result;
  return result + reconstructed(x.to(result.scalar_type()), adapter) - without;
}

at::Tensor FrodLayer::delta_weight(const std::string& adapter) const {
  at::Tensor weight = linear_weight(*base_layer());
  auto options = weight.options();
  at::Tensor S = sparse_part(adapter, weight.scalar_type());
  at::Tensor L = at::diag_embed(frod_lambda_l_->parameter(adapter).to(options));
  at::Tensor trained = at::matmul(at::matmul(U(adapter).to(options), S + L), V_.at(adapter).to(options).t());
  at::Tensor delta = trained - unmerged_weight().to(options);
  return shape_.fan_in_fan_out ? delta.t() : delta;
}

void FrodLayer::merge_adapter(const std::string& adapter) {
  if (!weight_before_merge_.defined()) weight_before_merge_ = linear_weight(*base_layer()).detach().clone();
  WeightDeltaLayer::merge_adapter(adapter);
}

// PEFT restores the copy it kept; with several adapters merged, each is taken back by its own delta first.
void FrodLayer::unmerge_adapter(const std::string& adapter) {
  if (merged_.size() > 1) return WeightDeltaLayer::unmerge_adapter(adapter);
  at::NoGradGuard no_grad;
  if (weight_before_merge_.defined()) linear_weight(*base_layer()).copy_(weight_before_merge_);
  weight_before_merge_ = at::Tensor();
}

void FrodLayer::forget_adapter(const std::string& adapter) {
  V_.erase(adapter);
  s_indices_.erase(adapter);
  s_size_.erase(adapter);
  dropout_.erase(adapter);
  U_.erase(adapter);
}

}  // namespace peft4j::tuners
