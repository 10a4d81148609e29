/* fuzz_journal.c -- libFuzzer target for the journal recovery scan and reader.
 *
 * The input becomes a segment file in a simulated file system. Byte 0 chooses the layout:
 * bit 0 set -> the input after byte 0 is split at its midpoint into two consecutive segment files
 * (the second named after the first's header index + 1000), else one file named for index 1.
 * Then: journal_check_dir, journal_dump_segment, journal_open, a full iteration, and, if the open
 * succeeded, an append + sync + reopen whose result must read back. Any outcome but a crash, a
 * sanitizer report or a failed consistency check is fine: garbage must give ok or an error.
 *
 * The fuzz build links only src/, so the simulator is compiled in here.
 */
#include "../sim/sim_fs.c"

#include "base/err.h"
#include "journal/journal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void check(int cond)
{
    if (!cond)
        abort();
}

static void iterate_all(struct journal *j)
{
    struct journal_iter *it;
    uint64_t first = journal_first_index(j);
    if (journal_iter_open(j, first ? first : 1, &it))
        return;
    uint64_t term, index, prev = 0;
    uint8_t type;
    struct slice p;
    while (journal_iter_next(it, &term, &index, &type, &p) == 1) {
        check(prev == 0 || index == prev + 1);
        prev = index;
    }
    journal_iter_close(it);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    struct sim_fs *s = sim_fs_new(size);
    struct io_fs *fs = sim_fs_io(s);
    io_mkdir(fs, "j");
    const uint8_t *body = data + 1;
    size_t n = size - 1;
    if (data[0] & 1) {
        size_t half = n / 2;
        uint64_t second = 1001;
        if (half >= 24)
            second = get_le64(body + 16) + 1000;
        char path[64];
        snprintf(path, sizeof path, "j/%020llu.seg", (unsigned long long)1);
        sim_fs_write_file(s, path, body, half);
        snprintf(path, sizeof path, "j/%020llu.seg", (unsigned long long)second);
        sim_fs_write_file(s, path, body + half, n - half);
    } else {
        sim_fs_write_file(s, "j/00000000000000000001.seg", body, n);
    }
    FILE *devnull = fopen("/dev/null", "w");
    journal_check_dir(fs, "j", false, devnull);
    journal_dump_segment(fs, "j/00000000000000000001.seg", devnull);
    fclose(devnull);

    struct journal *j;
    struct journal_recovery rec;
    struct journal_opts o = {.segment_bytes = 4096};
    if (journal_open(fs, "j", &o, &j, &rec) == 0) {
        iterate_all(j);
        uint64_t last = journal_last_index(j);
        uint64_t term = journal_last_term(j);
        int rc = journal_append(j, term, last + 1, 1, SLICE_LIT("fuzz"));
        if (rc == 0)
            rc = journal_sync_now(j);
        journal_close(j);
        if (rc == 0) {
            check(journal_open(fs, "j", &o, &j, &rec) == 0);
            check(journal_last_index(j) == last + 1);
            iterate_all(j);
            journal_close(j);
        }
    }
    sim_fs_free(s);
    return 0;
}
