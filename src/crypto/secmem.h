/*
 * secmem.h - memory for key material: its own pages, locked (best effort: RLIMIT_MEMLOCK may be
 * tiny) and left out of core dumps; wiped before release. For the vault's key ring, index key and
 * key file text (crypto/ only).
 * Ownership: the caller owns what secmem_alloc returns and frees it with secmem_free and the same
 * size. Threads: any thread.
 */
#ifndef LATCH_SECMEM_H
#define LATCH_SECMEM_H

#include <stddef.h>

/* n zero bytes; aborts when memory is exhausted (never NULL). */
void *secmem_alloc(size_t n);
/* Wipes and releases; NULL-safe. */
void secmem_free(void *p, size_t n);

#endif
