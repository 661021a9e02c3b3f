//===- Version.cpp - libkvq.so's own translation unit ---------------------===//
//
// libkvq.so is the runtime archive linked whole; this file only gives the
// shared library a version symbol of its own.

#include "kvq/Version.h"

extern "C" const char *kvq_version() { return KVQ_VERSION; }
