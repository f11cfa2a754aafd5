# understudy: build, test and developer targets.  `make help` lists them.
#
# Out-of-tree build under $(BUILD) (default build/).  Libraries come from
# Debian packages through pkg-config; `make deps` installs the missing ones
# when run as root and otherwise prints the apt-get line to run.

PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
DOCDIR  ?= $(PREFIX)/share/doc/understudy
DESTDIR ?=

BUILD   ?= build
CC      ?= cc
WERROR  ?= 1
OPT     ?= -O2 -g
SAN     ?=
# FAILPOINTS=1 compiles crash-injection points in (tests only).
FAILPOINTS ?= 0

PKGS := rdkafka libpq yaml-0.1 jansson libmicrohttpd

WARN := -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes \
        -Wmissing-prototypes -Wformat=2 -Wfloat-equal -Wundef -Wvla
ifeq ($(WERROR),1)
WARN += -Werror
endif

ifeq ($(SAN),1)
SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all \
            -fno-omit-frame-pointer
endif
ifeq ($(FAILPOINTS),1)
FPFLAGS := -DUNDERSTUDY_FAILPOINTS=1
endif

# Recursive (=) on purpose: pkg-config runs only when a recipe needs the
# flags, i.e. after `deps` has had a chance to install the packages.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   = $(shell pkg-config --libs $(PKGS))
CMOCKA_CFLAGS = $(shell pkg-config --cflags cmocka)
CMOCKA_LIBS   = $(shell pkg-config --libs cmocka)

ALL_CFLAGS = -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE $(WARN) $(OPT) \
             $(SANFLAGS) $(FPFLAGS) $(CFLAGS) -Iinternal -I$(BUILD)/gen \
             $(PKG_CFLAGS) -MMD -MP
ALL_LDFLAGS = $(SANFLAGS) $(LDFLAGS)
LDLIBS_ALL  = $(PKG_LIBS) -lpthread -lm

