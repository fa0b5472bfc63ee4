# dconn: build, test, run. `make run` and `make test` install what is missing first.
PREFIX   ?= /usr/local
BUILD    := build
PKGS     := lua5.4 libuv libcurl libedit libh2o zlib
NN_PKGS  := openblas lapacke
CC       ?= cc
WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes
CFLAGS   ?= -O2 -g
BASE_CFLAGS = -std=c11 -D_GNU_SOURCE $(WARN) -Iruntime $(shell pkg-config --cflags $(PKGS) $(NN_PKGS) 2>/dev/null)
LIBS      = $(shell pkg-config --libs $(PKGS) 2>/dev/null) -l:liblua5.4-cjson.so -lm -ldl
NN_LIBS   = $(shell pkg-config --libs $(NN_PKGS) 2>/dev/null) -lm

# runtime/ is the host and its native modules, runtime/cli/ the program and its commands. The
# model engine (runtime/nn/: BLAS, LAPACK) is a plugin next to the binary, loaded on first use,
# so an agent that never predicts starts without them.
NN_SRCS  := $(wildcard runtime/nn/*.c)
SRCS     := $(wildcard runtime/*.c runtime/cli/*.c)
HDRS     := $(wildcard runtime/*.h runtime/*/*.h)
OBJS     := $(SRCS:runtime/%.c=$(BUILD)/obj/%.o)
NN_OBJS  := $(NN_SRCS:runtime/%.c=$(BUILD)/obj/%.o)
SAN_OBJS := $(SRCS:runtime/%.c=$(BUILD)/san/%.o)
SAN_NN_OBJS := $(NN_SRCS:runtime/%.c=$(BUILD)/san/%.o)
SANITIZE := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
C_TESTS  := $(patsubst tests/unit/c/%.c,%,$(wildcard tests/unit/c/test_*.c))

# Debian packages the build, the tests and the linters need.
DEPS := gcc make pkg-config liblua5.4-dev lua-cjson-dev libuv1-dev libcurl4-openssl-dev \
        libedit-dev libh2o-dev zlib1g-dev lua-busted lua-check libcmocka-dev cppcheck tmux tzdata \
        openssl nginx-light wrk curl python3 python3-venv libopenblas-dev liblapacke-dev python3-numpy \
        lua-yaml prometheus mmdebstrap umoci zsh

.PHONY: all deps run check test k8s-control-plane bench faults sanitize gcstress lint format install clean fuzz image

all: $(BUILD)/dconn $(BUILD)/dconn-nn.so

