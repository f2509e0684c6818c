// Differential execution in Unicorn: run original bytes at A and relocated
// bytes at B from the same registers and memory, and compare what they did.
// Header-only so fuzz/fuzz_relocate.cpp shares it with the tests.
#pragma once

#include <sys/prctl.h>
#include <unicorn/unicorn.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace punch::test {

//! Why Unicorn cannot run in this process, or empty when it can: its JIT maps
//! write+execute memory, which PR_SET_MDWE (MemoryDenyWriteExecute) refuses.
inline std::string unicorn_refused_here() {
  const int mdwe = ::prctl(66 /* PR_GET_MDWE */, 0L, 0L, 0L, 0L);
  if (mdwe > 0 && (mdwe & 1 /* PR_MDWE_REFUSE_EXEC_GAIN */))
    return "Unicorn's JIT needs write+execute memory, which PR_SET_MDWE refuses in this process";
  return {};
}

//! Registers compared between the runs (rip is compared as the exit point).
struct CpuState {
  std::uint64_t gpr[16] = {};  //!< rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8..r15 (encoding order).
  std::uint64_t rflags = 0x202;
  std::uint8_t xmm[16][16] = {};
};

//! Memory both runs start from: code at A and B, optional data, a stack.
//! Code pages are mapped read+execute, as punch's code is in a real process:
//! a run that writes into them (self-modifying code) faults and is out of
//! scope, because relocation moves instructions, not the bytes at A that they
//! may rewrite (the original would execute its rewritten bytes, the copy at B
//! would not). Reading the code at A stays allowed and compared.
//! The copy's pages at B exist only in the relocated run: to the original they
//! are fresh memory it cannot know about (mapped with no access, so touching
//! them stops the original run, out of scope, before Unicorn ever translates
//! the copy's bytes from a misaligned entry).
struct Layout {
  std::uint64_t a = 0;
  std::vector<std::uint8_t> original;  //!< Bytes at a (may extend past the run: the code after it).
  std::uint64_t b = 0;
  std::vector<std::uint8_t> relocated;  //!< Bytes at b.
  std::uint64_t data = 0;
  std::vector<std::uint8_t> data_bytes;
};

inline constexpr std::uint64_t kStackTop = 0x70000000;
inline constexpr std::uint64_t kStackSize = 0x10000;
inline constexpr std::uint64_t kFlagsMask = 0xCD5;  // CF PF AF ZF SF OF DF.
//! The return address waiting on the stack: unmapped, so a `ret` leaves the run there.
inline constexpr std::uint64_t kReturnSentinel = 0x7e000000;

//! What one run did.
struct Outcome {
  bool completed = false;  //!< Control left the run; otherwise `failure` says why.
  std::string failure;
  std::uint64_t exit = 0;  //!< Where control left the run.
  CpuState cpu;
  std::map<std::uint64_t, std::uint8_t> written;  //!< Final value of every byte the run changed.
  std::uint64_t steps = 0;
  bool wrote_code = false;    //!< Stopped by a write into a code page (self-modifying code: out of scope).
  bool touched_copy = false;  //!< The original stopped touching the copy's pages (out of scope).
};

