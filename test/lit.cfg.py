# -*- Python -*-
# lit configuration of the kvq test suite.

import os
import shutil

import lit.formats
from lit.llvm import llvm_config

config.name = "kvq"
config.test_format = lit.formats.ShTest(not llvm_config.use_lit_shell)
config.suffixes = [".mlir", ".test"]
config.excludes = ["CMakeLists.txt", "lit.cfg.py", "lit.site.cfg.py"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.kvq_obj_root, "test")

# Captured variables are local to a CHECK-LABEL block unless prefixed by $.
config.environment["FILECHECK_OPTS"] = "--enable-var-scope --dump-input=fail"

llvm_config.use_default_substitutions()
llvm_config.with_environment("PATH", config.llvm_tools_dir, append_path=True)
llvm_config.add_tool_substitutions(
    ["kvq-opt", "kvq-translate", "kvq-cache", "kvq-run", "kvq-calibrate", "kvq-demo", "kvq-eval", "kvq-gpu-bench", "kvq-fuzz", "kvq-emulator-bench"], [config.kvq_tools_dir])
llvm_config.add_tool_substitutions(
    ["FileCheck", "not", "count"], [config.llvm_tools_dir])

config.substitutions.append(("%kvq_obj_root", config.kvq_obj_root))
config.substitutions.append(("%kvq_src_root", config.kvq_src_root))
config.substitutions.append(("%cmake", config.cmake_command))

# Features: nvrtc when the toolkit's nvrtc library exists, cuda when a driver
# library exists (tests marked REQUIRES: cuda are reported unsupported here).
def have_library(name):
    for d in ["/usr/lib/x86_64-linux-gnu", "/usr/local/cuda/lib64", "/usr/lib64",
              "/usr/local/cuda/targets/x86_64-linux/lib"]:
        if os.path.exists(os.path.join(d, name)):
            return True
    return False

if have_library("libnvrtc.so") or have_library("libnvrtc.so.13"):
    config.available_features.add("nvrtc")
if have_library("libcuda.so.1"):
    config.available_features.add("cuda")

# redis: a redis-server the README's test command (scripts/test.sh) started
# for this run, as host:port in KVQ_TEST_REDIS.
if os.environ.get("KVQ_TEST_REDIS"):
    config.available_features.add("redis")
    config.environment["KVQ_TEST_REDIS"] = os.environ["KVQ_TEST_REDIS"]
    redis_host, redis_port = os.environ["KVQ_TEST_REDIS"].rsplit(":", 1)
    config.substitutions.append(("%{redis_host}", redis_host))
    config.substitutions.append(("%{redis_port}", redis_port))
    config.substitutions.append(("%redis", os.environ["KVQ_TEST_REDIS"]))


# tmpfs: a private mount namespace can mount a small tmpfs (unshare -rm), so
# tests can fill a real filesystem (test/Tools/full-disk.test).
import subprocess
try:
    if subprocess.run(["unshare", "-rm", "sh", "-c",
                       "mount -t tmpfs -o size=16k tmpfs /tmp"],
                      capture_output=True, timeout=10).returncode == 0:
        config.available_features.add("tmpfs")
except (OSError, subprocess.TimeoutExpired):
    pass
