// Helpers shared by the test files: checking the wording of an ink::Error, and restoring the
// thread count a test changed.
#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "tensor/error.h"
#include "tensor/parallel.h"

namespace ink::testing_util {

// The message of the ink::Error that fn throws, or a marker if it throws none.
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no ink::Error thrown)";
}

// Expects fn to throw an ink::Error whose message contains `text`.
template <typename Fn>
void expect_error(Fn&& fn, const std::string& text) {
  EXPECT_THAT(error_of(fn), ::testing::HasSubstr(text));
}

// Restores the thread count a test changed.
class ThreadCountGuard {
 public:
  ThreadCountGuard() : saved_(get_num_threads()) {}
  ~ThreadCountGuard() { set_num_threads(saved_); }
  ThreadCountGuard(const ThreadCountGuard&) = delete;
  ThreadCountGuard& operator=(const ThreadCountGuard&) = delete;

 private:
  int saved_;
};

}  // namespace ink::testing_util
