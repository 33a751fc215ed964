/* Bad inputs: every failure returns non-zero with one line naming the file, the dataset
 * or key and what was expected; `atlasvi info` prints "atlasvi: error: ..." and exits 1.
 * argv[1]: a scratch folder (created). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/input.h"
#include "src/util.h"

static int failures = 0;

/* err must be one line containing every needle (NULL-terminated list). */
static void expect(const char *what, int rc, const char *err, const char *const *needles) {
    if (rc == 0) {
        printf("FAIL %s: succeeded, expected an error\n", what);
        failures++;
        return;
    }
    if (strchr(err, '\n')) {
        printf("FAIL %s: message spans lines: %s\n", what, err);
        failures++;
    }
    for (int i = 0; needles[i]; i++)
        if (!strstr(err, needles[i])) {
            printf("FAIL %s: '%s' not in: %s\n", what, needles[i], err);
            failures++;
        }
    printf("ok   %s: %s\n", what, err);
}

static int open_fails(const char *path, const char *layer, char *err) {
    AvInput in;
    if (av_input_open(&in, path, layer, err)) return -1;
    /* Opening may succeed on a damaged file; reading everything must then fail. */
    AvCsr m;
    int rc = av_input_read_rows(&in, 0, in.n_obs, &m, err);
    if (!rc) rc = av_input_read_names(&in, err);
    if (!rc) av_csr_free(&m);
    av_input_close(&in);
    return rc;
}

static int copy_prefix(const char *src, const char *dst, double frac) {
    FILE *a = fopen(src, "rb"), *b = fopen(dst, "wb");
    if (!a || !b) return -1;
    fseek(a, 0, SEEK_END);
    long n = ftell(a);
    fseek(a, 0, SEEK_SET);
    long keep = (long)(n * frac);
    char *buf = av_malloc((size_t)keep);
    size_t got = fread(buf, 1, (size_t)keep, a);
    fwrite(buf, 1, got, b);
    free(buf);
    fclose(a);
    fclose(b);
    return 0;
}

/* Runs `atlasvi info ARGS`; checks exit code 1 and one stderr line "atlasvi: error: ...". */
static void cli_case(const char *bin, const char *dir, const char *args, const char *needle) {
    char cmd[4096], errf[2048], line[2048];
    snprintf(errf, sizeof errf, "%s/info_stderr.txt", dir);
    snprintf(cmd, sizeof cmd, "'%s' info %s >/dev/null 2>'%s'", bin, args, errf);
    int st = system(cmd);
    int code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    FILE *f = fopen(errf, "r");
    int lines = 0, good = 0;
    while (f && fgets(line, sizeof line, f)) {
        lines++;
        if (!strncmp(line, "atlasvi: error: ", 16) && strstr(line, needle)) good = 1;
    }
    if (f) fclose(f);
    if (code != 1 || lines != 1 || !good) {
        printf("FAIL atlasvi info %s: exit %d, %d stderr lines (want 1 with '%s')\n", args, code,
               lines, needle);
        failures++;
    } else {
        printf("ok   atlasvi info %s -> exit 1\n", args);
    }
}

