// Tests of one write method skip where the host cannot run it, saying why.
// Under MDWE the mprotect method is refused by design: its error must name
// MDWE (that refusal is the behaviour under test there); any other reason
// is still a skip with the error as the reason.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include <punch/runtime/code_writer.hpp>
#include <punch/runtime/probe.hpp>

//! `created` is CodeWriter::create(method); returns from the test (skipped) when it failed.
#define PUNCH_SKIP_IF_METHOD_UNAVAILABLE(method, created)                                                   \
  do {                                                                                                      \
    if (created) break;                                                                                     \
    if ((method) == ::punch::runtime::WriteMethod::kMprotect && ::punch::runtime::probe().mdwe) {           \
      ASSERT_NE((created).error().message.find("MDWE"), std::string::npos) << (created).error().describe(); \
    }                                                                                                       \
    GTEST_SKIP() << "method unavailable on this host: " << (created).error().describe();                    \
  } while (0)
