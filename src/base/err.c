/* err.c -- lookups into the error table of err.h. */
#include "base/err.h"

#include <errno.h>

struct err_info {
    const char *code;
    int status;
    const char *msg;
};

static const struct err_info table[ERR__COUNT] = {
#define X(name, code, status, msg) {code, status, msg},
    ERR_TABLE(X)
#undef X
};

static const struct err_info *lookup(int err)
{
    int idx = -err - 1;
    if (idx < 0 || idx >= ERR__COUNT)
        return &table[-ERR_INTERNAL - 1];
    return &table[idx];
}

const char *err_code_str(int err) { return lookup(err)->code; }
const char *err_message(int err) { return lookup(err)->msg; }
int err_http_status(int err) { return lookup(err)->status; }

int err_from_errno(int e)
{
    switch (e) {
    case ENOSPC:
#ifdef EDQUOT
    case EDQUOT:
#endif
        return ERR_NOSPACE;
    case ENOMEM:
        return ERR_NOMEM;
    case ENOENT:
        return ERR_NOT_FOUND;
    case EEXIST:
        return ERR_CONFLICT;
    default:
        return ERR_IO;
    }
}