deps:
	@missing=""; for p in $(DEPS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null || exit 1; \
	fi

$(BUILD)/obj/%.o: runtime/%.c $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(BASE_CFLAGS) $(CFLAGS) -fPIC -c $< -o $@

$(BUILD)/dconn: $(OBJS)
	$(CC) $(CFLAGS) $(OBJS) -o $@ $(LIBS) -Wl,-E

$(BUILD)/dconn-nn.so: $(NN_OBJS)
	$(CC) $(CFLAGS) -shared $(NN_OBJS) -o $@ $(NN_LIBS)

$(BUILD)/san/%.o: runtime/%.c $(HDRS)
	@mkdir -p $(@D)
	$(CC) $(BASE_CFLAGS) -O1 -g $(SANITIZE) -fPIC -c $< -o $@

$(BUILD)/sanitize/dconn: $(SAN_OBJS) $(BUILD)/sanitize/dconn-nn.so | $(BUILD)/sanitize
	$(CC) $(SANITIZE) $(SAN_OBJS) -o $@ $(LIBS) -Wl,-E

$(BUILD)/sanitize/dconn-nn.so: $(SAN_NN_OBJS) | $(BUILD)/sanitize
	$(CC) $(SANITIZE) -shared $(SAN_NN_OBJS) -o $@ $(NN_LIBS)

# What each C test links besides cmocka: the sources under test and their libraries. The host's
# test links host.c and clock.c alone: the host knows no module.
test_cron_SRCS        := runtime/cron.c runtime/timefmt.c
test_timefmt_SRCS     := runtime/timefmt.c
test_safetensors_SRCS := runtime/nn/safetensors.c
test_gzip_SRCS        := runtime/gzip.c
test_gzip_LIBS        := -lz
test_host_SRCS        := runtime/host.c runtime/clock.c
test_host_LIBS         = $(shell pkg-config --libs lua5.4 libuv 2>/dev/null)

.SECONDEXPANSION:
$(BUILD)/tests/%: tests/unit/c/%.c $$($$*_SRCS) $(HDRS) | $(BUILD)/tests
	$(CC) $(BASE_CFLAGS) -O1 -g $(SANITIZE) $< $($*_SRCS) -o $@ -lcmocka $($*_LIBS) -lm

$(BUILD)/sanitize $(BUILD)/tests:
	mkdir -p $@

# The cloudedge example's data: two hours of telemetry the default policy replays, a day of it
# to train the per-node models policies/max_qos.lua uses (generated, not committed).
CLOUDEDGE := examples/cloudedge
EXAMPLE_DATA := $(CLOUDEDGE)/telemetry.csv $(CLOUDEDGE)/models/models.json

$(CLOUDEDGE)/telemetry.csv: $(CLOUDEDGE)/generate_telemetry.lua | $(BUILD)/dconn
	$(BUILD)/dconn $< --hours 2 --out $@

$(CLOUDEDGE)/telemetry-24h.csv: $(CLOUDEDGE)/generate_telemetry.lua | $(BUILD)/dconn
	$(BUILD)/dconn $< --hours 24 --out $@

$(CLOUDEDGE)/models/models.json: $(CLOUDEDGE)/train.py $(CLOUDEDGE)/telemetry-24h.csv
	/usr/bin/python3 $< $(CLOUDEDGE)/telemetry-24h.csv

# The container image (image/build.sh, as root): Debian 12's runtime libraries extracted by
# mmdebstrap (cached under build/image until image/ changes), `make install`'s tree, policies/
# and examples/ (with their data) in /usr/share/dconn, written by umoci as an OCI layout and
# archive. Rebuilt when dconn, its Lua library, the policies or the examples change.
VERSION := $(shell sed -n 's/^\#define DCONN_VERSION "\(.*\)"/\1/p' runtime/version.h)
IMAGE := $(BUILD)/image/dconn-$(VERSION).oci.tar
IMAGE_INPUTS = $(BUILD)/dconn $(BUILD)/dconn-nn.so $(EXAMPLE_DATA) $(shell find image lua policies examples -type f \
  ! -name telemetry-24h.csv ! -path '*/.*' ! -path '*/mlruns/*' 2>/dev/null)

image: deps $(IMAGE)
	@cat $(BUILD)/image/contents.txt

$(IMAGE): $(IMAGE_INPUTS)
	@rm -rf $(BUILD)/image/stage
	@$(MAKE) --no-print-directory install DESTDIR=$(abspath $(BUILD)/image/stage) PREFIX=/usr >/dev/null
	image/build.sh $(VERSION) $(BUILD)/image/stage $(BUILD)/image
	@rm -rf $(BUILD)/image/stage

# The default example on embedded defaults: replayed telemetry, a simulated cluster (a copy of
# its state under build/run), a local tracker (build/run/mlruns), 2-second ticks for 20 seconds.
run: deps all $(EXAMPLE_DATA)
	@rm -rf $(BUILD)/run && mkdir -p $(BUILD)/run && cp $(CLOUDEDGE)/cluster.json $(BUILD)/run/
	DCONN_K8S_SIM_STATE=$(BUILD)/run/cluster.json MLFLOW_TRACKING_URI=file:$(BUILD)/run/mlruns \
	  $(BUILD)/dconn run $(CLOUDEDGE)/policy.lua --every 2s --stop-after 20s

# What every run of the whole suite needs: the example data, the C tests, the test venv's
# packages, kubectl, the Kubernetes control plane and the image.
SUITE_DEPS = $(EXAMPLE_DATA) $(C_TESTS:%=$(BUILD)/tests/%) .venv/bin/schemathesis-ok .venv/bin/mlflow-ok \
             .venv/bin/pandas-ok $(BUILD)/kubectl/kubectl k8s-control-plane $(IMAGE)

# The fast suites: the C tests and tests/unit (no servers, no Python, no venv, no example data).
check: deps all $(C_TESTS:%=$(BUILD)/tests/%)
	@tests/run-all.sh $(BUILD)/dconn unit

# Every suite: tests/unit, then tests/integration (real servers and peers, dconn end to end).
test: deps all $(SUITE_DEPS)
	@tests/run-all.sh $(BUILD)/dconn

# The fault table alone (tests/integration/faults_spec.lua, also part of make test): real MLflow,
# Prometheus and the Kubernetes test API server broken and restored under a running agent; as
# root (a full disk is a small tmpfs it mounts).
faults: deps all .venv/bin/mlflow-ok
	@$(BUILD)/dconn tests/busted.lua -o TAP --lpath='tests/lib/?.lua' tests/integration/faults_spec.lua

bench: deps all .venv/bin/apscheduler-ok .venv/bin/onnxruntime-ok .venv/bin/mlflow-ok
	@tests/bench/run.sh $(BUILD)/dconn
	@tests/bench/json.sh $(BUILD)/dconn
	@tests/bench/http.sh $(BUILD)/dconn
	@tests/bench/server.sh $(BUILD)/dconn
	@tests/bench/model.sh $(BUILD)/dconn
	@tests/bench/tracker.sh $(BUILD)/dconn
	@tests/bench/policy.sh $(BUILD)/dconn
	@tests/bench/soak.sh $(BUILD)/dconn

# The benchmark's peer (APScheduler 3.x) in a venv; if it cannot be installed the benchmark
# still runs and says the peer is missing.
.venv/bin/apscheduler-ok:
	@{ python3 -m venv .venv && .venv/bin/pip install -q 'apscheduler>=3.10,<4' && touch $@; } \
	  || echo "bench: could not install APScheduler into .venv; the peer will be skipped" >&2

# The model benchmark's peer: ONNX Runtime running the same network, built as an ONNX graph with
# the onnx package from the same weights; if they cannot be installed the benchmark says so and
# prints dconn's figures alone.
.venv/bin/onnxruntime-ok:
	@{ { [ -x .venv/bin/pip ] || python3 -m venv .venv; } && .venv/bin/pip install -q 'onnxruntime>=1.20,<2' 'onnx>=1.17,<2' \
	  && touch $@; } || echo "bench: could not install onnxruntime and onnx into .venv; the ONNX Runtime peer will be skipped" >&2

# schemathesis fuzzes the agent API in tests/integration/api_spec.lua (same venv as the bench's
# peer); if it cannot be installed, that spec fails rather than being skipped.
.venv/bin/schemathesis-ok:
	@{ { [ -x .venv/bin/pip ] || python3 -m venv .venv; } && .venv/bin/pip install -q 'schemathesis>=4,<5' \
	  && touch $@; } || echo "test: could not install schemathesis into .venv; api_spec will fail" >&2

# tests/integration/tracker_spec.lua runs a real MLflow tracking server (SQLite backend) and reads
# back with the MLflow Python client; the first install takes a few minutes.
.venv/bin/mlflow-ok:
	@{ { [ -x .venv/bin/pip ] || python3 -m venv .venv; } && .venv/bin/pip install -q 'mlflow>=3.5,<4' \
	  && touch $@; } || echo "test: could not install mlflow into .venv; tracker_spec will fail" >&2

# tests/integration/telemetry_spec.lua checks `dconn telemetry` against the original preprocessing written with
# pandas (tests/telemetry_reference.py).
.venv/bin/pandas-ok:
	@{ { [ -x .venv/bin/pip ] || python3 -m venv .venv; } && .venv/bin/pip install -q 'pandas>=2.2,<3' \
	  && touch $@; } || echo "test: could not install pandas into .venv; telemetry_spec will fail" >&2

# tests/integration/k8s_spec.lua runs real kubectl against its test API server: the kubectl on
# PATH, else Debian's kubernetes-client package unpacked under build/kubectl (it conflicts with
# other kubectl packages, so it is not installed).
$(BUILD)/kubectl/kubectl:
	@mkdir -p $(@D); if command -v kubectl >/dev/null 2>&1; then ln -sf "$$(command -v kubectl)" $@; \
	else { cd $(@D) && apt-get download kubernetes-client >/dev/null && dpkg -x kubernetes-client_*.deb root \
	  && ln -sf root/usr/bin/kubectl kubectl; } || echo "test: could not fetch kubectl; k8s_spec will fail" >&2; fi

# tests/integration/k8s_real_spec.lua and k8s_migrate_spec.lua run a real control plane
# (tests/k8s/cluster.sh): Kubernetes built from the Go module proxy once, at the version
# tests/k8s/go.mod pins, into ~/.cache/dconn-k8s/VERSION/bin (10 to 27 minutes on two cores the
# first time; nothing to do afterwards). It needs Go 1.26 and the module proxy; if it cannot be
# built those specs fail.
k8s-control-plane:
	@tests/k8s/cluster.sh build || echo "test: could not build the Kubernetes control plane; k8s_real_spec and k8s_migrate_spec will fail" >&2

# libFuzzer (clang only for these targets), each for FUZZ_TIME seconds, one after the other:
# safetensors and cron straight on their C, the Lua parsers through fuzz_lua.c (the host and its
# native modules around tests/fuzz/<target>.lua): the CSV export, kubeconfig, JSON and the agent
# API's router. Seeds in tests/fuzz/corpus/<target>/ (and the model fixtures); the corpora grow
# under build/fuzz/corpus/, crashes land in build/fuzz/ as <target>-crash-*. The Lua targets run
# without LeakSanitizer's check after each input (a Lua heap keeps what its collector has not
# reached yet: every input would look like a leak and cost a full scan); growth still shows in
# peak_rss_mb and past -rss_limit_mb.
FUZZ_TIME ?= 60
FUZZ_C_TARGETS   := safetensors cron
FUZZ_LUA_TARGETS := export kubeconfig json api
FUZZ_TARGETS     := $(FUZZ_C_TARGETS) $(FUZZ_LUA_TARGETS)
FUZZ_CFLAGS       = -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=address,undefined -Iruntime
FUZZ_OBJS        := $(wildcard runtime/*.c)
FUZZ_OBJS        := $(FUZZ_OBJS:runtime/%.c=$(BUILD)/fuzz/obj/%.o)
safetensors_FUZZ_SRCS := runtime/nn/safetensors.c
cron_FUZZ_SRCS        := runtime/cron.c runtime/timefmt.c

fuzz: DEPS += clang libclang-rt-14-dev
fuzz: deps $(FUZZ_TARGETS:%=$(BUILD)/fuzz/fuzz_%)
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(BUILD)/fuzz/corpus/$$t && cp tests/fuzz/corpus/$$t/* $(BUILD)/fuzz/corpus/$$t/ 2>/dev/null; \
	  [ $$t != safetensors ] || cp tests/fixtures/model/*.safetensors $(BUILD)/fuzz/corpus/$$t/; \
	  echo "fuzz: $$t for $(FUZZ_TIME) s"; leaks=1; case " $(FUZZ_LUA_TARGETS) " in *" $$t "*) leaks=0;; esac; \
	  $(BUILD)/fuzz/fuzz_$$t -detect_leaks=$$leaks -max_total_time=$(FUZZ_TIME) -max_len=4096 -rss_limit_mb=2048 -print_final_stats=1 \
	    -artifact_prefix=$(BUILD)/fuzz/$$t- $(BUILD)/fuzz/corpus/$$t 2>$(BUILD)/fuzz/$$t.log \
	    || { tail -40 $(BUILD)/fuzz/$$t.log; exit 1; }; \
	  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' $(BUILD)/fuzz/$$t.log; \
	done

$(FUZZ_C_TARGETS:%=$(BUILD)/fuzz/fuzz_%): $(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $$($$*_FUZZ_SRCS) $(HDRS)
	@mkdir -p $(@D)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer $< $($*_FUZZ_SRCS) -o $@ -lm

$(BUILD)/fuzz/obj/%.o: runtime/%.c $(HDRS)
	@mkdir -p $(@D)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link $(shell pkg-config --cflags $(PKGS) 2>/dev/null) -fPIC -c $< -o $@

$(FUZZ_LUA_TARGETS:%=$(BUILD)/fuzz/fuzz_%): $(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_lua.c tests/fuzz/%.lua $(FUZZ_OBJS)
	clang $(FUZZ_CFLAGS) -fsanitize=fuzzer $(shell pkg-config --cflags $(PKGS) 2>/dev/null) \
	  -DFUZZ_SCRIPT='"$(abspath tests/fuzz/$*.lua)"' $< $(FUZZ_OBJS) -o $@ $(LIBS) -Wl,-E

# The whole suite with the ASan+UBSan build and the Lua collector running continuously, so a
# value the C code forgot to anchor is collected (and caught) at once.
gcstress: deps all $(BUILD)/sanitize/dconn $(SUITE_DEPS)
	@DCONN_GC_STRESS=1 ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  tests/run-all.sh $(BUILD)/sanitize/dconn

# The whole suite again with an ASan+UBSan build of dconn.
sanitize: deps all $(BUILD)/sanitize/dconn $(SUITE_DEPS)
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  tests/run-all.sh $(BUILD)/sanitize/dconn

# Code style: .clang-format (clang-format 19, Debian's clang-format-19) for the C of runtime/ and
# tests/, stylua.toml (StyLua, built once with cargo into $(TOOLS), shared by every checkout) for
# the Lua. `make format` rewrites the files, `make lint` fails on any difference.
CLANG_FORMAT   := clang-format-19
STYLUA_VERSION := 2.6.0
TOOLS          ?= $(HOME)/.cache/dconn-tools
STYLUA_BUILT   := $(TOOLS)/stylua-$(STYLUA_VERSION)/bin/stylua
STYLUA         ?= $(STYLUA_BUILT)
CARGO          ?= $(shell command -v cargo 2>/dev/null || echo $(HOME)/.cargo/bin/cargo)
C_FILES         = $(shell find runtime tests -name '*.[ch]' | sort)
LUA_DIRS        = lua tests examples deploy $(wildcard policies)

# Lua 5.4 syntax only and no language server: about a minute and a half on 2 cores.
$(STYLUA_BUILT):
	@[ -x "$(CARGO)" ] || { echo "lint: building StyLua $(STYLUA_VERSION) needs cargo (https://rustup.rs)" >&2; exit 1; }
	$(CARGO) install stylua --locked --version $(STYLUA_VERSION) --no-default-features --features lua54 \
	  --root $(TOOLS)/stylua-$(STYLUA_VERSION) --quiet

lint format: DEPS += clang-format-19

lint: deps $(filter $(STYLUA_BUILT),$(STYLUA))
	luacheck --quiet $(LUA_DIRS)
	cppcheck --quiet --error-exitcode=1 --std=c11 --enable=warning,style,performance,portability \
	  --suppress=missingIncludeSystem --inline-suppr -Iruntime runtime tests/unit/c
	$(CLANG_FORMAT) --dry-run -Werror $(C_FILES)
	$(STYLUA) --check $(LUA_DIRS)
	@echo "lint: clean"

# StyLua can need a second pass to settle (a call it breaks open on the first, it hugs on the next).
format: deps $(filter $(STYLUA_BUILT),$(STYLUA))
	$(CLANG_FORMAT) -i $(C_FILES)
	@for pass in 1 2 3; do $(STYLUA) --check $(LUA_DIRS) >/dev/null 2>&1 && break; \
	  echo "$(STYLUA) $(LUA_DIRS)"; $(STYLUA) $(LUA_DIRS) || exit 1; done

# The Lua tree is replaced whole, so modules of an older layout (lua/dconn/k8s_sim.lua beside
# lua/dconn/k8s/sim.lua, say) cannot shadow or outlive the ones installed now.
LUA_FILES := $(shell find lua -name '*.lua')
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/dconn $(DESTDIR)$(PREFIX)/share/dconn
	install -m 755 $(BUILD)/dconn $(DESTDIR)$(PREFIX)/bin/dconn
	install -m 644 $(BUILD)/dconn-nn.so $(DESTDIR)$(PREFIX)/lib/dconn/dconn-nn.so
	rm -rf $(DESTDIR)$(PREFIX)/share/dconn/lua
	for f in $(LUA_FILES); do install -D -m 644 $$f $(DESTDIR)$(PREFIX)/share/dconn/$$f || exit 1; done

clean:
	rm -rf $(BUILD) $(CLOUDEDGE)/models $(CLOUDEDGE)/telemetry.csv $(CLOUDEDGE)/telemetry-24h.csv
