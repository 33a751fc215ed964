/* atlasvi simulate OUT.h5ad: a realistic synthetic count matrix, streamed to disk in
 * chunks of cells (src/simulate.h for the model). Only rank 0 works. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dist/dist.h"
#include "io/input.h"
#include "io/output.h"
#include "src/cli.h"
#include "src/simulate.h"
#include "src/util.h"

static void usage(FILE *f) {
    fprintf(f, "usage: atlasvi simulate OUT.h5ad [--n-cells N] [--n-genes G] [--n-batches B]\n"
               "                        [--n-cell-types K] [--seed S] [--chunk-cells C]\n"
               "                        [--like REAL.h5ad] [--compression gzip|none]\n\n"
               "Writes a synthetic single-cell count matrix (CSR X, float32 whole-number counts)\n"
               "with obs columns 'batch' (batch_0, ...) and 'cell_type' (type_0, ...), obs names\n"
               "cell_0, ... and var names gene_0, ...: log-normal gene expression with a highly\n"
               "expressed tail, marker genes per cell type (log2 fold changes 1-3), per-batch\n"
               "gene effects, log-normal library sizes and negative binomial noise.\n\n"
               "  --n-cells N        cells (default 10000)\n"
               "  --n-genes G        genes (default 2000)\n"
               "  --n-batches B      batches (default 4)\n"
               "  --n-cell-types K   cell types (default 10)\n"
               "  --seed S           random seed (default 0); the same seed gives the same file\n"
               "                     whatever --chunk-cells and the number of threads\n"
               "  --chunk-cells C    cells generated and written at a time (default 10000)\n"
               "  --like FILE        take gene means, library sizes and dispersions from a real\n"
               "                     count matrix (any format atlasvi reads; its genes and gene\n"
               "                     names replace --n-genes and gene_0, ...)\n"
               "  --compression X    gzip (level 1, default) or none\n");
}

static int parse_i64(const char *opt, const char *v, int64_t lo, int64_t *out, char *err) {
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < lo)
        return av_err(err, "%s expects an integer >= %lld, got '%s'", opt, (long long)lo, v);
    *out = x;
    return 0;
}

/* Reads up to ~20000 cells of a real file (blocks spread over it) and calibrates. */
static int calibrate_like(const char *path, AvSimParams *p, AvSimCalib *cal, char ***var_names,
                          char *err) {
    AvInput in;
    memset(&in, 0, sizeof in);
    if (av_input_open(&in, path, NULL, err)) return -1;
    int rc = av_input_read_names(&in, err);
    const int64_t want = 20000, blocks = 20;
    AvCsr all;
    memset(&all, 0, sizeof all);
    if (!rc) {
        int64_t n = in.n_obs, take = n < want ? n : want, per = (take + blocks - 1) / blocks;
        all.n_cols = in.n_vars;
        all.indptr = av_malloc((size_t)(take + blocks + 1) * sizeof *all.indptr);
        all.indptr[0] = 0;
        for (int64_t b = 0; b < blocks && !rc && all.n_rows < take; b++) {
            int64_t lo = n * b / blocks, hi = lo + per < n ? lo + per : n;
            AvCsr part;
            rc = av_input_read_rows(&in, lo, hi, &part, err);
            if (rc) break;
            int64_t nnz0 = all.indptr[all.n_rows], nnz = av_csr_nnz(&part);
            all.indices = av_realloc(all.indices, (size_t)(nnz0 + nnz) * sizeof *all.indices);
            all.data = av_realloc(all.data, (size_t)(nnz0 + nnz) * sizeof *all.data);
            memcpy(all.indices + nnz0, part.indices, (size_t)nnz * sizeof *all.indices);
            memcpy(all.data + nnz0, part.data, (size_t)nnz * sizeof *all.data);
            for (int64_t r = 0; r < part.n_rows; r++)
                all.indptr[all.n_rows + r + 1] = nnz0 + part.indptr[r + 1];
            all.n_rows += part.n_rows;
            av_csr_free(&part);
        }
    }
    if (!rc && av_sim_calibrate(&all, cal, err)) {
        char msg[AV_ERRLEN];
        snprintf(msg, sizeof msg, "%s: %s", path, err);
        rc = av_err(err, "%s", msg);
    }
    av_csr_free(&all);
    if (!rc) {
        p->n_genes = in.n_vars;
        p->gene_props = cal->gene_props;
        p->gene_theta = cal->gene_theta;
        p->median_libsize = cal->median_libsize;
        /* part of the real spread comes from batches and cell types, added back here */
        p->libsize_sdlog = cal->libsize_sdlog > 0.35
                               ? sqrt(cal->libsize_sdlog * cal->libsize_sdlog - 0.1)
                               : cal->libsize_sdlog;
        *var_names = in.var_names;
        in.var_names = NULL;
    }
    av_input_close(&in);
    return rc;
}

static char **category_names(const char *prefix, int n) {
    char **c = av_malloc((size_t)n * sizeof *c);
    for (int i = 0; i < n; i++) {
        c[i] = av_malloc(strlen(prefix) + 16);
        sprintf(c[i], "%s%d", prefix, i);
    }
    return c;
}

