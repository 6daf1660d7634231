# vmcgi: a FastCGI responder that runs webhook handlers in microVMs.
#
#   make          build build/vmcgi
#   make image    build the guest kernel + initramfs under build/guest
#   make demo     install, build, and send the example webhooks via nginx
#   make run      the same, but keep serving until Ctrl-C
#   make test     install, build and run every test
#   make fuzz     each libFuzzer harness of tests/fuzz for FUZZ_TIME
#                 seconds (60); crash inputs stay under build/fuzz
#   make bench    the same set-up plus gVisor and fcgiwrap, then the
#                 benchmark of bench/run.py (docs/bench-results.md)
#
# V=1 shows the commands; WERROR= turns warnings back into warnings.

CC	?= cc
BUILD	:= build
V	?= 0
WERROR	?= -Werror

Q := $(if $(filter 1,$(V)),,@)

CFLAGS	+= -std=gnu11
CFLAGS	+= -O2 -g
CFLAGS	+= -D_GNU_SOURCE
CFLAGS	+= -Wall
CFLAGS	+= -Wextra
CFLAGS	+= -Wshadow
CFLAGS	+= -Wformat=2
CFLAGS	+= -Wmissing-prototypes
CFLAGS	+= -Wstrict-prototypes
CFLAGS	+= $(WERROR)
CFLAGS	+= -Iinclude
CFLAGS	+= -pthread

LDLIBS	+= -lfcgi
LDLIBS	+= -liniparser
LDLIBS	+= -pthread
LDLIBS	+= -lseccomp

SRCS	:= src/accel.c
SRCS	+= src/admit.c
SRCS	+= src/broker.c
SRCS	+= src/cgroup.c
SRCS	+= src/chan.c
SRCS	+= src/codecache.c
SRCS	+= src/config.c
SRCS	+= src/fcgiguard.c
SRCS	+= src/jail.c
SRCS	+= src/log.c
SRCS	+= src/pool.c
SRCS	+= src/privsep.c
SRCS	+= src/qmp.c
SRCS	+= src/request.c
SRCS	+= src/response.c
SRCS	+= src/route.c
SRCS	+= src/vm.c
SRCS	+= src/worker.c

OBJS	:= $(SRCS:src/%.c=$(BUILD)/obj/%.o)

# Debian packages: to build, to build the guest, to run and to test.
DEB_BUILD := gcc make pkg-config libc6-dev libfcgi-dev libiniparser-dev
DEB_BUILD += libnl-3-dev libnl-route-3-dev libseccomp-dev
DEB_GUEST := busybox-static cpio zstd apt
DEB_RUN   := qemu-system-x86 nginx iproute2
DEB_TEST  := python3 curl
DEB_BENCH := runsc fcgiwrap
DEB_FUZZ  := clang libclang-rt-14-dev
STAMP_DEPS := $(BUILD)/.deps-installed
STAMP_BENCH := $(BUILD)/.bench-deps-installed

.PHONY: all deps image demo run test unit fuzz fuzz-build bench clean

all: $(BUILD)/vmcgi

$(STAMP_DEPS):
	@mkdir -p $(BUILD)
	$(Q)tests/install-deps.sh $(DEB_BUILD) $(DEB_GUEST) $(DEB_RUN) $(DEB_TEST) \
		$(DEB_FUZZ)
	@touch $@

deps: $(STAMP_DEPS)

$(STAMP_BENCH):
	@mkdir -p $(BUILD)
	$(Q)tests/install-deps.sh $(DEB_BENCH)
	@touch $@

$(BUILD)/obj/%.o: src/%.c include/*.h
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/vmcgi: $(OBJS) $(BUILD)/obj/main.o
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

AGENT_SRCS := $(wildcard src/agent/*.c)

$(BUILD)/agent: $(AGENT_SRCS) include/proto.h include/denylist.h
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $@ (static)")
	$(Q)$(CC) -std=gnu11 -O2 -Wall -Wextra $(WERROR) -Iinclude -static \
		-o $@ $(AGENT_SRCS) -lseccomp

$(BUILD)/guest/initrd.img: $(BUILD)/agent guest/init guest/mkimage.sh guest/zygote.py
	$(Q)guest/mkimage.sh $(BUILD)/guest $(BUILD)/debs $(BUILD)/agent

image: $(STAMP_DEPS) $(BUILD)/guest/initrd.img

UNIT_TESTS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(wildcard tests/unit/test_*.c))

$(BUILD)/tests/%: tests/unit/%.c $(OBJS)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $@")
	$(Q)$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

unit: $(UNIT_TESTS)
	$(Q)tests/run-unit.sh $(UNIT_TESTS)

demo: $(STAMP_DEPS) all image
	$(Q)examples/demo.sh

run: $(STAMP_DEPS) all image
	$(Q)examples/demo.sh --serve

# Fuzzing: libFuzzer harnesses with ASan and UBSan, one per input vmcgi
# or its agent parses; daemon and agent sources are rebuilt with clang.
FUZZ_CC		:= clang
FUZZ_TIME	?= 60
FUZZ_NAMES	:= fcgi chan agent config route
FUZZ_SAN	:= -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_CFLAGS	:= $(filter-out -O2,$(CFLAGS)) -O1 -fno-omit-frame-pointer
FUZZ_CFLAGS	+= $(FUZZ_SAN) -Wno-format-nonliteral	# gcc allows va_list
FUZZ_AGENT	:= $(filter-out src/agent/agent.c src/agent/handler.c, \
		    $(AGENT_SRCS))
FUZZ_OBJS	:= $(SRCS:src/%.c=$(BUILD)/fuzz/obj/%.o)
FUZZ_AOBJS	:= $(FUZZ_AGENT:src/agent/%.c=$(BUILD)/fuzz/obj/agent/%.o)
FUZZ_BINS	:= $(FUZZ_NAMES:%=$(BUILD)/fuzz/fuzz_%)

$(BUILD)/fuzz/obj/agent/%.o: src/agent/%.c src/agent/agent.h include/proto.h
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZCC  $<")
	$(Q)$(FUZZ_CC) -std=gnu11 -g -O1 -Wall -Wextra $(WERROR) -Iinclude \
		$(FUZZ_SAN) -fsanitize=fuzzer-no-link -c -o $@ $<

$(BUILD)/fuzz/obj/%.o: src/%.c include/*.h
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZCC  $<")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

$(BUILD)/fuzz/fuzz_agent: tests/fuzz/fuzz_agent.c $(FUZZ_AOBJS)
	@$(if $(Q),echo "  FUZZLD  $@")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $^ $(LDLIBS)

$(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_OBJS)
	@$(if $(Q),echo "  FUZZLD  $@")
	$(Q)$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $^ $(LDLIBS)

.SECONDARY: $(FUZZ_OBJS) $(FUZZ_AOBJS)

fuzz-build: $(STAMP_DEPS) $(FUZZ_BINS)

fuzz: fuzz-build
	$(Q)tests/fuzz/run.sh $(BUILD) $(FUZZ_TIME) $(FUZZ_NAMES)

test: $(STAMP_DEPS) all image $(UNIT_TESTS) $(FUZZ_BINS)
	$(Q)tests/run-all.sh $(BUILD)

# Not part of test: about five minutes, and it never fails on a figure.
bench: $(STAMP_DEPS) all image $(STAMP_BENCH)
	$(Q)/usr/bin/python3 bench/run.py $(BUILD)

clean:
	rm -rf $(BUILD)/obj $(BUILD)/tests $(BUILD)/vmcgi $(BUILD)/agent \
		$(BUILD)/fuzz/obj $(FUZZ_BINS)
