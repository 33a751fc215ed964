/* The simulator (src/simulate.h): chunking-independent output, realistic statistics,
 * calibration; and `atlasvi simulate` end to end when argv[1] names the binary. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "io/output.h"
#include "src/simulate.h"
#include "src/util.h"
#include "tests/test_output_util.h"

static char dir[1024];
static const char *pathf(const char *name) {
    static char buf[4][1200];
    static int k = 0;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static int same_csr(const AvCsr *a, const AvCsr *b) {
    if (a->n_rows != b->n_rows || a->n_cols != b->n_cols) return 0;
    if (memcmp(a->indptr, b->indptr, (size_t)(a->n_rows + 1) * sizeof *a->indptr)) return 0;
    int64_t nnz = av_csr_nnz(a);
    return !memcmp(a->indices, b->indices, (size_t)nnz * sizeof *a->indices) &&
           !memcmp(a->data, b->data, (size_t)nnz * sizeof *a->data);
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* In memory: the same cells whatever the chunking; statistics in range. */
static void test_generator(void) {
    char err[AV_ERRLEN] = "";
    AvSimParams p;
    av_sim_defaults(&p);
    p.seed = 7;
    AvSim *s = av_sim_create(&p, err);
    TU_CHECK(s != NULL, "%s", err);
    if (!s) return;
    const int64_t n = 3000;
    AvCsr whole, parts[3];
    int32_t b1[3000], t1[3000], b2[3000], t2[3000];
    TU_CHECK(av_sim_cells(s, 0, n, &whole, b1, t1, err) == 0, "%s", err);
    int64_t cut[4] = {0, 1000, 2501, n};
    for (int i = 0; i < 3; i++)
        av_sim_cells(s, cut[i], cut[i + 1], &parts[i], b2 + cut[i], t2 + cut[i], err);
    int same = !memcmp(b1, b2, sizeof b1) && !memcmp(t1, t2, sizeof t1);
    for (int i = 0; i < 3 && same; i++) {
        int64_t off = whole.indptr[cut[i]];
        for (int64_t r = 0; r <= parts[i].n_rows && same; r++)
            same = whole.indptr[cut[i] + r] == parts[i].indptr[r] + off;
        int64_t nnz = av_csr_nnz(&parts[i]);
        same = same &&
               !memcmp(whole.indices + off, parts[i].indices, (size_t)nnz * sizeof(int32_t)) &&
               !memcmp(whole.data + off, parts[i].data, (size_t)nnz * sizeof(float));
    }
    TU_CHECK(same, "chunked generation equals one pass");
    for (int i = 0; i < 3; i++) av_csr_free(&parts[i]);

    /* statistics */
    int64_t nnz = av_csr_nnz(&whole);
    double sparsity = 1.0 - (double)nnz / ((double)n * (double)p.n_genes);
    double *lib = calloc((size_t)n, sizeof *lib);
    int integral = 1, sorted = 1;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = whole.indptr[i]; j < whole.indptr[i + 1]; j++) {
            lib[i] += whole.data[j];
            integral &= whole.data[j] >= 1 && whole.data[j] == floorf(whole.data[j]);
            sorted &= j == whole.indptr[i] || whole.indices[j] > whole.indices[j - 1];
        }
    qsort(lib, (size_t)n, sizeof *lib, cmp_d);
    printf("generator: sparsity %.3f, library size p5 %.0f median %.0f p95 %.0f\n", sparsity,
           lib[n / 20], lib[n / 2], lib[n - n / 20]);
    TU_CHECK(sparsity > 0.78 && sparsity < 0.95, "sparsity %.3f", sparsity);
    TU_CHECK(lib[n / 2] > 1500 && lib[n / 2] < 6000, "median library size %.0f", lib[n / 2]);
    TU_CHECK(lib[n - n / 20] / lib[n / 20] > 2.5, "library sizes spread (log-normal)");
    TU_CHECK(integral && sorted, "whole positive counts, sorted indices");
    int seen_b[4] = {0}, seen_t[10] = {0}, all = 1;
    for (int64_t i = 0; i < n; i++) seen_b[b1[i]]++, seen_t[t1[i]]++;
    for (int i = 0; i < 4; i++) all &= seen_b[i] > 0;
    for (int i = 0; i < 10; i++) all &= seen_t[i] > 0;
    TU_CHECK(all, "every batch and cell type present");

    /* batch effect: normalised gene means differ between batches (same cell type) far
     * more than between two halves of one batch */
    int k0 = 0;
    for (int k = 1; k < 10; k++) k0 = seen_t[k] > seen_t[k0] ? k : k0;
    int64_t G = p.n_genes;
    double *mean[3];
    int64_t cnt[3] = {0, 0, 0};
    for (int a = 0; a < 3; a++) mean[a] = calloc((size_t)G, sizeof(double));
    int64_t half_b0 = 0;
    for (int64_t i = 0; i < n; i++) {
        if (t1[i] != k0 || b1[i] > 1) continue;
        int a = b1[i] == 1 ? 2 : (half_b0++ % 2);
        double l = 0;
        for (int64_t j = whole.indptr[i]; j < whole.indptr[i + 1]; j++) l += whole.data[j];
        for (int64_t j = whole.indptr[i]; j < whole.indptr[i + 1]; j++)
            mean[a][whole.indices[j]] += whole.data[j] / l;
        cnt[a]++;
    }
    double d_same = 0, d_batch = 0;
    int used = 0;
    for (int64_t g = 0; g < G; g++) {
        double m0 = mean[0][g] / cnt[0], m1 = mean[1][g] / cnt[1], m2 = mean[2][g] / cnt[2];
        if (m0 < 1e-3 || m1 < 1e-3 || m2 < 1e-3) continue; /* well-measured genes */
        d_same += fabs(log(m0 / m1));
        d_batch += fabs(log(0.5 * (m0 + m1) / m2));
        used++;
    }
    printf("generator: %d genes, |log ratio| within batch %.3f, between batches %.3f\n", used,
           d_same / used, d_batch / used);
    TU_CHECK(used > 20 && d_batch > 2.0 * d_same, "batches separated");
    for (int a = 0; a < 3; a++) free(mean[a]);

    /* another seed, other data */
    AvSimParams q = p;
    q.seed = 8;
    AvSim *s2 = av_sim_create(&q, err);
    AvCsr other;
    av_sim_cells(s2, 0, 100, &other, NULL, NULL, err);
    AvCsr head = whole;
    head.n_rows = 100;
    TU_CHECK(!same_csr(&head, &other), "seed changes the data");
    av_csr_free(&other);
    av_sim_free(s2);

    /* calibration recovers library sizes and gene shares of its input */
    AvSimCalib cal;
    TU_CHECK(av_sim_calibrate(&whole, &cal, err) == 0, "%s", err);
    TU_CHECK(fabs(cal.median_libsize / lib[n / 2] - 1) < 0.01, "calibrated median %.0f vs %.0f",
             cal.median_libsize, lib[n / 2]);
    TU_CHECK(cal.libsize_sdlog > 0.3 && cal.libsize_sdlog < 1.0, "sdlog %.2f", cal.libsize_sdlog);
    double psum = 0;
    int thetas_ok = 1;
    for (int64_t g = 0; g < G; g++) {
        psum += cal.gene_props[g];
        thetas_ok &= cal.gene_theta[g] >= 0.05 && cal.gene_theta[g] <= 1000;
    }
    TU_CHECK(fabs(psum - 1) < 0.05 && thetas_ok, "gene shares sum %.3f", psum);
    AvSimParams c = p;
    c.gene_props = cal.gene_props;
    c.gene_theta = cal.gene_theta;
    c.median_libsize = cal.median_libsize;
    AvSim *s3 = av_sim_create(&c, err);
    TU_CHECK(s3 != NULL, "%s", err);
    av_sim_free(s3);
    av_sim_calib_free(&cal);
    AvCsr bad = whole;
    float keep = whole.data[0];
    whole.data[0] = 1.5f;
    TU_CHECK(av_sim_calibrate(&bad, &cal, err) != 0 && strstr(err, "whole"), "%s", err);
    whole.data[0] = keep;
    free(lib);
    av_csr_free(&whole);
    av_sim_free(s);
}

