#include "crypto/keyfile.h"

#include <sys/stat.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "core/log.h"
#include "crypto/secmem.h"
#include "crypto/vault.h"
#include "util/xalloc.h"

void
keyfile_stamp_set(struct keyfile_stamp *s, const struct stat *st)
{
    s->present = true;
    s->dev = st->st_dev;
    s->ino = st->st_ino;
    s->size = st->st_size;
    s->mtim = st->st_mtim;
    s->ctim = st->st_ctim;
}

bool
keyfile_stamp_same(const struct keyfile_stamp *s, const struct stat *st)
{
    return s->present && s->dev == st->st_dev && s->ino == st->st_ino && s->size == st->st_size &&
           s->mtim.tv_sec == st->st_mtim.tv_sec && s->mtim.tv_nsec == st->st_mtim.tv_nsec &&
           s->ctim.tv_sec == st->st_ctim.tv_sec && s->ctim.tv_nsec == st->st_ctim.tv_nsec;
}

static latch_rc
write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);

        if (w < 0) {
            if (errno == EINTR)
                continue;
            return LATCH_E_IO;
        }
        p += w;
        n -= (size_t)w;
    }
    return LATCH_OK;
}

/* Best effort: makes a create/rename in path's directory durable. */
static void
fsync_dir_of(const char *path)
{
    char dir[KEYFILE_MAX_PATH];
    const char *slash = strrchr(path, '/');
    size_t n;
    int fd;

    if (slash == NULL) {
        dir[0] = '.';
        dir[1] = '\0';
    } else {
        n = (size_t)(slash - path);
        if (n == 0)
            n = 1; /* "/file" */
        if (n >= sizeof dir)
            return;
        memcpy(dir, path, n);
        dir[n] = '\0';
    }
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return;
    (void)fsync(fd);
    (void)close(fd);
}

/*
 * Reads the key file into secure memory (*text, KEYFILE_BUF_LEN bytes, free with
 * secure_free). Refuses anything but a regular file private to its owner.
 * LATCH_E_NOT_FOUND if it does not exist.
 */
latch_rc
keyfile_read(const char *path, char **text_out, size_t *len_out, struct keyfile_stamp *stamp,
             struct latch_err *err)
{
    struct stat st;
    char *text = NULL;
    size_t len = 0;
    latch_rc rc = LATCH_OK;
    int fd, e;

    *text_out = NULL;
    *len_out = 0;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        e = errno;
        if (e == ENOENT) {
            latch_err_set(err, "key file %s does not exist", path);
            return LATCH_E_NOT_FOUND;
        }
        latch_err_set(err, "cannot open key file %s: %s", path, strerror(e));
        return e == EACCES ? LATCH_E_DENIED : LATCH_E_IO;
    }
    if (fstat(fd, &st) != 0) {
        latch_err_set(err, "cannot stat key file %s: %s", path, strerror(errno));
        rc = LATCH_E_IO;
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        latch_err_set(err, "key file %s is not a regular file", path);
        rc = LATCH_E_INVAL;
        goto out;
    }
    if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
        latch_err_set(err,
                      "key file %s is accessible by group or others (mode %04o); "
                      "refusing to use it: run chmod 600 %s",
                      path, (unsigned int)(st.st_mode & 07777), path);
        rc = LATCH_E_DENIED;
        goto out;
    }
    if (st.st_size > KEYFILE_MAX_BYTES) {
        latch_err_set(err, "key file %s is larger than %d bytes", path, KEYFILE_MAX_BYTES);
        rc = LATCH_E_TOO_LARGE;
        goto out;
    }
    text = secmem_alloc(KEYFILE_BUF_LEN);
    for (;;) {
        ssize_t r = read(fd, text + len, KEYFILE_BUF_LEN - len);

        if (r < 0) {
            if (errno == EINTR)
                continue;
            latch_err_set(err, "cannot read key file %s: %s", path, strerror(errno));
            rc = LATCH_E_IO;
            goto out;
        }
        if (r == 0)
            break;
        len += (size_t)r;
        if (len > KEYFILE_MAX_BYTES) {
            latch_err_set(err, "key file %s is larger than %d bytes", path, KEYFILE_MAX_BYTES);
            rc = LATCH_E_TOO_LARGE;
            goto out;
        }
    }
    text[len] = '\0';
    keyfile_stamp_set(stamp, &st);
out:
    (void)close(fd);
    if (rc != LATCH_OK) {
        secmem_free(text, KEYFILE_BUF_LEN);
        return rc;
    }
    *text_out = text;
    *len_out = len;
    return LATCH_OK;
}

latch_rc
keyfile_create(const char *path, struct latch_err *err)
{
    char content[256];
    char key[45];
    latch_rc rc = LATCH_OK;
    int fd, n, e;

    vault_new_key_b64(key);
    n = snprintf(content, sizeof content,
                 "# latch encryption keys: one base64 key per line; the last line is primary.\n"
                 "%s\n",
                 key);
    OPENSSL_cleanse(key, sizeof key);
    if (n < 0 || (size_t)n >= sizeof content) {
        rc = LATCH_E_INTERNAL;
        goto out;
    }
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        e = errno;
        if (e == EEXIST) {
            rc = LATCH_E_CONFLICT;
            goto out;
        }
        latch_err_set(err, "cannot create key file %s: %s", path, strerror(e));
        rc = LATCH_E_IO;
        goto out;
    }
    if (fchmod(fd, 0600) != 0 || write_all(fd, content, (size_t)n) != LATCH_OK || fsync(fd) != 0) {
        latch_err_set(err, "cannot write key file %s: %s", path, strerror(errno));
        (void)close(fd);
        (void)unlink(path);
        rc = LATCH_E_IO;
        goto out;
    }
    if (close(fd) != 0) {
        latch_err_set(err, "cannot write key file %s: %s", path, strerror(errno));
        (void)unlink(path);
        rc = LATCH_E_IO;
        goto out;
    }
    fsync_dir_of(path);
    log_info("created encryption key file", "mode=0600 bytes=%d", n);
out:
    OPENSSL_cleanse(content, sizeof content);
    return rc;
}

latch_rc
keyfile_rewrite(const char *path, const char *text, size_t len, struct latch_err *err)
{
    char *tmp = xasprintf("%s.tmp.XXXXXX", path);
    latch_rc rc = LATCH_OK;
    int fd;

    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        latch_err_set(err, "cannot create temporary key file %s: %s", tmp, strerror(errno));
        rc = LATCH_E_IO;
        goto out;
    }
    if (fchmod(fd, 0600) != 0 || write_all(fd, text, len) != LATCH_OK || fsync(fd) != 0) {
        latch_err_set(err, "cannot write temporary key file %s: %s", tmp, strerror(errno));
        (void)close(fd);
        (void)unlink(tmp);
        rc = LATCH_E_IO;
        goto out;
    }
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        latch_err_set(err, "cannot replace key file %s: %s", path, strerror(errno));
        (void)unlink(tmp);
        rc = LATCH_E_IO;
        goto out;
    }
    fsync_dir_of(path);
out:
    free(tmp);
    return rc;
}
