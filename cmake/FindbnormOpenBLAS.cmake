# OpenBLAS itself, as the imported target bnorm::openblas: bnorm calls
# openblas_set_num_threads, so no other BLAS will do. Debian's
# OpenBLASConfig.cmake only sets variables, so the library is looked up by
# name. bnorm's build uses this module, and so does its installed package,
# for the users of the static library.
find_library(OPENBLAS_LIB NAMES openblas)
include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(bnormOpenBLAS REQUIRED_VARS OPENBLAS_LIB)
if(bnormOpenBLAS_FOUND AND NOT TARGET bnorm::openblas)
  add_library(bnorm::openblas UNKNOWN IMPORTED)
  set_target_properties(bnorm::openblas PROPERTIES IMPORTED_LOCATION "${OPENBLAS_LIB}")
endif()