static int run(const char *out, AvSimParams *p, int64_t chunk, const char *like, int gzip,
               char *err) {
    double t0 = av_now();
    AvSimCalib cal;
    memset(&cal, 0, sizeof cal);
    char **var_names = NULL;
    int64_t n_like_vars = 0;
    if (like) {
        if (calibrate_like(like, p, &cal, &var_names, err)) return -1;
        n_like_vars = p->n_genes;
    }
    AvSim *sim = av_sim_create(p, err);
    if (!sim) {
        av_sim_calib_free(&cal);
        av_free_strings(var_names, n_like_vars);
        return -1;
    }
    AvCsrWriter *w = av_csr_writer_create_opts(out, p->n_genes, var_names, gzip, err);
    av_free_strings(var_names, n_like_vars);
    int rc = w ? 0 : -1;
    int32_t *batch = av_malloc((size_t)(p->n_cells + 1) * sizeof *batch);
    int32_t *type = av_malloc((size_t)(p->n_cells + 1) * sizeof *type);
    for (int64_t lo = 0; lo < p->n_cells && !rc; lo += chunk) {
        int64_t hi = lo + chunk < p->n_cells ? lo + chunk : p->n_cells;
        AvCsr m;
        rc = av_sim_cells(sim, lo, hi, &m, batch + lo, type + lo, err);
        if (!rc) rc = av_csr_writer_append(w, &m, err);
        av_csr_free(&m);
    }
    int64_t nnz = w ? av_csr_writer_nnz(w) : 0;
    if (rc) {
        av_csr_writer_abort(w);
    } else {
        AvColumn cols[2];
        memset(cols, 0, sizeof cols);
        cols[0].name = "batch";
        cols[0].kind = AV_COL_CATEGORICAL;
        cols[0].n = p->n_cells;
        cols[0].codes = batch;
        cols[0].n_categories = p->n_batches;
        cols[0].categories = category_names("batch_", p->n_batches);
        cols[1].name = "cell_type";
        cols[1].kind = AV_COL_CATEGORICAL;
        cols[1].n = p->n_cells;
        cols[1].codes = type;
        cols[1].n_categories = p->n_types;
        cols[1].categories = category_names("type_", p->n_types);
        rc = av_csr_writer_finish(w, NULL, cols, 2, err);
        av_free_strings(cols[0].categories, p->n_batches);
        av_free_strings(cols[1].categories, p->n_types);
    }
    free(batch);
    free(type);
    av_sim_free(sim);
    av_sim_calib_free(&cal);
    if (!rc) {
        double cells_genes = (double)p->n_cells * (double)p->n_genes;
        printf("atlasvi simulate: %s: %lld cells, %lld genes, %lld non-zeros, sparsity %.3f, "
               "%.1f s\n",
               out, (long long)p->n_cells, (long long)p->n_genes, (long long)nnz,
               cells_genes > 0 ? 1.0 - (double)nnz / cells_genes : 0.0, av_now() - t0);
    }
    return rc;
}

int av_cmd_simulate(int argc, char **argv) {
    AvSimParams p;
    av_sim_defaults(&p);
    int64_t chunk = 10000, v = 0;
    const char *out = NULL, *like = NULL;
    int gzip = 1, help = 0, rc = 0, n_genes_given = 0;
    char err[AV_ERRLEN] = "";
    for (int i = 1; i < argc && !rc; i++) {
        int missing = 0;
        const char *a = argv[i], *val;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            help = 1;
        } else if ((val = av_opt(argc, argv, &i, "--n-cells", &missing))) {
            rc = parse_i64("--n-cells", val, 1, &p.n_cells, err);
        } else if ((val = av_opt(argc, argv, &i, "--n-genes", &missing))) {
            rc = parse_i64("--n-genes", val, 1, &p.n_genes, err);
            n_genes_given = 1;
        } else if ((val = av_opt(argc, argv, &i, "--n-batches", &missing))) {
            rc = parse_i64("--n-batches", val, 1, &v, err);
            if (!rc && v > 100000) rc = av_err(err, "--n-batches is at most 100000");
            p.n_batches = (int)v;
        } else if ((val = av_opt(argc, argv, &i, "--n-cell-types", &missing))) {
            rc = parse_i64("--n-cell-types", val, 1, &v, err);
            if (!rc && v > 100000) rc = av_err(err, "--n-cell-types is at most 100000");
            p.n_types = (int)v;
        } else if ((val = av_opt(argc, argv, &i, "--seed", &missing))) {
            rc = parse_i64("--seed", val, 0, &v, err);
            p.seed = (uint64_t)v;
        } else if ((val = av_opt(argc, argv, &i, "--chunk-cells", &missing))) {
            rc = parse_i64("--chunk-cells", val, 1, &chunk, err);
        } else if ((val = av_opt(argc, argv, &i, "--like", &missing))) {
            like = val;
        } else if ((val = av_opt(argc, argv, &i, "--compression", &missing))) {
            if (!strcmp(val, "gzip"))
                gzip = 1;
            else if (!strcmp(val, "none"))
                gzip = 0;
            else
                rc = av_err(err, "--compression expects gzip or none, got '%s'", val);
        } else if (missing) {
            rc = av_err(err, "%s needs a value", a);
        } else if (a[0] == '-' && a[1]) {
            rc = av_err(err, "simulate: unknown option '%s' (see atlasvi simulate --help)", a);
        } else if (!out) {
            out = a;
        } else {
            rc = av_err(err, "simulate: one output file expected, got '%s' and '%s'", out, a);
        }
    }
    if (help) {
        if (dist_rank() == 0) usage(stdout);
        return 0;
    }
    if (!rc && !out)
        rc = av_err(err, "simulate: no output file given (see atlasvi simulate --help)");
    if (!rc && like && n_genes_given)
        rc = av_err(err, "simulate: --like takes the genes of %s; drop --n-genes", like);
    if (!rc && dist_rank() == 0) rc = run(out, &p, chunk, like, gzip, err);
    /* every rank ends with the same status; rank 0 alone did the work */
    if (dist_any_failed(rc != 0, err)) return 1;
    return 0;
}
