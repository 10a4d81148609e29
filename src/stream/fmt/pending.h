/* pending.h -- TRANSITIONAL: weak references to format-contract functions whose implementations
 * are being written on other branches (fmt-avro, fmt-proto, the JSON scanner).
 *
 * Until those land, a weak undefined function has the address NULL, so callers test it and answer
 * ERR_NOT_IMPLEMENTED instead of failing to link. DELETE THIS FILE (and every #include of it) once
 * the implementations are merged: a weak reference does not make the linker pull the defining
 * object out of libayder.a, so keeping it could leave a merged parser unused.
 */
#ifndef AYDER_STREAM_FMT_PENDING_H
#define AYDER_STREAM_FMT_PENDING_H

#include "stream/fmt/avro.h"
#include "stream/fmt/json.h"
#include "stream/fmt/proto.h"

#pragma weak avro_schema_parse
#pragma weak avro_schema_free
#pragma weak avro_schema_canonical
#pragma weak sfmt_avro_new
#pragma weak proto_schema_parse
#pragma weak proto_schema_from_fds
#pragma weak proto_schema_free
#pragma weak proto_message_by_index
#pragma weak sfmt_proto_new
#pragma weak sfmt_json_new

#endif
