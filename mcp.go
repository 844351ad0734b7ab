package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
)

// The Model Context Protocol endpoint (API.md "AI agents (MCP)"), so that an
// AI assistant can manage the user's tasks. This file is the endpoint: the
// transport, who the caller is, the rate, and how errors look;
// mcp_tools.go has the tools themselves.
//
// Streamable HTTP in stateless mode: every POST stands alone (no
// Mcp-Session-Id, nothing kept between requests), so any instance behind a
// balancer answers any request, as for the REST routes. The caller is
// authenticated exactly as under /api/ (the same Verifier, so HS and JWKS
// keys, issuer, audience and leeway behave alike), and the user is always the
// token's subject: no tool takes a user id.

// mcpOptions are what /mcp needs beyond the REST routes' dependencies.
type mcpOptions struct {
	PublicURL  string // PUBLIC_URL: the base of the URLs the service names; "": taken from the request
	AuthServer string // JWT_ISSUER: the authorization server the metadata names; "": none named

	sdkOnly bool // tests: every message through the SDK, none through the fast path
}

// resourceMetadataPath serves the RFC 9728 metadata of /mcp.
const resourceMetadataPath = "/.well-known/oauth-protected-resource"

// publicBase is the service's base URL: PUBLIC_URL, or the scheme and host
// the request came to. A proxy that ends TLS says the scheme was https
// (X-Forwarded-Proto); one that rewrites the Host needs PUBLIC_URL set.
func publicBase(o mcpOptions, r *http.Request) string {
	if o.PublicURL != "" {
		return strings.TrimSuffix(o.PublicURL, "/")
	}
	scheme := "http"
	if r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https") {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// handleMCP serves POST /mcp. The chain, outermost first: a refusal's
// challenge names the resource metadata; the token; the user's rate; then a
// tools/call the fast path can answer (mcp_fastpath.go), or else the SDK's
// handler, whose plain-text errors become problem+json.
func handleMCP(d deps) apiHandler {
	timeout := d.timeout
	if timeout == 0 {
		timeout = requestDeadline
	}
	tools := &mcpTools{store: d.store, gate: d.gate, timeout: timeout, log: d.log}
	server, byName := newMCPServer(tools)
	fast := &fastToolCalls{m: tools, tools: byName}
	if d.mcp.sdkOnly {
		fast = nil
	}
	sdk := mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return server }, &mcp.StreamableHTTPOptions{
		Stateless: true,
		// One JSON answer per request: nothing is streamed (no tool sends
		// progress), and a plain response passes every proxy unbuffered.
		JSONResponse:                 true,
		MaxRequestBodyBytes:          maxBodyBytes,
		PropagateRequestCancellation: true,
		// The SDK refuses a loopback connection whose Host is not loopback, against
		// DNS rebinding of servers that trust localhost. This one trusts a Bearer
		// token only, which a rebinding page cannot have, and a reverse proxy on
		// the same machine legitimately sends the public Host.
		DisableLocalhostProtection: true,
		Logger:                     d.log,
	})
	serve := func(w http.ResponseWriter, r *http.Request) error {
		if handled, err := fast.serve(w, r); handled {
			return err
		}
		sw := &sdkErrorWriter{ResponseWriter: w}
		sdk.ServeHTTP(sw, r)
		return sw.err()
	}
	return challengeWithMetadata(d.mcp)(authenticate(d.verifier)(limitMCPRate(d.limiter)(serve)))
}

// challengeWithMetadata adds resource_metadata (RFC 9728) to the challenge of
// a 401, so an MCP client can discover where to get a token.
func challengeWithMetadata(o mcpOptions) func(apiHandler) apiHandler {
	return func(next apiHandler) apiHandler {
		return func(w http.ResponseWriter, r *http.Request) error {
			err := next(w, r)
			if c := codeOf(err); c != CodeUnauthenticated && c != CodeInvalidToken {
				return err
			}
			param := `resource_metadata="` + publicBase(o, r) + resourceMetadataPath + `"`
			respondError(&challengeWriter{ResponseWriter: w, param: param}, r, err)
			return nil
		}
	}
}

// challengeWriter appends a parameter to the WWW-Authenticate header that
// respondError sets, as the status is written.
type challengeWriter struct {
	http.ResponseWriter
	param string
}

func (w *challengeWriter) WriteHeader(code int) {
	if h := w.Header(); code == http.StatusUnauthorized && h.Get("WWW-Authenticate") != "" {
		h.Set("WWW-Authenticate", h.Get("WWW-Authenticate")+", "+w.param)
	}
	w.ResponseWriter.WriteHeader(code)
}

// rateLimitedKey holds, in a tool call's context, the error of a request over
// the user's rate.
type rateLimitedKey struct{}

