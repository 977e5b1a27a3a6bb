# native/test: the C tests, built with SAN_CFLAGS (ASan + UBSan) against COMMON_SAN_LIB.
#   wire-echo        decodes and re-encodes frames on stdin (test/unit/native-wire.test.ts)
#   wire-fuzz        deterministic mutation fuzzing of the decoder (run by `make test`)
#   transport-client the client transport against a daemon or a fake server (native-transport.test.ts)
#   fuzz-wire        (make fuzz, clang only) the libFuzzer target over the same check as wire-fuzz

TEST_OUT := $(OUT)/test
TEST_SUPPORT := $(NATIVE)/test/wire-check.c
TEST_SUPPORT_HDRS := $(NATIVE)/test/wire-check.h
WIRE_FUZZ_ROUNDS ?= 400

$(TEST_OUT)/%: $(NATIVE)/test/%.c $(TEST_SUPPORT) $(TEST_SUPPORT_HDRS) $(COMMON_SAN_LIB) $(COMMON_HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -I$(NATIVE)/test $(CFLAGS) $(SAN_CFLAGS) $< $(TEST_SUPPORT) $(COMMON_SAN_LIB) $(COMMON_LDLIBS) -o $@

TEST_PROGRAMS += $(TEST_OUT)/wire-echo $(TEST_OUT)/wire-fuzz $(TEST_OUT)/transport-client

.PHONY: run-wire-fuzz
# max_allocation_size_mb: the frames are small, so a decode that allocates more than 16 MiB
# trusted a count it should have bounded by the bytes left (omps_get_list).
run-wire-fuzz: $(TEST_OUT)/wire-fuzz
	ASAN_OPTIONS=max_allocation_size_mb=16 $(TEST_OUT)/wire-fuzz $(WIRE_FUZZ_ROUNDS)
TEST_RUNS += run-wire-fuzz

# libFuzzer needs clang; the target exists only where clang does.
FUZZ_FLAGS := -std=c11 -O1 -g -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
FUZZ_SRCS := $(NATIVE)/test/fuzz-wire.c $(TEST_SUPPORT) $(COMMON_SRCS)
$(OUT)/fuzz/fuzz-wire: $(FUZZ_SRCS) $(TEST_SUPPORT_HDRS) $(COMMON_HDRS)
	@mkdir -p $(dir $@)
	$(CLANG) $(CPPFLAGS) -I$(NATIVE)/test $(FUZZ_FLAGS) $(FUZZ_SRCS) $(COMMON_LDLIBS) -o $@
fuzz: $(OUT)/fuzz/fuzz-wire

# The transport's locking under ThreadSanitizer (it cannot share a build with ASan): the same
# client, built from the sources with -fsanitize=thread, run by test/e2e/native-transport.test.ts.
TSAN_CFLAGS := -fsanitize=thread -fno-omit-frame-pointer
$(TEST_OUT)/tsan/transport-client: $(NATIVE)/test/transport-client.c $(COMMON_SRCS) $(COMMON_HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(TSAN_CFLAGS) $< $(COMMON_SRCS) $(COMMON_LDLIBS) -o $@
TEST_PROGRAMS += $(TEST_OUT)/tsan/transport-client
