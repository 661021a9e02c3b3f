//===- Version.cpp - libkvq.so's own translation unit ---------------------===//
//
// libkvq.so is the runtime archive linked whole; this file only gives the
// shared library a version symbol of its own.

extern "C" const char *kvq_version() { return "0.1.0"; }
