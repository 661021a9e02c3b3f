//===- EmulatorShim.h - private to the emulator -----------------*- C++ -*-===//

#ifndef KVQ_RUNTIME_EMULATORSHIM_H
#define KVQ_RUNTIME_EMULATORSHIM_H

namespace kvq::emu {
/// Text of kvq_emulator_shim.h (see EmulatorShim.cpp).
const char *shimSource();
} // namespace kvq::emu

#endif // KVQ_RUNTIME_EMULATORSHIM_H
