#!/bin/sh
# Builds benchmarks/read_bench (shard read throughput, an MPI program) against a CMake
# build directory's static libraries, with the HDF5 and MPI that CMake found:
#   sh benchmarks/build_read_bench.sh [BUILD_DIR]   (default build-perf)
set -e
ROOT=$(cd "$(dirname "$0")/.." && pwd)
B=${1:-$ROOT/build-perf}
cmake --build "$B" -j2 --target av_io av_dist av_base >/dev/null
cache() { sed -n "s/^$1:[A-Z]*=//p" "$B/CMakeCache.txt"; }
# av_io's include flags (HDF5, MPI headers) exactly as CMake compiles io/
INC=$(sed -n 's/^C_INCLUDES = //p' "$B/CMakeFiles/av_io.dir/flags.make")
HDF5=$(cache HDF5_C_LIBRARY_hdf5)
MPI=$(cache MPI_mpi_LIBRARY)
RPATH=$(dirname "$HDF5"):$(dirname "$MPI")
# shellcheck disable=SC2086
${CC:-cc} -O2 -g -std=c11 -fopenmp -D_GNU_SOURCE -Wall -Wextra -Werror $INC \
    "$ROOT/benchmarks/read_bench.c" -o "$B/read_bench" \
    "$B/libav_io.a" "$B/libav_dist.a" "$B/libav_base.a" \
    "$HDF5" "$(cache LZF_LIB)" "$(cache ZLIB_LIBRARY_RELEASE)" "$MPI" -lm \
    -Wl,-rpath,"$RPATH"
echo "$B/read_bench"