// limitMCPRate counts every request to /mcp against the user's rate, as
// limitRate does under /api/. Over it, a tools/call is let through only to be
// answered with an isError result that says how long to wait, which the
// model reads and acts on (an HTTP 429 reaches it, if at all, as a
// transport failure); any other request is REST's 429. Either way nothing is
// done.
func limitMCPRate(l *rateLimiter) func(apiHandler) apiHandler {
	return func(next apiHandler) apiHandler {
		if l == nil {
			return next
		}
		return func(w http.ResponseWriter, r *http.Request) error {
			ok, wait := l.allow(userIDFrom(r.Context()))
			if ok {
				return next(w, r)
			}
			limited := errRateLimited(wait)
			if !isToolCall(w, r) {
				return limited
			}
			return next(w, r.WithContext(context.WithValue(r.Context(), rateLimitedKey{}, limited)))
		}
	}
}

// isToolCall reports whether the request's JSON-RPC message is a tools/call.
// It reads the body (only over the rate, so the normal path pays nothing) and
// puts it back for the SDK.
func isToolCall(w http.ResponseWriter, r *http.Request) bool {
	body, err := readAllLimited(w, r)
	if err != nil {
		return false
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	var msg struct {
		Method string `json:"method"`
	}
	return json.Unmarshal(body, &msg) == nil && msg.Method == "tools/call"
}

// sdkErrorWriter holds back the plain-text errors the SDK writes itself (a
// wrong Content-Type or Accept, a body over the limit, a malformed message),
// so that they are answered as problem+json like every error of the service.
// JSON-RPC errors and results pass through.
type sdkErrorWriter struct {
	http.ResponseWriter
	status int // the held-back error's status; 0: none
	text   bytes.Buffer
}

func (w *sdkErrorWriter) WriteHeader(code int) {
	if code >= 400 && strings.HasPrefix(w.Header().Get("Content-Type"), "text/plain") {
		w.status = code
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *sdkErrorWriter) Write(b []byte) (int, error) {
	if w.status != 0 {
		return w.text.Write(b)
	}
	return w.ResponseWriter.Write(b)
}

func (w *sdkErrorWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// sdkStatusCodes are the codes of the statuses the SDK answers errors with.
var sdkStatusCodes = map[int]Code{
	http.StatusBadRequest:            CodeBadRequest,
	http.StatusForbidden:             CodeForbidden,
	http.StatusNotFound:              CodeNotFound,
	http.StatusMethodNotAllowed:      CodeMethodNotAllowed,
	http.StatusRequestEntityTooLarge: CodeTooLarge,
	http.StatusUnsupportedMediaType:  CodeUnsupportedMedia,
}

// err is the held-back error, in the service's terms, or nil.
func (w *sdkErrorWriter) err() error {
	if w.status == 0 {
		return nil
	}
	w.Header().Del("X-Content-Type-Options")
	code, ok := sdkStatusCodes[w.status]
	if !ok {
		code = CodeInternal
	}
	return &Error{Code: code, Message: strings.TrimSpace(w.text.String()) + "."}
}

// handleResourceMetadata serves the RFC 9728 metadata of /mcp: the resource,
// the authorization server that issues its tokens, and how to send them.
func handleResourceMetadata(o mcpOptions) apiHandler {
	return func(w http.ResponseWriter, r *http.Request) error {
		md := oauthex.ProtectedResourceMetadata{
			Resource:               publicBase(o, r) + "/mcp",
			BearerMethodsSupported: []string{"header"},
			ResourceName:           "Tasks API",
		}
		if o.AuthServer != "" {
			md.AuthorizationServers = []string{o.AuthServer}
		}
		body, err := json.Marshal(md)
		if err != nil {
			return err
		}
		writeJSON(w, r, http.StatusOK, body)
		return nil
	}
}

// mcpTerms words REST's messages for an MCP client, which sends arguments
// where REST has headers.
var mcpTerms = strings.NewReplacer("If-Match", "expected_version", "Idempotency-Key", "request_id")

// toolErrorText is what an isError result says: the message REST gives,
// every bad field when there are several (REST lists them in "errors"), and
// how long to wait when REST would say so in Retry-After.
func toolErrorText(e *Error) string {
	var b strings.Builder
	b.WriteString(mcpTerms.Replace(e.Message))
	if len(e.Fields) > 1 {
		for _, f := range e.Fields {
			b.WriteString("\n- " + mcpTerms.Replace(f.Field) + ": " + f.Message)
		}
	}
	if e.RetryAfter > 0 {
		secs := int(math.Ceil(e.RetryAfter.Seconds())) // as problem.go rounds Retry-After
		unit := " seconds."
		if secs == 1 {
			unit = " second."
		}
		b.WriteString(" Retry-After: " + strconv.Itoa(secs) + unit)
	}
	return b.String()
}

// logToolFailure logs a tool call that failed on the server's side, once,
// with its cause: the access log line says 200, as the HTTP exchange was.
func logToolFailure(ctx context.Context, log *slog.Logger, tool string, e *Error, cause error) {
	level := slog.LevelWarn
	if e.Code == CodeInternal {
		level = slog.LevelError
	}
	log.LogAttrs(ctx, level, "tool call failed", slog.String("tool", tool), slog.String("code", e.Code.String()),
		slog.String("request_id", requestIDFrom(ctx)), slog.String("error", cause.Error()))
}
