// PUNCH_ASAN: defined when the test is built with AddressSanitizer (gcc or clang).
#pragma once

#if defined(__SANITIZE_ADDRESS__)
#define PUNCH_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PUNCH_ASAN 1
#endif
#endif
