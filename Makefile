# Makefile for the idempotency extension (PGXS)

EXTENSION = idempotency idempotency_tap
MODULE_big = idempotency
OBJS = src/init.o src/settings.o src/api.o src/ledger.o src/ledger_row.o src/ledger_sql.o \
	src/ledger_direct.o src/fingerprint.o src/launcher.o src/sweeper.o
OBJS += src/scope_guard.o
OBJS += src/sweep_board.o src/sweep_schedule.o src/sweeper_control.o
OBJS += src/owner.o
OBJS += src/await.o
OBJS += src/stats.o
OBJS += src/citus.o
OBJS += src/ledger_digest.o
# install scripts are frozen once released; each later version is an upgrade
# script, which CREATE EXTENSION applies after the 1.0 install script
DATA = idempotency--1.0.sql idempotency--1.0--1.1.sql idempotency--1.1--1.2.sql idempotency--1.2--1.3.sql \
	idempotency_tap--1.0.sql idempotency_tap--1.0--1.1.sql
PGFILEDESC = "idempotency - idempotency keys inside PostgreSQL"

PG_CFLAGS += -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare \
	-Wno-missing-field-initializers -Wno-cast-function-type

# pg_regress: one file per behaviour, in sql/ and expected/
REGRESS = begin finish fail once key fingerprint sweep guc logged security input inheritance constraints rewrite own_attempt schema_rename
REGRESS += upgrade scope_grants
REGRESS += digest upgrade_digest
REGRESS += owner
REGRESS += await upgrade_1_2
REGRESS += distribute
REGRESS += upgrade_1_3
REGRESS_OPTS = --inputdir=.

# isolation specs: test/specs/*.spec with test/expected/*.out
ISOLATION = wait_replay wait_abort nowait lease_takeover once_race
ISOLATION += scope_grants_cache sweep_race
ISOLATION += await upgrade_race
ISOLATION_OPTS = --inputdir=test

# Perl TAP tests: test/t/*.pl (PostgreSQL::Test::Cluster)
TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# the ledger's key digest calls OpenSSL's SHA-256 directly when PostgreSQL
# was built with it (src/ledger_digest.c)
ifeq ($(with_ssl),openssl)
SHLIB_LINK += -lcrypto
endif
