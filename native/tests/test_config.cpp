// The config surface every method shares: defaults filled from the method's one table, typed reads without
// fallbacks, unknown fields dropped with PEFT's warning, and one tuner per peft_type.
#include <gtest/gtest.h>

#include <vector>

#include "golden_testing.h"
#include "peft4j/error.h"
#include "peft4j/tuners/config.h"
#include "peft4j/tuners/tuner.h"
#include "peft4j/warnings.h"

namespace {

using golden_testing::expect_error;
using peft4j::ErrorKind;
namespace tuners = peft4j::tuners;

// Collects the warnings given while it lives.
class CapturedWarnings {
 public:
  CapturedWarnings() {
    previous_ = peft4j::set_warning_handler([this](const std::string& m) { messages.push_back(m); });
  }
  ~CapturedWarnings() { peft4j::set_warning_handler(previous_); }
  std::vector<std::string> messages;

 private:
  peft4j::WarningHandler previous_;
};

TEST(Config, NormalizeFillsEveryDefaultOfTheMethod) {
  auto config = tuners::tuner_for("LORA").normalize_config({{"peft_type", "LORA"}, {"target_modules", {"q_proj"}}});
  EXPECT_EQ(config["r"], 8);
  EXPECT_EQ(config["lora_alpha"], 8);
  EXPECT_EQ(config["init_lora_weights"], true);
  EXPECT_EQ(config["target_modules"], nlohmann::json({"q_proj"}));
}

TEST(Config, UnknownFieldIsDroppedWithAWarningNamingIt) {
  CapturedWarnings warnings;
  auto config = tuners::tuner_for("LORA").normalize_config(
      {{"peft_type", "LORA"}, {"target_modules", {"q_proj"}}, {"lora_rank", 4}, {"future_option", true}});
  EXPECT_FALSE(config.contains("lora_rank"));
  EXPECT_FALSE(config.contains("future_option"));
  ASSERT_EQ(warnings.messages.size(), 1u);
  EXPECT_NE(warnings.messages[0].find("LORA"), std::string::npos) << warnings.messages[0];
  EXPECT_NE(warnings.messages[0].find("'lora_rank'"), std::string::npos) << warnings.messages[0];
  EXPECT_NE(warnings.messages[0].find("'future_option'"), std::string::npos) << warnings.messages[0];
}

TEST(Config, NormalizedConfigsGiveNoWarning) {
  for (const auto& type : tuners::registered_tuners()) {
    const auto& tuner = tuners::tuner_for(type);
    // The smallest config the method takes: none, or target modules.
    nlohmann::json config;
    for (const nlohmann::json& input : {nlohmann::json{{"peft_type", type}},
                                        nlohmann::json{{"peft_type", type}, {"target_modules", {"q_proj"}}}}) {
      try {
        CapturedWarnings quiet;
        config = tuner.normalize_config(input);
        break;
      } catch (const peft4j::Error&) {
      }
    }
    if (config.is_null()) continue;  // the method needs more fields; its own tests cover them
    // A normalised config holds the method's fields only (every default included): normalising it again is silent.
    CapturedWarnings warnings;
    EXPECT_EQ(tuner.normalize_config(config), config) << type;
    EXPECT_TRUE(warnings.messages.empty()) << type << ": " << warnings.messages.front();
  }
}

TEST(Config, TypedReadsNameTheField) {
  const nlohmann::json config = {{"peft_type", "LORA"}, {"r", "eight"}, {"lora_dropout", nullptr}, {"bias", "x"}};
  expect_error([&] { tuners::config_int(config, "r"); }, ErrorKind::InvalidArgument, "LORA config field 'r'");
  expect_error([&] { tuners::config_double(config, "lora_dropout"); }, ErrorKind::InvalidArgument, "'lora_dropout'");
  expect_error([&] { tuners::config_choice(config, "bias", {"none", "all"}); }, ErrorKind::InvalidArgument,
               "must be \"none\" or \"all\", got \"x\"");
  // A field the method's defaults table lacks is a bug in peft4j, not in the user's config.
  expect_error([&] { tuners::config_bool(config, "use_dora"); }, ErrorKind::Internal, "'use_dora'");
}

TEST(Registry, RefusesASecondTunerForAPeftType) {
  const tuners::Tuner& lora = tuners::tuner_for("LORA");
  expect_error([&] { tuners::register_tuner(std::shared_ptr<const tuners::Tuner>(&lora, [](const tuners::Tuner*) {})); },
               ErrorKind::Internal, "'LORA' is registered twice");
  EXPECT_EQ(&tuners::tuner_for("LORA"), &lora);
}

}  // namespace
