#include "peft4j/files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "peft4j/error.h"
#include "peft4j/fault_injection.h"

namespace peft4j::io {

namespace {
std::string errno_text() { return std::strerror(errno); }

std::string parent_dir(const std::string& path) {
  auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}
}  // namespace

std::string read_text_file(const std::string& path) {
  if (is_directory(path)) fail(ErrorKind::InvalidArgument, "'" + path + "' is a directory, expected a file");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(ErrorKind::NotFound, "cannot open '" + path + "': " + errno_text());
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) fail(ErrorKind::Io, "cannot read '" + path + "': " + errno_text());
  return text.str();
}

nlohmann::json read_json_file(const std::string& path) {
  std::string text = read_text_file(path);
  // Deeper nesting than Python's json reads (its recursion limit, 1000) is refused: printing such a value into an
  // error message, as readers do, would recurse as deep and overflow the stack.
  nlohmann::json::parser_callback_t depth_check = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json&) {
    if ((event == nlohmann::json::parse_event_t::object_start || event == nlohmann::json::parse_event_t::array_start) &&
        depth >= 1000)
      fail(ErrorKind::Format, "'" + path + "' nests JSON deeper than 1000 levels");
    return true;
  };
  try {
    return nlohmann::json::parse(text, depth_check);
  } catch (const nlohmann::json::exception& e) {  // parse_error, or out_of_range for a number such as 1e999
    fail(ErrorKind::Format, "'" + path + "' is not valid JSON: " + e.what());
  }
}

bool is_directory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_regular_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string join_path(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : dir + "/" + name;
}

void make_directories(const std::string& dir) {
  if (is_directory(dir)) return;
  if (is_regular_file(dir)) fail(ErrorKind::InvalidArgument, "cannot save into '" + dir + "': it is a file");
  auto slash = dir.find_last_of('/');
  if (slash != std::string::npos && slash > 0) make_directories(dir.substr(0, slash));
  if (::mkdir(dir.c_str(), 0755) != 0 && !is_directory(dir)) fail(ErrorKind::Io, "cannot create directory '" + dir + "'");
}

void write_all(int fd, const void* data, size_t size, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(ErrorKind::Io, "cannot write '" + path + "': " + errno_text());
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
}

void write_file_atomic(const std::string& path, const std::function<void(int fd)>& write) {
  if (is_directory(path)) fail(ErrorKind::InvalidArgument, "cannot write '" + path + "': it is a directory");
  std::string dir = parent_dir(path);
  if (!is_directory(dir)) fail(ErrorKind::NotFound, "cannot write '" + path + "': directory '" + dir + "' does not exist");
  static std::atomic<unsigned> counter{0};
  std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail(ErrorKind::Io, "cannot create '" + tmp + "': " + errno_text());
  try {
    write(fd);
    if (::fsync(fd) != 0) fail(ErrorKind::Io, "cannot sync '" + tmp + "': " + errno_text());
    if (::close(fd) != 0) {
      fd = -1;
      fail(ErrorKind::Io, "cannot close '" + tmp + "': " + errno_text());
    }
    fd = -1;
    kill_point("atomic-rename", path);
    if (::rename(tmp.c_str(), path.c_str()) != 0)
      fail(ErrorKind::Io, "cannot rename '" + tmp + "' to '" + path + "': " + errno_text());
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  // The rename is durable only once the directory entry is.
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

void write_text_file_atomic(const std::string& path, const std::string& text) {
  write_file_atomic(path, [&](int fd) { write_all(fd, text.data(), text.size(), path); });
}

bool is_temporary_file_name(const std::string& name) {
  // Read from the end: <n>, '.', <pid>, then ".tmp." after a non-empty target name.
  auto digits_before = [&](size_t end) {
    size_t begin = end;
    while (begin > 0 && name[begin - 1] >= '0' && name[begin - 1] <= '9') --begin;
    return begin < end ? begin : std::string::npos;
  };
  const size_t counter = digits_before(name.size());
  if (counter == std::string::npos || counter < 1 || name[counter - 1] != '.') return false;
  const size_t pid = digits_before(counter - 1);
  const std::string marker = ".tmp.";
  return pid != std::string::npos && pid > marker.size() && name.compare(pid - marker.size(), marker.size(), marker) == 0;
}

}  // namespace peft4j::io
