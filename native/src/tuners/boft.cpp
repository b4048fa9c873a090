// BOFT as PEFT 0.21 implements it (see boft.h). Random state: only the initial weights of init_weights=false
// (boft_R ~ N(0, 0.1), boft_s ~ N(1, 0.1)) and the training-time block dropout, drawn from libtorch's generator, not
// PEFT's. The butterfly permutations are derived from the config alone, as PEFT's non-persistent boft_P, and never
// saved. boft_n_butterfly_factor is honoured as written: PEFT computes the same butterfly product with its CUDA
// block-diagonal extension, and without that extension silently falls back to one factor.
#include "peft4j/tuners/boft.h"

#include <cmath>

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/orthogonal.h"
#include "peft4j/tuners/target_check.h"

namespace peft4j::tuners {

namespace {

// Every field of PEFT 0.21's BOFTConfig with its default, so an adapter we save loads in PEFT.
const nlohmann::json kDefaults = {
    {"peft_type", "BOFT"}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"auto_mapping", nullptr}, {"boft_block_size", 4}, {"boft_block_num", 0},
    {"boft_n_butterfly_factor", 1}, {"target_modules", nullptr}, {"exclude_modules", nullptr},
    {"boft_dropout", 0.0}, {"fan_in_fan_out", false}, {"bias", "none"}, {"modules_to_save", nullptr},
    {"init_weights", true}, {"layers_to_transform", nullptr}, {"layers_pattern", nullptr}};

// PEFT's block_butterfly_perm: within every group of n/b features, chunks of r are reordered evens first, then
// odds, which interleaves neighbouring blocks so that the next factor mixes them.
at::Tensor butterfly_permutation(int64_t n, int64_t b, int64_t r) {
  if (b * r * 2 > n)
    fail(ErrorKind::InvalidArgument, "BOFT butterfly: " + std::to_string(b) + " blocks of " + std::to_string(2 * r) +
                                         " do not fit " + std::to_string(n) + " features");
  const int64_t group = n / b;
  const int64_t chunks = group / r;
  std::vector<int64_t> chunk_order;
  for (int64_t c = 0; c < chunks; c += 2) chunk_order.push_back(c);
  for (int64_t c = 1; c < chunks; c += 2) chunk_order.push_back(c);
  std::vector<int64_t> within(group);
  for (int64_t i = 0; i < group; ++i) within[i] = i;
  for (size_t i = 0; i < chunk_order.size(); ++i)
    for (int64_t j = 0; j < r; ++j) within[i * r + j] = chunk_order[i] * r + j;
  std::vector<int64_t> indices(n);
  for (int64_t i = 0; i < n; ++i) indices[i] = i;
  for (int64_t start = 0; start + group <= n; start += group)
    for (int64_t i = 0; i < group; ++i) indices[start + i] = start + within[i];
  return at::tensor(indices, at::kLong);
}

class BoftTuner : public WrappingTuner<BoftLayer> {
 public:
  BoftTuner() : WrappingTuner({"BOFT", kDefaults, kLinear, {{"init_weights", true}}}) {}

 protected:
  void validate(nlohmann::json& config) const override {
    const int64_t size = config_int(config, "boft_block_size");
    const int64_t num = config_int(config, "boft_block_num");
    if (size < 0)
      fail(ErrorKind::InvalidArgument, "BOFT config field 'boft_block_size' must be >= 0, got " + std::to_string(size));
    if (num < 0)
      fail(ErrorKind::InvalidArgument, "BOFT config field 'boft_block_num' must be >= 0, got " + std::to_string(num));
    if ((size == 0) == (num == 0))
      fail(ErrorKind::InvalidArgument, "BOFT config fields 'boft_block_size' (" + std::to_string(size) +
                                           ") and 'boft_block_num' (" + std::to_string(num) +
                                           "): exactly one must be non-zero, the other follows from the layer width");
    config_positive_int(config, "boft_n_butterfly_factor");
    config_probability(config, "boft_dropout", /*one_allowed=*/true);
    orthogonal::check_bias(config, "BOFT", "boft_only");
    config_bool(config, "init_weights");
    config_bool(config, "fan_in_fan_out");  // concerns Conv1D, which BOFT does not wrap (PEFT resets it)
  }

