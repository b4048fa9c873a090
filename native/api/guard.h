// The facade's exception boundary: every C++ exception leaves as std::runtime_error("KIND: message").
#pragma once

#include <c10/util/Exception.h>

#include <stdexcept>
#include <string>

#include "peft4j/error.h"
#include "peft4j/runtime.h"

namespace peft4j::api {

template <typename F>
auto guard(F&& body) -> decltype(body()) {
  try {
    runtime::init();
    return body();
  } catch (const Error& e) {
    throw std::runtime_error(std::string(error_kind_name(e.kind())) + ": " + e.what());
  } catch (const c10::Error& e) {
    // what_without_backtrace: the C++ stack of libtorch means nothing to a Java user.
    throw std::runtime_error(std::string("TORCH: ") + e.what_without_backtrace());
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("INTERNAL: ") + e.what());
  } catch (...) {
    throw std::runtime_error("INTERNAL: unknown native exception");
  }
}

}  // namespace peft4j::api
