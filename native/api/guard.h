// The facade's exception boundary: every C++ exception leaves as std::runtime_error("KIND: message"). Every call
// also takes its share of the intra-op threads (runtime::ThreadShare).
#pragma once

#include <stdexcept>
#include <string>

#include "peft4j/error.h"
#include "peft4j/runtime.h"

namespace peft4j::api {

template <typename F>
auto guard(F&& body) -> decltype(body()) {
  try {
    runtime::init();
    runtime::ThreadShare share;
    return body();
  } catch (const Error& e) {
    throw std::runtime_error(std::string(error_kind_name(e.kind())) + ": " + e.what());
  } catch (const std::bad_alloc&) {
    throw std::runtime_error("INTERNAL: out of memory");
  } catch (const std::exception& e) {
    // The core raises only peft4j::Error on purpose; anything else came from libtorch (c10::Error, or the
    // std::runtime_error that Debian's build throws from TORCH_CHECK). Drop any C++ backtrace in the message.
    std::string message = e.what();
    auto backtrace = message.find("\nException raised from");
    if (backtrace != std::string::npos) message.resize(backtrace);
    throw std::runtime_error("TORCH: " + message);
  } catch (...) {
    throw std::runtime_error("INTERNAL: unknown native exception");
  }
}

}  // namespace peft4j::api
