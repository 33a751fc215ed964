#!/usr/bin/env bash
# Classifies a fuzz target's crash report (the log of one run): prints
#   CLASS | SUMMARY | TOP FRAME | FIRST ATLASVI FRAME
# CLASS: "none" (no report), "libhdf5" (the innermost frame below the sanitizer runtime
# lies in libhdf5: HDF5's own handling of a corrupt file, Debian's 1.10.8 here, which no
# change in atlasvi can fix; see docs/fuzzing.md) or "atlasvi" (everything else: a frame
# of io/, src/, models/, an UBSan report in atlasvi's code, the targets' own checks, an
# out-of-memory from av_malloc, ...). usage: classify.sh LOG [SOURCE_ROOT]
set -uo pipefail
log=$1 root=${2:-$(cd "$(dirname "$0")/../.." && pwd)}
sum=$(grep -m1 -E "^SUMMARY|ERROR: libFuzzer|fuzz: .* left [0-9]+ HDF5|runtime error:|Live leak|ERROR: LeakSanitizer" "$log" | cut -c1-160)
if [ -z "$sum" ]; then
    echo "none | | |"
    exit 0
fi
# innermost frame that is not the sanitizer/libFuzzer runtime or libc
top=$(grep -E "^ +#[0-9]+ 0x" "$log" |
    grep -vE " in (__interceptor_|__asan|__sanitizer|__ubsan|__lsan|fuzzer::|malloc|calloc|realloc|free|operator|__libc|__GI_|raise|abort|__memcpy|__memmove|memcpy|memmove|memset|strlen|strdup|__strdup|printf|vsnprintf)" |
    grep -vE "compiler-rt|libFuzzer|sanitizer_common|libc\.so|libstdc\+\+" | head -1 |
    sed -E 's/^ +#[0-9]+ 0x[0-9a-f]+ in //' | cut -c1-110)
ours=$(grep -E "^ +#[0-9]+ .* in .*$root/(io|src|models|dist)/" "$log" | head -1 |
    sed -E "s|^ +#[0-9]+ 0x[0-9a-f]+ in ||; s|$root/||" | cut -c1-110)
class=atlasvi
if grep -q "libhdf5" <<<"$top" && ! grep -qE "runtime error: .*$root/|fuzz: .* left" <<<"$sum"; then
    class=libhdf5
fi
# an RSS-limit OOM prints the largest live allocations, not a stack: libhdf5's when any
# of them comes from it and none from atlasvi's code
if grep -q "out-of-memory (used:" <<<"$sum" && grep -q "libhdf5" "$log" && [ -z "$ours" ]; then
    class=libhdf5
fi
echo "$class | $sum | ${top:-?} | ${ours:--}"
