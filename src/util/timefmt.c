#include "util/timefmt.h"

#include <stdio.h>
#include <time.h>

#include "util/str.h"

void
latch_fmt_time(int64_t ms, bool plus00, char out[40])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    char tmp[128];

    gmtime_r(&t, &tm);
    (void)snprintf(tmp, sizeof tmp, "%04d-%02d-%02dT%02d:%02d:%02d.%03d%s", tm.tm_year + 1900,
                   tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000),
                   plus00 ? "+00:00" : "Z");
    latch_strlcpy(out, tmp, 40);
}
