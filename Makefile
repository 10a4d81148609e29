# Ayder build. `make` builds ./ayder; `make test` runs every test tier that CI runs.
# make SANITIZER=address|undefined|asan-ubsan|thread   builds everything with that sanitizer.
# make ARCH=arm64   cross-builds build-arm64/ayder and build-arm64/unit_tests for aarch64 with
#                   Debian's gcc-aarch64-linux-gnu and the :arm64 libraries (tools/install-deps
#                   arm64); run them with qemu-aarch64 (tests/arm64/run, docs/TESTING.md).

ARCH     ?=
ifeq ($(ARCH),arm64)
  # Cross build. libavro-dev and libhttp-parser-dev are not multiarch-co-installable with their
  # amd64 versions, so tools/install-deps arm64 unpacks their :arm64 packages under ARM64_DEV
  # (headers, the libX.so link to the :arm64 runtime library); everything else comes from the
  # multiarch :arm64 -dev packages in /usr/include and /usr/lib/aarch64-linux-gnu.
  RUN       := qemu-aarch64
  CC        := aarch64-linux-gnu-gcc
  AR        := aarch64-linux-gnu-ar
  ARM64_DEV ?= /opt/ayder-arm64-dev
  ARCH_INCS := -I$(ARM64_DEV)/usr/include
  LDFLAGS   += -L$(ARM64_DEV)/usr/lib/aarch64-linux-gnu
else ifneq ($(ARCH),)
  $(error ARCH=$(ARCH): only ARCH=arm64 (a cross build) is supported; leave ARCH unset for a native build)
endif
CC       ?= cc
AR       ?= ar
OPT      ?= -O2
CFLAGS   ?= $(OPT) -g
WARN     := -std=c11 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-missing-field-initializers
DEFS     := -D_GNU_SOURCE
INCS     := -Isrc $(ARCH_INCS)
LIBS     := -luv -ljansson -lssl -lcrypto -lavro -lprotobuf-c -lpthread -lm

ifeq ($(SANITIZER),asan-ubsan)
  CFLAGS += -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
  LDFLAGS += -fsanitize=address,undefined
else ifeq ($(SANITIZER),address)
  CFLAGS += -fsanitize=address -fno-omit-frame-pointer
  LDFLAGS += -fsanitize=address
else ifeq ($(SANITIZER),undefined)
  CFLAGS += -fsanitize=undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
  LDFLAGS += -fsanitize=undefined
else ifeq ($(SANITIZER),thread)
  CFLAGS += -fsanitize=thread
  LDFLAGS += -fsanitize=thread
endif

