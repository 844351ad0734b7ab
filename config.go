package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/joho/godotenv"
)

// Config is everything the service reads from its environment. Every field has a
// default that suits a developer's machine; see the README for each variable.
type Config struct {
	DatabaseURL         string // empty: run the embedded PostgreSQL under DataDir
	DatabaseURLUnpooled string // used for migrations when set (Neon's direct host)
	Port                int

	AuthSecret  []byte // BETTER_AUTH_SECRET: HS256/384/512 tokens
	JWKSURL     string // asymmetric keys published by Better Auth
	JWTIssuer   string
	JWTAudience string
	JWTLeeway   time.Duration

	CORSOrigins     []string
	RateLimit       float64 // requests per second per user; 0 turns it off
	MaxTasksPerUser int     // 0 turns the quota off

	TrashRetention      time.Duration // trashed tasks are deleted for good after this
	SyncRetention       time.Duration // sync tokens are honoured at least this long
	ChangesPollInterval time.Duration // how often waiting requests re-read the feed positions; 0: 5s with LISTEN, 1s without

	SSEMaxAge     time.Duration // an event stream ends after this; the client resumes
	SSEMaxStreams int           // per user, across instances
	SSEHeartbeat  time.Duration // a comment on an idle stream at least this often
	ShutdownDrain time.Duration // on SIGTERM: /readyz 503 for this long, still serving, before the server stops accepting

	StatementTimeout time.Duration // SET LOCAL statement_timeout in every transaction
	LockTimeout      time.Duration // SET LOCAL lock_timeout in every transaction

	LogLevel       slog.Level
	LogFormat      string // text or json
	MigrateOnStart bool

	DataDir     string // where the embedded database and the dev secret live
	DebugAddr   string // when set, pprof and expvar listen here (keep it private)
	MetricsAddr string // when set, /metrics (Prometheus) listens here
}

// AuthConfigured reports whether any way of verifying tokens was configured.
func (c Config) AuthConfigured() bool { return len(c.AuthSecret) > 0 || c.JWKSURL != "" }

// MigrationURL is the URL migrations run over: the direct (unpooled) one when given.
func (c Config) MigrationURL() string {
	if c.DatabaseURLUnpooled != "" {
		return c.DatabaseURLUnpooled
	}
	return c.DatabaseURL
}

const defaultDataDir = ".data"

// loadConfig reads the configuration from getenv, falling back to the values of a
// .env file (dotenv may be nil). The real environment wins over the file. Every
// invalid variable is reported, each naming what was expected.
func loadConfig(getenv func(string) string, dotenv map[string]string) (Config, error) {
	get := func(name string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return dotenv[name]
	}
	p := configParser{get: get}

	cfg := Config{
		DatabaseURL:         p.url("DATABASE_URL", "postgres"),
		DatabaseURLUnpooled: p.url("DATABASE_URL_UNPOOLED", "postgres"),
		Port:                p.integer("PORT", 8000, 0, 65535),
		AuthSecret:          []byte(get("BETTER_AUTH_SECRET")),
		JWKSURL:             p.url("JWKS_URL", "http"),
		JWTIssuer:           get("JWT_ISSUER"),
		JWTAudience:         get("JWT_AUDIENCE"),
		JWTLeeway:           p.duration("JWT_LEEWAY", 60*time.Second, 0, time.Hour),
		CORSOrigins:         p.origins("CORS_ORIGINS", []string{"http://localhost:3000"}),
		RateLimit:           p.number("RATE_LIMIT", 50, 0, 1e6),
		MaxTasksPerUser:     p.integer("MAX_TASKS_PER_USER", 10000, 0, math.MaxInt32-1),
		TrashRetention:      p.duration("TRASH_RETENTION", 720*time.Hour, time.Minute, 100*365*24*time.Hour),
		SyncRetention:       p.duration("SYNC_RETENTION", 720*time.Hour, time.Minute, 100*365*24*time.Hour),
		ChangesPollInterval: p.duration("CHANGES_POLL_INTERVAL", 0, 0, 5*time.Second),
		SSEMaxAge:           p.duration("SSE_MAX_AGE", 15*time.Minute, time.Second, 24*time.Hour),
		SSEMaxStreams:       p.integer("SSE_MAX_STREAMS_PER_USER", 10, 1, 10000),
		SSEHeartbeat:        p.duration("SSE_HEARTBEAT", 15*time.Second, 100*time.Millisecond, 15*time.Second),
		StatementTimeout:    p.duration("DB_STATEMENT_TIMEOUT", 10*time.Second, 0, time.Hour),
		LockTimeout:         p.duration("DB_LOCK_TIMEOUT", 5*time.Second, 0, time.Hour),
		LogLevel:            p.level("LOG_LEVEL", slog.LevelInfo),
		LogFormat:           p.oneOf("LOG_FORMAT", "text", "text", "json"),
		MigrateOnStart:      p.boolean("MIGRATE_ON_START", true),
		DataDir:             get("DATA_DIR"),
		DebugAddr:           get("DEBUG_ADDR"),
		MetricsAddr:         get("METRICS_ADDR"),
	}
	if cfg.DataDir == "" {
		cfg.DataDir = defaultDataDir
	}
	// Behind a balancer an instance must be seen not ready before it stops
	// accepting; the embedded development database has no balancer.
	drain := time.Duration(0)
	if cfg.DatabaseURL != "" {
		drain = 2 * time.Second
	}
	cfg.ShutdownDrain = p.duration("SHUTDOWN_DRAIN", drain, 0, time.Minute)
	if cfg.DatabaseURLUnpooled != "" && cfg.DatabaseURL == "" {
		p.fail("DATABASE_URL_UNPOOLED", cfg.DatabaseURLUnpooled, "to be set together with DATABASE_URL")
	}
	return cfg, errors.Join(p.errs...)
}

