#include <punch/runtime/fork_safe_mutex.hpp>

#include <pthread.h>

#include <algorithm>
#include <vector>

namespace punch::runtime {
namespace {

// The registry itself is locked first by the prepare handler and released last.
struct Registry {
  std::mutex mutex;
  std::vector<ForkSafeMutex*> members;
};

Registry& registry() {
  static Registry* r = [] {
    auto* created = new Registry;  // Never destroyed: atfork handlers may run during exit.
    pthread_atfork(
        [] {
          Registry& reg = registry();
          reg.mutex.lock();
          // Outermost rank first: the order in which code nests these locks.
          std::vector<ForkSafeMutex*> order = reg.members;
          std::stable_sort(order.begin(), order.end(),
                           [](ForkSafeMutex* a, ForkSafeMutex* b) { return a->rank() < b->rank(); });
          for (ForkSafeMutex* m : order) m->lock();
        },
        [] {
          Registry& reg = registry();
          for (ForkSafeMutex* m : reg.members) m->unlock();
          reg.mutex.unlock();
        },
        [] {
          Registry& reg = registry();
          for (ForkSafeMutex* m : reg.members) m->unlock();
          reg.mutex.unlock();
        });
    return created;
  }();
  return *r;
}

}  // namespace

ForkSafeMutex::ForkSafeMutex(LockRank rank) : rank_(rank) {
  Registry& reg = registry();
  std::lock_guard guard(reg.mutex);
  reg.members.push_back(this);
}

ForkSafeMutex::~ForkSafeMutex() {
  Registry& reg = registry();
  std::lock_guard guard(reg.mutex);
  std::erase(reg.members, this);
}

}  // namespace punch::runtime
