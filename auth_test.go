package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
)

// signingKey is a private key the test signs with, published (or not) in the test's JWKS.
type signingKey struct {
	alg     jwa.SignatureAlgorithm
	kid     string
	private crypto.Signer
	noAlg   bool // publish without "alg", as some servers do
}

func newSigningKey(t testing.TB, alg string, kid string) *signingKey {
	t.Helper()
	var priv crypto.Signer
	var err error
	switch alg {
	case "EdDSA":
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	case "ES256":
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ES512":
		priv, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case "RS256", "PS256":
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		t.Fatalf("no key for %s", alg)
	}
	if err != nil {
		t.Fatal(err)
	}
	a, ok := jwa.LookupSignatureAlgorithm(alg)
	if !ok {
		t.Fatalf("unknown alg %s", alg)
	}
	return &signingKey{alg: a, kid: kid, private: priv}
}

// public is the key as a JWKS publishes it: kid and alg, no "use" (as Better Auth does).
func (k *signingKey) public(t testing.TB) jwk.Key {
	t.Helper()
	pub, err := jwk.PublicKeyOf(k.private.Public())
	if err != nil {
		t.Fatal(err)
	}
	pub.Set(jwk.KeyIDKey, k.kid)
	if !k.noAlg {
		pub.Set(jwk.AlgorithmKey, k.alg)
	}
	return pub
}

// sign makes a compact JWS of claims with the header {"alg","kid"} and no
// "typ", exactly as Better Auth's JWT plugin does.
func (k *signingKey) sign(t testing.TB, claims map[string]any) string {
	t.Helper()
	payload, _ := json.Marshal(claims)
	h := jws.NewHeaders()
	h.Set(jws.KeyIDKey, k.kid)
	tok, err := jws.Sign(payload, jws.WithKey(k.alg, k.private, jws.WithProtectedHeaders(h)))
	if err != nil {
		t.Fatal(err)
	}
	return string(tok)
}

// signHMAC makes an HS* token with any secret bytes.
func signHMAC(t testing.TB, alg string, secret []byte, claims map[string]any) string {
	t.Helper()
	a, _ := jwa.LookupSignatureAlgorithm(alg)
	payload, _ := json.Marshal(claims)
	tok, err := jws.Sign(payload, jws.WithKey(a, secret))
	if err != nil {
		t.Fatal(err)
	}
	return string(tok)
}

// unsigned is an "alg": "none" token.
func unsigned(claims map[string]any) string {
	payload, _ := json.Marshal(claims)
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc(payload) + "."
}

// jwksServer publishes a key set the test can change, and counts fetches.
type jwksServer struct {
	*httptest.Server
	mu      sync.Mutex
	keys    []jwk.Key
	failing bool
	fetches atomic.Int64
}

