// PEFT's LoraVariant (peft/tuners/lora/variants.py): what makes one adapter of a LoRA layer depart from plain LoRA
// (aLoRA, BD-LoRA, KaSA, VeLoRA, MonteCLoRA, Arrow). The layer keeps A, B, the scaling and the dropout of every
// adapter; a variant adds its own tensors when the adapter is added (into AdapterDicts of the layer, so that parameter
// names and saved keys equal PEFT's) and replaces the adapter's forward, ΔW and merging. Each variant lives in its
// own file pair and registers the LoraConfig field that asks for it; an adapter has at most one variant, as PEFT
// resolves them (DoRA, `use_dora`, counts as one and is built into LoraLayer).
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "peft4j/models/model.h"

namespace peft4j::tuners {

class LoraLayer;
struct AdapterState;

class LoraVariant {
 public:
  virtual ~LoraVariant() = default;
  // The adapter's contribution: `result` (the base output plus the adapters before it) -> the adapted result.
  virtual at::Tensor forward(LoraLayer& layer, const std::string& adapter, const at::Tensor& x,
                             const at::Tensor& result) = 0;
  // ΔW in the base weight's layout, scaling included; the default is plain LoRA's scaling·B·A.
  virtual at::Tensor delta_weight(const LoraLayer& layer, const std::string& adapter) const;
  // Why the adapter cannot be folded into the base weight; empty when it can (merging then adds delta_weight).
  virtual std::string merge_refusal() const { return ""; }
  // Why a mixed batch (one adapter per row) cannot route rows to the adapter; empty when it can.
  virtual std::string mixed_batch_refusal() const { return ""; }
};

// How a variant is built for one adapter on one layer, its tensors initialised (`initialise` false: the adapter's
// weights are loaded right after, so random draws may be skipped, but state derived from the base weight is not).
// `key` is the layer's module path relative to the base model.
using LoraVariantFactory = std::function<std::shared_ptr<LoraVariant>(
    LoraLayer& layer, const std::string& adapter, const nlohmann::json& config, const std::string& key, bool initialise)>;

struct LoraVariantSpec {
  std::string field;  // the LoraConfig field that asks for the variant ("kasa_config", "alora_invocation_tokens", ...)
  // A sub-config's fields with PEFT's defaults: a given object is completed with them, as PEFT's dataclass would be
  // (then saved that way). Null for a field that is a plain value.
  nlohmann::json defaults;
  // The field's rules on the normalised config (defaults filled), each error naming the field.
  std::function<void(nlohmann::json& config)> validate;
  LoraVariantFactory make;
  bool on_embedding = false;  // PEFT's lora.Embedding resolves only DoRA and MiCA
  // Optional model-level hooks of the LoRA tuner (Tuner::before_forward for adapters with this variant, and
  // Tuner::check_with_existing for every new LoRA adapter, with or without it).
  std::function<void(const std::string& adapter, const nlohmann::json& config, const models::ModelInputs& inputs,
                     const at::Tensor& rows, AdapterState& state)>
      before_forward{};
  std::function<void(const nlohmann::json& config, const std::map<std::string, nlohmann::json>& existing)>
      check_with_existing{};
};

// Each variant's .cpp registers itself from a static initialiser; a second spec for a field is Error(Internal).
bool register_lora_variant(LoraVariantSpec spec);
const std::vector<LoraVariantSpec>& lora_variants();

// Whether a LoraConfig field asks for its variant: PEFT's bool() of the value after its sub-config conversion (a
// sub-config given as an object, even {}, is a dataclass instance and true; null, false and [] are false).
bool lora_field_is_set(const nlohmann::json& value);

// Completes and checks every registered variant field of a normalised LoraConfig, and refuses a config that asks
// for more than one variant (use_dora included) as PEFT does.
void check_lora_variants(nlohmann::json& config);

// The spec of the variant `config` asks for, or nullptr for plain LoRA or DoRA.
const LoraVariantSpec* requested_lora_variant(const nlohmann::json& config);

}  // namespace peft4j::tuners
