package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"tasks-api/internal/testbed"
)

// setup is the service under test on a fresh database seeded through its API.
type setup struct {
	bin    string   // the service's binary
	svc    *service // measured
	db     *service // runs the embedded cluster: svc itself, unless svc needs a DATABASE_URL
	client *http.Client
	secret []byte
	users  []user
	pool   deletePool // the delete scenario's tasks
}

// startSetup builds and starts the service, and seeds it. The service's
// defaults are used unless -pool or -exec-mode ask otherwise: those are
// DATABASE_URL parameters, and a DATABASE_URL turns the embedded database
// off, so then one instance runs the embedded cluster (and stays idle) and
// the measured one connects to it over the same socket.
func startSetup(ctx context.Context, o options, w *workspace, debug bool, progress io.Writer) (*setup, error) {
	fmt.Fprintln(progress, "building the service")
	bin, err := testbed.BuildService(ctx, w.dir)
	if err != nil {
		return nil, err
	}
	s := &setup{bin: bin, secret: newSecret(), client: newClient(o.conns)}
	spec := serviceSpec{name: "service", bin: bin, secret: s.secret, dataDir: filepath.Join(w.dir, "data"), debug: debug}
	custom := o.pool > 0 || o.execMode != ""
	if custom {
		spec.name, spec.debug = "embedded-db", false
	}
	fmt.Fprintln(progress, "starting the service on a fresh embedded PostgreSQL")
	if s.db, err = startService(ctx, w, spec); err != nil {
		return nil, err
	}
	s.svc = s.db
	if custom {
		spec.name, spec.debug = "service", debug
		spec.databaseURL = s.db.databaseURL(poolParams(o))
		fmt.Fprintf(progress, "starting the measured service with DATABASE_URL=%s\n", spec.databaseURL)
		if s.svc, err = startService(ctx, w, spec); err != nil {
			s.stop()
			return nil, err
		}
	}
	fmt.Fprintf(progress, "seeding %d users × %d tasks through the API\n", seedUsers, seedTasksPerUser)
	start := time.Now()
	if s.users, err = seed(ctx, s.client, s.svc.base, s.secret, true); err != nil {
		s.stop()
		return nil, err
	}
	fmt.Fprintf(progress, "seeded in %s\n", time.Since(start).Round(100*time.Millisecond))
	fmt.Fprintln(progress, "filling and recycling 256 MB of WAL, as a database that has run a while has")
	if err := recycleWAL(ctx, s.db.databaseURL(nil)); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// recycleWAL writes 256 MB of WAL and checkpoints, so that the cluster keeps
// those segments for reuse. A fresh cluster has none: every 16 MB of WAL it
// creates a segment and writes it full of zeros first, which stalls every
// commit for 50–70 ms here, a few times a minute under write load, and sets
// the p99 of a measurement. A database that has run a while recycles its
// old segments instead.
func recycleWAL(ctx context.Context, dbURL string) error {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	// Rows of 1,800 bytes: under the size at which PostgreSQL compresses a
	// row, so the WAL carries every byte.
	_, err = conn.Exec(ctx, `
CREATE TABLE bench_wal_filler AS SELECT g, repeat('x', 1800) AS pad FROM generate_series(1, 140000) g;
DROP TABLE bench_wal_filler;
CHECKPOINT`)
	if err != nil {
		return fmt.Errorf("recycle the WAL: %w", err)
	}
	return nil
}

func poolParams(o options) url.Values {
	v := url.Values{}
	if o.pool > 0 {
		v.Set("pool_max_conns", strconv.Itoa(o.pool))
	}
	if o.execMode != "" {
		v.Set("default_query_exec_mode", o.execMode)
	}
	return v
}

// stop stops the measured service, then the one that runs the database.
func (s *setup) stop() {
	if s.svc != nil {
		s.svc.stop()
	}
	if s.db != nil && s.db != s.svc {
		s.db.stop()
	}
}

func (s *setup) load(conns int) *load {
	return &load{client: s.client, base: s.svc.base, users: s.users, conns: conns}
}

// poolDescription says which database settings the measured service ran with.
func poolDescription(o options) string {
	if o.pool == 0 && o.execMode == "" {
		return "the service's default pool (4 connections per core, 4..32) and exec mode (cache_statement)"
	}
	return "DATABASE_URL parameters " + poolParams(o).Encode()
}
