// ink::Error and INK_CHECK: the one way inkgrad reports a mistake a user can make.
// Every message names the op and every shape or value involved, e.g.
//   matmul: shapes [64, 96] and [128, 256] cannot be multiplied (96 != 128)
#pragma once

#include <stdexcept>
#include <string>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace ink {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace ink

// INK_CHECK(condition, "op: format {}", args...) throws ink::Error with the formatted message.
// Use it for anything a user can cause; it is never compiled out.
#define INK_CHECK(cond, ...)                          \
  do {                                                \
    if (!(cond)) [[unlikely]] {                       \
      throw ::ink::Error(::fmt::format(__VA_ARGS__)); \
    }                                                 \
  } while (0)

// INK_FAIL("op: ...", args...) throws unconditionally.
#define INK_FAIL(...) throw ::ink::Error(::fmt::format(__VA_ARGS__))
