#pragma once
// Kept so that tests written against the old name still build: the file
// helpers now live in test_util.hpp with the others.
#include "test_util.hpp"
