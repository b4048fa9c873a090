// VeLoRA as PEFT 0.21's VeloraLinearVariant and VeloraFunction (peft/tuners/lora/variants.py, velora.py).
#include "peft4j/tuners/lora_velora.h"

#include <torch/csrc/autograd/custom_function.h>

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/lora.h"

namespace peft4j::tuners {

namespace {

int64_t group_dim(int64_t in_features, int64_t num_groups) { return (in_features + num_groups - 1) / num_groups; }

// [tokens, num_groups, group_dim]: the features zero-padded to num_groups · group_dim.
at::Tensor grouped_subtokens(const at::Tensor& x, int64_t num_groups) {
  const int64_t d = group_dim(x.size(-1), num_groups);
  const int64_t padded = num_groups * d;
  at::Tensor out = x.size(-1) == padded ? x : at::constant_pad_nd(x, {0, padded - x.size(-1)});
  return out.reshape({-1, num_groups, d});
}

at::Tensor normalize_projection(const at::Tensor& embed) {
  at::Tensor e = embed.to(at::kFloat);
  at::Tensor norm = at::linalg_vector_norm(e);
  if (norm.item<double>() == 0) {
    e = at::ones_like(e);
    norm = at::linalg_vector_norm(e);
  }
  return e / norm;
}

class VeloraFunction : public torch::autograd::Function<VeloraFunction> {
 public:
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            const at::Tensor& embed, int64_t num_groups, double scale) {
    at::Tensor output = at::linear(input, weight);
    at::Tensor compressed = at::einsum("tgd,d->tg", {grouped_subtokens(input, num_groups), embed.to(input.scalar_type())});
    ctx->saved_data["input_shape"] = input.sizes().vec();
    ctx->saved_data["input_dtype"] = static_cast<int64_t>(input.scalar_type());
    ctx->saved_data["in_features"] = input.size(-1);
    ctx->saved_data["scale"] = scale;
    ctx->save_for_backward({compressed, weight, embed});
    return output;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor& compressed = saved[0];
    const at::Tensor& weight = saved[1];
    const at::Tensor& embed = saved[2];
    const at::Tensor& grad_output = grad_outputs[0];
    const auto dtype = grad_output.scalar_type();
    at::Tensor grad_2d = grad_output.reshape({-1, grad_output.size(-1)});
    at::Tensor grad_input, grad_weight;
    if (ctx->needs_input_grad(0))
      grad_input = at::matmul(grad_2d, weight.to(dtype))
                       .reshape(ctx->saved_data["input_shape"].toIntVector())
                       .to(static_cast<at::ScalarType>(ctx->saved_data["input_dtype"].toInt()));
    if (ctx->needs_input_grad(1)) {
      at::Tensor c = compressed.to(dtype), e = embed.to(dtype);
      at::Tensor reconstructed = (c.unsqueeze(-1) * e.view({1, 1, -1})).reshape({-1, c.size(-1) * e.numel()});
      reconstructed = reconstructed.slice(1, 0, ctx->saved_data["in_features"].toInt()) *
                      ctx->saved_data["scale"].toDouble();
      grad_weight = at::matmul(grad_2d.t(), reconstructed).to(weight.scalar_type());
    }
    return {grad_input, grad_weight, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

const nlohmann::json kDefaults = {{"num_groups", 64}, {"scale", 1.0}, {"init_type", "batch_average"}};

class VeloraVariant : public LoraVariant {
 public:
  VeloraVariant(int64_t num_groups, double scale, std::string init_type)
      : num_groups_(num_groups), scale_(scale), init_type_(std::move(init_type)), initialized_(init_type_ == "random") {}

  at::Tensor forward(LoraLayer& layer, const std::string& adapter, const at::Tensor& x, const at::Tensor& result) override {
    at::Tensor input = layer.dropped(adapter, x);
    at::Tensor a = layer.lora_a(adapter);
    at::Tensor after_a;
    if (layer.is_training() && at::GradMode::is_enabled()) {
      AdapterDict& embeds = layer.variant_dict("lora_velora_embed");
      if (init_type_ == "batch_average" || (init_type_ == "batch_average_once" && !initialized_)) {
        at::NoGradGuard no_grad;
        at::Tensor target = embeds.parameter(adapter);
        target.copy_(velora_batch_projection(input.detach(), num_groups_).to(target.scalar_type()));
        initialized_ = true;
      }
      after_a = VeloraFunction::apply(input, a, embeds.parameter(adapter), num_groups_, scale_);
    } else {
      after_a = models::forward_module(layer.lora_A_module(adapter), input);
    }
    return result + models::forward_module(layer.lora_B_module(adapter), after_a) * layer.scaling(adapter);
  }

 private:
  int64_t num_groups_;
  double scale_;
  std::string init_type_;
  bool initialized_;  // PEFT's lora_velora_initialized: not saved, so a loaded adapter recomputes its vector
};

std::shared_ptr<LoraVariant> make(LoraLayer& layer, const std::string& adapter, const nlohmann::json& config,
                                  const std::string&, bool initialise) {
  const nlohmann::json& sub = config["velora_config"];
  const int64_t num_groups = sub["num_groups"].get<int64_t>();
  const std::string init_type = sub["init_type"].get<std::string>();
  const auto options = layer.weight().options().requires_grad(false);
  const int64_t d = group_dim(layer.in_features(), num_groups);
  at::Tensor embed = init_type == "random" && initialise ? normalize_projection(at::randn({d}, options)).to(options.dtype())
                                                         : at::zeros({d}, options);
  layer.variant_dict("lora_velora_embed").put_buffer(adapter, embed);
  return std::make_shared<VeloraVariant>(num_groups, sub["scale"].get<double>(), init_type);
}

void validate(nlohmann::json& config) {
  const nlohmann::json& sub = config["velora_config"];
  if (!sub["num_groups"].is_number_integer() || sub["num_groups"].get<int64_t>() <= 0)
    fail(ErrorKind::InvalidArgument, "LORA config field 'velora_config.num_groups' should be positive, got " +
                                         sub["num_groups"].dump());
  if (!sub["scale"].is_number() || sub["scale"].get<double>() <= 0)
    fail(ErrorKind::InvalidArgument, "LORA config field 'velora_config.scale' should be positive, got " +
                                         sub["scale"].dump());
  const auto& init = sub["init_type"];
  if (!init.is_string() || (init != "batch_average" && init != "batch_average_once" && init != "random"))
    fail(ErrorKind::InvalidArgument, "LORA config field 'velora_config.init_type' must be 'batch_average_once', "
                                     "'batch_average' or 'random', got " + init.dump());
}

[[maybe_unused]] const bool registered = register_lora_variant({"velora_config", kDefaults, validate, make});

}  // namespace

at::Tensor velora_linear(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& embed, int64_t num_groups,
                         double scale) {
  return VeloraFunction::apply(input, weight, embed, num_groups, scale);
}

at::Tensor velora_batch_projection(const at::Tensor& x, int64_t num_groups) {
  at::Tensor subtokens = grouped_subtokens(x, num_groups);
  return normalize_projection(subtokens.reshape({-1, subtokens.size(-1)}).mean(0));
}

}  // namespace peft4j::tuners