func newJWKSServer(t testing.TB, keys ...jwk.Key) *jwksServer {
	s := &jwksServer{keys: keys}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fetches.Add(1)
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.failing {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		set := jwk.NewSet()
		for _, k := range s.keys {
			set.AddKey(k)
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(keys ...jwk.Key) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = keys
}

func (s *jwksServer) fail(failing bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failing = failing
}

// Better Auth's claims: sub a 32-character id, iss and aud the auth server's base URL.
const authBaseURL = "http://localhost:3000"

func betterAuthClaims(sub string, now time.Time) map[string]any {
	return map[string]any{
		"sub": sub, "iss": authBaseURL, "aud": authBaseURL,
		"iat": now.Unix(), "exp": now.Add(15 * time.Minute).Unix(),
		"id": sub, "name": "Ada Lovelace", "email": "ada@example.com", "emailVerified": true,
	}
}

func startAuthAPI(t *testing.T, jwksURL string, gap time.Duration, configure ...func(*apiOptions)) *testAPI {
	t.Helper()
	var keys *jwksKeys
	if jwksURL != "" {
		var err error
		keys, err = newJWKSKeys(t.Context(), jwksURL, time.Hour, gap, discardLog())
		if err != nil {
			t.Fatal(err)
		}
	}
	return startAPI(t, append([]func(*apiOptions){func(o *apiOptions) { o.verifier.JWKS = keys }}, configure...)...)
}

func expectUnauthorized(t *testing.T, a *testAPI, token string) {
	t.Helper()
	r := mustStatus(t, a.do(t, "GET", "/api/me/tasks", nil, bearer(token)), http.StatusUnauthorized)
	r.problem(t)
	if ch := r.Header.Get("WWW-Authenticate"); !strings.HasPrefix(ch, `Bearer realm="tasks-api", error="invalid_token", error_description="`) {
		t.Fatalf("WWW-Authenticate %q", ch)
	}
}

func expectAccepted(t *testing.T, a *testAPI, token, sub string) {
	t.Helper()
	r := mustStatus(t, a.do(t, "POST", "/api/me/tasks", `{"title":"auth ok"}`, bearer(token)), http.StatusCreated)
	if got := r.task(t).UserID; got != sub {
		t.Fatalf("task belongs to %q, want %q", got, sub)
	}
}

func TestAuthAlgorithms(t *testing.T) {
	keys := map[string]*signingKey{}
	var published []jwk.Key
	for _, alg := range []string{"EdDSA", "ES256", "ES512", "RS256", "PS256"} {
		keys[alg] = newSigningKey(t, alg, "kid-"+alg)
		published = append(published, keys[alg].public(t))
	}
	// Keys published without "alg" still work: the algorithm follows from the key.
	bare := map[string]*signingKey{"EdDSA": newSigningKey(t, "EdDSA", "bare-ed"), "RS256": newSigningKey(t, "RS256", "bare-rsa")}
	for _, k := range bare {
		k.noAlg = true
		published = append(published, k.public(t))
	}
	srv := newJWKSServer(t, published...)
	a := startAuthAPI(t, srv.URL, 100*time.Millisecond)
	now := time.Now()

	for alg, k := range keys {
		t.Run(alg, func(t *testing.T) {
			sub := "ba" + strings.Repeat(alg[:2], 15)
			expectAccepted(t, a, k.sign(t, betterAuthClaims(sub, now)), sub)
		})
	}
	for alg, k := range bare {
		t.Run(alg+" without alg in the JWKS", func(t *testing.T) {
			expectAccepted(t, a, k.sign(t, betterAuthClaims("bare-"+alg, now)), "bare-"+alg)
		})
	}
	for _, alg := range []string{"HS256", "HS384", "HS512"} {
		t.Run(alg, func(t *testing.T) {
			claims := map[string]any{"sub": "hmac-" + alg, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
			expectAccepted(t, a, signHMAC(t, alg, []byte(testSecret), claims), "hmac-"+alg)
		})
	}
	t.Run("a key of the wrong type for alg", func(t *testing.T) {
		// An RSA key's kid on an EdDSA-signed token: refused.
		wrong := newSigningKey(t, "EdDSA", "kid-RS256")
		expectUnauthorized(t, a, wrong.sign(t, betterAuthClaims("x", now)))
	})
	t.Run("a key not in the JWKS under a known kid", func(t *testing.T) {
		impostor := newSigningKey(t, "ES256", "kid-ES256")
		expectUnauthorized(t, a, impostor.sign(t, betterAuthClaims("x", now)))
	})
}

func TestAuthRefusals(t *testing.T) {
	ed := newSigningKey(t, "EdDSA", "ed-1")
	rsaKey := newSigningKey(t, "RS256", "rsa-1")
	srv := newJWKSServer(t, ed.public(t), rsaKey.public(t))
	a := startAuthAPI(t, srv.URL, 100*time.Millisecond)
	now := time.Now()
	hs := func(claims map[string]any) string { return signHMAC(t, "HS256", []byte(testSecret), claims) }
	with := func(mod map[string]any) map[string]any {
		c := map[string]any{"sub": "someone", "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
		for k, v := range mod {
			if v == nil {
				delete(c, k)
			} else {
				c[k] = v
			}
		}
		return c
	}
	rsaDER, _ := x509.MarshalPKIXPublicKey(rsaKey.private.Public())
	rsaPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: rsaDER})
	edPub := []byte(ed.private.Public().(ed25519.PublicKey))

	cases := map[string]string{
		"expired":                    hs(with(map[string]any{"exp": now.Add(-2 * time.Minute).Unix()})),
		"no exp":                     hs(with(map[string]any{"exp": nil})),
		"nbf in the future":          hs(with(map[string]any{"nbf": now.Add(5 * time.Minute).Unix()})),
		"iat in the future":          hs(with(map[string]any{"iat": now.Add(5 * time.Minute).Unix()})),
		"alg none":                   unsigned(with(nil)),
		"HS256 with the RSA PEM":     signHMAC(t, "HS256", rsaPEM, with(nil)),
		"HS256 with the Ed25519 key": signHMAC(t, "HS256", edPub, with(nil)),
		"wrong secret":               signHMAC(t, "HS256", []byte("another-secret-another-secret-xx"), with(nil)),
		"empty sub":                  hs(with(map[string]any{"sub": ""})),
		"no sub":                     hs(with(map[string]any{"sub": nil})),
		"sub too long":               hs(with(map[string]any{"sub": strings.Repeat("s", 256)})),
		"sub not a string":           hs(with(map[string]any{"sub": 12345})),
		"unknown kid":                (&signingKey{alg: ed.alg, kid: "nobody", private: ed.private}).sign(t, with(nil)),
		"garbage":                    "not.a.jwt",
		"two parts":                  "abc.def",
		"json serialization":         `{"payload":"e30","signatures":[]}`,
	}
	tampered := hs(with(nil))
	parts := strings.Split(tampered, ".")
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"admin","exp":9999999999}`))
	cases["tampered payload"] = strings.Join(parts, ".")

	for name, tok := range cases {
		t.Run(name, func(t *testing.T) { expectUnauthorized(t, a, tok) })
	}

	t.Run("within the leeway", func(t *testing.T) {
		expectAccepted(t, a, hs(with(map[string]any{"sub": "leeway", "exp": now.Add(-30 * time.Second).Unix(),
			"nbf": now.Add(30 * time.Second).Unix(), "iat": now.Add(30 * time.Second).Unix()})), "leeway")
	})
	t.Run("sub of 255 characters", func(t *testing.T) {
		sub := strings.Repeat("ü", 255)
		expectAccepted(t, a, hs(with(map[string]any{"sub": sub})), sub)
	})
	t.Run("no token", func(t *testing.T) {
		for _, h := range []string{"", "Basic dXNlcjpwYXNz", "Bearer", "Bearer   "} {
			opts := []reqOption{}
			if h != "" {
				opts = append(opts, header("Authorization", h))
			}
			r := mustStatus(t, a.do(t, "GET", "/api/me/tasks", nil, opts...), http.StatusUnauthorized)
			if ch := r.Header.Get("WWW-Authenticate"); ch != `Bearer realm="tasks-api"` {
				t.Fatalf("%q: WWW-Authenticate %q", h, ch)
			}
		}
	})
	t.Run("scheme is case-insensitive", func(t *testing.T) {
		mustStatus(t, a.do(t, "GET", "/api/me/tasks", nil, header("Authorization", "bearer "+hs(with(nil)))), http.StatusOK)
	})
}

func TestAuthIssuerAndAudience(t *testing.T) {
	ed := newSigningKey(t, "EdDSA", "ed-iss")
	srv := newJWKSServer(t, ed.public(t))
	a := startAuthAPI(t, srv.URL, 100*time.Millisecond, func(o *apiOptions) {
		o.verifier.Issuer, o.verifier.Audience = authBaseURL, authBaseURL
	})
	now := time.Now()
	expectAccepted(t, a, ed.sign(t, betterAuthClaims("iss-ok", now)), "iss-ok")
	arr := betterAuthClaims("aud-array", now)
	arr["aud"] = []string{"https://other.example.com", authBaseURL}
	expectAccepted(t, a, ed.sign(t, arr), "aud-array")
	for name, mod := range map[string]map[string]any{
		"wrong iss": {"iss": "https://evil.example.com"},
		"wrong aud": {"aud": "https://other.example.com"},
		"no iss":    {"iss": nil},
		"no aud":    {"aud": nil},
	} {
		t.Run(name, func(t *testing.T) {
			c := betterAuthClaims("x", now)
			for k, v := range mod {
				if v == nil {
					delete(c, k)
				} else {
					c[k] = v
				}
			}
			expectUnauthorized(t, a, ed.sign(t, c))
		})
	}
}

// A key the auth server starts publishing is accepted without a restart;
// made-up kids cannot make the service hammer the JWKS.
func TestAuthKeyRotation(t *testing.T) {
	old := newSigningKey(t, "EdDSA", "2026-old")
	srv := newJWKSServer(t, old.public(t))
	gap := 300 * time.Millisecond
	a := startAuthAPI(t, srv.URL, gap)
	now := time.Now()
	expectAccepted(t, a, old.sign(t, betterAuthClaims("rot", now)), "rot")

	fresh := newSigningKey(t, "EdDSA", "2026-new")
	srv.set(fresh.public(t), old.public(t)) // rotation: the old key stays for a grace period
	time.Sleep(gap)
	expectAccepted(t, a, fresh.sign(t, betterAuthClaims("rot", now)), "rot")
	expectAccepted(t, a, old.sign(t, betterAuthClaims("rot", now)), "rot")

	// A flood of unknown kids triggers at most one fetch per gap.
	before := srv.fetches.Load()
	start := time.Now()
	for i := range 50 {
		bogus := &signingKey{alg: old.alg, kid: fmt.Sprintf("made-up-%d", i), private: old.private}
		expectUnauthorized(t, a, bogus.sign(t, betterAuthClaims("rot", now)))
	}
	elapsed := time.Since(start)
	if fetched, allowed := srv.fetches.Load()-before, int64(elapsed/gap)+2; fetched > allowed {
		t.Fatalf("%d JWKS fetches in %s for 50 unknown kids; at most %d allowed", fetched, elapsed, allowed)
	}

	// When the JWKS fails, the last good keys keep working.
	srv.fail(true)
	time.Sleep(gap)
	expectUnauthorized(t, a, (&signingKey{alg: old.alg, kid: "unknown-while-down", private: old.private}).sign(t, betterAuthClaims("rot", now)))
	expectAccepted(t, a, fresh.sign(t, betterAuthClaims("rot", now)), "rot")
}

// The service starts with the JWKS unreachable; tokens that need it get 503
// with Retry-After until it answers, HMAC tokens work throughout.
func TestAuthJWKSUnavailableAtStart(t *testing.T) {
	ed := newSigningKey(t, "EdDSA", "late")
	srv := newJWKSServer(t, ed.public(t))
	srv.fail(true)
	gap := 200 * time.Millisecond
	a := startAuthAPI(t, srv.URL, gap)
	now := time.Now()
	r := mustStatus(t, a.do(t, "GET", "/api/me/tasks", nil, bearer(ed.sign(t, betterAuthClaims("late", now)))), http.StatusServiceUnavailable)
	if r.problem(t).Type != problemKinds[CodeKeysUnavailable].typ || r.Header.Get("Retry-After") == "" {
		t.Fatalf("%s Retry-After %q", r, r.Header.Get("Retry-After"))
	}
	hs := signHMAC(t, "HS256", []byte(testSecret), map[string]any{"sub": "hs", "exp": now.Add(time.Hour).Unix()})
	mustStatus(t, a.do(t, "GET", "/api/me/tasks", nil, bearer(hs)), http.StatusOK)

	srv.fail(false)
	time.Sleep(gap)
	expectAccepted(t, a, ed.sign(t, betterAuthClaims("late", now)), "late")
}

// Each kind of key is only used when configured.
func TestAuthOnlyConfiguredKeys(t *testing.T) {
	ed := newSigningKey(t, "EdDSA", "ed")
	srv := newJWKSServer(t, ed.public(t))
	now := time.Now()
	noSecret := startAuthAPI(t, srv.URL, time.Second, func(o *apiOptions) { o.verifier.Secret = nil })
	expectUnauthorized(t, noSecret, signHMAC(t, "HS256", []byte(testSecret), map[string]any{"sub": "a", "exp": now.Add(time.Hour).Unix()}))
	expectAccepted(t, noSecret, ed.sign(t, betterAuthClaims("only-jwks", now)), "only-jwks")
	noJWKS := startAuthAPI(t, "", time.Second)
	expectUnauthorized(t, noJWKS, ed.sign(t, betterAuthClaims("a", now)))
}

// A verified token is remembered, but never past its expiry.
func TestVerifiedTokenCacheHonoursExpiry(t *testing.T) {
	now := time.Now()
	clock := func() time.Time { return now }
	v := newVerifier(verifierOptions{Secret: []byte(testSecret), Leeway: time.Second, Clock: clock})
	tok := signHMAC(t, "HS256", []byte(testSecret), map[string]any{"sub": "cached", "exp": now.Add(10 * time.Second).Unix()})
	for range 2 { // verified, then from the cache
		if sub, err := v.Verify(t.Context(), tok); err != nil || sub != "cached" {
			t.Fatalf("sub %q err %v", sub, err)
		}
	}
	if _, ok := v.cache.get(tok, now); !ok {
		t.Fatal("the token was not cached")
	}
	now = now.Add(12 * time.Second)
	if _, err := v.Verify(t.Context(), tok); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("an expired token was accepted from the cache: %v", err)
	}
}

// A cached token signed by a key the JWKS withdrew is honoured for at most
// tokenCacheTTL, then verified again, and refused.
func TestVerifiedTokenCacheBoundedByTTL(t *testing.T) {
	ed := newSigningKey(t, "EdDSA", "withdrawn")
	srv := newJWKSServer(t, ed.public(t))
	keys, err := newJWKSKeys(t.Context(), srv.URL, time.Hour, 0, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	v := newVerifier(verifierOptions{JWKS: keys, Leeway: time.Minute, Clock: func() time.Time { return now }})
	claims := betterAuthClaims("ttl", now)
	claims["exp"] = now.Add(time.Hour).Unix()
	tok := ed.sign(t, claims)
	if _, err := v.Verify(t.Context(), tok); err != nil {
		t.Fatal(err)
	}
	srv.set()                 // the key is withdrawn,
	keys.refresh(t.Context()) // and the periodic refresh has seen it
	now = now.Add(tokenCacheTTL - time.Second)
	if _, err := v.Verify(t.Context(), tok); err != nil {
		t.Fatalf("within the TTL: %v", err)
	}
	now = now.Add(2 * time.Second)
	if _, err := v.Verify(t.Context(), tok); err == nil {
		t.Fatal("a token whose key was withdrawn is still accepted after the cache TTL")
	}
}

func TestTokenCacheIsBounded(t *testing.T) {
	c := newTokenCache(100, time.Minute)
	now := time.Now()
	for i := range 1000 {
		c.put(fmt.Sprint("token-", i), identity{Sub: "u"}, now.Add(time.Minute), now)
		if len(c.entries) > 100 {
			t.Fatalf("%d entries", len(c.entries))
		}
	}
	if _, ok := c.get("token-999", now); !ok {
		t.Fatal("the newest entry is missing")
	}
}
