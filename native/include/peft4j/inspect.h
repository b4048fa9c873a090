// A readable listing of a safetensors file, an HF model directory or a PEFT adapter directory.
#pragma once

#include <string>

namespace peft4j::io {

// One line per tensor ("name  DTYPE  [d0, d1]"), preceded by the config fields of a model or adapter
// directory and followed by a total. Throws peft4j::Error naming the file and the problem on bad input.
std::string inspect(const std::string& path);

}  // namespace peft4j::io
