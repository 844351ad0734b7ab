package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/lestrrat-go/httprc/v3"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"
)

// Verifier checks Bearer tokens statelessly: HMAC tokens with the shared
// secret, asymmetric ones (Better Auth's JWT plugin) with the keys published
// at the JWKS URL. Each algorithm family is verified only with its own kind of
// key, so "none" and HMAC-signed-with-a-public-key can never pass.
type Verifier struct {
	secret []byte    // nil: HMAC tokens are refused
	jwks   *jwksKeys // nil: asymmetric tokens are refused
	opts   []jwt.ParseOption
	leeway time.Duration
	now    func() time.Time
	cache  *tokenCache
}

// errKeysUnavailable: the token needs a key from the JWKS, which could not be fetched.
var errKeysUnavailable = errors.New("the signing keys could not be fetched from the JWKS URL")

const maxTokenBytes = 8 << 10

type verifierOptions struct {
	Secret   []byte
	JWKS     *jwksKeys
	Issuer   string
	Audience string
	Leeway   time.Duration
	Clock    func() time.Time // nil: time.Now
}

func newVerifier(o verifierOptions) *Verifier {
	opts := []jwt.ParseOption{
		jwt.WithValidate(true),
		jwt.WithAcceptableSkew(o.Leeway),
		jwt.WithRequiredClaim(jwt.ExpirationKey),
	}
	if o.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(o.Issuer))
	}
	if o.Audience != "" {
		opts = append(opts, jwt.WithAudience(o.Audience))
	}
	now := time.Now
	if o.Clock != nil {
		now = o.Clock
		opts = append(opts, jwt.WithClock(jwt.ClockFunc(o.Clock)))
	}
	return &Verifier{secret: o.Secret, jwks: o.JWKS, opts: opts, leeway: o.Leeway, now: now,
		cache: newTokenCache(tokenCacheSize, tokenCacheTTL)}
}

// tokenError is why a token was refused; its text goes to the client.
type tokenError struct{ reason string }

func (e *tokenError) Error() string { return e.reason }

// Verify returns the token's subject, the user id.
func (v *Verifier) Verify(ctx context.Context, token string) (string, error) {
	id, err := v.VerifyIdentity(ctx, token)
	return id.Sub, err
}

// identity is who a verified token names, and until when it may be used
// (its exp plus the leeway): an event stream ends then.
type identity struct {
	Sub     string
	Expires time.Time
}

// VerifyIdentity checks the token and returns whom it names.
func (v *Verifier) VerifyIdentity(ctx context.Context, token string) (identity, error) {
	if len(token) > maxTokenBytes || strings.Count(token, ".") != 2 {
		return identity{}, &tokenError{"The token is not a compact JWS."}
	}
	now := v.now()
	if id, ok := v.cache.get(token, now); ok {
		return id, nil
	}
	var keysErr error
	provider := jws.KeyProviderFunc(func(ctx context.Context, sink jws.KeySink, sig *jws.Signature, _ *jws.Message) error {
		keysErr = v.provideKeys(ctx, sink, sig)
		return keysErr
	})
	opts := append(v.opts[:len(v.opts):len(v.opts)], jwt.WithKeyProvider(provider), jwt.WithContext(ctx))
	tok, err := jwt.Parse([]byte(token), opts...)
	if errors.Is(keysErr, errKeysUnavailable) {
		return identity{}, errKeysUnavailable
	}
	if err != nil {
		return identity{}, &tokenError{describeTokenError(err)}
	}
	sub, _ := tok.Subject()
	if sub == "" || utf8.RuneCountInString(sub) > 255 || strings.ContainsRune(sub, 0) {
		return identity{}, &tokenError{"The token's sub must be a non-empty string of at most 255 characters."}
	}
	exp, _ := tok.Expiration() // required, so present
	id := identity{Sub: sub, Expires: exp.Add(v.leeway)}
	until := id.Expires
	if limit := now.Add(v.cache.ttl); limit.Before(until) {
		until = limit
	}
	v.cache.put(token, id, until, now)
	return id, nil
}

// The cache of verified tokens. A session sends the same token with every
// request; verifying it again costs a signature check and hundreds of
// allocations, a lookup next to nothing (docs/performance.md). An entry is honoured until the token
// expires (with the leeway, as the check itself allows), but never longer
// than tokenCacheTTL after it was verified, so a key withdrawn from the JWKS
// stops being honoured within that time, as a JWKS refresh would.
const (
	tokenCacheSize = 10000
	tokenCacheTTL  = 5 * time.Minute
)

type tokenCache struct {
	ttl     time.Duration
	max     int
	mu      sync.RWMutex
	entries map[string]cachedToken
}

type cachedToken struct {
	id    identity
	until time.Time
}

func newTokenCache(max int, ttl time.Duration) *tokenCache {
	return &tokenCache{ttl: ttl, max: max, entries: make(map[string]cachedToken)}
}

