# kroute - build, run, test, install.
#   make run      install missing Debian packages, build, serve routes/ on the
#                 embedded broker and feed sample events
#   make test     every suite (unit, integration, sanitizers); ends "N passed, N failed"
#   make install PREFIX=/usr/local [DESTDIR=...]
#   make deb      a Debian package, .build/deb/kroute_VERSION_ARCH.deb

PREFIX  ?= /usr/local
DESTDIR ?=
VERSION := 0.1.0

CC      ?= cc
PKGS    := lua5.4 rdkafka yaml-0.1
CFLAGS  ?= -O2 -g
WARN    := -Wall -Wextra -Werror=implicit-function-declaration
CPPFLAGS_ALL := -D_GNU_SOURCE -DKR_VERSION='"$(VERSION)"' \
	-DKR_LUA_DIR='"$(PREFIX)/share/kroute/lua"' -Icore -I/usr/include/lua5.4
LIBS    := -llua5.4 -lrdkafka -lyaml -lmicrohttpd -lpthread -lm

BUILD   := .build
# every header a core source may include: core/ and its layers
HDRS    := $(wildcard core/*.h core/*/*.h)
# core/'s layers (see core/README.md): route files, Kafka I/O, wire formats,
# the Lua runtime, the dispatcher, operations, the other subcommands
CONFIG_SRCS  := config/config.c config/config_nodes.c config/config_props.c config/config_routes.c \
	config/errors.c config/pattern.c
KAFKA_SRCS   := kafka/consumer.c kafka/producer.c kafka/kafkaconf.c kafka/watermarks.c \
	kafka/broker.c kafka/requester.c kafka/health.c
CODEC_SRCS   := codec/json.c codec/jsnum.c codec/utf8.c codec/nest.c
RUNTIME_SRCS := runtime/vm.c runtime/vm_alloc.c runtime/vm_sandbox.c runtime/vm_run.c \
	runtime/strbound.c runtime/strbound_match.c runtime/strbound_table.c \
	runtime/message.c runtime/record.c runtime/lapi.c runtime/worker.c runtime/generation.c \
	runtime/pool.c
ENGINE_SRCS  := engine/dispatch.c engine/groups.c engine/lanes.c engine/inmsg.c engine/runs.c \
	engine/outputs.c engine/spares.c engine/outcome.c engine/pass.c
OPS_SRCS     := ops/log.c ops/metrics.c ops/watch.c ops/admin.c
COMMAND_SRCS := commands/graph.c commands/spectest.c commands/replay.c
# the router core: everything but the CLI and test-only bindings
CORE_SRCS := $(CONFIG_SRCS) $(KAFKA_SRCS) $(CODEC_SRCS) $(RUNTIME_SRCS) $(ENGINE_SRCS) \
	$(OPS_SRCS) $(COMMAND_SRCS) router.c
CORE_OBJS := $(CORE_SRCS:%.c=$(BUILD)/obj/%.o)
# the native module kroute.native (make install and make deb ship it, for
# `kroute test`)
NATIVE_SO := $(BUILD)/lua/kroute/native.so
PIC_OBJS  := $(CORE_SRCS:%.c=$(BUILD)/pic/%.o) $(BUILD)/pic/luamod.o
# the test-only module kroute.testsupport (core/testsupport/): processes, a
# Kafka client and admin calls for the specs; never installed
TS_SO     := $(BUILD)/lua/kroute/testsupport.so
TS_SRCS   := module.c call.c kafka.c process.c client.c admin.c mock.c bounded.c
TS_OBJS   := $(TS_SRCS:%.c=$(BUILD)/pic/testsupport/%.o)
ASAN_OBJS := $(CORE_SRCS:%.c=$(BUILD)/asan/%.o) $(BUILD)/asan/main.o
ASAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined

APT_PKGS := build-essential pkg-config liblua5.4-dev lua5.4 librdkafka-dev libyaml-dev \
	libmicrohttpd-dev lua-busted lua-cjson kcat curl python3 python3-prometheus-client

.PHONY: all deps kafka kafka-fetch kafka-stop run test test-kafka test-unit test-integration test-asan test-package valgrind bench fuzz install uninstall deb clean

all: $(BUILD)/kroute $(NATIVE_SO) $(TS_SO)

