//===- RuntimeLog.h - KVQ_LOG=1 messages ------------------------*- C++ -*-===//

#ifndef KVQ_RUNTIME_RUNTIMELOG_H
#define KVQ_RUNTIME_RUNTIMELOG_H

#include <string>

namespace kvq {
/// Writes "kvq: <message>" to stderr when KVQ_LOG is set (and not "0").
void logLine(const std::string &message);
} // namespace kvq

#endif // KVQ_RUNTIME_RUNTIMELOG_H
