// Small file helpers shared by every reader and writer: whole-file reads with clear errors, and atomic
// writes (temporary file in the same directory, fsync, rename, fsync of the directory).
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>

namespace peft4j::io {

std::string read_text_file(const std::string& path);
nlohmann::json read_json_file(const std::string& path);  // Error(Format) naming the file and the parse error

bool is_directory(const std::string& path);
bool is_regular_file(const std::string& path);
std::string join_path(const std::string& dir, const std::string& name);
// Creates `dir` and its missing parents; Error(InvalidArgument) when it is a file, Error(Io) when it cannot be made.
void make_directories(const std::string& dir);

// Calls `write(fd)` on a temporary file beside `path`, then makes it `path` atomically. If `write` throws,
// the temporary file is removed and `path` is untouched. `write` uses write_all().
void write_file_atomic(const std::string& path, const std::function<void(int fd)>& write);
void write_all(int fd, const void* data, size_t size, const std::string& path);
void write_text_file_atomic(const std::string& path, const std::string& text);

// Whether `name` (a file name, no directory) is one of write_file_atomic's temporary files,
// "<target>.tmp.<pid>.<n>": what a process killed while writing leaves behind.
bool is_temporary_file_name(const std::string& name);

}  // namespace peft4j::io