LIB_SRC  := $(sort $(wildcard internal/*/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/gen/schema_sql.o
CMD_SRC  := $(sort $(wildcard cmd/understudy/*.c))
CMD_OBJ  := $(CMD_SRC:%.c=$(BUILD)/obj/%.o)
LIB      := $(BUILD)/libunderstudy.a
BIN      := $(BUILD)/understudy
SQL      := $(sort $(wildcard schema/*.sql))

UNIT_SRC  := $(sort $(wildcard test/unit/test_*.c))
UNIT_BIN  := $(UNIT_SRC:test/unit/%.c=$(BUILD)/test/unit/%)
INTEG_SRC := $(sort $(wildcard test/integration/test_*.c))
INTEG_BIN := $(INTEG_SRC:test/integration/%.c=$(BUILD)/test/integration/%)
TESTLIB_SRC := $(sort $(wildcard test/lib/*.c))
TESTLIB_OBJ := $(TESTLIB_SRC:%.c=$(BUILD)/obj/%.o)

C_FILES := $(shell git ls-files '*.c' '*.h' 2>/dev/null || find cmd internal test bench -name '*.[ch]')

# Keep intermediate objects (and keep make quiet after the test summary).
.SECONDARY:

.PHONY: all deps test test-all unit integration demo demo-run asan valgrind lint \
        format format-check install uninstall clean help tests

all: $(BIN)

help:
	@echo 'make            build $(BIN)'
	@echo 'make deps       install missing Debian packages (root) or print the apt-get line'
	@echo 'make test       deps, build, unit tests, integration tests (real PostgreSQL + mock Kafka)'
	@echo 'make demo       deps, build, start local PostgreSQL + mock Kafka, run the demo, stop both'
	@echo 'make asan       the test suite under AddressSanitizer + UBSan (build/asan)'
	@echo 'make valgrind   unit tests under valgrind memcheck'
	@echo 'make lint       clang-tidy + cppcheck'
	@echo 'make format     clang-format the tree; format-check only checks'
	@echo 'make install    PREFIX=$(PREFIX) DESTDIR=$(DESTDIR)'
	@echo 'make clean      remove build/'

deps:
	@scripts/deps.sh

# ---- build ---------------------------------------------------------------

$(BIN): $(CMD_OBJ) $(LIB)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(LDLIBS_ALL)

$(LIB): $(LIB_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/gen/schema_sql.c: $(SQL) scripts/embed-sql.sh
	@mkdir -p $(@D)
	scripts/embed-sql.sh $(SQL) > $@.tmp && mv $@.tmp $@

$(BUILD)/obj/gen/schema_sql.o: $(BUILD)/gen/schema_sql.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(BUILD)/test/unit/%: $(BUILD)/obj/test/unit/%.o $(TESTLIB_OBJ) $(LIB)
	@mkdir -p $(@D)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(CMOCKA_LIBS) $(LDLIBS_ALL)

$(BUILD)/test/integration/%: $(BUILD)/obj/test/integration/%.o $(TESTLIB_OBJ) $(LIB)
	@mkdir -p $(@D)
	$(CC) $(ALL_LDFLAGS) -o $@ $^ $(CMOCKA_LIBS) $(LDLIBS_ALL)

$(BUILD)/obj/test/%.o: ALL_CFLAGS += $(CMOCKA_CFLAGS) -Itest/lib
$(BUILD)/obj/test/%.o: test/%.c
	@mkdir -p $(@D)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

# The crash-safety tests need a binary with failpoints compiled in.
FP_BIN := $(BUILD)/fp/understudy
ifneq ($(FAILPOINTS),1)
$(FP_BIN): FORCE
	@$(MAKE) --no-print-directory BUILD=$(BUILD)/fp FAILPOINTS=1 $(FP_BIN)
endif
.PHONY: FORCE
FORCE:

tests: $(BIN) $(FP_BIN) $(UNIT_BIN) $(INTEG_BIN)

# ---- tests ---------------------------------------------------------------

# `test` installs what is missing first, then re-enters make so that
# pkg-config sees the freshly installed packages.
test: deps
	@$(MAKE) --no-print-directory test-all

test-all: tests
	@scripts/run-tests.sh --bin $(BIN) --fp-bin $(FP_BIN) --unit "$(UNIT_BIN)" \
	    --integration "$(INTEG_BIN)"

unit: $(UNIT_BIN)
	@scripts/run-tests.sh --bin $(BIN) --unit "$(UNIT_BIN)"

integration: $(BIN) $(FP_BIN) $(INTEG_BIN)
	@scripts/run-tests.sh --bin $(BIN) --fp-bin $(FP_BIN) --integration "$(INTEG_BIN)"

asan: deps
	@$(MAKE) --no-print-directory BUILD=build/asan SAN=1 OPT='-O1 -g' test-all

valgrind: deps
	@$(MAKE) --no-print-directory BUILD=build/valgrind OPT='-O0 -g' tests
	@scripts/run-tests.sh --bin build/valgrind/understudy --valgrind \
	    --unit "$(UNIT_BIN:$(BUILD)/%=build/valgrind/%)"

demo: deps
	@$(MAKE) --no-print-directory demo-run

demo-run: $(BIN)
	@scripts/devenv.sh --bin $(BIN) -- scripts/demo.sh

# ---- quality -------------------------------------------------------------

lint: $(BUILD)/gen/schema_sql.c
	clang-tidy --quiet $(LIB_SRC) $(CMD_SRC) -- \
	    -std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -Iinternal -I$(BUILD)/gen $(PKG_CFLAGS)
	cppcheck --quiet --error-exitcode=1 --std=c11 --enable=warning,performance,portability \
	    --inline-suppr --suppress=missingIncludeSystem -Iinternal \
	    $(LIB_SRC) $(CMD_SRC)

format:
	clang-format -i $(C_FILES)

format-check:
	clang-format --dry-run -Werror $(C_FILES)

# ---- install -------------------------------------------------------------

install: $(BIN)
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SYSCONFDIR)/understudy $(DESTDIR)$(DOCDIR)
	install -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/understudy
	install -m 0644 config/understudy.yaml $(DESTDIR)$(SYSCONFDIR)/understudy/understudy.yaml.example
	install -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	install -m 0644 docs/*.md $(DESTDIR)$(DOCDIR)/

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/understudy
	rm -rf $(DESTDIR)$(DOCDIR)

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
