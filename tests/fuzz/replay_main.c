/* main() for the fuzz targets outside libFuzzer (the normal gcc build): runs the target
 * once on each file named on the command line, as libFuzzer does when given files. A
 * crash (or a sanitizer report in a sanitizer build) fails the run; anything the reader
 * rejects with an error message is a pass. Used by CTest to replay regression inputs. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv) {
    LLVMFuzzerInitialize(&argc, &argv);
    for (int i = 1; i < argc; i++) {
        FILE *f = fopen(argv[i], "rb");
        if (!f) {
            perror(argv[i]);
            return 1;
        }
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        uint8_t *buf = malloc(n > 0 ? (size_t)n : 1);
        size_t got = n > 0 ? fread(buf, 1, (size_t)n, f) : 0;
        fclose(f);
        if ((long)got != n) {
            fprintf(stderr, "%s: short read\n", argv[i]);
            return 1;
        }
        LLVMFuzzerTestOneInput(buf, got);
        free(buf);
        printf("replayed %s (%ld bytes)\n", argv[i], n);
    }
    return 0;
}