/* Streams n cells in chunks through the CSR writer, as `atlasvi simulate` does. */
static int stream(const char *path, int64_t n, int64_t chunk, char *err) {
    AvSimParams p;
    av_sim_defaults(&p);
    p.n_cells = n;
    p.n_genes = 500;
    p.seed = 3;
    AvSim *s = av_sim_create(&p, err);
    AvCsrWriter *w = av_csr_writer_create(path, p.n_genes, NULL, err);
    int32_t *b = malloc((size_t)n * sizeof *b), *t = malloc((size_t)n * sizeof *t);
    int rc = 0;
    for (int64_t lo = 0; lo < n && !rc; lo += chunk) {
        int64_t hi = lo + chunk < n ? lo + chunk : n;
        AvCsr m;
        rc = av_sim_cells(s, lo, hi, &m, b + lo, t + lo, err) || av_csr_writer_append(w, &m, err);
        av_csr_free(&m);
    }
    static char *bc[] = {"batch_0", "batch_1", "batch_2", "batch_3"};
    static char *tc[] = {"type_0", "type_1", "type_2", "type_3", "type_4",
                         "type_5", "type_6", "type_7", "type_8", "type_9"};
    AvColumn cols[2];
    memset(cols, 0, sizeof cols);
    cols[0] = (AvColumn){.name = "batch",
                         .kind = AV_COL_CATEGORICAL,
                         .n = n,
                         .codes = b,
                         .n_categories = 4,
                         .categories = bc};
    cols[1] = (AvColumn){.name = "cell_type",
                         .kind = AV_COL_CATEGORICAL,
                         .n = n,
                         .codes = t,
                         .n_categories = 10,
                         .categories = tc};
    if (!rc)
        rc = av_csr_writer_finish(w, NULL, cols, 2, err);
    else
        av_csr_writer_abort(w);
    free(b);
    free(t);
    av_sim_free(s);
    return rc;
}

