/* hardstate.h -- the Raft hard state file DATA_DIR/raft/meta: current term and vote.
 *
 * What this module owns: the file's format (docs/DISK_FORMAT.md "Raft hard state") and its
 * durable replacement. Written before any message that depends on it leaves the node
 * (raft.h, ready step 1): tmp file -> fsync -> rename -> fsync dir, so a crash leaves either the
 * old or the new state, never a mix.
 */
#ifndef AYDER_CORE_HARDSTATE_H
#define AYDER_CORE_HARDSTATE_H

#include "io/io.h"

#include <stdint.h>

#define HARDSTATE_BYTES 32u

/* Read dir/meta. A missing file is term 0, no vote (0). ERR_CORRUPT on a damaged file. */
int hardstate_load(struct io_fs *fs, const char *dir, uint64_t *term, uint64_t *vote);
/* Durably replace dir/meta (dir must exist). 0 or an I/O error (the caller treats it as fatal). */
int hardstate_save(struct io_fs *fs, const char *dir, uint64_t term, uint64_t vote);

#endif
