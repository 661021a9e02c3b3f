//===- EmulatorShim.h - private to the emulator -----------------*- C++ -*-===//

#ifndef KVQ_RUNTIME_EMULATORSHIM_H
#define KVQ_RUNTIME_EMULATORSHIM_H

namespace kvq::emu {
/// Text of emulator/kvq_emulator_shim.h, embedded at build time.
const char *shimSource();
/// Text of emulator/kvq_emulator_abi.h, which the shim includes.
const char *shimAbiSource();
} // namespace kvq::emu

#endif // KVQ_RUNTIME_EMULATORSHIM_H
