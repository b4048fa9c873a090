#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "peft4j/error.h"
#include "peft4j/files.h"
#include "peft4j/safetensors.h"

namespace {

using peft4j::io::read_safetensors;
using peft4j::io::write_safetensors;

std::string temp_path(const std::string& name) {
  std::string dir = ::testing::TempDir();
  return peft4j::io::join_path(dir, "peft4j_" + std::to_string(::getpid()) + "_" + name);
}

TEST(SafeTensors, RoundTripsEveryDtype) {
  peft4j::io::TensorMap tensors;
  at::Tensor base = at::arange(-6, 6, at::kDouble).reshape({3, 4}) * 1.5;
  for (auto type : {at::kDouble, at::kFloat, at::kHalf, at::kBFloat16, at::kLong, at::kInt, at::kShort, at::kChar})
    tensors[std::string("t_") + c10::toString(type)] = base.to(type);
  tensors["u8"] = at::arange(0, 12, at::kByte).reshape({2, 6});
  tensors["bool"] = at::arange(0, 6, at::kLong).remainder(2).to(at::kBool);
  tensors["scalar"] = at::tensor(3.25f).reshape({});
  tensors["empty"] = at::zeros({0, 5});
  std::string path = temp_path("roundtrip.safetensors");
  write_safetensors(path, tensors, {{"format", "pt"}});
  peft4j::io::Metadata metadata;
  auto back = read_safetensors(path, &metadata);
  ASSERT_EQ(back.size(), tensors.size());
  EXPECT_EQ(metadata.at("format"), "pt");
  for (const auto& [name, t] : tensors) {
    ASSERT_TRUE(back.count(name)) << name;
    EXPECT_EQ(back[name].scalar_type(), t.scalar_type()) << name;
    EXPECT_EQ(back[name].sizes(), t.sizes()) << name;
    EXPECT_TRUE(at::equal(back[name], t)) << name;
  }
  // Tensors are copy-on-write views: writing to one never touches the file.
  back["t_Float"].fill_(0);
  EXPECT_TRUE(at::equal(read_safetensors(path)["t_Float"], tensors["t_Float"]));
  std::remove(path.c_str());
}

TEST(SafeTensors, HeaderIsPaddedToEightBytesAndDataFollows) {
  std::string path = temp_path("layout.safetensors");
  write_safetensors(path, {{"a", at::ones({3}, at::kFloat)}, {"b", at::ones({1}, at::kHalf)}});
  auto header = peft4j::io::read_safetensors_header(path);
  EXPECT_EQ(header.data_offset % 8, 0u);
  ASSERT_EQ(header.tensors.size(), 2u);
  EXPECT_EQ(header.tensors[0].name, "a");
  EXPECT_EQ(header.tensors[0].begin, 0u);  // larger elements first, as the reference writer orders them
  EXPECT_EQ(header.tensors[1].begin, 12u);
  std::remove(path.c_str());
}

TEST(SafeTensors, RejectsCorruptionWithFileAndTensorNames) {
  std::string path = temp_path("corrupt.safetensors");
  auto write_raw = [&](const std::string& header, size_t data_bytes) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    uint64_t n = header.size();
    out.write(reinterpret_cast<const char*>(&n), 8);
    out << header << std::string(data_bytes, '\0');
  };
  write_raw(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"v":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12);
  try {
    read_safetensors(path);
    FAIL() << "overlap accepted";
  } catch (const peft4j::Error& e) {
    EXPECT_EQ(e.kind(), peft4j::ErrorKind::Format);
    std::string message = e.what();
    EXPECT_NE(message.find(path), std::string::npos) << message;
    EXPECT_NE(message.find("overlaps"), std::string::npos) << message;
  }
  // Out of double's range (found by fuzzing): refused as invalid JSON, not an uncaught nlohmann::out_of_range.
  write_raw(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,1e7777]}})", 8);
  EXPECT_THROW(read_safetensors(path), peft4j::Error);
  write_raw(R"({"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", 8);
  EXPECT_THROW(read_safetensors(path), peft4j::Error);
  write_raw(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8);
  EXPECT_THROW(read_safetensors(path), peft4j::Error);
  std::remove(path.c_str());
}

TEST(SafeTensors, DeeplyNestedHeaderValuesAreRefusedNotPrinted) {
  // A shape dimension nested a million arrays deep: printing it into a message would recurse as deep (a crash).
  std::string path = temp_path("nested.safetensors");
  const size_t depth = 1000000;
  std::string header = R"({"w":{"dtype":"F32","data_offsets":[0,0],"shape":[)" + std::string(depth, '[') +
                       std::string(depth, ']') + "]}}";
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    uint64_t n = header.size();
    out.write(reinterpret_cast<const char*>(&n), 8);
    out << header;
  }
  try {
    read_safetensors(path);
    FAIL() << "a nested shape accepted";
  } catch (const peft4j::Error& e) {
    EXPECT_NE(std::string(e.what()).find("header nests JSON deeper than 1000 levels"), std::string::npos)
        << std::string(e.what()).substr(0, 300);
  }
  std::remove(path.c_str());
}

TEST(SafeTensors, FailedWriteLeavesThePreviousFile) {
  std::string path = temp_path("keep.safetensors");
  write_safetensors(path, {{"a", at::ones({2})}});
  // A tensor with no safetensors dtype fails while writing: the old file must survive intact.
  EXPECT_THROW(write_safetensors(path, {{"a", at::zeros({2})}, {"c", at::ones({2}, at::kComplexFloat)}}), peft4j::Error);
  EXPECT_TRUE(at::equal(read_safetensors(path)["a"], at::ones({2})));
  std::remove(path.c_str());
}

}  // namespace
