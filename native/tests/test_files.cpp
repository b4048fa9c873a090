// The shared file helpers: JSON files nested too deep to print safely, and the names of atomic writes' temporary
// files, which a trainer starting in an output dir removes.
#include <fstream>

#include "golden_testing.h"
#include "peft4j/files.h"

namespace {

using golden_testing::expect_error;

TEST(JsonFiles, NestingDeeperThanPythonReadsIsRefused) {
  const std::string path = golden_testing::temp_dir("nested.json");
  std::ofstream(path) << R"({"vocab_size": )" << std::string(100000, '[') << std::string(100000, ']') << "}";
  expect_error([&] { peft4j::io::read_json_file(path); }, peft4j::ErrorKind::Format,
               "'" + path + "' nests JSON deeper than 1000 levels");
  // A number beyond double's range: nlohmann reports it as out_of_range, not as a parse error (found by fuzzing).
  std::ofstream(path) << R"({"r": 222222e2222222222222222222222222})";
  expect_error([&] { peft4j::io::read_json_file(path); }, peft4j::ErrorKind::Format, "is not valid JSON: ");
  std::ofstream(path) << R"({"a": )" << std::string(900, '[') << std::string(900, ']') << "}";
  EXPECT_TRUE(peft4j::io::read_json_file(path).is_object());
  std::remove(path.c_str());
}

TEST(AtomicWrites, TemporaryFileNamesAreRecognised) {
  using peft4j::io::is_temporary_file_name;
  EXPECT_TRUE(is_temporary_file_name("adapter_model.safetensors.tmp.4242.0"));
  EXPECT_TRUE(is_temporary_file_name("metrics.json.tmp.17.12"));
  EXPECT_TRUE(is_temporary_file_name(".write-probe.tmp.9.0"));
  for (const std::string name : {"adapter_model.safetensors", ".tmp.1.2", "a.tmp.1.", "a.tmp..2", "a.tmp.x.2",
                                  "notes.tmp", "a.tmp.1", "a.tmp1.2"})
    EXPECT_FALSE(is_temporary_file_name(name)) << name;
}

}  // namespace
