/* PCA maths on a rank's cells (src/pca.h). */
#include "src/pca.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "src/util.h"

void av_log_normalize(AvCsr *x, double target) {
    for (int64_t i = 0; i < x->n_rows; i++) {
        double tot = 0;
        for (int64_t p = x->indptr[i]; p < x->indptr[i + 1]; p++) tot += x->data[p];
        double s = tot > 0 ? target / tot : 0;
        for (int64_t p = x->indptr[i]; p < x->indptr[i + 1]; p++)
            x->data[p] = (float)log1p((double)x->data[p] * s);
    }
}

void av_pca_accumulate(const AvCsr *x, const int32_t *sel, int64_t m, double *gram,
                       double *colsum) {
    const int64_t block = 256;
    double *a = av_malloc(sizeof(double) * (size_t)(block * m + 1));
    for (int64_t r0 = 0; r0 < x->n_rows; r0 += block) {
        int64_t nr = x->n_rows - r0 < block ? x->n_rows - r0 : block;
        memset(a, 0, sizeof(double) * (size_t)(nr * m));
        for (int64_t i = 0; i < nr; i++)
            for (int64_t p = x->indptr[r0 + i]; p < x->indptr[r0 + i + 1]; p++) {
                int64_t j = sel ? sel[x->indices[p]] : x->indices[p];
                if (j < 0) continue;
                a[i * m + j] = x->data[p];
                colsum[j] += x->data[p];
            }
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)m, (int)nr, 1.0, a, (int)m, 1.0,
                    gram, (int)m);
    }
    free(a);
}

void av_pca_covariance(double *gram, const double *colsum, int64_t m, int64_t n, double *mean) {
    for (int64_t j = 0; j < m; j++) mean[j] = colsum[j] / (double)n;
    double d = n > 1 ? (double)(n - 1) : 1.0;
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = i; j < m; j++) {
            double c = (gram[i * m + j] - (double)n * mean[i] * mean[j]) / d;
            gram[i * m + j] = c;
            gram[j * m + i] = c;
        }
}

void av_pca_components(const double *w, const double *Z, int64_t m, int k, double *loadings,
                       double *variance) {
    for (int c = 0; c < k; c++) {
        int64_t e = m - 1 - c; /* descending */
        const double *v = Z + e * m;
        int64_t best = 0;
        for (int64_t j = 1; j < m; j++)
            if (fabs(v[j]) > fabs(v[best])) best = j;
        double s = v[best] < 0 ? -1.0 : 1.0;
        for (int64_t j = 0; j < m; j++) loadings[j * k + c] = s * v[j];
        variance[c] = w[e];
    }
}

void av_pca_project(const AvCsr *x, const int32_t *sel, int64_t m, const double *mean,
                    const double *loadings, int k, float *out) {
    double *mv = av_calloc((size_t)k + 1, sizeof(double));
    for (int64_t j = 0; j < m; j++)
        for (int c = 0; c < k; c++) mv[c] += mean[j] * loadings[j * k + c];
    double *acc = av_malloc(sizeof(double) * ((size_t)k + 1));
    for (int64_t i = 0; i < x->n_rows; i++) {
        for (int c = 0; c < k; c++) acc[c] = -mv[c];
        for (int64_t p = x->indptr[i]; p < x->indptr[i + 1]; p++) {
            int64_t j = sel ? sel[x->indices[p]] : x->indices[p];
            if (j < 0) continue;
            double v = x->data[p];
            const double *l = loadings + j * k;
            for (int c = 0; c < k; c++) acc[c] += v * l[c];
        }
        for (int c = 0; c < k; c++) out[i * k + c] = (float)acc[c];
    }
    free(acc);
    free(mv);
}