func (c *tokenCache) get(token string, now time.Time) (identity, bool) {
	c.mu.RLock()
	e, ok := c.entries[token]
	c.mu.RUnlock()
	if !ok || !now.Before(e.until) {
		return identity{}, false
	}
	return e.id, true
}

// put remembers a verified token. When the cache is full it first drops the
// entries that are no longer valid, then, if still full, an arbitrary tenth.
func (c *tokenCache) put(token string, id identity, until, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		for k, e := range c.entries {
			if !now.Before(e.until) {
				delete(c.entries, k)
			}
		}
		for k := range c.entries {
			if len(c.entries) < c.max*9/10 {
				break
			}
			delete(c.entries, k)
		}
	}
	c.entries[token] = cachedToken{id: id, until: until}
}

func describeTokenError(err error) string {
	switch {
	case errors.Is(err, jwt.TokenExpiredError()):
		return "The token has expired."
	case errors.Is(err, jwt.TokenNotYetValidError()):
		return "The token is not valid yet (nbf)."
	case errors.Is(err, jwt.InvalidIssuedAtError()):
		return "The token was issued in the future (iat)."
	case errors.Is(err, jwt.InvalidIssuerError()):
		return "The token's issuer is not accepted."
	case errors.Is(err, jwt.InvalidAudienceError()):
		return "The token's audience is not accepted."
	case errors.Is(err, jwt.MissingRequiredClaimError()):
		return "The token has no expiry (exp)."
	case errors.Is(err, jwt.ValidateError()):
		return "The token's claims are not valid."
	}
	return "The token's signature could not be verified."
}

// hmacAlgs and asymmetricAlgs are the algorithms accepted, each with the kind of key it needs.
var (
	hmacAlgs       = map[string]bool{"HS256": true, "HS384": true, "HS512": true}
	asymmetricAlgs = map[string]func(jwk.Key) bool{
		"EdDSA": keyOfType(jwa.OKP()),
		"ES256": ecKeyOn(jwa.P256()),
		"ES384": ecKeyOn(jwa.P384()),
		"ES512": ecKeyOn(jwa.P521()),
		"RS256": keyOfType(jwa.RSA()), "RS384": keyOfType(jwa.RSA()), "RS512": keyOfType(jwa.RSA()),
		"PS256": keyOfType(jwa.RSA()), "PS384": keyOfType(jwa.RSA()), "PS512": keyOfType(jwa.RSA()),
	}
)

func keyOfType(kt jwa.KeyType) func(jwk.Key) bool {
	return func(k jwk.Key) bool { return k.KeyType() == kt }
}

func ecKeyOn(crv jwa.EllipticCurveAlgorithm) func(jwk.Key) bool {
	return func(k jwk.Key) bool {
		ec, ok := k.(jwk.ECDSAPublicKey)
		if !ok {
			return false
		}
		c, _ := ec.Crv()
		return c == crv
	}
}

// provideKeys offers the keys that may verify sig: the secret for HMAC
// algorithms, matching JWKS keys (by kid, type and alg) for asymmetric ones.
// A key published without "alg" is used for the header's algorithm when its
// type fits it.
func (v *Verifier) provideKeys(ctx context.Context, sink jws.KeySink, sig *jws.Signature) error {
	alg, ok := sig.ProtectedHeaders().Algorithm()
	if !ok {
		return nil
	}
	name := alg.String()
	if hmacAlgs[name] {
		if len(v.secret) > 0 {
			sink.Key(alg, v.secret)
		}
		return nil
	}
	fits, ok := asymmetricAlgs[name]
	if !ok || v.jwks == nil {
		return nil
	}
	kid, _ := sig.ProtectedHeaders().KeyID()
	keys, err := v.jwks.find(ctx, kid)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if ka, ok := k.Algorithm(); ok && ka.String() != name {
			continue
		}
		if fits(k) {
			sink.Key(alg, k)
		}
	}
	return nil
}

// jwksKeys keeps the JWKS through jwx's cache: refreshed in the background,
// and on demand when a token names a kid it does not hold, at most once every
// refreshGap so made-up kids cannot hammer the auth server. A failed fetch
// keeps the last good keys.
type jwksKeys struct {
	url        string
	cache      *jwk.Cache
	res        *httprc.ResourceBase[jwk.Set]
	refreshGap time.Duration
	log        *slog.Logger

	mu          sync.Mutex // serialises on-demand refreshes
	lastRefresh time.Time
}