// readDotenv reads path in the .env format; a missing file is not an error.
func readDotenv(path string) (map[string]string, error) {
	vars, err := godotenv.Read(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return vars, nil
}

// configParser collects one error per invalid variable, so a user fixes them all at once.
type configParser struct {
	get  func(string) string
	errs []error
}

func (p *configParser) fail(name, value, expected string) {
	if len(value) > 80 {
		value = value[:80] + "..."
	}
	p.errs = append(p.errs, fmt.Errorf("%s=%q is invalid: expected %s", name, value, expected))
}

func (p *configParser) integer(name string, def, lo, hi int) int {
	v := p.get(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		p.fail(name, v, fmt.Sprintf("a whole number from %d to %d", lo, hi))
		return def
	}
	return n
}

func (p *configParser) number(name string, def, lo, hi float64) float64 {
	v := p.get(name)
	if v == "" {
		return def
	}
	n, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(n) || n < lo || n > hi {
		p.fail(name, v, fmt.Sprintf("a number from %g to %g", lo, hi))
		return def
	}
	return n
}

func (p *configParser) duration(name string, def, lo, hi time.Duration) time.Duration {
	v := p.get(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < lo || d > hi {
		p.fail(name, v, fmt.Sprintf("a duration such as 60s, from %s to %s", lo, hi))
		return def
	}
	return d
}

func (p *configParser) boolean(name string, def bool) bool {
	v := p.get(name)
	if v == "" {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		p.fail(name, v, "true or false")
		return def
	}
	return b
}

func (p *configParser) oneOf(name, def string, allowed ...string) string {
	v := p.get(name)
	if v == "" {
		return def
	}
	for _, a := range allowed {
		if strings.EqualFold(v, a) {
			return a
		}
	}
	p.fail(name, v, "one of "+strings.Join(allowed, ", "))
	return def
}

func (p *configParser) level(name string, def slog.Level) slog.Level {
	v := p.oneOf(name, "", "debug", "info", "warn", "error")
	if v == "" {
		return def
	}
	var l slog.Level
	_ = l.UnmarshalText([]byte(v)) // oneOf allowed only names slog knows
	return l
}

// url accepts an absolute URL whose scheme starts with prefix ("postgres" also
// takes "postgresql"; "http" also takes "https").
func (p *configParser) url(name, schemePrefix string) string {
	v := p.get(name)
	if v == "" {
		return ""
	}
	u, err := url.Parse(v)
	if err != nil || !strings.HasPrefix(u.Scheme, schemePrefix) || (u.Host == "" && schemePrefix == "http") {
		p.fail(name, redactURL(v), "an absolute "+schemePrefix+"://... URL")
		return ""
	}
	return v
}

// origins reads a comma-separated list of origins (scheme://host[:port]) or "*".
func (p *configParser) origins(name string, def []string) []string {
	v := p.get(name)
	if v == "" {
		return def
	}
	var out []string
	for _, o := range strings.Split(v, ",") {
		o = strings.TrimSpace(o)
		if o == "" {
			continue
		}
		if o == "*" {
			out = append(out, o)
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
			p.fail(name, v, "comma-separated origins such as https://app.example.com, or *")
			return def
		}
		out = append(out, u.Scheme+"://"+u.Host)
	}
	if len(out) == 0 {
		p.fail(name, v, "at least one origin")
		return def
	}
	return out
}

// redactURL hides a password in a URL so it can be printed.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	return u.Redacted()
}
