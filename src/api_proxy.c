/*
 * api_proxy.c - the proxy routes: not built yet (issue "Always-fresh tokens and the NinjaOne API
 * proxy"). Answers 501 in the error shape so callers get a clear message.
 */
#include "api.h"

void
api_proxy(struct api_ctx *c)
{
    api_error(c, 501, "not_implemented", "The proxy is not available in this version of latch.");
}