int main(int argc, char **argv) {
    const char *data = getenv("AV_DATA");
    const char *dir = argc > 1 ? argv[1] : "io_bad";
    char heart[2048], path[8192], err[AV_ERRLEN];
    struct stat sb;
    snprintf(heart, sizeof heart, "%s/heart_hca_fibro_endo_320x136.h5ad", data ? data : "");
    if (!data || stat(heart, &sb) != 0) {
        printf("SKIP: shared data not found (AV_DATA=%s)\n", data ? data : "unset");
        return 77;
    }
    mkdir(dir, 0755);

    /* Missing file. */
    snprintf(path, sizeof path, "%s/does_not_exist.h5ad", dir);
    expect("missing file", open_fails(path, NULL, err), err,
           (const char *[]){"does_not_exist.h5ad", "No such file", NULL});

    /* Not an HDF5 file. */
    snprintf(path, sizeof path, "%s/not_hdf5.h5ad", dir);
    FILE *f = fopen(path, "w");
    fprintf(f, "cell,gene\nA,1\n");
    fclose(f);
    expect("not HDF5", open_fails(path, NULL, err), err,
           (const char *[]){"not_hdf5.h5ad", "not an HDF5 file", NULL});

    /* Truncated copies of shared files (h5ad, 10x h5, loom). */
    const char *shared[] = {
        "heart_hca_fibro_endo_320x136.h5ad", "real_pbmc_kang18_ctrlstim_1556x1267.h5ad",
        "starmap_mpfc_3704x158.loom", "tenx_v3_chr21/filtered_feature_bc_matrix.h5"};
    for (int i = 0; i < 4; i++) {
        char src[2048], what[256];
        snprintf(src, sizeof src, "%s/%s", data, shared[i]);
        snprintf(path, sizeof path, "%s/truncated_%d_%s", dir, i,
                 strrchr(shared[i], '/') ? strrchr(shared[i], '/') + 1 : shared[i]);
        copy_prefix(src, path, 0.5);
        snprintf(what, sizeof what, "truncated %s", shared[i]);
        expect(what, open_fails(path, NULL, err), err,
               (const char *[]){"truncated_", "truncated", NULL});
    }

    /* Missing layer, missing obs key. */
    expect("missing layer", open_fails(heart, "counts", err), err,
           (const char *[]){"heart_hca", "layer 'counts'", "layers/counts", "raw", NULL});
    AvInput in;
    if (av_input_open(&in, heart, NULL, err)) {
        printf("FAIL open heart: %s\n", err);
        failures++;
    } else {
        AvColumn c;
        expect("missing obs key", av_input_read_obs_column(&in, "batch_nope", &c, err), err,
               (const char *[]){"heart_hca", "batch_nope", "donor_id", "cell_type_ontology_term_id",
                                NULL});
        AvCsr m;
        expect("rows out of range", av_input_read_rows(&in, 10, 400, &m, err), err,
               (const char *[]){"heart_hca", "400", "320", NULL});
        av_input_close(&in);
    }

    /* Missing 10x feature type, MuData file, Matrix Market folder without its files. */
    snprintf(path, sizeof path, "%s/pbmc_gse164378_rna50_adt30_200cells_10x.h5", data);
    expect("missing feature type", open_fails(path, "CRISPR Guide Capture", err), err,
           (const char *[]){"gse164378", "CRISPR Guide Capture", "Antibody Capture", NULL});
    snprintf(path, sizeof path, "%s/pbmc10k_multiome_1000cells.h5mu", data);
    expect("h5mu", open_fails(path, NULL, err), err, (const char *[]){"h5mu", "/mod", "rna", NULL});
    expect("empty folder", open_fails(dir, NULL, err), err,
           (const char *[]){dir, "matrix.mtx", NULL});

    /* Truncated Matrix Market. */
    char mdir[1024];
    snprintf(mdir, sizeof mdir, "%.900s/mex_trunc", dir);
    mkdir(mdir, 0755);
    const char *names[] = {"features.tsv.gz", "barcodes.tsv.gz", "matrix.mtx.gz"};
    for (int i = 0; i < 3; i++) {
        char src[4096];
        snprintf(src, sizeof src, "%s/tenx_v3_chr21/filtered_feature_bc_matrix/%s", data, names[i]);
        snprintf(path, sizeof path, "%s/%s", mdir, names[i]);
        copy_prefix(src, path, i == 2 ? 0.5 : 1.0);
    }
    expect("truncated matrix.mtx.gz", open_fails(mdir, NULL, err), err,
           (const char *[]){"matrix.mtx.gz", "truncated", NULL});

    /* Unsupported filter: a fixture with filter 32015 (zstd) in X/data's pipeline. */
    char fx[1024], cmd[8192];
    snprintf(fx, sizeof fx, "%.900s/fixtures", dir);
    const char *src = getenv("AV_SRC");
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c 'import h5py, numpy, scipy' 2>/dev/null && rm -rf '%s' && "
             "/usr/bin/python3 '%s/tests/make_io_expected.py' --fixtures '%s'",
             fx, src ? src : ".", fx);
    if (system(cmd) == 0) {
        snprintf(path, sizeof path, "%s/filter32015.h5ad", fx);
        expect("unsupported filter", open_fails(path, NULL, err), err,
               (const char *[]){"filter32015.h5ad", "X/data", "32015", "zstd", "gzip", NULL});
        snprintf(path, sizeof path, "%s/tenx_v2.h5", fx);
        expect("10x v2 needs a genome", open_fails(path, NULL, err), err,
               (const char *[]){"tenx_v2.h5", "hg19", "mm10", NULL});
    } else {
        printf(
            "skip unsupported-filter case: /usr/bin/python3 with h5py, numpy, scipy not found\n");
    }

    /* The CLI: one error line, exit code 1. */
    const char *bin = getenv("AV_BIN");
    if (bin && stat(bin, &sb) == 0) {
        char args[4096];
        snprintf(args, sizeof args, "'%s/not_hdf5.h5ad'", dir);
        cli_case(bin, dir, args, "not an HDF5 file");
        snprintf(args, sizeof args, "'%s/truncated_0_heart_hca_fibro_endo_320x136.h5ad'", dir);
        cli_case(bin, dir, args, "truncated");
        snprintf(args, sizeof args, "'%s' --layer counts", heart);
        cli_case(bin, dir, args, "layer 'counts'");
        cli_case(bin, dir, "", "no file");
        snprintf(cmd, sizeof cmd, "'%s' info '%s' > '%s/info_ok.txt'", bin, heart, dir);
        int st = system(cmd);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            printf("FAIL atlasvi info on a good file exited %d\n", st);
            failures++;
        }
    } else {
        printf("skip CLI cases: AV_BIN not set or atlasvi not built\n");
    }

    if (failures) {
        printf("%d failure(s)\n", failures);
        return 1;
    }
    printf("all passed\n");
    return 0;
}
