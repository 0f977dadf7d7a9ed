#include "util/json.h"

#include "util/xalloc.h"

json_t *
latch_json_col(const char *text)
{
    json_t *v;

    if (text == NULL)
        return json_null();
    v = json_loads(text, JSON_DECODE_ANY, NULL);
    return v != NULL ? v : json_null();
}

char *
latch_json_dump(const json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);

    return s != NULL ? s : xstrdup("null");
}