# Installs what is missing (as root on Debian 12); a no-op when all is there.
deps:
	@missing=""; for p in $(APT_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || missing="$$missing nodejs npm"; \
	command -v java >/dev/null 2>&1 || missing="$$missing openjdk-17-jre-headless"; \
	command -v mvn >/dev/null 2>&1 || missing="$$missing maven"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	fi

# `%` may name a subfolder (engine/dispatch): its object folder is made first
$(BUILD)/obj/%.o: core/%.c $(HDRS) | $(BUILD)/obj
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS_ALL) $(CFLAGS) $(WARN) -c $< -o $@
$(BUILD)/pic/%.o: core/%.c $(HDRS) | $(BUILD)/pic
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS_ALL) $(CFLAGS) $(WARN) -fPIC -c $< -o $@
$(BUILD)/asan/%.o: core/%.c $(HDRS) | $(BUILD)/asan
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS_ALL) $(ASAN_FLAGS) $(WARN) -c $< -o $@
$(BUILD)/pic/testsupport/%.o: core/testsupport/%.c $(HDRS) | $(BUILD)/pic/testsupport
	$(CC) $(CPPFLAGS_ALL) $(CFLAGS) $(WARN) -fPIC -c $< -o $@
$(BUILD)/pic/testsupport:
	mkdir -p $@

$(BUILD)/obj $(BUILD)/pic $(BUILD)/asan $(BUILD)/lua/kroute:
	mkdir -p $@

$(BUILD)/kroute: $(CORE_OBJS) $(BUILD)/obj/main.o
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/kroute-asan: $(ASAN_OBJS)
	$(CC) $(ASAN_FLAGS) -o $@ $^ $(LIBS)

# The fuzz target replaying spec/fuzz/corpus under ASan+UBSan (in make test).
FUZZ_SRCS := ops/log.c $(CONFIG_SRCS) codec/json.c codec/jsnum.c codec/utf8.c
$(BUILD)/fuzz-regress: core/fuzz.c $(FUZZ_SRCS:%=core/%) $(HDRS) | $(BUILD)/asan
	$(CC) $(CPPFLAGS_ALL) -DKR_FUZZ_REGRESS $(ASAN_FLAGS) $(WARN) -o $@ core/fuzz.c \
		$(FUZZ_SRCS:%=core/%) $(LIBS)

# libFuzzer on the route-file loader, topic patterns and JSON (clang; not in
# CI). New crashers land in .build/fuzz-corpus; copy them to spec/fuzz/corpus.
FUZZ_SECONDS ?= 60
fuzz: deps
	@command -v clang >/dev/null || { echo "make fuzz needs clang (apt-get install clang)"; exit 2; }
	mkdir -p $(BUILD)/fuzz-corpus
	clang $(CPPFLAGS_ALL) -g -O1 -fsanitize=fuzzer,address,undefined -o $(BUILD)/fuzz \
		core/fuzz.c $(FUZZ_SRCS:%=core/%) $(LIBS)
	$(BUILD)/fuzz -max_total_time=$(FUZZ_SECONDS) -max_len=4096 $(BUILD)/fuzz-corpus spec/fuzz/corpus

# The real C bindings as a loadable module, for `kroute test` and the specs.
$(NATIVE_SO): $(PIC_OBJS) | $(BUILD)/lua/kroute
	$(CC) -shared $(LDFLAGS) -o $@ $^ -lrdkafka -lyaml -lmicrohttpd -lpthread -lm

# The test support links its own copy of the core it calls (watermarks,
# JSON): Lua loads each module with its symbols private (RTLD_LOCAL).
$(TS_SO): $(TS_OBJS) $(CORE_SRCS:%.c=$(BUILD)/pic/%.o) | $(BUILD)/lua/kroute
	$(CC) -shared -o $@ $^ -lrdkafka -lyaml -lmicrohttpd -lpthread -lm

run: deps all
	@sh examples/demo.sh

test: deps all $(BUILD)/kroute-asan $(BUILD)/fuzz-regress
	@sh spec/run.sh

# Apache Kafka's broker (pinned in spec/support/kafka.sh) through Maven into
# .build/kafka, once. `make kafka` starts a single KRaft node on a free
# loopback port and prints its address; `make kafka-stop` stops it.
kafka-fetch: deps
	@sh spec/support/kafka.sh fetch

kafka: kafka-fetch
	@mkdir -p .build/kafka/run
	@sh spec/support/kafka.sh start .build/kafka/run/dev 1 >/dev/null
	@echo "Apache Kafka serving on $$(cat .build/kafka/run/dev/bootstrap) (stop: make kafka-stop)"

kafka-stop:
	@sh spec/support/kafka.sh stop .build/kafka/run/dev

test-kafka: all kafka-fetch
	@sh spec/run.sh kafka

test-unit: all $(BUILD)/fuzz-regress
	@sh spec/run.sh unit

test-integration: all
	@sh spec/run.sh integration

test-asan: all $(BUILD)/kroute-asan
	@sh spec/run.sh asan

test-package:
	@sh spec/run.sh package

