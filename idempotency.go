package main

import (
	"log/slog"
	"net/http"
)

// idempotent: Idempotency-Key support (issue 4). Not yet implemented: requests pass through.
func idempotent(store *Store, log *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler { return next }
}
