package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
)

func migrateUp(ctx context.Context, m *Migrator, url string, log *slog.Logger) error {
	conn, err := connectMigrations(ctx, url, log)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	n, err := m.Up(ctx, conn)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	log.Info("schema is current", "applied_now", n)
	return nil
}

func migrateCommand(ctx context.Context, cfg Config, log *slog.Logger, args []string, stdout io.Writer) error {
	if len(args) > 1 || (len(args) == 1 && args[0] != "status") {
		return fmt.Errorf("usage: migrate [status]")
	}
	db, err := openDatabase(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer db.stop(log)
	m, err := newMigrator(log)
	if err != nil {
		return err
	}
	if len(args) == 0 {
		if err := migrateUp(ctx, m, db.migrationURL, log); err != nil {
			return err
		}
	}
	conn, err := connectMigrations(ctx, db.migrationURL, log)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	st, err := m.Status(ctx, conn)
	if err != nil {
		return err
	}
	return printMigrationStatus(stdout, st)
}
