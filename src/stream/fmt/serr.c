/* serr.c -- client-facing error text for schema and query errors (fmt.h). */
#include "stream/fmt/fmt.h"

#include <stdarg.h>
#include <stdio.h>

void serr_set(struct serr *e, const char *path, const char *fmt, ...)
{
    if (!e)
        return;
    snprintf(e->path, sizeof e->path, "%s", path ? path : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
}
