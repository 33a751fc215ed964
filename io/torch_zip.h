/* torch.save files: a zip archive "<name>/data.pkl" (a pickle) plus one raw little-endian
 * storage per tensor at "<name>/data/<key>", stored (uncompressed) and 64-byte aligned as
 * PyTorch writes them, with "<name>/version", "<name>/byteorder" and friends. */
#ifndef AV_IO_TORCH_ZIP_H
#define AV_IO_TORCH_ZIP_H
#include <stddef.h>
#include <stdint.h>

#include "io/pickle.h"

/* ---- writing ---- */

typedef struct {
    const void *data; /* little-endian element bytes */
    size_t bytes;
} AvTorchStorage;

/* Writes path atomically (temporary file + rename): the pickle and storages named "0",
 * "1", ... in order, under the archive folder `name` (torch uses the file stem). */
int av_torch_save(const char *path, const char *name, const unsigned char *pkl, size_t pkl_len,
                  int n_storages, const AvTorchStorage *storages, char *err);

/* ---- reading ---- */

typedef struct AvTorchFile AvTorchFile;

/* Reads the archive, checks byte order, and runs the pickle; *root is the unpickled
 * object (owned by the file). Only stored and deflated zip entries are read. */
AvTorchFile *av_torch_load(const char *path, AvPy **root, char *err);
void av_torch_close(AvTorchFile *t);

/* Number of elements of a tensor (product of its shape). */
int64_t av_torch_numel(const AvPy *tensor);
/* Checks, without reading its data, that a tensor's view lies inside its storage and
 * that the archive holds the storage's bytes. */
int av_torch_tensor_check(AvTorchFile *t, const AvPy *tensor, char *err);
/* Copies a tensor (float32/64/16, bfloat16 or integer storage, any strides) into out as
 * contiguous row-major float32 with numel elements. */
int av_torch_tensor_f32(AvTorchFile *t, const AvPy *tensor, float *out, char *err);

#endif
