package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The development mode's tokens: with no auth configured and no DATABASE_URL,
// the service signs with a secret it keeps under DATA_DIR.

// resolveAuth makes sure tokens can be verified: with nothing configured and
// the embedded database, it uses the development secret (devAuth); with a
// DATABASE_URL it refuses to start, since a generated secret there would be a
// production service that nobody can call, or anyone could.
func resolveAuth(cfg Config, log *slog.Logger) (_ Config, devAuth bool, _ error) {
	if !cfg.AuthConfigured() {
		if cfg.DatabaseURL != "" {
			return cfg, false, errors.New("no way to verify tokens: set BETTER_AUTH_SECRET (the shared secret, for HS256 tokens) " +
				"and/or JWKS_URL (Better Auth's JWKS, e.g. https://app.example.com/api/auth/jwks). " +
				"With DATABASE_URL set the service will not start with a generated development secret")
		}
		secret, err := loadOrCreateDevSecret(cfg.DataDir)
		if err != nil {
			return cfg, false, err
		}
		cfg.AuthSecret, devAuth = secret, true
	}
	if len(cfg.AuthSecret) > 0 && len(cfg.AuthSecret) < 32 {
		log.Warn("BETTER_AUTH_SECRET is shorter than 32 bytes; use a long random secret in production")
	}
	return cfg, devAuth, nil
}

// loadOrCreateDevSecret is the development signing secret of the embedded
// mode: created once, random, readable by this user only, reused afterwards.
func loadOrCreateDevSecret(dataDir string) ([]byte, error) {
	path := filepath.Join(dataDir, "dev-secret")
	b, err := os.ReadFile(path)
	if err == nil && len(strings.TrimSpace(string(b))) >= 32 {
		return []byte(strings.TrimSpace(string(b))), nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read the dev secret: %w", err)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	raw := make([]byte, 32)
	_, _ = rand.Read(raw)
	secret := []byte(hex.EncodeToString(raw))
	if err := os.WriteFile(path, append(secret, '\n'), 0o600); err != nil {
		return nil, fmt.Errorf("write the dev secret: %w", err)
	}
	return secret, nil
}

func printDevCurl(w io.Writer, cfg Config, port int) error {
	tok, err := mintToken(cfg.AuthSecret, "dev", cfg.JWTIssuer, cfg.JWTAudience, 24*time.Hour, time.Now())
	if err != nil {
		return err
	}
	base := fmt.Sprintf("http://localhost:%d", port)
	fmt.Fprintf(w, `
Development mode: embedded PostgreSQL in %s, tokens signed with the secret in %s.
A token for user "dev", valid for 24 hours. Try:

  curl -H 'Authorization: Bearer %s' %s/api/me/tasks

  curl -H 'Authorization: Bearer %s' -H 'Content-Type: application/json' -d '{"title":"Buy milk"}' %s/api/me/tasks

More tokens: go run . token --sub USER

`, filepath.Join(cfg.DataDir, "postgres"), filepath.Join(cfg.DataDir, "dev-secret"), tok, base, tok, base)
	return nil
}
