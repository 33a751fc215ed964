/* Training quality on real data: scVI on the STARmap mPFC data (3704 cells, 158 genes,
 * batch BatchID, 16 cell types) against the unintegrated baseline, PCA of log-normalized
 * counts. A kNN classifier of cell type must do at least as well on the scVI latent as
 * on PCA (within 0.02 accuracy) and the batches must mix better. A model that does not
 * train (or trains wrongly) fails both.
 *
 * usage: test_quality DATA_DIR [EPOCHS] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "io/input.h"
#include "src/app.h"
#include "src/util.h"

void dsyev_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda, double *w,
            double *work, const int *lwork, int *info);

enum { K_NN = 15, N_COMPS = 10 };

/* PCA of log1p(counts / total * 1e4), centred, top N_COMPS components. */
static float *pca(const AvCsr *x) {
    int64_t n = x->n_rows, G = x->n_cols;
    double *X = av_calloc((size_t)(n * G), sizeof(double)),
           *mean = av_calloc((size_t)G, sizeof(double));
    for (int64_t i = 0; i < n; i++) {
        double tot = 0;
        for (int64_t k = x->indptr[i]; k < x->indptr[i + 1]; k++) tot += x->data[k];
        for (int64_t k = x->indptr[i]; k < x->indptr[i + 1]; k++)
            X[i * G + x->indices[k]] = log1p(x->data[k] / tot * 1e4);
    }
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < G; j++) mean[j] += X[i * G + j] / (double)n;
    double *C = av_calloc((size_t)(G * G), sizeof(double));
    for (int64_t i = 0; i < n; i++)
        for (int64_t a = 0; a < G; a++) {
            double xa = X[i * G + a] - mean[a];
            for (int64_t b = 0; b < G; b++) C[a * G + b] += xa * (X[i * G + b] - mean[b]);
        }
    int nn = (int)G, lwork = -1, info;
    double *w = av_malloc(sizeof(double) * (size_t)G), q;
    dsyev_("V", "U", &nn, C, &nn, w, &q, &lwork, &info);
    lwork = (int)q;
    double *work = av_malloc(sizeof(double) * (size_t)lwork);
    dsyev_("V", "U", &nn, C, &nn, w, work, &lwork, &info);
    /* eigenvalues ascending; eigenvector j is row j of C (column-major result) */
    float *out = av_malloc(sizeof(float) * (size_t)(n * N_COMPS));
    for (int64_t i = 0; i < n; i++)
        for (int c = 0; c < N_COMPS; c++) {
            const double *v = C + (G - 1 - c) * G;
            double s = 0;
            for (int64_t j = 0; j < G; j++) s += (X[i * G + j] - mean[j]) * v[j];
            out[i * N_COMPS + c] = (float)s;
        }
    free(X), free(mean), free(C), free(w), free(work);
    return out;
}

