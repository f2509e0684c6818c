// Compiled by the result_nodiscard test, never linked: a Status or Result
// that is thrown away (a `tx.commit();` whose failure nobody sees) must be a
// compiler warning. The test passes when the compiler says "nodiscard".
#include <punch/patcher/transaction.hpp>
#include <punch/result.hpp>

punch::Status check();
punch::Result<int> count();

void discards(punch::patcher::Transaction& tx) {
#ifdef PUNCH_DISCARD_COMMIT
  tx.commit();
#elif defined(PUNCH_DISCARD_STATUS)
  check();
#else
  count();
#endif
}
