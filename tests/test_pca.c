/* atlasvi pca against serial LAPACK: ScaLAPACK's pdsyevd over 1, 2 and 4 ranks vs dsyev on
 * random symmetric matrices, and the whole distributed PCA of the Kang PBMC file (all
 * genes) vs a dense serial computation on rank 0 with dsyev, up to the
 * sign of each component. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "dist/scalapack.h"
#include "io/input.h"
#include "src/pca.h"
#include "src/util.h"

extern void dsyev_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda,
                   double *w, double *work, const int *lwork, int *info);

static int failures = 0;
#define CHECK(c, ...)                                                                              \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            failures++;                                                                            \
            fprintf(stderr, "FAIL rank %d %s:%d: ", dist_rank(), __FILE__, __LINE__);              \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
        }                                                                                          \
    } while (0)

/* serial reference: eigenvalues ascending, Z column-major */
static void lapack_eigen(const double *A, int n, double *w, double *Z) {
    memcpy(Z, A, sizeof(double) * (size_t)n * n);
    int lwork = -1, info = 0;
    double q;
    dsyev_("V", "U", &n, Z, &n, w, &q, &lwork, &info);
    lwork = (int)q + 1;
    double *work = malloc(sizeof(double) * lwork);
    dsyev_("V", "U", &n, Z, &n, w, work, &lwork, &info);
    free(work);
    if (info) fprintf(stderr, "dsyev info %d\n", info);
}

static void test_eigen(int n) {
    double *A = av_malloc(sizeof(double) * n * n), *w = av_malloc(sizeof(double) * n),
           *Z = av_malloc(sizeof(double) * n * n);
    uint64_t s = 12345 + (uint64_t)n;
    for (int i = 0; i < n; i++)
        for (int j = 0; j <= i; j++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            double v = (double)(s >> 11) / 9007199254740992.0 - 0.5;
            A[i * n + j] = A[j * n + i] = v + (i == j ? 0.1 * i : 0);
        }
    char err[AV_ERRLEN] = "";
    int rc = dist_symmetric_eigen(A, n, w, Z, err);
    CHECK(rc == 0, "eigen n=%d: %s", n, err);
    if (!rc && dist_rank() == 0) {
        double *w0 = av_malloc(sizeof(double) * n), *Z0 = av_malloc(sizeof(double) * n * n);
        lapack_eigen(A, n, w0, Z0);
        double dw = 0, scale = 0, dv = 0;
        for (int i = 0; i < n; i++) {
            dw = fmax(dw, fabs(w[i] - w0[i]));
            scale = fmax(scale, fabs(w0[i]));
            double dot = 0;
            for (int j = 0; j < n; j++) dot += Z[i * n + j] * Z0[i * n + j];
            dv = fmax(dv, 1 - fabs(dot));
        }
        printf("eigen n=%d on %d ranks: max |w - dsyev| / max|w| = %.2g, max 1 - |<z, z0>| = "
               "%.2g\n",
               n, dist_size(), dw / scale, dv);
        CHECK(dw / scale < 1e-12, "eigenvalues n=%d differ from dsyev by %g", n, dw / scale);
        CHECK(dv < 1e-9, "eigenvectors n=%d differ from dsyev (1 - |dot| = %g)", n, dv);
        free(w0);
        free(Z0);
    }
    free(A);
    free(w);
    free(Z);
}

/* Dense serial PCA on rank 0 from the whole file, written independently of src/pca.c. */
static void test_file(const char *path, int n_comps) {
    char err[AV_ERRLEN] = "";
    AvPcaOptions o = {NULL, n_comps, NULL, NULL, 1e4};
    AvPcaResult r;
    int rc = av_pca_compute(path, &o, &r, err);
    CHECK(rc == 0, "pca %s: %s", path, err);
    if (rc || dist_rank() != 0) {
        if (!rc) av_pca_result_free(&r);
        return;
    }
    AvInput in = {0};
    AvCsr x = {0};
    rc = av_input_open(&in, path, NULL, err) || av_input_read_rows(&in, 0, in.n_obs, &x, err);
    CHECK(rc == 0, "read %s: %s", path, err);
    int n = (int)in.n_obs, G = (int)in.n_vars, k = r.k;
    double *X = av_calloc((size_t)n * G, sizeof(double));
    for (int i = 0; i < n; i++) {
        double tot = 0;
        for (int64_t p = x.indptr[i]; p < x.indptr[i + 1]; p++) tot += x.data[p];
        for (int64_t p = x.indptr[i]; p < x.indptr[i + 1]; p++)
            X[(size_t)i * G + x.indices[p]] = (float)log1p(x.data[p] * 1e4 / tot);
    }
    double *mu = av_calloc(G, sizeof(double));
    for (int i = 0; i < n; i++)
        for (int j = 0; j < G; j++) mu[j] += X[(size_t)i * G + j] / n;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < G; j++) X[(size_t)i * G + j] -= mu[j];
    /* dense centred covariance by one BLAS call (a different route from src/pca.c) */
    double *C = av_calloc((size_t)G * G, sizeof(double));
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, G, G, n, 1.0 / (n - 1), X, G, X, G, 0.0, C,
                G);
    double *w = av_malloc(sizeof(double) * G), *Z = av_malloc(sizeof(double) * G * G);
    lapack_eigen(C, G, w, Z);
    double worst = 0, wv = 0;
    for (int c = 0; c < k; c++) {
        const double *v = Z + (size_t)(G - 1 - c) * G;
        wv = fmax(wv, fabs(r.variance[c] - w[G - 1 - c]) / w[G - 1]);
        double *sc = av_malloc(sizeof(double) * n), dot = 0, mx = 0;
        for (int i = 0; i < n; i++) {
            double t = 0;
            for (int j = 0; j < G; j++) t += X[(size_t)i * G + j] * v[j];
            sc[i] = t;
            dot += t * r.scores[(size_t)i * k + c];
            mx = fmax(mx, fabs(t));
        }
        double sg = dot < 0 ? -1 : 1, d = 0;
        for (int i = 0; i < n; i++) d = fmax(d, fabs(r.scores[(size_t)i * k + c] - sg * sc[i]));
        worst = fmax(worst, d / mx);
        free(sc);
    }
    printf("pca %s on %d ranks: %d components; max |score - serial dsyev| / max|score| = %.2g "
           "(float32 scores), max |variance diff| / variance1 = %.2g\n",
           path, dist_size(), k, worst, wv);
    CHECK(worst < 1e-5, "scores differ from serial LAPACK by %g (relative)", worst);
    CHECK(wv < 1e-10, "variances differ from serial LAPACK by %g (relative)", wv);
    free(X);
    free(mu);
    free(C);
    free(w);
    free(Z);
    av_csr_free(&x);
    av_input_close(&in);
    av_pca_result_free(&r);
}

int main(int argc, char **argv) {
    dist_init(&argc, &argv);
    test_eigen(1);
    test_eigen(7);
    test_eigen(150);
    const char *data = getenv("AV_DATA");
    char path[1024];
    snprintf(path, sizeof path, "%s/real_pbmc_kang18_ctrlstim_1556x1267.h5ad", data ? data : ".");
    FILE *fp = fopen(path, "rb");
    if (fp) {
        fclose(fp);
        test_file(path, 15);
    } else if (dist_rank() == 0) {
        printf("shared data not found (%s): file PCA skipped\n", path);
    }
    int64_t tot = failures;
    dist_allreduce_i64(&tot, 1);
    if (dist_rank() == 0) printf("%s\n", tot ? "FAILED" : "all pca checks passed");
    dist_finalize();
    return tot ? 1 : 0;
}
