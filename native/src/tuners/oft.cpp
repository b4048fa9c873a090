// OFT as PEFT 0.21 implements it (see oft.h). Random state: only the initial weights of init_weights=false
// (N(0, 0.1), drawn from libtorch's generator, not PEFT's); no state is derived from a seed. The index buffers PEFT
// keeps (rows/cols of the upper triangle) are not persistent there, so they are recomputed here and never saved.
#include "peft4j/tuners/oft.h"

#include <cmath>

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/orthogonal.h"
#include "peft4j/tuners/target_check.h"

namespace peft4j::tuners {

namespace {

// Every field of PEFT 0.21's OFTConfig with its default, so an adapter we save loads in PEFT.
const nlohmann::json kDefaults = {
    {"peft_type", "OFT"}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"auto_mapping", nullptr}, {"r", 0}, {"oft_block_size", 32},
    {"module_dropout", 0.0}, {"target_modules", nullptr}, {"fan_in_fan_out", false}, {"bias", "none"},
    {"exclude_modules", nullptr}, {"init_weights", true}, {"layers_to_transform", nullptr},
    {"layers_pattern", nullptr}, {"modules_to_save", nullptr}, {"coft", false}, {"eps", 6e-5},
    {"block_share", false}, {"use_cayley_neumann", true}, {"num_cayley_neumann_terms", 5}};

// PEFT's adjust_oft_parameters: the divisor of `features` nearest to `value` (the lower one on a tie).
int64_t nearest_divisor(int64_t features, int64_t value) {
  if (value >= features) return features;
  int64_t higher = value;
  while (higher <= features && features % higher != 0) ++higher;
  int64_t lower = value;
  while (lower > 1 && features % lower != 0) --lower;
  return (value - lower) <= (higher - value) ? lower : higher;
}

class OftTuner : public WrappingTuner<OftLayer> {
 public:
  OftTuner() : WrappingTuner({"OFT", kDefaults, kLinear | kEmbedding, {{"init_weights", true}}}) {}

 protected:
  void validate(nlohmann::json& config) const override {
    const int64_t r = config_int(config, "r");
    const int64_t block_size = config_int(config, "oft_block_size");
    if (r < 0) fail(ErrorKind::InvalidArgument, "OFT config field 'r' must be >= 0, got " + config["r"].dump());
    if (block_size < 0)
      fail(ErrorKind::InvalidArgument, "OFT config field 'oft_block_size' must be >= 0, got " +
                                           config["oft_block_size"].dump());
    if ((r == 0) == (block_size == 0))
      fail(ErrorKind::InvalidArgument, "OFT config fields 'r' (" + std::to_string(r) + ") and 'oft_block_size' (" +
                                           std::to_string(block_size) +
                                           "): exactly one must be non-zero, the other follows from the layer width");
    // PEFT 0.21 builds a multiplicative dropout layer from module_dropout but never calls it in forward, so the
    // value is checked and, like there, has no effect.
    config_probability(config, "module_dropout", /*one_allowed=*/true);
    orthogonal::check_bias(config, "OFT", "oft_only");
    config_bool(config, "init_weights");
    // fan_in_fan_out concerns Conv1D, which OFT does not wrap; PEFT resets it for Linear and ignores it otherwise.
    config_bool(config, "fan_in_fan_out");
    config_bool(config, "block_share");
    config_bool(config, "use_cayley_neumann");
    if (config_bool(config, "coft") && config_double(config, "eps") <= 0)
      fail(ErrorKind::InvalidArgument, "OFT config field 'eps' must be positive with coft, got " + config["eps"].dump());
    if (config_int(config, "num_cayley_neumann_terms") < 0)
      fail(ErrorKind::InvalidArgument, "OFT config field 'num_cayley_neumann_terms' must be >= 0, got " +
                                           config["num_cayley_neumann_terms"].dump());
  }

  void add(OftLayer& layer, const InjectContext& ctx) const override { layer.add(ctx.adapter, ctx.config, ctx.initialise); }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<OftTuner>());

}  // namespace

// ---- OftRotation -------------------------------------------------------------------------------------------

