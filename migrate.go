package main

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

//go:embed schema.sql
var schemaSQL string

// migration is one version of the schema: a section of schema.sql.
type migration struct {
	Version  int
	Name     string
	SQL      string
	Checksum string // hex SHA-256 of SQL, with line endings normalised
}

var migrationHeader = regexp.MustCompile(`(?m)^-- migration: (\d+) ([a-z0-9_]+)[ \t]*$`)

// parseMigrations splits a schema file into its versions, which must be
// numbered 1, 2, 3... in order.
func parseMigrations(src string) ([]migration, error) {
	src = strings.ReplaceAll(src, "\r\n", "\n") // a Windows checkout must not change checksums
	loc := migrationHeader.FindAllStringSubmatchIndex(src, -1)
	if len(loc) == 0 {
		return nil, errors.New("schema has no \"-- migration: N name\" sections")
	}
	var out []migration
	for i, m := range loc {
		version, _ := strconv.Atoi(src[m[2]:m[3]])
		if version != i+1 {
			return nil, fmt.Errorf("schema: migration %d found where %d was expected", version, i+1)
		}
		end := len(src)
		if i+1 < len(loc) {
			end = loc[i+1][0]
		}
		body := strings.TrimSpace(src[m[1]:end]) + "\n"
		sum := sha256.Sum256([]byte(body))
		out = append(out, migration{Version: version, Name: src[m[4]:m[5]], SQL: body, Checksum: hex.EncodeToString(sum[:])})
	}
	return out, nil
}

// Migrator applies the embedded schema versions. Each version runs in its own
// transaction holding a transaction-scoped advisory lock, so instances that
// start together apply each version exactly once, and it works through a
// transaction-mode pooler (which would lose a session-level lock).
type Migrator struct {
	migrations []migration
	log        *slog.Logger
}

// migrationLockKey is an arbitrary constant naming this service's migration lock.
const migrationLockKey int64 = 0x7461736b735f6d67 // "tasks_mg"

const createMigrationsTable = `
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)`

func newMigrator(log *slog.Logger) (*Migrator, error) {
	ms, err := parseMigrations(schemaSQL)
	if err != nil {
		return nil, err
	}
	return &Migrator{migrations: ms, log: log}, nil
}

// beginner is what the migrator needs of a connection or a pool.
type beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// querier is what read-only checks need of a connection, a pool or a transaction.
type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Up applies every pending version and returns how many it applied. It fails,
// naming the version, when an applied version's text has changed since.
func (m *Migrator) Up(ctx context.Context, db beginner) (int, error) {
	applied := 0
	for _, mg := range m.migrations {
		done, err := m.apply(ctx, db, mg)
		if err != nil {
			return applied, err
		}
		if done {
			applied++
		}
	}
	return applied, nil
}

func (m *Migrator) apply(ctx context.Context, db beginner, mg migration) (applied bool, err error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("migration %d: begin: %w", mg.Version, err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLockKey); err != nil {
		return false, fmt.Errorf("migration %d: lock: %w", mg.Version, err)
	}
	if _, err := tx.Exec(ctx, createMigrationsTable); err != nil {
		return false, fmt.Errorf("migration %d: create schema_migrations: %w", mg.Version, err)
	}
	var checksum string
	err = tx.QueryRow(ctx, `SELECT checksum FROM schema_migrations WHERE version = $1`, mg.Version).Scan(&checksum)
	switch {
	case err == nil:
		if checksum != mg.Checksum {
			return false, changedMigrationError(mg)
		}
		return false, tx.Rollback(ctx) // already applied: nothing to commit
	case !errors.Is(err, pgx.ErrNoRows):
		return false, fmt.Errorf("migration %d: read schema_migrations: %w", mg.Version, err)
	}

	start := time.Now()
	// The simple protocol runs a version's many statements in one round trip.
	if _, err := tx.Exec(ctx, mg.SQL, pgx.QueryExecModeSimpleProtocol); err != nil {
		return false, fmt.Errorf("migration %d (%s): %w", mg.Version, mg.Name, err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)`,
		mg.Version, mg.Name, mg.Checksum); err != nil {
		return false, fmt.Errorf("migration %d: record: %w", mg.Version, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return false, fmt.Errorf("migration %d: commit: %w", mg.Version, err)
	}
	m.log.Info("applied migration", "version", mg.Version, "name", mg.Name, "duration", time.Since(start).Round(time.Millisecond))
	return true, nil
}

func changedMigrationError(mg migration) error {
	return fmt.Errorf("migration %d (%s) was changed after it was applied to this database: "+
		"restore its text in schema.sql and put the change in a new migration", mg.Version, mg.Name)
}

// MigrationStatus is one row of `migrate status`.
type MigrationStatus struct {
	Version   int
	Name      string
	State     string // applied, pending, changed (applied, but its text differs), unknown (applied, not in this build)
	AppliedAt time.Time
}

// Status lists every version, embedded or applied.
func (m *Migrator) Status(ctx context.Context, db querier) ([]MigrationStatus, error) {
	type row struct {
		name, checksum string
		at             time.Time
	}
	applied := map[int]row{}
	rows, err := db.Query(ctx, `SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version`)
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &pgErr) && pgErr.Code == "42P01": // undefined_table: nothing applied yet
	case err != nil:
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	default:
		for rows.Next() {
			var v int
			var r row
			if err := rows.Scan(&v, &r.name, &r.checksum, &r.at); err != nil {
				return nil, err
			}
			applied[v] = r
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("read schema_migrations: %w", err)
		}
	}

	var out []MigrationStatus
	for _, mg := range m.migrations {
		s := MigrationStatus{Version: mg.Version, Name: mg.Name, State: "pending"}
		if r, ok := applied[mg.Version]; ok {
			s.State, s.AppliedAt = "applied", r.at
			if r.checksum != mg.Checksum {
				s.State = "changed"
			}
			delete(applied, mg.Version)
		}
		out = append(out, s)
	}
	for _, v := range slices.Sorted(maps.Keys(applied)) {
		r := applied[v]
		out = append(out, MigrationStatus{Version: v, Name: r.name, State: "unknown", AppliedAt: r.at})
	}
	return out, nil
}

// Current reports whether every embedded version is applied unchanged.
func (m *Migrator) Current(ctx context.Context, db querier) (bool, error) {
	st, err := m.Status(ctx, db)
	if err != nil {
		return false, err
	}
	for _, s := range st {
		if s.State == "pending" || s.State == "changed" {
			return false, nil
		}
	}
	return true, nil
}

func printMigrationStatus(w io.Writer, st []MigrationStatus) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tNAME\tSTATE\tAPPLIED AT")
	for _, s := range st {
		at := ""
		if !s.AppliedAt.IsZero() {
			at = s.AppliedAt.UTC().Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", s.Version, s.Name, s.State, at)
	}
	return tw.Flush()
}
