/* pca_compare_obsm A.h5ad B.h5ad KEY: exit 0 when obsm/KEY of the two files agree up to
 * the sign of each column (max difference below 1e-4 of the column's largest value). */
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static float *read_obsm(const char *path, const char *key, hsize_t dims[2]) {
    char name[512];
    snprintf(name, sizeof name, "obsm/%s", key);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return NULL;
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    float *v = NULL;
    if (d >= 0) {
        hid_t s = H5Dget_space(d);
        if (H5Sget_simple_extent_ndims(s) == 2) {
            H5Sget_simple_extent_dims(s, dims, NULL);
            v = malloc(sizeof(float) * dims[0] * dims[1] + 1);
            if (H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0) {
                free(v);
                v = NULL;
            }
        }
        H5Sclose(s);
        H5Dclose(d);
    }
    H5Fclose(f);
    return v;
}

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    hsize_t da[2] = {0, 0}, db[2] = {0, 0};
    float *a = read_obsm(argv[1], argv[3], da), *b = read_obsm(argv[2], argv[3], db);
    if (!a || !b || da[0] != db[0] || da[1] != db[1]) {
        printf("cannot read obsm/%s of both files with the same shape\n", argv[3]);
        return 1;
    }
    double worst = 0;
    for (hsize_t c = 0; c < da[1]; c++) {
        double dot = 0, mx = 0, d = 0;
        for (hsize_t i = 0; i < da[0]; i++) dot += (double)a[i * da[1] + c] * b[i * da[1] + c];
        double s = dot < 0 ? -1 : 1;
        for (hsize_t i = 0; i < da[0]; i++) {
            mx = fmax(mx, fabs(a[i * da[1] + c]));
            d = fmax(d, fabs(a[i * da[1] + c] - s * b[i * da[1] + c]));
        }
        worst = fmax(worst, mx > 0 ? d / mx : d);
    }
    printf("obsm/%s %llu x %llu: max difference up to sign %.3g (relative)\n", argv[3],
           (unsigned long long)da[0], (unsigned long long)da[1], worst);
    free(a);
    free(b);
    return worst < 1e-4 ? 0 : 1;
}