OftRotation::OftRotation(int64_t blocks, int64_t block_size, int64_t in_features, const nlohmann::json& config,
                         const at::TensorOptions& options)
    : block_size_(block_size),
      in_features_(in_features),
      coft_(config_bool(config, "coft")),
      eps_(config_double(config, "eps")),
      block_share_(config_bool(config, "block_share")),
      neumann_(config_bool(config, "use_cayley_neumann")),
      neumann_terms_(config_int(config, "num_cayley_neumann_terms")) {
  weight = register_parameter("weight", at::zeros({block_share_ ? 1 : blocks, block_size * (block_size - 1) / 2}, options));
}

int64_t OftRotation::num_blocks() const { return block_share_ ? in_features_ / block_size_ : weight.size(0); }

// The skew-symmetric matrices whose strict upper triangles are the rows of `vec`.
at::Tensor OftRotation::skew(const at::Tensor& vec) const { return orthogonal::skew(vec, block_size_); }

at::Tensor OftRotation::upper(const at::Tensor& matrix) const {
  const int64_t b = block_size_;
  at::Tensor flat = at::triu_indices(b, b, 1, matrix.options().dtype(at::kLong));
  return matrix.reshape({matrix.size(0), b * b}).index_select(1, flat[0] * b + flat[1]);
}

// COFT (PEFT's _project_batch): blocks farther than eps / sqrt(#blocks) from zero (Frobenius) are pulled back onto
// that sphere, which bounds how far each rotation may move from the identity.
at::Tensor OftRotation::project(const at::Tensor& vec) const {
  at::Tensor matrix = skew(vec);
  at::Tensor eps = at::scalar_tensor(eps_, at::kFloat) / at::scalar_tensor(matrix.size(0), at::kFloat).sqrt();
  eps = eps.to(matrix.device());
  at::Tensor norm = at::linalg_vector_norm(matrix, 2, at::IntArrayRef({1, 2}), /*keepdim=*/true);
  at::Tensor projected = at::where(norm.le(eps), matrix, eps * (matrix / norm)).to(matrix.scalar_type());
  return upper(projected);
}

at::Tensor OftRotation::current_weight() {
  if (coft_) {
    at::NoGradGuard no_grad;
    weight.copy_(project(weight));
  }
  return weight;
}

at::Tensor OftRotation::blocks(const at::Tensor& w) const {
  at::Tensor q = skew(w);
  if (!neumann_) return orthogonal::cayley(q).to(w.scalar_type());
  return orthogonal::cayley_neumann(q, neumann_terms_);
}

at::Tensor OftRotation::rotate(const at::Tensor& x_in) {
  const at::ScalarType required = x_in.scalar_type();
  at::Tensor w = current_weight();
  at::Tensor x = x_in.to(w.scalar_type());
  at::Tensor r = blocks(w);
  const int64_t rank = num_blocks();
  if (block_share_) r = r.repeat({rank, 1, 1});
  std::vector<int64_t> grouped(x.sizes().begin(), x.sizes().end() - 1);
  grouped.push_back(rank);
  grouped.push_back(block_size_);
  at::Tensor rotated = at::einsum("...rk,rkc->...rc", {x.reshape(grouped), r});
  return rotated.reshape(x.sizes()).to(required);
}

at::Tensor OftRotation::block_diagonal(at::ScalarType dtype) {
  at::Tensor r = blocks(current_weight().to(dtype));
  std::vector<at::Tensor> list;
  for (int64_t i = 0; i < num_blocks(); ++i) list.push_back(r[block_share_ ? 0 : i]);
  return at::block_diag(list);
}

// ---- OftLayer ----------------------------------------------------------------------------------------------

OftLayer::OftLayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : AdapterLayer(base, std::move(state)) {
  if (auto* linear = dynamic_cast<torch::nn::LinearImpl*>(base.get())) {
    in_features_ = linear->weight.size(1);
  } else if (auto* emb = dynamic_cast<torch::nn::EmbeddingImpl*>(base.get())) {
    embedding_ = true;
    in_features_ = emb->weight.size(1);
  } else {
    fail(ErrorKind::Unsupported, "OFT wraps Linear and Embedding modules only, not " + base->name());
  }
}

bool OftLayer::has_adapter(const std::string& adapter) const { return r_.count(adapter) > 0; }

OftRotation& OftLayer::rotation(const std::string& adapter) const {
  return dynamic_cast<OftRotation&>((embedding_ ? oft_embedding_R_ : oft_R_)->module(adapter));
}

