# -*- Python -*-
# Runs the gtest binaries of test/unit, one lit result per gtest case.

import lit.formats

config.name = "kvq-unit"
config.test_source_root = config.kvq_unit_test_dir
config.test_exec_root = config.kvq_unit_test_dir
config.test_format = lit.formats.GoogleTest(".", "-tests")

# The redis-server scripts/test.sh started for RemoteCacheTest.
import os
if os.environ.get("KVQ_TEST_REDIS"):
    config.environment["KVQ_TEST_REDIS"] = os.environ["KVQ_TEST_REDIS"]