inline std::string hex(std::uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

//! "48 8b 05 ..." for failure messages.
inline std::string hex_dump(const std::vector<std::uint8_t>& bytes) {
  std::string out;
  for (std::uint8_t b : bytes) {
    char buf[4];
    std::snprintf(buf, sizeof buf, "%02x ", b);
    out += buf;
  }
  return out;
}

namespace detail {

inline const int kGprIds[16] = {UC_X86_REG_RAX, UC_X86_REG_RCX, UC_X86_REG_RDX, UC_X86_REG_RBX,
                                UC_X86_REG_RSP, UC_X86_REG_RBP, UC_X86_REG_RSI, UC_X86_REG_RDI,
                                UC_X86_REG_R8,  UC_X86_REG_R9,  UC_X86_REG_R10, UC_X86_REG_R11,
                                UC_X86_REG_R12, UC_X86_REG_R13, UC_X86_REG_R14, UC_X86_REG_R15};

struct RunContext {
  std::uint64_t begin, end, max_steps;
  std::uint64_t copy_begin, copy_end;  //!< The copy's pages, when they are off limits (the original run).
  Outcome* out;
  int lazy_pages = 0;
  bool fetched_unmapped = false;
};

inline void on_code(uc_engine* uc, std::uint64_t address, std::uint32_t, void* user) {
  auto* ctx = static_cast<RunContext*>(user);
  if (address < ctx->begin || address >= ctx->end) {
    ctx->out->completed = true;
    ctx->out->exit = address;
    uc_emu_stop(uc);
    return;
  }
  if (++ctx->out->steps > ctx->max_steps) {
    ctx->out->failure = "step limit";
    uc_emu_stop(uc);
  }
}

// Copies the part of `bytes` (at `address`) that overlaps [begin, begin + into.size()) into `into`.
inline void overlay(std::vector<std::uint8_t>& into, std::uint64_t begin, std::uint64_t address,
                    const std::uint8_t* bytes, std::size_t size) {
  for (std::size_t i = 0; i < size; ++i)
    if (address + i >= begin && address + i - begin < into.size()) into[address + i - begin] = bytes[i];
}

// Every byte of a writable page that differs from what the page started as
// (zeros, the data bytes, the return sentinel). Memory is compared after the
// run instead of hooking writes: a write hook moves Unicorn onto its slow
// memory path, where it computed a different CF for identical instructions
// at A and at B (`shr byte [rbp+0x23], cl` in Unicorn 2.0.1).
inline void collect_changes(uc_engine* uc, const Layout& layout, const CpuState& init, Outcome& out) {
  uc_mem_region* regions = nullptr;
  std::uint32_t count = 0;
  if (uc_mem_regions(uc, &regions, &count) != UC_ERR_OK) return;
  for (std::uint32_t r = 0; r < count; ++r) {
    if (!(regions[r].perms & UC_PROT_WRITE)) continue;  // Code: writes fault (see Layout).
    const std::uint64_t begin = regions[r].begin;
    std::vector<std::uint8_t> before(regions[r].end - begin + 1, 0), now(before.size());
    overlay(before, begin, layout.data, layout.data_bytes.data(), layout.data_bytes.size());
    overlay(before, begin, init.gpr[4], reinterpret_cast<const std::uint8_t*>(&kReturnSentinel), 8);
    if (uc_mem_read(uc, begin, now.data(), now.size()) != UC_ERR_OK) continue;
    for (std::size_t i = 0; i < now.size(); ++i)
      if (now[i] != before[i]) out.written[begin + i] = now[i];
  }
  uc_free(regions);
}

// A write into a read+execute code page, or the original touching the copy's
// pages: stop, and say which (see Layout).
inline bool on_protected(uc_engine*, uc_mem_type, std::uint64_t address, int, std::int64_t, void* user) {
  auto* ctx = static_cast<RunContext*>(user);
  if (address >= ctx->copy_begin && address < ctx->copy_end) {
    ctx->out->touched_copy = true;
    ctx->out->failure = "the original touched " + hex(address) + ", in the copy's pages (out of scope)";
  } else {
    ctx->out->wrote_code = true;
    ctx->out->failure = "wrote code at " + hex(address) + " (self-modifying code is out of scope)";
  }
  return false;
}

// Data the run touches outside the known regions reads as zero pages (the
// same in both runs); a fetch from unmapped memory is control leaving the run.
inline bool on_unmapped(uc_engine* uc, uc_mem_type type, std::uint64_t address, int, std::int64_t, void* user) {
  auto* ctx = static_cast<RunContext*>(user);
  if (type == UC_MEM_FETCH_UNMAPPED) {
    ctx->fetched_unmapped = true;
    ctx->out->exit = address;
    return false;
  }
  if (++ctx->lazy_pages > 32) return false;
  return uc_mem_map(uc, address & ~0xFFFull, 0x1000, UC_PROT_ALL) == UC_ERR_OK;
}

// Maps the pages under `bytes` with `prot` (a page already mapped keeps its protection) and fills them.
inline bool place(uc_engine* uc, std::uint64_t address, const std::vector<std::uint8_t>& bytes, std::uint32_t prot) {
  if (bytes.empty()) return true;
  for (std::uint64_t page = address & ~0xFFFull; page < address + bytes.size(); page += 0x1000) {
    const uc_err e = uc_mem_map(uc, page, 0x1000, prot);
    if (e != UC_ERR_OK && e != UC_ERR_MAP) return false;
  }
  return uc_mem_write(uc, address, bytes.data(), bytes.size()) == UC_ERR_OK;
}

}  // namespace detail

//! Runs from `start` until control leaves [begin, end), a fault, or `max_steps`
//! instructions. The run is the relocated one when `begin` is layout.b.
inline Outcome emulate(const Layout& layout, std::uint64_t start, std::uint64_t begin, std::uint64_t end,
                       const CpuState& init, std::uint64_t max_steps) {
  Outcome out;
  uc_engine* uc = nullptr;
  if (uc_open(UC_ARCH_X86, UC_MODE_64, &uc) != UC_ERR_OK) {
    out.failure = "uc_open failed";
    return out;
  }
  const bool copy_runs = begin == layout.b;
  const std::uint64_t copy_pages = layout.b & ~0xFFFull;
  const std::uint64_t copy_pages_end = (layout.b + layout.relocated.size() + 0xFFF) & ~0xFFFull;
  detail::RunContext ctx{begin, end, max_steps, copy_runs ? 0 : copy_pages, copy_runs ? 0 : copy_pages_end,
                         &out,  0,   false};
  bool ok = uc_mem_map(uc, kStackTop - kStackSize, kStackSize + 0x1000, UC_PROT_READ | UC_PROT_WRITE) == UC_ERR_OK;
  // Code first: a data page that shares a page with code stays read+execute.
  constexpr std::uint32_t kCode = UC_PROT_READ | UC_PROT_EXEC;
  ok = ok && detail::place(uc, layout.a, layout.original, kCode);
  if (copy_runs)
    ok = ok && detail::place(uc, layout.b, layout.relocated, kCode);
  else if (copy_pages_end > copy_pages)
    ok = ok && uc_mem_map(uc, copy_pages, copy_pages_end - copy_pages, UC_PROT_NONE) == UC_ERR_OK;
  ok = ok && detail::place(uc, layout.data, layout.data_bytes, UC_PROT_READ | UC_PROT_WRITE);
  ok = ok && uc_mem_write(uc, init.gpr[4], &kReturnSentinel, sizeof kReturnSentinel) == UC_ERR_OK;
  for (int i = 0; ok && i < 16; ++i) ok = uc_reg_write(uc, detail::kGprIds[i], &init.gpr[i]) == UC_ERR_OK;
  ok = ok && uc_reg_write(uc, UC_X86_REG_EFLAGS, &init.rflags) == UC_ERR_OK;
  for (int i = 0; ok && i < 16; ++i) ok = uc_reg_write(uc, UC_X86_REG_XMM0 + i, init.xmm[i]) == UC_ERR_OK;
  uc_hook code_hook, unmapped_hook, protected_hook;
  ok = ok &&
       uc_hook_add(uc, &code_hook, UC_HOOK_CODE, reinterpret_cast<void*>(detail::on_code), &ctx, 1, 0) == UC_ERR_OK;
  ok = ok && uc_hook_add(uc, &unmapped_hook, UC_HOOK_MEM_UNMAPPED, reinterpret_cast<void*>(detail::on_unmapped), &ctx,
                         1, 0) == UC_ERR_OK;
  ok = ok && uc_hook_add(uc, &protected_hook, UC_HOOK_MEM_PROT, reinterpret_cast<void*>(detail::on_protected), &ctx, 1,
                         0) == UC_ERR_OK;
  if (!ok) {
    out.failure = "emulator setup failed";
    uc_close(uc);
    return out;
  }
  // `until` is a non-canonical address no run reaches; the hooks decide when to stop.
  const uc_err e = uc_emu_start(uc, start, ~0ull, 0, 0);
  if (e != UC_ERR_OK) {
    if (ctx.fetched_unmapped)
      out.completed = true;  // Left the run for unmapped code: out.exit is set.
    else if (out.failure.empty())
      out.failure = uc_strerror(e);
  } else if (!out.completed && out.failure.empty()) {
    out.failure = "emulation stopped inside the run";
  }
  for (int i = 0; i < 16; ++i) uc_reg_read(uc, detail::kGprIds[i], &out.cpu.gpr[i]);
  uc_reg_read(uc, UC_X86_REG_EFLAGS, &out.cpu.rflags);
  out.cpu.rflags &= kFlagsMask;
  for (int i = 0; i < 16; ++i) {
    std::uint8_t buf[64] = {};
    uc_reg_read(uc, UC_X86_REG_XMM0 + i, buf);
    std::memcpy(out.cpu.xmm[i], buf, 16);
  }
  detail::collect_changes(uc, layout, init, out);
  uc_close(uc);
  return out;
}

//! Empty when the original run can be compared with a relocated copy at
//! [b, b_end), else why not: it did not finish (a fault, an endless loop, a
//! write into a code page), or it left the run for an address inside the
//! copy's range. In a process the copy lives in fresh memory that no existing
//! branch targets; here the original would exit there while the copy keeps
//! running its own bytes, which says nothing about relocation.
inline std::string out_of_scope(const Outcome& original, std::uint64_t b, std::uint64_t b_end) {
  if (!original.completed) return original.failure;
  if (original.exit >= b && original.exit <= b_end)
    return "the original left the run for " + hex(original.exit) + ", inside the copy's range";
  return {};
}

//! Empty when the relocated run behaved like the original, else what differs.
//! Control leaving the relocated bytes at their end (b_end) is the original
//! falling through to a_end; the return address a final call pushes (b_end for
//! `call rel32`, b_end - 10 for the absolute form, whose `jmp +8` then reaches
//! b_end) stands for a_end.
inline std::string compare(const Outcome& original, Outcome relocated, std::uint64_t a_end, std::uint64_t b_end) {
  if (!relocated.completed) return "relocated run did not complete: " + relocated.failure;
  const std::uint64_t exit = relocated.exit == b_end ? a_end : relocated.exit;
  if (exit != original.exit)
    return "exit " + hex(relocated.exit) + " (as original " + hex(exit) + ") != original exit " + hex(original.exit);
  const std::uint64_t rsp = relocated.cpu.gpr[4];
  auto qword = [](const std::map<std::uint64_t, std::uint8_t>& m, std::uint64_t at) {
    std::uint64_t v = 0;
    for (int i = 7; i >= 0; --i) {
      auto it = m.find(at + i);
      v = (v << 8) | (it == m.end() ? 0 : it->second);
    }
    return v;
  };
  const std::uint64_t pushed = qword(relocated.written, rsp);
  if ((pushed == b_end || pushed == b_end - 10) && qword(original.written, rsp) == a_end) {
    for (std::uint64_t i = 0; i < 8; ++i) {  // Take the original's view of those 8 bytes (rsp + i may wrap).
      const std::uint64_t at = rsp + i;
      auto it = original.written.find(at);
      if (it != original.written.end())
        relocated.written[at] = it->second;
      else
        relocated.written.erase(at);
    }
  }
  static const char* const names[16] = {"rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
                                        "r8",  "r9",  "r10", "r11", "r12", "r13", "r14", "r15"};
  for (int i = 0; i < 16; ++i)
    if (original.cpu.gpr[i] != relocated.cpu.gpr[i])
      return std::string(names[i]) + " " + hex(relocated.cpu.gpr[i]) + " != original " + hex(original.cpu.gpr[i]);
  if (original.cpu.rflags != relocated.cpu.rflags)
    return "rflags " + hex(relocated.cpu.rflags) + " != original " + hex(original.cpu.rflags);
  for (int i = 0; i < 16; ++i)
    if (std::memcmp(original.cpu.xmm[i], relocated.cpu.xmm[i], 16) != 0) return "xmm" + std::to_string(i) + " differs";
  if (original.written != relocated.written) {
    for (const auto& [addr, value] : original.written) {
      auto it = relocated.written.find(addr);
      if (it == relocated.written.end()) return "original changed " + hex(addr) + ", relocated did not";
      if (it->second != value) return "byte at " + hex(addr) + " differs";
    }
    return "relocated changed bytes the original did not";
  }
  return {};
}

//! Registers that mostly point into `data` (so memory operands hit it) with a small rcx (loops end).
inline CpuState random_state(std::mt19937_64& rng, std::uint64_t data, std::size_t data_size) {
  CpuState s;
  for (int i = 0; i < 16; ++i) {
    switch (rng() % 4) {
      case 0: s.gpr[i] = rng(); break;
      case 1: s.gpr[i] = rng() % 16; break;
      default: s.gpr[i] = data + rng() % (data_size > 256 ? data_size - 256 : 1); break;
    }
  }
  s.gpr[1] = rng() % 8;           // rcx: loop counts stay small.
  s.gpr[4] = kStackTop - 0x1000;  // rsp: room both ways (red zone, pushes).
  s.rflags = 0x202 | (rng() & 0x8D5);
  for (auto& x : s.xmm)
    for (auto& b : x) b = static_cast<std::uint8_t>(rng());
  return s;
}

}  // namespace punch::test
