/* atlasvi: scvi-tools models at atlas scale. One binary, one process or many MPI ranks. */
#include <cblas.h>
#include <sched.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dist/dist.h"
#include "src/cli.h"
#include "src/isa.h"
#include "src/util.h"

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

/* The threads one rank will run: --threads, else OMP_NUM_THREADS, else OpenMP's default,
 * the CPUs of its affinity mask. */
static long planned_threads(int argc, char **argv, long mask_cpus) {
    const char *v = getenv("OMP_NUM_THREADS");
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) v = argv[i + 1];
        if (!strncmp(argv[i], "--threads=", 10)) v = argv[i] + 10;
    }
    long t = v ? strtol(v, NULL, 10) : 0;
    return t > 0 ? t : mask_cpus;
}

/* Whether this rank's threads have cores of their own: they fit its CPU set, or, when the
 * ranks of this node are not bound (each sees every CPU; Open MPI and MPICH say how many
 * share the node), its share of the node's CPUs. */
static int threads_fit_cores(int argc, char **argv) {
    cpu_set_t set;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN), mask = cpus;
    if (sched_getaffinity(0, sizeof set, &set) == 0) mask = CPU_COUNT(&set);
    const char *lr = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    if (!lr) lr = getenv("MPI_LOCALNRANKS");
    long local = lr ? strtol(lr, NULL, 10) : 1;
    long share = mask >= cpus && local > 1 ? cpus / local : mask;
    return planned_threads(argc, argv, mask) <= share;
}

/* libgomp's idle threads spin by default for a long time (300k pause loops), taking the
 * cores that other ranks and jobs need (15x slower steps were measured on a loaded
 * 2-core machine, 4x with 2 ranks x 2 threads on 2 cores). Purely passive threads sleep
 * between the ~40 short parallel regions of a step, and waking them costs ~10% of a
 * 2-thread step. So: passive, plus a short spin (GOMP_SPINCOUNT 30000, ~0.6 ms of pause
 * loops here) that covers the gaps inside a step where the threads have cores of their
 * own. libgomp reads its settings when it is loaded, so the process re-executes itself
 * once, unless the user chose a policy. This happens before MPI starts. */
static void prefer_passive_openmp(int argc, char **argv) {
    if (getenv("OMP_WAIT_POLICY")) return;
    setenv("OMP_WAIT_POLICY", "passive", 1);
    setenv("GOMP_SPINCOUNT", threads_fit_cores(argc, argv) ? "30000" : "0", 0);
    execv("/proc/self/exe", argv);
    /* if exec fails we simply run with the default policy */
}

int main(int argc, char **argv) {
    prefer_passive_openmp(argc, argv);
    openblas_set_num_threads(1); /* ops.c splits GEMMs over the OpenMP threads itself */
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
        if (strcmp(argv[1], commands[i].name) != 0) continue;
        dist_init(&argc, &argv);
        char err[AV_ERRLEN];
        int rc = av_isa_from_env(err, NULL); /* every rank ends; one says why */
        if (rc && dist_rank() == 0) fprintf(stderr, "atlasvi: error: %s\n", err);
        rc = rc ? 1 : commands[i].run(argc - 1, argv + 1);
        if ((fflush(stdout) != 0 || ferror(stdout)) && rc == 0) {
            fprintf(stderr, "atlasvi: error: writing to standard output failed (%s)\n",
                    strerror(errno));
            rc = 1;
        }
        dist_finalize();
        return rc;
    }
    fprintf(stderr, "atlasvi: error: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