void OftLayer::add(const std::string& adapter, const nlohmann::json& config, bool initialise) {
  int64_t r = config_int(config, "r");
  int64_t block_size = config_int(config, "oft_block_size");
  // As PEFT: the given one is moved to the nearest divisor of the width when it does not divide it.
  if (r == 0) {
    if (in_features_ % block_size != 0 || block_size > in_features_) block_size = nearest_divisor(in_features_, block_size);
    r = in_features_ / block_size;
  } else {
    if (in_features_ % r != 0 || r > in_features_) r = nearest_divisor(in_features_, r);
    block_size = in_features_ / r;
  }
  at::Tensor w = orthogonal::base_weight(*base_layer());
  auto rotation = std::make_shared<OftRotation>(r, block_size, in_features_, config,
                                                at::TensorOptions().dtype(w.scalar_type()).device(w.device()));
  if (initialise && !config_bool(config, "init_weights")) {
    at::NoGradGuard no_grad;
    rotation->weight.normal_(0.0, 0.1);
  }
  (embedding_ ? oft_embedding_R_ : oft_R_)->put_module(adapter, rotation);
  r_[adapter] = r;
  block_size_[adapter] = block_size;
}

// Linear: the input is rotated by every active adapter in turn, then the base layer runs once (PEFT's order).
// Embedding: the looked-up vectors are rotated.
at::Tensor OftLayer::adapted_forward(const at::Tensor& x) {
  if (embedding_) {
    at::Tensor result = base_forward(x);
    const at::ScalarType dtype = result.scalar_type();
    for (const auto& adapter : state_->active)
      if (has_adapter(adapter)) result = rotation(adapter).rotate(result);
    return result.to(dtype);
  }
  const at::ScalarType dtype = x.scalar_type();
  at::Tensor rotated = x;
  for (const auto& adapter : state_->active)
    if (has_adapter(adapter)) rotated = rotation(adapter).rotate(rotated.to(rotation(adapter).weight.scalar_type()));
  return base_forward(rotated.to(dtype)).to(dtype);
}

// One adapter alone (a mixed batch's rows): the rotation replaces the base computation, so `result` is recomputed.
at::Tensor OftLayer::apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) {
  if (embedding_) return rotation(adapter).rotate(result).to(result.scalar_type());
  return base_forward(rotation(adapter).rotate(x).to(x.scalar_type()));
}

// Small matrices in (b)float16 on a CPU are built in float32 there, as PEFT's get_delta_weight does.
at::Tensor OftLayer::rotation_matrix(const std::string& adapter) {
  OftRotation& rot = rotation(adapter);
  const at::ScalarType dtype = rot.weight.scalar_type();
  const bool upcast = rot.weight.device().is_cpu() && (dtype == at::kHalf || dtype == at::kBFloat16);
  return rot.block_diagonal(upcast ? at::kFloat : dtype).to(dtype);
}

// Linear: W <- (R W^T)^T, so x W'^T = (x R) W^T. Embedding: E <- E R.
void OftLayer::merge_adapter(const std::string& adapter) {
  at::NoGradGuard no_grad;
  at::Tensor w = orthogonal::base_weight(*base_layer());
  at::Tensor r = rotation_matrix(adapter);
  at::Tensor merged = embedding_ ? at::mm(w.to(r.scalar_type()), r) : at::mm(r, w.t().to(r.scalar_type())).t();
  w.copy_(merged.to(w.scalar_type()));
}

// The inverse is computed in float32 (PEFT's torch.linalg.inv): the Neumann series is only nearly orthogonal.
void OftLayer::unmerge_adapter(const std::string& adapter) {
  at::NoGradGuard no_grad;
  at::Tensor w = orthogonal::base_weight(*base_layer());
  at::Tensor r = rotation_matrix(adapter);
  const at::ScalarType dtype = r.scalar_type();
  at::Tensor inverse = at::linalg_inv(r.to(at::kFloat)).to(dtype);
  at::Tensor restored = embedding_ ? at::mm(w.to(dtype), inverse) : at::mm(inverse, w.t().to(dtype)).t();
  w.copy_(restored.to(w.scalar_type()));
}

void OftLayer::forget_adapter(const std::string& adapter) {
  r_.erase(adapter);
  block_size_.erase(adapter);
}

}  // namespace peft4j::tuners
