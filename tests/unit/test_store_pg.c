/*
 * test_store_pg.c - the store contract tests of test_store.c against PostgreSQL (a throwaway
 * server started by tests/pg/start-pg), plus the PostgreSQL-only multi-node and outage tests.
 */
#define STORE_TEST_PG 1
#include "test_store.c"
