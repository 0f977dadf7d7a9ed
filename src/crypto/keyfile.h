/*
 * keyfile.h - the vault's key file on disk: read it (only a regular file private to its owner,
 * bounded), create it with one fresh key (O_EXCL, 0600), replace it atomically (temp file 0600 in
 * the same directory, fsync, rename, fsync of the directory), and tell whether it changed since
 * it was read (stamp: device, inode, size, mtime, ctime). Only I/O: the key syntax is vault.c's.
 * Ownership: keyfile_read's text is secure memory (crypto/secmem.h) owned by the caller.
 * Threads: any thread; the functions share no state (the vault serialises its key file I/O).
 */
#ifndef LATCH_KEYFILE_H
#define LATCH_KEYFILE_H

#include <sys/stat.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "util/rc.h"

/* Key file size (256 keys of 45 bytes plus comments fit easily). */
#define KEYFILE_MAX_BYTES (64 * 1024)
/* Size of a key file text buffer (the text and its NUL). */
#define KEYFILE_BUF_LEN (KEYFILE_MAX_BYTES + 1)
/* Key file path length (PATH_MAX; <limits.h> is shadowed by core/latch_limits.h). */
#define KEYFILE_MAX_PATH 4096

struct keyfile_stamp {
    bool present;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtim;
    struct timespec ctim;
};

void keyfile_stamp_set(struct keyfile_stamp *s, const struct stat *st);
/* True if st describes the file s was taken from, unchanged. */
bool keyfile_stamp_same(const struct keyfile_stamp *s, const struct stat *st);

/*
 * Reads the key file into *text (KEYFILE_BUF_LEN bytes of secure memory, NUL-terminated; free
 * with secmem_free(*text, KEYFILE_BUF_LEN)) and sets *stamp. Refuses anything but a regular file
 * private to its owner. LATCH_E_NOT_FOUND if it does not exist.
 */
latch_rc keyfile_read(const char *path, char **text, size_t *len, struct keyfile_stamp *stamp,
                      struct latch_err *err);
/* Creates the key file (O_EXCL, 0600) with one fresh key. LATCH_E_CONFLICT if it exists. */
latch_rc keyfile_create(const char *path, struct latch_err *err);
/* Replaces the key file atomically with text. */
latch_rc keyfile_rewrite(const char *path, const char *text, size_t len, struct latch_err *err);

#endif