  void add(BoftLayer& layer, const InjectContext& ctx) const override {
    layer.add(ctx.adapter, ctx.config, ctx.key, ctx.initialise);
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<BoftTuner>());

}  // namespace

BoftLayer::BoftLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : AdapterLayer(base, std::move(state)) {
  auto* linear = dynamic_cast<torch::nn::LinearImpl*>(base.get());
  if (!linear) fail(ErrorKind::Unsupported, "BOFT wraps Linear modules only, not " + base->name());
  in_features_ = linear->weight.size(1);
  out_features_ = linear->weight.size(0);
}

bool BoftLayer::has_adapter(const std::string& adapter) const { return permutations_.count(adapter) > 0; }

void BoftLayer::add(const std::string& adapter, const nlohmann::json& config, const std::string& key, bool initialise) {
  int64_t size = config_int(config, "boft_block_size");
  int64_t num = config_int(config, "boft_block_num");
  const int64_t extra = config_int(config, "boft_n_butterfly_factor") - 1;  // the paper's count
  const std::string where = " for module '" + key + "' with in_features " + std::to_string(in_features_);
  auto invalid = [&](const std::string& what) { fail(ErrorKind::InvalidArgument, "BOFT config " + what + where); };
  if (size == 0) {
    if (in_features_ % num != 0) invalid("field 'boft_block_num' (" + std::to_string(num) + ") must divide in_features");
    if (extra != 0) {
      if (extra > static_cast<int64_t>(std::log2(static_cast<double>(num))))
        invalid("fields 'boft_n_butterfly_factor' and 'boft_block_num' do not combine: the factor is too large");
      if (num % (int64_t(1) << extra) != 0)
        invalid("field 'boft_block_num' must be a multiple of 2^(boft_n_butterfly_factor - 1)");
    }
    size = in_features_ / num;
  } else {
    if (in_features_ % size != 0)
      invalid("field 'boft_block_size' (" + std::to_string(size) + ") must divide in_features");
    if (extra != 0 && (in_features_ < size * (int64_t(1) << extra) || in_features_ % (size * (int64_t(1) << extra)) != 0))
      invalid("fields 'boft_n_butterfly_factor' and 'boft_block_size' do not combine: boft_block_size x "
              "2^(boft_n_butterfly_factor - 1) must divide in_features");
    num = in_features_ / size;
  }
  if (extra != 0) {
    if (num % 2 != 0) invalid("field 'boft_block_num' must be even with butterfly factors, got " + std::to_string(num));
    if (size % 2 != 0) invalid("field 'boft_block_size' must be even with butterfly factors, got " + std::to_string(size));
  }
  // Factor i permutes with PEFT's block_butterfly_perm(in, blocks / 2^i, b / 2); factor 0's is the identity.
  std::vector<at::Tensor> perms;
  for (int64_t i = 1; i <= extra; ++i) perms.push_back(butterfly_permutation(in_features_, num >> i, size / 2));

  at::Tensor w = orthogonal::base_weight(*base_layer());
  auto options = at::TensorOptions().dtype(w.scalar_type()).device(w.device());
  at::Tensor r = at::zeros({extra + 1, num, size, size}, options);
  at::Tensor s = at::ones({out_features_, 1}, options);
  if (initialise && !config_bool(config, "init_weights")) {
    r.normal_(0.0, 0.1);
    s.normal_(1.0, 0.1);
  }
  boft_R_->put_parameter(adapter, r);
  boft_s_->put_parameter(adapter, s);
  permutations_[adapter] = std::move(perms);
  dropout_[adapter] = config_double(config, "boft_dropout");
}

// M = B_k ... B_1 B_0 with B_i = P_i diag(Cayley(R_i blocks)) P_i^T (PEFT's butterfly_oft_mat).
at::Tensor BoftLayer::butterfly(const std::string& adapter, bool dropout) const {
  at::Tensor r = boft_R_->parameter(adapter);
  const int64_t factors = r.size(0), blocks = r.size(1), b = r.size(2);
  at::Tensor data = r.reshape({factors * blocks, b, b});
  at::Tensor rotations = orthogonal::cayley(0.5 * (data - data.transpose(1, 2))).to(r.scalar_type());
  rotations = rotations.view({factors, blocks, b, b});
  const double p = dropout_.at(adapter);
  if (dropout && p > 0) {
    // PEFT's MultiplicativeDropoutLayer: in one randomly chosen factor, int(p * blocks) random blocks become I.
    const int64_t replaced = static_cast<int64_t>(p * static_cast<double>(blocks));
    at::Tensor chosen = at::randperm(blocks, at::TensorOptions().dtype(at::kLong)).slice(0, 0, replaced);
    at::Tensor mask = at::zeros({factors, blocks, 1, 1}, rotations.options());
    const int64_t factor = at::randint(factors, {1}, at::TensorOptions().dtype(at::kLong)).item<int64_t>();
    mask[factor].index_fill_(0, chosen.to(mask.device()), 1.0);
    at::Tensor eye = at::eye(b, rotations.options()).expand_as(rotations);
    rotations = (1 - mask) * rotations + mask * eye;
  }
  at::Tensor matrix;
  const auto& perms = permutations_.at(adapter);
  for (int64_t i = 0; i < factors; ++i) {
    at::Tensor factor = at::block_diag(rotations[i].unbind(0));
    // P B P^T with P[i, perm[i]] = 1 is B with rows and columns gathered by perm.
    if (i > 0) {
      at::Tensor perm = perms[i - 1].to(factor.device());
      factor = factor.index_select(0, perm).index_select(1, perm);
    }
    matrix = matrix.defined() ? at::matmul(factor, matrix) : factor;
  }
  return matrix;
}

at::Tensor BoftLayer::butterfly_matrix(const std::string& adapter) const { return butterfly(adapter, false); }

// x -> base(x M) with the output rows (bias excluded) scaled by s; several adapters compose their rotations and
// scales first, as PEFT does.
at::Tensor BoftLayer::rotate_and_scale(const at::Tensor& x, const std::vector<std::string>& adapters) {
  const at::ScalarType dtype = x.scalar_type();
  at::Tensor rotation, scale;
  for (const auto& adapter : adapters) {
    if (!has_adapter(adapter)) continue;
    at::Tensor m = butterfly(adapter, is_training()).to(x.options());
    at::Tensor s = boft_s_->parameter(adapter);
    rotation = rotation.defined() ? at::matmul(m, rotation) : m;
    scale = scale.defined() ? s * scale : s;
  }
  if (!rotation.defined()) return base_forward(x);
  at::Tensor result = base_forward(at::matmul(x, rotation.to(dtype)));
  at::Tensor bias = orthogonal::base_bias(*base_layer());
  if (bias.defined()) result = result - bias;
  result = result * scale.squeeze(-1);
  if (bias.defined()) result = result + bias;
  return result.to(dtype);
}

at::Tensor BoftLayer::adapted_forward(const at::Tensor& x) { return rotate_and_scale(x, state_->active); }

// One adapter alone (a mixed batch's rows): the rotation replaces the base computation, so `result` is recomputed.
at::Tensor BoftLayer::apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) {
  return rotate_and_scale(x, {adapter});
}

// W <- (M W^T)^T * s, so x W'^T = s * ((x M) W^T).
void BoftLayer::merge_adapter(const std::string& adapter) {
  at::NoGradGuard no_grad;
  at::Tensor w = orthogonal::base_weight(*base_layer());
  at::Tensor m = butterfly_matrix(adapter);
  at::Tensor merged = at::mm(m, w.t().to(m.scalar_type())).t() * boft_s_->parameter(adapter);
  w.copy_(merged.to(w.scalar_type()));
}

// M is orthogonal, so its transpose undoes it.
void BoftLayer::unmerge_adapter(const std::string& adapter) {
  at::NoGradGuard no_grad;
  at::Tensor w = orthogonal::base_weight(*base_layer());
  at::Tensor m = butterfly_matrix(adapter);
  at::Tensor restored = at::mm(m.t(), w.t().to(m.scalar_type())).t() * (1 / boft_s_->parameter(adapter));
  w.copy_(restored.to(w.scalar_type()));
}

void BoftLayer::forget_adapter(const std::string& adapter) {
  permutations_.erase(adapter);
  dropout_.erase(adapter);
}

}  // namespace peft4j::tuners
