/*
 * rc.h - forwarding header: latch_rc and struct latch_err live in util/rc.h (they depend on
 * nothing, and util/ - buf, b64 - returns them). Kept only for the files that still include this
 * path while they are being rewritten elsewhere (src/store/, net/http_server.c); include
 * util/rc.h in new code. Thread-safety: see util/rc.h.
 */
#ifndef LATCH_CORE_RC_H
#define LATCH_CORE_RC_H

#include "util/rc.h"

#endif
