/*
 * replay_main.c - runs a fuzz harness over files, without libFuzzer (the CTest fuzz.<t> tests).
 *
 * Usage: replay_<t> <file-or-directory>...   Directories are read one level deep, in name
 * order. Exit 0 when at least one input ran and none aborted; 1 on I/O errors or no inputs.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

/* Largest input replayed; libFuzzer runs use -max_len well below this. */
#define REPLAY_MAX_INPUT (16 * 1024 * 1024)

static int
run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    unsigned char *data = NULL;
    long n;
    int rc = -1;

    if (f == NULL) {
        (void)fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || n > REPLAY_MAX_INPUT ||
        fseek(f, 0, SEEK_SET) != 0) {
        (void)fprintf(stderr, "replay: %s: cannot size file\n", path);
        goto out;
    }
    /* exact-size heap copy so that sanitizers see reads past the end */
    data = malloc(n > 0 ? (size_t)n : 1);
    if (data == NULL || (n > 0 && fread(data, 1, (size_t)n, f) != (size_t)n)) {
        (void)fprintf(stderr, "replay: %s: read failed\n", path);
        goto out;
    }
    (void)LLVMFuzzerTestOneInput(data, (size_t)n);
    rc = 0;
out:
    free(data);
    (void)fclose(f);
    return rc;
}

static int
cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int
run_dir(const char *dir, unsigned *count)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;

    if (d == NULL) {
        (void)fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
        return -1;
    }
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        if (n == cap) {
            char **nn;

            cap = cap ? cap * 2 : 64;
            nn = realloc(names, cap * sizeof *names);
            if (nn == NULL) {
                rc = -1;
                goto out;
            }
            names = nn;
        }
        names[n] = strdup(de->d_name);
        if (names[n] == NULL) {
            rc = -1;
            goto out;
        }
        n++;
    }
    if (n > 0)
        qsort(names, n, sizeof *names, cmp_names);
    for (size_t i = 0; i < n && rc == 0; i++) {
        size_t len = strlen(dir) + strlen(names[i]) + 2;
        char *p = malloc(len);
        struct stat st;

        if (p == NULL) {
            rc = -1;
            break;
        }
        (void)snprintf(p, len, "%s/%s", dir, names[i]);
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) {
            rc = run_file(p);
            if (rc == 0)
                (*count)++;
        }
        free(p);
    }
out:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    (void)closedir(d);
    return rc;
}

int
main(int argc, char **argv)
{
    unsigned count = 0;

    if (argc < 2) {
        (void)fprintf(stderr, "usage: %s <corpus-dir-or-file>...\n", argv[0]);
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        struct stat st;
        int rc;

        if (stat(argv[i], &st) != 0) {
            (void)fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
            return 1;
        }
        if (S_ISDIR(st.st_mode)) {
            rc = run_dir(argv[i], &count);
        } else {
            rc = run_file(argv[i]);
            if (rc == 0)
                count++;
        }
        if (rc != 0)
            return 1;
    }
    (void)printf("replay: %u input(s) ran without failure\n", count);
    return count > 0 ? 0 : 1;
}