/* The X arrays and obs codes of two files are identical. */
static int same_files(const char *a, const char *b) {
    const char *names[] = {"X/data", "X/indices", "X/indptr", "obs/batch/codes",
                           "obs/cell_type/codes"};
    hid_t fa = H5Fopen(a, H5F_ACC_RDONLY, H5P_DEFAULT),
          fb = H5Fopen(b, H5F_ACC_RDONLY, H5P_DEFAULT);
    int same = fa >= 0 && fb >= 0;
    for (int i = 0; i < 5 && same; i++) {
        long long na = 0, nb = 0;
        double *x = tu_read_all(fa, names[i], H5T_NATIVE_DOUBLE, 8, &na);
        double *y = tu_read_all(fb, names[i], H5T_NATIVE_DOUBLE, 8, &nb);
        same = x && y && na == nb && !memcmp(x, y, (size_t)na * 8);
        if (!same) fprintf(stderr, "differs: %s\n", names[i]);
        free(x);
        free(y);
    }
    if (fa >= 0) H5Fclose(fa);
    if (fb >= 0) H5Fclose(fb);
    return same;
}

static void test_streamed(void) {
    char err[AV_ERRLEN] = "";
    const char *a = pathf("stream_1000.h5ad"), *b = pathf("stream_4096.h5ad");
    TU_CHECK(stream(a, 9000, 1000, err) == 0, "%s", err);
    TU_CHECK(stream(b, 9000, 4096, err) == 0, "%s", err);
    TU_CHECK(same_files(a, b), "chunk 1000 and 4096 give the same file data");
    hid_t f = H5Fopen(a, H5F_ACC_RDONLY, H5P_DEFAULT);
    TU_CHECK(tu_enc(f, "X", "csr_matrix", "0.1.0") && tu_shape(f, "X", 9000, 500), "X");
    const char *cols[] = {"batch", "cell_type"};
    TU_CHECK(tu_dataframe(f, "obs", 9000, cols, 2) && tu_ordered_false(f, "obs/cell_type"), "obs");
    H5Fclose(f);
}

