#pragma once
// The golden-fixture helpers (expect_close, tensor_from, fixture_path) live in
// test_util.hpp with the other shared test helpers; this name stays for the
// tests that include it.
#include "test_util.hpp"
