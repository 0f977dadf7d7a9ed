#include "crypto/secmem.h"

#include <sys/mman.h>
#include <stdlib.h>

#include <openssl/crypto.h>

#include "core/log.h"

void *
secmem_alloc(size_t n)
{
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (p == MAP_FAILED) {
        log_error("out of memory", "what=secmem_alloc bytes=%zu", n);
        abort();
    }
    (void)mlock(p, n); /* best effort: RLIMIT_MEMLOCK may be tiny */
#ifdef MADV_DONTDUMP
    (void)madvise(p, n, MADV_DONTDUMP);
#endif
    return p; /* zero-filled */
}

void
secmem_free(void *p, size_t n)
{
    if (p == NULL)
        return;
    OPENSSL_cleanse(p, n);
    (void)munlock(p, n);
    (void)munmap(p, n);
}