BUILD    := build$(if $(ARCH),-$(ARCH))$(if $(SANITIZER),-$(SANITIZER))
# One folder per layer; every .c under src/ except main.c goes into the library.
LIB_SRC  := $(sort $(wildcard src/base/*.c src/io/*.c src/http/*.c src/journal/*.c src/raft/*.c \
              src/broker/*.c src/kv/*.c src/metrics/*.c src/core/*.c src/api/*.c src/bench/*.c \
              src/stream/*.c src/stream/fmt/*.c src/schema/*.c src/cli/*.c src/kafka/*.c))
# The web console (src/ui/assets/) is embedded at build time: each file and its `gzip -9 -n` form
# become byte arrays in build/gen/ui_assets.c, written by src/ui/embed.c (see src/ui/ui_assets.h).
UI_NAMES := $(sort $(notdir $(wildcard src/ui/assets/*)))
UI_GZ    := $(UI_NAMES:%=build/gen/ui/%.gz)
UI_GEN   := build/gen/ui_assets.c
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o) $(BUILD)/$(UI_GEN:.c=.o)
UNIT_SRC := $(sort $(wildcard tests/unit/*.c tests/sim/*.c))
UNIT_OBJ := $(UNIT_SRC:%.c=$(BUILD)/%.o)
FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz_*.c))
DEPS     := $(LIB_OBJ:.o=.d) $(UNIT_OBJ:.o=.d) $(BUILD)/src/main.d $(LIB_SRC:%.c=build-fuzz/%.d)

.PHONY: all clean test unit arm64-test integration shim cluster jepsen fuzz-replay fuzz fuzz-build bench bench-cluster bench-query bench-subscribe soak deps test-deps

ifeq ($(ARCH),arm64)
# A cross build never replaces ./ayder (the native binary the other tiers run).
all: $(BUILD)/ayder $(BUILD)/unit_tests
else
all: ayder
endif

ifeq ($(ARCH),)
# Replace by rename so a running ./ayder (tests, a local node) never blocks the build.
ayder: $(BUILD)/ayder
	cp $< $@.tmp && mv -f $@.tmp $@
else
.PHONY: ayder
ayder:
	@echo "ARCH=$(ARCH) builds $(BUILD)/ayder; ./ayder stays the native binary" >&2; exit 1
endif

$(BUILD)/ayder: $(BUILD)/src/main.o $(BUILD)/libayder.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/libayder.a: $(LIB_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

build/gen/ui_embed: src/ui/embed.c
	@mkdir -p $(dir $@)
	$(CC) -O2 $(WARN) -o $@ $<

build/gen/ui/%.gz: src/ui/assets/%
	@mkdir -p $(dir $@)
	gzip -9 -n -c $< >$@.tmp && mv -f $@.tmp $@

# Also re-made when a file is added or removed (the name list is in the command).
$(UI_GEN): build/gen/ui_embed $(UI_GZ) $(UI_NAMES:%=src/ui/assets/%) Makefile
	./build/gen/ui_embed $@.tmp src/ui/assets build/gen/ui $(UI_NAMES) && mv -f $@.tmp $@

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(WARN) $(DEFS) $(INCS) -MMD -MP -c -o $@ $<

$(BUILD)/unit_tests: $(UNIT_OBJ) $(BUILD)/libayder.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS) -lhttp_parser

# The power-loss shim (LD_PRELOAD) used by the integration tests: never linked into ayder.
shim: $(BUILD)/fsync_shim.so
$(BUILD)/fsync_shim.so: tools/fsync-shim/fsync_shim.c
	@mkdir -p $(dir $@)
	$(CC) -O2 -Wall -Wextra -Werror -shared -fPIC -o $@ $< -ldl

# (ARCH=arm64: under qemu-aarch64.)
unit: $(BUILD)/unit_tests
	$(RUN) ./$(BUILD)/unit_tests

# Fuzz targets: clang-14 libFuzzer with ASan+UBSan. fuzz-replay runs each checked-in corpus once;
# `make fuzz FUZZ_SECONDS=600` runs each target for that long.
FUZZ_CC      ?= clang-14
FUZZ_FLAGS   := -g -O1 -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
FUZZ_LINK    := -fsanitize=fuzzer,address,undefined
FUZZ_OBJ     := $(LIB_SRC:%.c=build-fuzz/%.o) build-fuzz/$(UI_GEN:.c=.o)
FUZZ_SECONDS ?= 30
fuzz-build: $(FUZZ_SRC:tests/fuzz/%.c=build-fuzz/%)
build-fuzz/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -std=c11 -D_GNU_SOURCE -Isrc -MMD -MP -c -o $@ $<
build-fuzz/libayder.a: $(FUZZ_OBJ)
	@rm -f $@
	ar rcs $@ $^
build-fuzz/%: tests/fuzz/%.c build-fuzz/libayder.a
	$(FUZZ_CC) $(FUZZ_FLAGS) $(FUZZ_LINK) -std=c11 -D_GNU_SOURCE -Isrc -o $@ $< build-fuzz/libayder.a $(LIBS)

fuzz-replay: fuzz-build
	@set -e; for t in $(FUZZ_SRC:tests/fuzz/%.c=%); do \
	  mkdir -p tests/fuzz/corpus/$$t; \
	  echo "fuzz-replay $$t"; ./build-fuzz/$$t -runs=0 tests/fuzz/corpus/$$t >/dev/null 2>build-fuzz/$$t.log || { cat build-fuzz/$$t.log; exit 1; }; \
	done

fuzz: fuzz-build
	@set -e; for t in $(FUZZ_SRC:tests/fuzz/%.c=%); do \
	  mkdir -p build-fuzz/new-$$t; \
	  ./build-fuzz/$$t -max_total_time=$(FUZZ_SECONDS) build-fuzz/new-$$t tests/fuzz/corpus/$$t; \
	done

integration: ayder $(BUILD)/fsync_shim.so $(BUILD)/squery_run
	FSYNC_SHIM_LIB=$(CURDIR)/$(BUILD)/fsync_shim.so /usr/bin/python3 -m pytest -q tests/integration

# Real-process cluster tests in a private network namespace (tests/cluster/run); `make jepsen`
# runs the long version (more faults, longer workloads).
cluster: ayder
	tests/cluster/run

jepsen: ayder
	AYDER_JEPSEN=1 tests/cluster/run

test:
	tools/run-tests

# The unit tests and an HTTP smoke test of the aarch64 cross build under qemu-aarch64.
arm64-test:
	tests/arm64/run

bench: ayder
	bench/run

# Raft figures on this box (bench/cluster) and sparse-write latency on 3 nodes (bench/cluster-sparse).
bench-cluster: ayder
	bench/cluster
	bench/cluster-sparse

# Longer runs of the randomized tiers (not in CI): more simulation seeds, more SIGKILL cycles,
# and every fuzz target for FUZZ_SECONDS each.
soak: ayder $(BUILD)/unit_tests $(BUILD)/squery_run
	CORE_SIM_SEEDS=$${CORE_SIM_SEEDS:-5000} ./$(BUILD)/unit_tests core_sim
	AYDER_SOAK=1 /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/integration/test_durability.py
	AYDER_SOAK=1 /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/integration/test_stream_query_sqlite.py
	$(MAKE) fuzz FUZZ_SECONDS=$${FUZZ_SECONDS:-600}

# The query engine's feed loop over in-memory 64-byte JSON records (docs/BENCHMARKS.md).
$(BUILD)/query_bench: bench/query_bench.c $(BUILD)/libayder.a
	$(CC) $(CFLAGS) $(WARN) $(DEFS) $(INCS) -o $@ $< $(BUILD)/libayder.a $(LIBS)

# The engine-level runner the SQLite differential test drives (many queries per record set).
$(BUILD)/squery_run: tests/stream/squery_run.c $(BUILD)/libayder.a
	$(CC) $(CFLAGS) $(WARN) $(DEFS) $(INCS) -o $@ $< $(BUILD)/libayder.a $(LIBS)

bench-query: $(BUILD)/query_bench
	./$(BUILD)/query_bench 2000000

deps:
	tools/install-deps build

test-deps:
	tools/install-deps test

clean:
	rm -rf build build-* ayder

-include $(DEPS)

# Join engine throughput (docs/BENCHMARKS.md "Join engine"): engine alone, one core.
bench-join: $(BUILD)/join_bench
	./$(BUILD)/join_bench 1000000 100000 50
$(BUILD)/join_bench: bench/join/join_bench.c $(BUILD)/libayder.a
	$(CC) $(CFLAGS) $(WARN) $(DEFS) $(INCS) -o $@ $^ $(LIBS)

# Push-delivery load client (docs/BENCHMARKS.md "Subscriptions"): epoll over 10,000 sockets,
# driven by bench/subscribe. libc only.
$(BUILD)/sub_load: bench/sub_load.c
	$(CC) $(CFLAGS) $(WARN) $(DEFS) -o $@ $< -lpthread
bench-subscribe: ayder $(BUILD)/sub_load
	bench/subscribe