static int run_cmd(const char *cmd) {
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* `atlasvi simulate` end to end: determinism across --chunk-cells, errors. */
static void test_cli(const char *exe) {
    char cmd[4096];
    const char *a = pathf("cli_a.h5ad"), *b = pathf("cli_b.h5ad");
    snprintf(cmd, sizeof cmd,
             "'%s' simulate '%s' --n-cells 5000 --n-genes 800 --seed 11 "
             "--chunk-cells 1000",
             exe, a);
    TU_CHECK(run_cmd(cmd) == 0, "%s", cmd);
    snprintf(cmd, sizeof cmd,
             "'%s' simulate '%s' --n-cells=5000 --n-genes=800 --seed=11 "
             "--chunk-cells 4096 --compression none > '%s/cli_b.out'",
             exe, b, dir);
    TU_CHECK(run_cmd(cmd) == 0, "%s", cmd);
    TU_CHECK(same_files(a, b), "CLI: chunk 1000 and 4096 give the same data");
    FILE *o = fopen(pathf("cli_b.out"), "r");
    char line[1024] = "";
    if (o) {
        if (!fgets(line, sizeof line, o)) line[0] = 0;
        fclose(o);
    }
    TU_CHECK(strstr(line, "5000 cells") && strstr(line, "sparsity"), "summary line: %s", line);
    /* errors: one line, exit 1, nothing written */
    const char *bad[] = {"--n-cells 0", "--n-genes x", "--bogus", "--chunk-cells", ""};
    for (int i = 0; i < 5; i++) {
        snprintf(cmd, sizeof cmd, "'%s' simulate %s %s 2> '%s/err.txt'", exe,
                 i < 4 ? pathf("bad.h5ad") : "", bad[i], dir);
        TU_CHECK(run_cmd(cmd) == 1, "exit 1 for: %s", bad[i]);
        o = fopen(pathf("err.txt"), "r");
        int lines = 0;
        line[0] = 0;
        while (o && fgets(line + strlen(line) * 0, sizeof line, o)) lines++;
        if (o) fclose(o);
        TU_CHECK(lines == 1 && !strncmp(line, "atlasvi: error: ", 16), "one error line: %s", line);
    }
    TU_CHECK(access(pathf("bad.h5ad"), F_OK) != 0, "nothing written on error");
    /* --like: genes, names and library sizes from a real file (skipped without it) */
    const char *data = getenv("AV_DATA");
    char real[2048];
    snprintf(real, sizeof real, "%s/real_pbmc_kang18_ctrl_12261x1287.h5ad", data ? data : ".");
    if (data && access(real, R_OK) == 0) {
        const char *l = pathf("like.h5ad");
        snprintf(cmd, sizeof cmd, "'%s' simulate '%s' --n-cells 3000 --like '%s' > /dev/null", exe,
                 l, real);
        TU_CHECK(run_cmd(cmd) == 0, "%s", cmd);
        hid_t f = H5Fopen(l, H5F_ACC_RDONLY, H5P_DEFAULT),
              r = H5Fopen(real, H5F_ACC_RDONLY, H5P_DEFAULT);
        TU_CHECK(f >= 0 && tu_shape(f, "X", 3000, 1287), "--like takes the real genes");
        char *a0 = tu_string_at(f, "var/_index", 5), *b0 = tu_string_at(r, "var/_index", 5);
        TU_CHECK(a0 && b0 && !strcmp(a0, b0), "--like keeps gene names (%s, %s)", a0, b0);
        free(a0);
        free(b0);
        long long n = 0, nnz = 0;
        long long *ip = tu_read_all(f, "X/indptr", H5T_NATIVE_LLONG, 8, &n);
        float *d = tu_read_all(f, "X/data", H5T_NATIVE_FLOAT, 4, &nnz);
        double *lib = calloc(3000, sizeof *lib);
        for (long long i = 0; ip && d && i < 3000; i++)
            for (long long j = ip[i]; j < ip[i + 1]; j++) lib[i] += d[j];
        qsort(lib, 3000, sizeof *lib, cmp_d);
        /* the real file: median 993 UMIs, 73% zeros */
        double sp = 1.0 - (double)nnz / (3000.0 * 1287.0);
        printf("--like: median library size %.0f, sparsity %.3f\n", lib[1500], sp);
        TU_CHECK(lib[1500] > 700 && lib[1500] < 1400 && sp > 0.6 && sp < 0.85, "like stats");
        free(lib);
        free(ip);
        free(d);
        H5Fclose(f);
        H5Fclose(r);
        snprintf(cmd, sizeof cmd, "'%s' simulate '%s' --like '%s' --n-genes 10 2> /dev/null", exe,
                 pathf("bad.h5ad"), real);
        TU_CHECK(run_cmd(cmd) == 1, "--like with --n-genes refused");
        snprintf(cmd, sizeof cmd, "'%s' simulate '%s' --like '%s/nope.h5ad' 2> /dev/null", exe,
                 pathf("bad.h5ad"), dir);
        TU_CHECK(run_cmd(cmd) == 1, "--like of a missing file refused");
    } else {
        printf("test_simulate: %s absent, --like not tested\n", real);
    }
    snprintf(cmd, sizeof cmd, "'%s' simulate --help > /dev/null", exe);
    TU_CHECK(run_cmd(cmd) == 0, "--help");
}

int main(int argc, char **argv) {
    snprintf(dir, sizeof dir, "%s", argc > 2 ? argv[2] : "simulate_files");
    mkdir(dir, 0755);
    test_generator();
    test_streamed();
    if (argc > 1 && strcmp(argv[1], "-")) test_cli(argv[1]);
    if (tu_fails) {
        fprintf(stderr, "test_simulate: %d failure(s)\n", tu_fails);
        return 1;
    }
    printf("test_simulate: all checks passed\n");
    return 0;
}