/* k nearest neighbours (excluding the cell) among cells with use[i] != 0. */
static void knn(const float *e, int64_t n, int dim, const uint8_t *use, int64_t *nb) {
    double *d = av_malloc(sizeof(double) * (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        if (!use[i]) continue;
        for (int64_t j = 0; j < n; j++) {
            double s = 0;
            for (int c = 0; c < dim; c++) {
                double t = e[i * dim + c] - e[j * dim + c];
                s += t * t;
            }
            d[j] = (j == i || !use[j]) ? INFINITY : s;
        }
        for (int k = 0; k < K_NN; k++) { /* partial selection */
            int64_t best = -1;
            for (int64_t j = 0; j < n; j++)
                if (d[j] < INFINITY && (best < 0 || d[j] < d[best])) best = j;
            nb[i * K_NN + k] = best;
            if (best >= 0) d[best] = INFINITY;
        }
    }
    free(d);
}

/* Leave-one-out kNN accuracy of labels, and mean normalized entropy of batches among
 * each cell's neighbours (1 = perfectly mixed). */
static void score(const float *e, int dim, int64_t n, const int32_t *label, int n_labels,
                  const int32_t *batch, int n_batch, double *acc, double *mix) {
    uint8_t *lab = av_malloc((size_t)n), *all = av_malloc((size_t)n);
    for (int64_t i = 0; i < n; i++) lab[i] = label[i] >= 0, all[i] = 1;
    int64_t *nb = av_malloc(sizeof(int64_t) * (size_t)(n * K_NN));
    knn(e, n, dim, lab, nb);
    int64_t right = 0, total = 0;
    int votes[64];
    for (int64_t i = 0; i < n; i++) {
        if (!lab[i]) continue;
        memset(votes, 0, sizeof votes);
        for (int k = 0; k < K_NN; k++) votes[label[nb[i * K_NN + k]]]++;
        int best = 0;
        for (int c = 1; c < n_labels; c++)
            if (votes[c] > votes[best]) best = c;
        right += best == label[i];
        total++;
    }
    *acc = (double)right / (double)total;
    knn(e, n, dim, all, nb);
    double h = 0;
    for (int64_t i = 0; i < n; i++) {
        int cnt[16] = {0};
        for (int k = 0; k < K_NN; k++) cnt[batch[nb[i * K_NN + k]]]++;
        for (int b = 0; b < n_batch; b++)
            if (cnt[b]) h -= (double)cnt[b] / K_NN * log((double)cnt[b] / K_NN);
    }
    *mix = h / (double)n / log((double)n_batch);
    free(lab), free(all), free(nb);
}

int main(int argc, char **argv) {
    dist_init(&argc, &argv);
    if (argc < 2) return fprintf(stderr, "usage: test_quality DATA_DIR [EPOCHS]\n"), 2;
    char path[4096], err[AV_ERRLEN];
    snprintf(path, sizeof path, "%s/starmap_mpfc_3704x158.loom", argv[1]);
    FILE *f = fopen(path, "rb");
    if (!f) return printf("SKIP: %s not found (shared data absent)\n", path), 77;
    fclose(f);
    int epochs = argc > 2 ? atoi(argv[2]) : 0;

    AvSetup s = {0};
    s.batch_key = av_strdup("BatchID");
    s.labels_key = av_strdup("Clusters");
    AvTrainData d;
    if (av_setup_load(&s, path, NULL, &d, err)) return 1;
    /* cells labelled "NA" are unassigned: they train but are not scored */
    int n_labels = (int)s.n_categories[1], na = -1;
    for (int c = 0; c < n_labels; c++)
        if (!strcmp(s.categories[1][c], "NA")) na = c;
    int32_t *label = av_malloc(sizeof(int32_t) * (size_t)d.n_obs),
            *batch = av_malloc(sizeof(int32_t) * (size_t)d.n_obs);
    for (int64_t i = 0; i < d.n_obs; i++) {
        label[i] = d.cat[i * d.n_cat + 1] == na ? -1 : d.cat[i * d.n_cat + 1];
        batch[i] = d.cat[i * d.n_cat + 0];
    }

    AvScviConfig cfg;
    av_scvi_defaults(&cfg);
    cfg.n_input = s.n_vars;
    cfg.n_batch = (int)s.n_categories[0];
    cfg.n_labels = n_labels;
    AvTrainOptions to;
    av_train_defaults(&to);
    to.max_epochs = epochs;
    AvScvi m;
    av_scvi_build(&m, &cfg, to.batch_size, 0);
    AvOptState st;
    av_opt_state_init(&st, &m, &to);
    AvHistory h = {0};
    AvComm comm = av_comm_world();
    if (av_train(&m, &d, &to, &comm, &st, &h, err)) return fprintf(stderr, "%s\n", err), 1;
    float *z = av_malloc(sizeof(float) * (size_t)(d.n_obs * cfg.n_latent));
    av_latent(&m, &d, &comm, 128, z, NULL);
    float *p = pca(&d.x);

    double acc_s, mix_s, acc_p, mix_p;
    score(z, cfg.n_latent, d.n_obs, label, n_labels, batch, cfg.n_batch, &acc_s, &mix_s);
    score(p, N_COMPS, d.n_obs, label, n_labels, batch, cfg.n_batch, &acc_p, &mix_p);
    printf("STARmap, %d epochs in %.1f s (%.0f cells/s), final elbo_train %.2f\n", h.n_epochs,
           h.seconds, h.cells_per_s, h.elbo_train[h.n_epochs - 1]);
    printf("kNN(k=%d) cell-type accuracy: scVI %.3f, PCA %.3f\n", K_NN, acc_s, acc_p);
    printf("batch mixing (neighbour batch entropy, 1 = mixed): scVI %.3f, PCA %.3f\n", mix_s,
           mix_p);
    int ok = acc_s >= acc_p - 0.02 && mix_s > mix_p;
    printf("%s\n", ok ? "PASS" : "FAIL");
    free(z), free(p), free(label), free(batch);
    av_history_free(&h);
    av_opt_state_free(&st);
    av_scvi_free(&m);
    av_train_data_free(&d);
    av_setup_free(&s);
    dist_finalize();
    return ok ? 0 : 1;
}
