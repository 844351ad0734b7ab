package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func envMap(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestConfigDefaults(t *testing.T) {
	cfg, err := loadConfig(envMap(nil), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Port != 8000 || cfg.JWTLeeway != 60*time.Second || cfg.RateLimit != 50 || cfg.MaxTasksPerUser != 10000 ||
		!cfg.MigrateOnStart || cfg.LogFormat != "text" || cfg.LogLevel != slog.LevelInfo ||
		len(cfg.CORSOrigins) != 1 || cfg.CORSOrigins[0] != "http://localhost:3000" || cfg.DatabaseURL != "" || cfg.AuthConfigured() {
		t.Fatalf("unexpected defaults: %+v", cfg)
	}
}

func TestConfigValues(t *testing.T) {
	cfg, err := loadConfig(envMap(map[string]string{
		"DATABASE_URL":          "postgres://u:p@ep-x-pooler.neon.tech/db?sslmode=require",
		"DATABASE_URL_UNPOOLED": "postgres://u:p@ep-x.neon.tech/db?sslmode=require",
		"PORT":                  "9000",
		"BETTER_AUTH_SECRET":    "s3cret",
		"JWKS_URL":              "https://app.example.com/api/auth/jwks",
		"JWT_LEEWAY":            "5s",
		"CORS_ORIGINS":          "https://a.example.com, https://b.example.com:8443/",
		"RATE_LIMIT":            "0",
		"MAX_TASKS_PER_USER":    "5",
		"LOG_LEVEL":             "DEBUG",
		"LOG_FORMAT":            "json",
		"MIGRATE_ON_START":      "false",
	}), nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Port != 9000 || string(cfg.AuthSecret) != "s3cret" || cfg.JWTLeeway != 5*time.Second || cfg.RateLimit != 0 ||
		cfg.MaxTasksPerUser != 5 || cfg.LogLevel != slog.LevelDebug || cfg.LogFormat != "json" || cfg.MigrateOnStart ||
		strings.Join(cfg.CORSOrigins, " ") != "https://a.example.com https://b.example.com:8443" ||
		cfg.MigrationURL() != "postgres://u:p@ep-x.neon.tech/db?sslmode=require" {
		t.Fatalf("unexpected config: %+v", cfg)
	}
	if !isPooledURL(cfg.DatabaseURL, cfg.DatabaseURLUnpooled) || isPooledURL("postgres://localhost/db", "") ||
		!isPooledURL("postgres://u@ep-x-pooler.us-east-2.aws.neon.tech/db", "") {
		t.Fatal("pooled URL detection is wrong")
	}
}

// Every invalid variable is reported at once, named, with what was expected.
func TestConfigErrorsNameTheVariable(t *testing.T) {
	cases := map[string]string{
		"PORT":                  "http",
		"JWT_LEEWAY":            "sixty",
		"RATE_LIMIT":            "-1",
		"MAX_TASKS_PER_USER":    "lots",
		"LOG_LEVEL":             "loud",
		"LOG_FORMAT":            "xml",
		"MIGRATE_ON_START":      "perhaps",
		"CORS_ORIGINS":          "localhost:3000",
		"JWKS_URL":              "not a url",
		"DATABASE_URL":          "mysql://x",
		"DATABASE_URL_UNPOOLED": "postgres://only-this",
	}
	for name, value := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := loadConfig(envMap(map[string]string{name: value}), nil)
			if err == nil || !strings.Contains(err.Error(), name+"=") || !strings.Contains(err.Error(), "expected") {
				t.Fatalf("%s=%s: error %v, want one naming the variable and what is expected", name, value, err)
			}
		})
	}
	_, err := loadConfig(envMap(map[string]string{"PORT": "x", "LOG_FORMAT": "xml"}), nil)
	if err == nil || !strings.Contains(err.Error(), "PORT") || !strings.Contains(err.Error(), "LOG_FORMAT") {
		t.Fatalf("want both variables reported, got %v", err)
	}
}

// A .env file fills in what the environment does not set; the environment wins.
func TestConfigDotenv(t *testing.T) {
	path := filepath.Join(t.TempDir(), ".env")
	if err := os.WriteFile(path, []byte("PORT=9100\n# comment\nLOG_FORMAT=\"json\"\nRATE_LIMIT=7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dotenv, err := readDotenv(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(envMap(map[string]string{"RATE_LIMIT": "9"}), dotenv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Port != 9100 || cfg.LogFormat != "json" || cfg.RateLimit != 9 {
		t.Fatalf("got port %d format %s rate %v", cfg.Port, cfg.LogFormat, cfg.RateLimit)
	}
	if m, err := readDotenv(filepath.Join(t.TempDir(), "missing")); err != nil || m != nil {
		t.Fatalf("a missing .env must be ignored: %v %v", m, err)
	}
}

// run refuses, before touching anything, to serve a real database with no way
// to verify tokens (the database is never contacted: nothing listens there).
func TestRunRefusesDatabaseURLWithoutAuth(t *testing.T) {
	err := run(t.Context(), nil, envMap(map[string]string{"DATABASE_URL": "postgres://tasks@127.0.0.1:1/tasks"}), &syncBuffer{}, &syncBuffer{})
	if err == nil || !strings.Contains(err.Error(), "BETTER_AUTH_SECRET") || !strings.Contains(err.Error(), "JWKS_URL") {
		t.Fatalf("want a refusal naming BETTER_AUTH_SECRET and JWKS_URL, got %v", err)
	}
	err = run(t.Context(), nil, envMap(map[string]string{"PORT": "eighty"}), &syncBuffer{}, &syncBuffer{})
	if err == nil || !strings.Contains(err.Error(), "PORT=\"eighty\"") {
		t.Fatalf("want a configuration error, got %v", err)
	}
	err = run(t.Context(), []string{"frobnicate"}, envMap(nil), &syncBuffer{}, &syncBuffer{})
	if err == nil || !strings.Contains(err.Error(), "unknown command") {
		t.Fatalf("want an unknown-command error, got %v", err)
	}
}

// The first connection is retried with backoff, each retry logged, until it
// succeeds or the attempts would pass 30 s.
func TestRetryConnect(t *testing.T) {
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	calls := 0
	err := retryConnect(t.Context(), "db", log, func(context.Context) error {
		calls++
		if calls < 3 {
			return errors.New("the compute is waking up")
		}
		return nil
	})
	if err != nil || calls != 3 || strings.Count(logs.String(), "could not connect; retrying") != 2 {
		t.Fatalf("err %v after %d calls; log:\n%s", err, calls, logs)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := retryConnect(ctx, "db", log, func(context.Context) error { return errors.New("down") }); !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled start returned %v", err)
	}
}
