package main

import "os"

// The pgbouncer pass (TEST_PGBOUNCER=1) runs the whole suite with Debian's
// pgbouncer in transaction pooling mode (pgtest.PgBouncer) between the
// service and PostgreSQL, as Neon's -pooler endpoint is: every pool the
// service under test uses goes through it (poolOptions{Pooled: true}, which
// sends every statement unnamed), while database creation, migrations and the
// tests' own inspection connect directly.

// pgbouncerPass reports whether this run is the pgbouncer pass.
func pgbouncerPass() bool { return os.Getenv("TEST_PGBOUNCER") != "" }

// serviceURL is the URL the service under test reaches dbURL's database by:
// through pgbouncer in the pgbouncer pass, else dbURL itself. Whatever must
// not go through a transaction-mode pooler (creating databases, migrations,
// session-level locks of the tests) uses dbURL directly.
func (db *testDatabase) serviceURL(dbURL string) string {
	if db.pooler != nil {
		return db.pooler.URL(dbURL)
	}
	return dbURL
}

// servicePoolOptions are the pool options of the service under test: pooled
// behind pgbouncer (or when TEST_POOLED asks for the pooled settings alone).
func servicePoolOptions() poolOptions {
	return poolOptions{Pooled: pgbouncerPass() || os.Getenv("TEST_POOLED") != ""}
}
