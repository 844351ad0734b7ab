package main

import (
	"net/http"
	"slices"
)

// The Mcp-* headers are those a browser-based MCP client (the MCP Inspector)
// sends to /mcp; it reads WWW-Authenticate to find the resource metadata.
const (
	corsAllowMethods = "GET, POST, PUT, PATCH, DELETE"
	corsAllowHeaders = "Authorization, Content-Type, Idempotency-Key, If-Match, If-None-Match, Last-Event-ID, " +
		"Mcp-Protocol-Version, Mcp-Session-Id, Mcp-Method, Mcp-Name"
	corsExposeHeaders = "Link, Location, ETag, X-Request-Id, Idempotent-Replayed, Retry-After, Mcp-Session-Id, WWW-Authenticate"
)

// varyOrigin is the Vary header's first value, shared (see jsonContentType).
var varyOrigin = []string{"Origin"}[:1:1]

// allowCORS lets the listed origins (or any, with "*") call the API from a
// browser. It sits outside everything else, so errors carry the headers too
// and the frontend can read them. Other origins get no CORS headers, and their
// preflights fall through to the router (405).
func allowCORS(origins []string) func(http.Handler) http.Handler {
	anyOrigin := slices.Contains(origins, "*")
	allowed := make(map[string]bool, len(origins))
	for _, o := range origins {
		allowed[o] = true
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			h["Vary"] = varyOrigin // nothing outside sets Vary: h.Add without allocating
			origin := r.Header.Get("Origin")
			if origin == "" || !(anyOrigin || allowed[origin]) {
				next.ServeHTTP(w, r)
				return
			}
			h.Set("Access-Control-Allow-Origin", origin)
			if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
				h.Add("Vary", "Access-Control-Request-Method")
				h.Add("Vary", "Access-Control-Request-Headers")
				h.Set("Access-Control-Allow-Methods", corsAllowMethods)
				h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
				h.Set("Access-Control-Max-Age", "600")
				w.WriteHeader(http.StatusNoContent)
				return
			}
			h.Set("Access-Control-Expose-Headers", corsExposeHeaders)
			next.ServeHTTP(w, r)
		})
	}
}
