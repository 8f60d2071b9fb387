# Cross-compiling for 64-bit Arm Linux with Debian's cross compiler and the
# arm64 libraries installed through multiarch (dpkg --add-architecture arm64):
# they live in /usr/lib/aarch64-linux-gnu, so no sysroot is needed, and
# programs run under qemu-user (used by CTest and by gtest's test discovery).
# scripts/aarch64_check.sh installs all of it.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64)
# Libraries and headers for the target only; build tools from the host.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
