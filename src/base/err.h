/* err.h -- the one error table.
 *
 * Every failure in Ayder is a negative ERR_* value. Each has a stable machine code (the "error"
 * field of the HTTP error body), a default human message, and the HTTP status it maps to. Functions
 * return 0 on success and a negative ERR_* on failure; results go through out-parameters.
 */
#ifndef AYDER_BASE_ERR_H
#define AYDER_BASE_ERR_H

/*   name                 code string            HTTP  default message */
#define ERR_TABLE(X)                                                                               \
    X(ERR_INVALID,        "bad_request",          400, "Invalid request")                         \
    X(ERR_INVALID_JSON,   "invalid_json",         400, "Request body is not valid JSON")          \
    X(ERR_MISSING_FIELDS, "missing_fields",       400, "Required fields are missing")             \
    X(ERR_BAD_PARAM,      "bad_params",           400, "Invalid query parameter")                 \
    X(ERR_BAD_ESCAPE,     "bad_escape",           400, "Invalid percent-escape in URL")           \
    X(ERR_BAD_NAME,       "invalid_name",         400, "Invalid name")                            \
    X(ERR_BAD_PARTITION,  "invalid_partition",    400, "Partition out of range")                  \
    X(ERR_UNAUTHORIZED,   "unauthorized",         401, "Missing or unknown bearer token")         \
    X(ERR_FORBIDDEN,      "forbidden",            403, "Token lacks the scope for this route")    \
    X(ERR_NOT_FOUND,      "not_found",            404, "Not found")                               \
    X(ERR_NO_TOPIC,       "unknown_topic",        404, "Topic does not exist")                    \
    X(ERR_NO_ROUTE,       "no_route",             404, "No such route")                           \
    X(ERR_METHOD,         "method_not_allowed",   405, "Method not allowed for this route")       \
    X(ERR_TIMEOUT,        "request_timeout",      408, "Request headers not received in time")    \
    X(ERR_CONFLICT,       "conflict",             409, "Conflicts with existing state")           \
    X(ERR_CAS_MISMATCH,   "cas_mismatch",         409, "CAS value does not match current version")\
    X(ERR_LENGTH_REQUIRED,"length_required",      411, "Content-Length or chunked body required") \
    X(ERR_TOO_LARGE,      "payload_too_large",    413, "Request body too large")                  \
    X(ERR_URI_TOO_LONG,   "uri_too_long",         414, "Request line too long")                   \
    X(ERR_HEADERS_TOO_LARGE, "headers_too_large", 431, "Request header section too large")        \
    X(ERR_RATE_LIMITED,   "rate_limited",         429, "Rate limit exceeded")                     \
    X(ERR_NOT_IMPLEMENTED,"not_implemented",      501, "Not implemented")                         \
    X(ERR_UNSUPPORTED,    "unsupported",          501, "Unsupported transfer coding or version")  \
    X(ERR_UNAVAILABLE,    "unavailable",          503, "Service unavailable")                     \
    X(ERR_NOT_LEADER,     "not_leader",           307, "This node is not the leader")             \
    X(ERR_NO_LEADER,      "no_leader",            503, "No leader is known; retry shortly")       \
    X(ERR_NOT_COMMITTED,  "not_committed",        503, "A leader change discarded the write; it was not applied") \
    X(ERR_COMMIT_TIMEOUT, "commit_timeout",       503, "The write was not confirmed in time; its outcome is unknown") \
    X(ERR_OVERLOADED,     "overloaded",           503, "Server overloaded; retry later")          \
    X(ERR_STORE_FAILED,   "storage_failed",       503, "Storage failed; writes are refused")      \
    X(ERR_NOT_READY,      "not_ready",            503, "Server is not ready")                     \
    X(ERR_NOSPACE,        "insufficient_storage", 507, "No space left on device")                 \
    X(ERR_NOMEM,          "out_of_memory",        503, "Out of memory")                           \
    X(ERR_IO,             "io_error",             500, "I/O error")                               \
    X(ERR_CORRUPT,        "corrupt",              500, "Corrupt data on disk")                    \
    X(ERR_INTERNAL,       "internal",             500, "Internal error")                          \
    X(ERR_AGAIN,          "again",                503, "Try again")                               \
    X(ERR_EOF,            "eof",                  500, "Unexpected end of data")                  \
    X(ERR_SCHEMA_INVALID, "invalid_schema",       422, "Invalid schema")                          \
    X(ERR_SCHEMA_NOT_FOUND, "schema_not_found",   404, "Schema not found")                        \
    X(ERR_SUBJECT_NOT_FOUND, "subject_not_found", 404, "Subject not found")                       \
    X(ERR_VERSION_NOT_FOUND, "version_not_found", 404, "Version not found")                       \
    X(ERR_VERSION_INVALID, "invalid_version",     422, "Invalid version")                         \
    X(ERR_UNPROCESSABLE,  "invalid_query",        422, "The query or schema is not valid")        \
    X(ERR_QUERY_LIMIT,    "query_limit",          413, "A per-call query limit was exceeded")     \
    X(ERR_STALE_TOKEN,    "stale_token",          409, "The feed token is stale: restart from discovery") \
    X(ERR_CLOSED,         "closed",               503, "The stream or its connection is closed")

#define ERR_OK 0

/* Table positions; the error values are their negations minus one: ERR_INVALID == -1, ... */
enum err_index {
#define X(name, code, status, msg) name##__IDX,
    ERR_TABLE(X)
#undef X
    ERR__COUNT
};
enum err_value {
#define X(name, code, status, msg) name = -(name##__IDX + 1),
    ERR_TABLE(X)
#undef X
};

/* Machine code string ("cas_mismatch"); "internal" for unknown values. */
const char *err_code_str(int err);
/* Default message. */
const char *err_message(int err);
/* HTTP status. */
int err_http_status(int err);
/* Map an errno value (positive) to an ERR_*. ENOSPC/EDQUOT -> ERR_NOSPACE, ENOMEM -> ERR_NOMEM. */
int err_from_errno(int e);

#endif