// newJWKSKeys registers url with a new cache bound to ctx. It does not wait
// for the first fetch: the service starts even when the auth server is down.
func newJWKSKeys(ctx context.Context, url string, every, refreshGap time.Duration, log *slog.Logger) (*jwksKeys, error) {
	cache, err := jwk.NewCache(ctx, httprc.NewClient())
	if err != nil {
		return nil, fmt.Errorf("jwks cache: %w", err)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	if err := cache.Register(ctx, url,
		jwk.WithHTTPClient(client),
		jwk.WithWaitReady(false),
		jwk.WithConstantInterval(every), // periodic refresh, whatever the response's cache headers say
		jwk.WithMinInterval(refreshGap), // after a failed fetch, retry this soon
	); err != nil {
		return nil, fmt.Errorf("jwks cache: register %s: %w", url, err)
	}
	res, err := cache.LookupResource(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("jwks cache: %w", err)
	}
	return &jwksKeys{url: url, cache: cache, res: res, refreshGap: refreshGap, log: log}, nil
}

// find returns the keys that may have signed a token with this kid (all keys
// when the token names none), refreshing once when the kid is unknown.
func (k *jwksKeys) find(ctx context.Context, kid string) ([]jwk.Key, error) {
	if keys := lookupKeys(k.res.Resource(), kid); len(keys) > 0 {
		return keys, nil
	}
	set := k.refresh(ctx)
	if set == nil {
		return nil, errKeysUnavailable
	}
	return lookupKeys(set, kid), nil
}

func lookupKeys(set jwk.Set, kid string) []jwk.Key {
	if set == nil {
		return nil
	}
	if kid != "" {
		if key, ok := set.LookupKeyID(kid); ok {
			return []jwk.Key{key}
		}
		return nil
	}
	keys := make([]jwk.Key, 0, set.Len())
	for i := range set.Len() {
		key, _ := set.Key(i)
		keys = append(keys, key)
	}
	return keys
}

// refresh fetches the JWKS now unless that was done within refreshGap, and
// returns the current set (nil if none was ever fetched). Callers arriving
// during a refresh wait for it and share its result.
func (k *jwksKeys) refresh(ctx context.Context) jwk.Set {
	k.mu.Lock()
	defer k.mu.Unlock()
	if time.Since(k.lastRefresh) < k.refreshGap {
		return k.res.Resource()
	}
	k.lastRefresh = time.Now()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := k.cache.Refresh(ctx, k.url); err != nil {
		k.log.Warn("could not refresh the JWKS; keeping the last good keys", "url", k.url, "error", err)
	}
	return k.res.Resource()
}

// Ready reports whether keys have been fetched at least once.
func (k *jwksKeys) Ready() bool { return k.res.Resource() != nil }

func (k *jwksKeys) Close(ctx context.Context) error { return k.cache.Shutdown(ctx) }

// authenticate lets a request through only with a valid Bearer token, and
// puts the token's subject in the context; handlers never see the token.
func authenticate(v *Verifier) func(apiHandler) apiHandler {
	return func(next apiHandler) apiHandler {
		return func(w http.ResponseWriter, r *http.Request) error {
			token, ok := bearerToken(r.Header.Values("Authorization"))
			if !ok {
				return newError(CodeUnauthenticated, "This route needs an Authorization: Bearer <token> header.")
			}
			id, err := v.VerifyIdentity(r.Context(), token)
			if errors.Is(err, errKeysUnavailable) {
				return &Error{Code: CodeKeysUnavailable, RetryAfter: 10 * time.Second, Err: err,
					Message: "The keys that verify this token cannot be fetched right now; retry shortly."}
			}
			if err != nil {
				return newError(CodeInvalidToken, "%s", err.Error())
			}
			return next(w, withIdentity(r, id))
		}
	}
}

// withIdentity is r as the authenticated user's: the user id (and until when
// the credentials hold) for the handlers, and the user in the access log. It
// writes them in the request's requestInfo, so r is not copied again; only a
// request that did not come through logRequests (a handler tested on its own)
// gets a requestInfo here.
func withIdentity(r *http.Request, id identity) *http.Request {
	ri := infoFrom(r.Context())
	if ri == nil {
		ri = &requestInfo{}
		r = r.WithContext(context.WithValue(r.Context(), requestInfoKey, ri))
	}
	ri.user = id
	return r
}

// identityFrom is the authenticated user and the credentials' expiry.
func identityFrom(ctx context.Context) identity {
	if ri := infoFrom(ctx); ri != nil {
		return ri.user
	}
	return identity{}
}

// bearerToken extracts the token of a single "Authorization: Bearer <token>"
// header (the scheme is case-insensitive, RFC 7235). ok is false when no token
// was sent at all; a malformed header yields a token that will fail to verify.
func bearerToken(values []string) (token string, ok bool) {
	if len(values) == 0 {
		return "", false
	}
	if len(values) > 1 {
		return "-", true
	}
	scheme, rest, _ := strings.Cut(values[0], " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(rest)
	return token, token != ""
}

// mintToken signs an HS256 token for sub, as Better Auth would with a shared
// secret: for `token`, the dev curl line and tests.
func mintToken(secret []byte, sub, issuer, audience string, ttl time.Duration, now time.Time) (string, error) {
	b := jwt.NewBuilder().Subject(sub).IssuedAt(now).Expiration(now.Add(ttl))
	if issuer != "" {
		b = b.Issuer(issuer)
	}
	if audience != "" {
		b = b.Audience([]string{audience})
	}
	tok, err := b.Build()
	if err != nil {
		return "", fmt.Errorf("build token: %w", err)
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(jwa.HS256(), secret))
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return string(signed), nil
}
