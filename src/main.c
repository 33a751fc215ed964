/* atlasvi: scvi-tools models at atlas scale. One binary, one process or many MPI ranks. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dist/dist.h"
#include "src/cli.h"

static const struct {
    const char *name;
    int (*run)(int, char **);
    const char *what;
} commands[] = {
    {"train", av_cmd_train, "train scVI on a count matrix and write latents and a model"},
    {"latent", av_cmd_latent, "apply a saved model to a file: obsm latent"},
    {"normalize", av_cmd_normalize, "apply a saved model to a file: normalized expression"},
    {"info", av_cmd_info, "print shape, layers, obs columns and categories of a file"},
    {"simulate", av_cmd_simulate, "write a realistic synthetic count matrix as .h5ad"},
    {"de", av_cmd_de, "differential expression between groups (scvi-tools' columns, CSV)"},
    {"posterior", av_cmd_posterior,
     "ELBO, reconstruction error, marginal LL, posterior predictive"},
    {"hvg", av_cmd_hvg, "highly variable genes (seurat_v3 flavour), optionally subset"},
    {"pca", av_cmd_pca, "distributed PCA of log-normalized counts (obsm/X_pca)"},
    {"export", av_cmd_export, "write a scvi-tools model directory (model.pt) from a model file"},
    {"import", av_cmd_import, "read a scvi-tools SCVI model directory into a model file"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: atlasvi <command> [options]   (atlasvi <command> --help for more)\n\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].what);
    fprintf(f, "\nRun under mpirun for data-parallel training over cell shards.\n");
}

const char *av_opt(int argc, char **argv, int *i, const char *name, int *missing) {
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0) return NULL;
    if (a[n] == '=') return a + n + 1;
    if (a[n] != '\0') return NULL;
    if (*i + 1 >= argc) {
        *missing = 1;
        return NULL;
    }
    return argv[++*i];
}

/* Idle OpenMP threads spin by default, taking the cores that OpenBLAS and other ranks
 * need (15x slower steps were measured on a loaded 2-core machine). libgomp reads its
 * settings when it is loaded, so the process re-executes itself once with a passive
 * wait policy unless the user chose one. This happens before MPI starts. */
static void prefer_passive_openmp(char **argv) {
    if (getenv("OMP_WAIT_POLICY")) return;
    setenv("OMP_WAIT_POLICY", "passive", 1);
    execv("/proc/self/exe", argv);
    /* if exec fails we simply run with the default policy */
}

int main(int argc, char **argv) {
    prefer_passive_openmp(argv);
    openblas_set_num_threads(1); /* ops.c splits GEMMs over the OpenMP threads itself */
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(argv[1], commands[i].name) != 0) continue;
        dist_init(&argc, &argv);
        int rc = commands[i].run(argc - 1, argv + 1);
        dist_finalize();
        return rc;
    }
    fprintf(stderr, "atlasvi: error: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
