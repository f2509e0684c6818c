#include "code_events.hpp"

namespace punch::runtime::code_events {
namespace {

// The registry first, so a tool that looks names up already finds the new code.
const Sink* const kSinks[] = {
    &kRegistrySink, &kUnwindSink, &kGdbSink, &kPerfMapSink, &kJitdumpSink,
};

}  // namespace

void code_added(std::span<const AddedCode> batch) noexcept {
  if (batch.empty()) return;
  for (const Sink* sink : kSinks) sink->added(batch);
}

void code_released(std::span<const ReleasedCode> batch) noexcept {
  if (batch.empty()) return;
  for (auto it = std::rbegin(kSinks); it != std::rend(kSinks); ++it) (*it)->released(batch);
}

}  // namespace punch::runtime::code_events