# Benchmarks (figures, never pass/fail): throughput against a C librdkafka
# reference, memory over 10M events, the JSON codec against lua-cjson,
# request/reply against NestJS, and hot reload latency and throughput with
# 100 routes.
bench: deps all $(BUILD)/bench-passthrough kafka-fetch
	@lua5.4 spec/bench/throughput_bench.lua
	@KROUTE_TEST_BROKER=kafka lua5.4 spec/bench/throughput_bench.lua
	@lua5.4 spec/bench/memory_bench.lua
	@lua5.4 spec/bench/backlog_bench.lua
	@lua5.4 spec/bench/json_bench.lua
	@lua5.4 spec/bench/request_bench.lua
	@KROUTE_TEST_BROKER=kafka lua5.4 spec/bench/request_bench.lua
	@lua5.4 spec/bench/reload_bench.lua
	@sh spec/support/kafka.sh stop-all

# The references the throughput bench compares kroute with: the C
# pass-through, and with a script the naive C + Lua + lua-cjson loop.
$(BUILD)/bench-passthrough: spec/bench/passthrough.c | $(BUILD)/obj
	$(CC) -I/usr/include/lua5.4 $(CFLAGS) $(WARN) -o $@ $< -lrdkafka -llua5.4

# kroute under valgrind for the main routing paths (not part of `make test`:
# it is slow); a leak or memory error makes kroute exit 66 and the spec fail.
valgrind: all
	@printf '#!/bin/sh\nexec valgrind -q --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=66 "$$(dirname "$$0")/kroute" "$$@"\n' > $(BUILD)/kroute-valgrind
	@chmod +x $(BUILD)/kroute-valgrind
	@KROUTE_BIN=$(BUILD)/kroute-valgrind sh spec/run.sh integration-file spec/integration/routing_spec.lua spec/integration/request_spec.lua spec/integration/workers_spec.lua

# The worked examples (every examples/*/ folder) and routes/ go to
# PREFIX/share/kroute, side by side as in the repository, so
# `kroute check PREFIX/share/kroute/routes` works on an install.
install: $(BUILD)/kroute $(NATIVE_SO)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/kroute/lua/kroute \
		$(DESTDIR)$(PREFIX)/lib/kroute/lua/kroute $(DESTDIR)$(PREFIX)/share/man/man1 \
		$(DESTDIR)$(PREFIX)/share/bash-completion/completions $(DESTDIR)$(PREFIX)/share/kroute/routes
	install -m 755 $(BUILD)/kroute $(DESTDIR)$(PREFIX)/bin/kroute
	install -m 644 lua/kroute/*.lua $(DESTDIR)$(PREFIX)/share/kroute/lua/kroute/
	install -m 644 $(NATIVE_SO) $(DESTDIR)$(PREFIX)/lib/kroute/lua/kroute/native.so
	install -m 644 core/kroute.1 $(DESTDIR)$(PREFIX)/share/man/man1/kroute.1
	install -m 644 core/kroute.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/kroute
	install -m 644 routes/*.yaml $(DESTDIR)$(PREFIX)/share/kroute/routes/
	find examples -mindepth 2 -type f ! -path '*/node_modules/*' -exec sh -c \
		'for f; do install -D -m 644 "$$f" "$$0/$$f" || exit 1; done' \
		$(DESTDIR)$(PREFIX)/share/kroute {} +

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/kroute $(DESTDIR)$(PREFIX)/share/man/man1/kroute.1 \
		$(DESTDIR)$(PREFIX)/share/bash-completion/completions/kroute
	rm -rf $(DESTDIR)$(PREFIX)/share/kroute $(DESTDIR)$(PREFIX)/lib/kroute

# The Debian package: built with PREFIX=/usr and Debian's hardening flags in
# its own tree (.build/deb, never mixed with the dev build; from scratch each
# time, as objects do not track VERSION or flag changes), installed into a
# staging root, then .debian/build.sh adds the unit, /etc files and
# maintainer scripts and runs dpkg-deb.
DEB_BUILD      := .build/deb
DEB_MAINTAINER ?= kroute maintainers <kroute@localhost>
deb: deps
	rm -rf $(DEB_BUILD)
	$(MAKE) --no-print-directory BUILD=$(DEB_BUILD) PREFIX=/usr DESTDIR=$(CURDIR)/$(DEB_BUILD)/root \
		CFLAGS="$$(dpkg-buildflags --get CFLAGS) $$(dpkg-buildflags --get CPPFLAGS)" \
		LDFLAGS="$$(dpkg-buildflags --get LDFLAGS)" install
	sh .debian/build.sh $(DEB_BUILD)/root $(VERSION) "$(DEB_MAINTAINER)" $(DEB_BUILD)

clean:
	rm -rf $(BUILD)
