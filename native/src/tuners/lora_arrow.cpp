// Arrow as PEFT 0.21's ArrowLinearVariant, ArrowLoraLinearLayer and create_arrow_model (peft/tuners/lora/arrow.py).
#include "peft4j/tuners/lora_arrow.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <optional>
#include <set>

#include "peft4j/error.h"
#include "peft4j/models/conv1d.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/lora.h"
#include "peft4j/tuners/peft_model.h"

namespace peft4j::tuners {

namespace {

const char* kRouter = "arrow_router";

const nlohmann::json kDefaults = {{"top_k", 3},         {"router_temperature", 1.0}, {"use_gks", false},
                                  {"task_adapter_names", nullptr}, {"gks_adapter_names", nullptr}, {"rng_seed", nullptr}};

bool is_gks_name(const std::string& name) {
  return name.size() > 4 && name.compare(0, 4, "gks_") == 0 &&
         std::all_of(name.begin() + 4, name.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::vector<std::string> names_of(const nlohmann::json& value) {
  return value.is_null() ? std::vector<std::string>() : value.get<std::vector<std::string>>();
}

class ArrowVariant : public LoraVariant {
 public:
  explicit ArrowVariant(const nlohmann::json& sub)
      : task_names_(names_of(sub["task_adapter_names"])),
        gks_names_(names_of(sub["gks_adapter_names"])),
        use_gks_(sub["use_gks"].get<bool>()),
        top_k_(sub["top_k"].get<int64_t>()),
        temperature_(sub["router_temperature"].get<double>()) {
    if (!sub["rng_seed"].is_null()) rng_seed_ = sub["rng_seed"].get<int64_t>();
  }

  at::Tensor forward(LoraLayer& layer, const std::string& adapter, const at::Tensor& x, const at::Tensor& result) override {
    follow_adapters(layer);
    gen_know_sub(layer);
    build_prototypes(layer);
    const int64_t experts = static_cast<int64_t>(task_names_.size());
    at::Tensor a0 = layer.lora_a(task_names_.front());
    at::Tensor tokens = x.to(a0.scalar_type()).reshape({-1, x.size(-1)});
    std::vector<double> scales;
    std::vector<at::Tensor> as, bs;
    for (const auto& name : task_names_) {
      scales.push_back(layer.scaling(name));
      as.push_back(layer.lora_a(name));
      bs.push_back(layer.lora_b(name));
    }
    at::Tensor scale = at::tensor(scales, tokens.options());
    // Sign-agnostic similarity, top-k kept, softmax over all experts (the others at -inf).
    at::Tensor similarity = at::matmul(tokens, prototypes_.t()).abs();
    auto [top_values, top_index] = similarity.topk(std::min(top_k_, experts), 1);
    at::Tensor score = at::full({tokens.size(0), experts}, -std::numeric_limits<double>::infinity(), tokens.options())
                           .scatter(1, top_index, top_values);
    at::Tensor coefficient = at::softmax(score / temperature_, 1);
    at::Tensor z = at::einsum("tf,erf->ter", {tokens, at::stack(as)});
    at::Tensor y = at::einsum("ter,eor->teo", {z, at::stack(bs)}) * scale.view({1, -1, 1});
    at::Tensor delta = at::einsum("te,teo->to", {coefficient, y});
    auto sizes = x.sizes().vec();
    sizes.back() = delta.size(-1);
    return result + layer.dropped(adapter, delta).view(sizes);
  }

  std::string merge_refusal() const override { return "Cannot merge an active Arrow router adapter. Remove it first."; }

 private:
  // PEFT's on_adapter_change: the experts are the layer's adapters other than routers and gks_<n>; adapters that
  // joined later still get GenKnowSub.
  void follow_adapters(const LoraLayer& layer) {
    std::vector<std::string> now;
    for (const auto& item : layer.named_children()["lora_A"]->named_children()) {
      const std::string& name = item.key();
      const LoraVariant* v = layer.variant(name);
      if (name != kRouter && !dynamic_cast<const ArrowVariant*>(v) && !is_gks_name(name)) now.push_back(name);
    }
    std::vector<std::string> a = now, b = task_names_;
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    if (a == b) return;
    if (task_names_.size() < now.size())
      for (const auto& n : now)
        if (!std::count(task_names_.begin(), task_names_.end(), n)) gks_added_.push_back(n);
    task_names_ = now;
    prototypes_ = at::Tensor();
    if (task_names_.empty()) fail(ErrorKind::InvalidArgument, "the Arrow router has no task adapter to route to");
  }

  // GenKnowSub: the mean of the general adapters' A and B leaves every task adapter, once.
  void gen_know_sub(LoraLayer& layer) {
    if (!use_gks_ || (gks_done_ && gks_added_.empty())) return;
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> as, bs;
    for (const auto& name : gks_names_) {
      as.push_back(layer.lora_a(name));
      bs.push_back(layer.lora_b(name));
    }
    at::Tensor mean_a = at::stack(as).mean(0), mean_b = at::stack(bs).mean(0);
    for (const auto& name : gks_done_ ? gks_added_ : task_names_) {
      layer.lora_a(name).sub_(mean_a);
      layer.lora_b(name).sub_(mean_b);
    }
    gks_done_ = true;
    gks_added_.clear();
  }

  // Each expert's prototype: the top right singular vector of B·A by power iteration on Aᵀ(BᵀB)A, in f32.
  void build_prototypes(const LoraLayer& layer) {
    if (prototypes_.defined()) return;
    at::NoGradGuard no_grad;
    std::vector<at::Tensor> protos;
    for (const auto& name : task_names_) {
      at::Tensor a = layer.lora_a(name).to(at::kFloat), b = layer.lora_b(name).to(at::kFloat);
      at::Tensor c = at::matmul(b.t(), b);
      const double eps = 1e-8;
      at::Tensor v;
      if (rng_seed_) {
        at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(static_cast<uint64_t>(*rng_seed_));
        v = at::randn({a.size(1)}, generator, at::TensorOptions().dtype(at::kFloat)).to(a.device());
      } else {
        v = at::randn({a.size(1)}, a.options());
      }
      v = v / (v.norm() + eps);
      for (int i = 0; i < 15; ++i) {
        at::Tensor w = at::matmul(a.t(), at::matmul(c, at::matmul(a, v)));
        v = w / (w.norm() + eps);
      }
      protos.push_back(v.to(layer.lora_a(name).scalar_type()));
    }
    prototypes_ = at::stack(protos);
  }

  std::vector<std::string> task_names_, gks_names_, gks_added_;
  bool use_gks_, gks_done_ = false;
  int64_t top_k_;
  double temperature_;
  std::optional<int64_t> rng_seed_;
  at::Tensor prototypes_;  // [experts, in], PEFT's non-persistent buffer
};

std::shared_ptr<LoraVariant> make(LoraLayer& layer, const std::string&, const nlohmann::json& config,
                                  const std::string& key, bool) {
  auto variant = std::make_shared<ArrowVariant>(config["arrow_config"]);
  return variant;
}

void validate(nlohmann::json& config) {
  const nlohmann::json& sub = config["arrow_config"];
  if (!sub["top_k"].is_number_integer() || sub["top_k"].get<int64_t>() <= 0)
    fail(ErrorKind::InvalidArgument, "LORA config field 'arrow_config.top_k' must be positive, got " + sub["top_k"].dump());
  if (!sub["router_temperature"].is_number() || sub["router_temperature"].get<double>() <= 0)
    fail(ErrorKind::InvalidArgument, "LORA config field 'arrow_config.router_temperature' must be greater than 0, got " +
                                         sub["router_temperature"].dump());
  if (!sub["use_gks"].is_boolean())
    fail(ErrorKind::InvalidArgument, "LORA config field 'arrow_config.use_gks' must be true or false, got " +
                                         sub["use_gks"].dump());
  if (!sub["rng_seed"].is_null() && !sub["rng_seed"].is_number_integer())
    fail(ErrorKind::InvalidArgument, "LORA config field 'arrow_config.rng_seed' must be an integer or null, got " +
                                         sub["rng_seed"].dump());
  for (const char* field : {"task_adapter_names", "gks_adapter_names"}) {
    const auto& names = sub[field];
    if (!names.is_null() && (!names.is_array() || !std::all_of(names.begin(), names.end(), [](const nlohmann::json& n) {
                               return n.is_string();
                             })))
      fail(ErrorKind::InvalidArgument, std::string("LORA config field 'arrow_config.") + field +
                                           "' must be a list of adapter names, got " + names.dump());
  }
  // PEFT fills these in create_arrow_model; a router without them has nothing to route to.
  if (sub["task_adapter_names"].is_null() || sub["task_adapter_names"].empty())
    fail(ErrorKind::InvalidArgument, "LORA config field 'arrow_config.task_adapter_names' must name the task adapters "
                                     "the router routes to (create_arrow_model sets it)");
  if (sub["use_gks"].get<bool>() && (sub["gks_adapter_names"].is_null() || sub["gks_adapter_names"].empty()))
    fail(ErrorKind::InvalidArgument, "LORA config field 'arrow_config.gks_adapter_names' must name the general adapters "
                                     "when use_gks is true (create_arrow_model sets it)");
}

// The router reads its experts on every layer it wraps: they must be there, with the router's rank.
void check_with_existing(const nlohmann::json& config, const std::map<std::string, nlohmann::json>& existing) {
  if (!lora_field_is_set(config["arrow_config"])) return;
  const nlohmann::json& sub = config["arrow_config"];
  std::vector<std::string> needed = names_of(sub["task_adapter_names"]);
  for (const auto& g : names_of(sub["gks_adapter_names"])) needed.push_back(g);
  for (const auto& name : needed)
    if (!existing.count(name))
      fail(ErrorKind::InvalidArgument, "LORA config field 'arrow_config' names adapter '" + name + "', which the model "
                                       "does not carry; load the task (and general) adapters before the router");
}

[[maybe_unused]] const bool registered = [] {
  LoraVariantSpec spec{"arrow_config", kDefaults, validate, make};
  spec.check_with_existing = check_with_existing;
  return register_lora_variant(std::move(spec));
}();

}  // namespace

void create_arrow_model(PeftModel& model, const std::vector<std::string>& task_dirs, const nlohmann::json& arrow_config,
                        const std::vector<std::string>& general_dirs) {
  if (task_dirs.empty()) fail(ErrorKind::InvalidArgument, "create_arrow_model needs at least one task adapter directory");
  nlohmann::json sub = arrow_config.is_null() ? nlohmann::json::object() : arrow_config;
  std::vector<std::string> tasks, general;
  for (size_t i = 0; i < task_dirs.size(); ++i) {
    tasks.push_back("task_" + std::to_string(i));
    model.load_adapter(task_dirs[i], tasks.back());
  }
  sub["task_adapter_names"] = tasks;
  if (sub.value("use_gks", false)) {
    if (general_dirs.empty())
      fail(ErrorKind::InvalidArgument, "You should provide general LoRA paths if you want to use GenKnowSub.");
    for (size_t i = 0; i < general_dirs.size(); ++i) {
      general.push_back("gks_" + std::to_string(i));
      model.load_adapter(general_dirs[i], general.back());
    }
  }
  sub["gks_adapter_names"] = general;
  // PEFT's check_loaded_lora_compatibility_arrow and ensure_adapters_target_linear_layers_only.
  std::set<std::string> reference_modules;
  int64_t reference_r = -1;
  std::vector<std::string> all = tasks;
  all.insert(all.end(), general.begin(), general.end());
  for (const auto& name : all) {
    std::set<std::string> modules;
    int64_t r = -1;
    for (const auto& [path, base] : model.adapter_layers()) {
      if (!base->has_adapter(name)) continue;
      auto* layer = dynamic_cast<LoraLayer*>(base);
      if (!layer || layer->is_embedding())
        fail(ErrorKind::InvalidArgument, "Arrow: adapter '" + name + "' on module '" + path + "' is not a LoRA adapter of "
                                         "a Linear or Conv1D layer");
      modules.insert(path.substr(path.rfind('.') + 1));
      r = layer->rank(name);
    }
    if (reference_r < 0) {
      reference_modules = modules;
      reference_r = r;
    } else if (r != reference_r) {
      fail(ErrorKind::InvalidArgument, "Arrow: [" + name + "] rank mismatch: " + std::to_string(r) +
                                           " != " + std::to_string(reference_r));
    } else if (modules != reference_modules) {
      fail(ErrorKind::InvalidArgument, "Arrow: [" + name + "] target_modules mismatch with the first task adapter");
    }
  }
  nlohmann::json router = {{"peft_type", "LORA"}, {"r", reference_r}, {"arrow_config", sub},
                           {"target_modules", std::vector<std::string>(reference_modules.begin(), reference_modules.end())}};
  model.add_adapter(kRouter, router);
  model.set_adapter(kRouter);
}

}  // namespace peft4j::tuners
