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

#include <stdbool.h>
#include <stdint.h>

#define HARDSTATE_BYTES 32u

/* Read dir/meta. A missing file is term 0, no vote (0). ERR_CORRUPT on a damaged file. */
int hardstate_load(struct io_fs *fs, const char *dir, uint64_t *term, uint64_t *vote);
/* Durably replace dir/meta (dir must exist). 0 or an I/O error (the caller treats it as fatal). */
int hardstate_save(struct io_fs *fs, const char *dir, uint64_t term, uint64_t vote);

/* DATA_DIR/raft/commit: a committed index this node had applied and fsynced in its journal, with
 * that entry's term. A restarted cluster node re-applies its journal up to it on its own, instead
 * of serving the older checkpoint state until a leader re-tells it the commit index.
 *
 * Written in place without fsync (every 200 ms at most): after a crash it may be older than what
 * the node had applied, or missing, or torn (CRC) -- all of which only mean a lower index. It is
 * trusted only if the journal still holds that index with that term (Log Matching: then every
 * entry up to it is the committed one). */
#define COMMITMARK_BYTES 32u

/* Read dir/commit. Missing or damaged: *index = *term = 0 and 0 (damaged also sets *damaged). */
int commitmark_load(struct io_fs *fs, const char *dir, uint64_t *index, uint64_t *term,
                    bool *damaged);
/* Write dir/commit holding this mark durably (tmp, fsync, rename, fsync dir) and open it for
 * commitmark_write into *out (close it with io_close). Called once per process, for the first
 * mark: from then on the file's name and 32 valid bytes survive a power loss, so the in-place
 * overwrites that follow can only leave an older mark (or, torn, a damaged one), never a file
 * that is missing or empty because its creation was never made durable. */
int commitmark_create(struct io_fs *fs, const char *dir, uint64_t index, uint64_t term,
                      struct io_file **out);
/* Overwrite the mark in f (from commitmark_create) in place; no fsync. */
int commitmark_write(struct io_file *f, uint64_t index, uint64_t term);

#endif
