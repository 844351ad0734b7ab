package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
)

// openapi.json is the service's contract. Every test client (see startAPI)
// sends its requests through contractTransport, so every request and every
// response of the whole suite is checked against the document the service
// serves: the document cannot drift from the code without a test failing.

// contract is openapi.json, loaded and validated once per test binary.
var contract struct {
	once   sync.Once
	doc    *openapi3.T
	router routers.Router
	err    error
}

func loadContract() (*openapi3.T, routers.Router, error) {
	contract.once.Do(func() {
		loader := openapi3.NewLoader()
		// openAPIDoc is the embedded document, the very bytes GET /openapi.json serves.
		doc, err := loader.LoadFromData(openAPIDoc)
		if err != nil {
			contract.err = fmt.Errorf("load openapi.json: %w", err)
			return
		}
		if err := doc.Validate(loader.Context, openapi3.EnableMultiError()); err != nil {
			contract.err = fmt.Errorf("openapi.json is not a valid OpenAPI %s document: %w", doc.OpenAPI, err)
			return
		}
		// The legacy router keys its routes by method and path, as net/http's
		// ServeMux does: PUT /api/me/tasks/stats is the PUT of /tasks/{id}
		// (whose id is not a number, so 404), as the service answers, not a 405
		// of /tasks/stats as the gorillamux router would have it.
		router, err := legacy.NewRouter(doc)
		if err != nil {
			contract.err = fmt.Errorf("route openapi.json: %w", err)
			return
		}
		contract.doc, contract.router = doc, router
	})
	return contract.doc, contract.router, contract.err
}

// contractTransport returns a RoundTripper that sends requests through base
// and checks each exchange against openapi.json. A response that the document
// does not allow fails the test. A request that the document does not allow
// only is logged: tests send bad requests on purpose, to check the answers.
func contractTransport(t testing.TB, base http.RoundTripper) http.RoundTripper {
	t.Helper()
	doc, router, err := loadContract()
	if err != nil {
		t.Fatal(err)
	}
	return &contractChecker{t: t, base: base, doc: doc, router: router}
}

type contractChecker struct {
	t      testing.TB
	base   http.RoundTripper
	doc    *openapi3.T
	router routers.Router
}

// maxCheckedBody bounds the request body kept for validation. The service
// refuses bodies over 64 KiB; a test that streams a larger (or endless) body
// to check that still gets it streamed, unvalidated.
const maxCheckedBody = 1 << 20

func (c *contractChecker) RoundTrip(req *http.Request) (*http.Response, error) {
	body, complete, err := bufferBody(req)
	if err != nil {
		return nil, err
	}
	res, err := c.base.RoundTrip(body.request(req))
	if err != nil {
		return nil, err
	}
	resBody, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		return nil, err
	}
	res.Body = io.NopCloser(bytes.NewReader(resBody))
	if complete {
		c.check(body.request(req), true, res, resBody)
	} else {
		c.check(withoutBody(req), false, res, resBody)
	}
	return res, nil
}

// requestBody is a request's body read ahead, so that it can be sent and
// validated both.
type requestBody struct {
	data []byte
	rest io.ReadCloser // nil when data is the whole body
}

// bufferBody reads up to maxCheckedBody bytes of req's body. complete says
// the whole body was read.
func bufferBody(req *http.Request) (*requestBody, bool, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return nil, true, nil
	}
	data, err := io.ReadAll(io.LimitReader(req.Body, maxCheckedBody+1))
	if err != nil {
		req.Body.Close()
		return nil, false, err
	}
	if len(data) > maxCheckedBody {
		return &requestBody{data: data, rest: req.Body}, false, nil
	}
	req.Body.Close()
	return &requestBody{data: data}, true, nil
}

// request is a copy of req with the body b: the part read ahead, then the rest.
// A RoundTripper must not modify the request it is given.
func (b *requestBody) request(req *http.Request) *http.Request {
	r := req.Clone(req.Context())
	if b == nil {
		return r
	}
	if b.rest != nil {
		r.Body = struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(b.data), b.rest), b.rest}
		r.GetBody = nil
		b.rest = nil // the body can be sent once only
		return r
	}
	r.Body = io.NopCloser(bytes.NewReader(b.data))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b.data)), nil }
	return r
}

func withoutBody(req *http.Request) *http.Request {
	r := req.Clone(req.Context())
	r.Body, r.GetBody = http.NoBody, nil
	return r
}

// check validates one exchange; req is a copy the validator may consume.
func (c *contractChecker) check(req *http.Request, bodyComplete bool, res *http.Response, resBody []byte) {
	opts := &openapi3filter.Options{
		IncludeResponseStatus:      true, // a status the operation does not declare is a mismatch
		MultiError:                 true, // report every mismatch of an exchange at once
		AuthenticationFunc:         acceptAnyBearer,
		ExcludeReadOnlyValidations: true, // the document says read-only task fields in a body are ignored
		SkipSettingDefaults:        true,
		ExcludeRequestBody:         !bodyComplete,
	}
	// net/http's ServeMux answers HEAD with the GET route, and so does the
	// document (see its description): check a HEAD as its GET, without a body.
	if req.Method == http.MethodHead {
		req.Method = http.MethodGet
		opts.ExcludeResponseBody = true
	}

	route, pathParams, err := c.findRoute(req)
	if err != nil {
		c.checkUnrouted(req, opts, res, resBody)
		return
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: pathParams, Route: route, Options: opts}
	if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
		c.t.Logf("openapi.json: the request %s %s does not match the document (fine if the test means it): %v",
			req.Method, req.URL.RequestURI(), err)
	}
	c.checkResponse(in, res, resBody)
}

// findRoute finds the operation that the service's router would pick.
func (c *contractChecker) findRoute(req *http.Request) (*routers.Route, map[string]string, error) {
	// The legacy router ignores a trailing slash; ServeMux patterns without
	// one do not match a path with one.
	if p := req.URL.Path; p != "/" && strings.HasSuffix(p, "/") {
		return nil, nil, routers.ErrPathNotFound
	}
	return c.router.FindRoute(req)
}

func (c *contractChecker) checkResponse(in *openapi3filter.RequestValidationInput, res *http.Response, resBody []byte) {
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 res.StatusCode,
		Header:                 res.Header,
		Options:                in.Options,
	}
	out.SetBodyBytes(resBody)
	err := openapi3filter.ValidateResponse(context.Background(), out)
	if err == nil && res.StatusCode == http.StatusNotModified {
		// ValidateResponse passes a 304 unseen; it must still be declared, with its headers.
		err = checkDeclaredHeaders(in.Route.Operation, res)
	}
	if err != nil {
		c.t.Errorf("openapi.json: %s %s answered %d, which the document does not allow: %v\nresponse body: %s",
			in.Request.Method, in.Request.URL.RequestURI(), res.StatusCode, err, abbreviate(resBody))
	}
}

func checkDeclaredHeaders(op *openapi3.Operation, res *http.Response) error {
	ref := op.Responses.Status(res.StatusCode)
	if ref == nil || ref.Value == nil {
		return errors.New("status is not declared")
	}
	for name, h := range ref.Value.Headers {
		if h.Value != nil && h.Value.Required && res.Header.Get(name) == "" {
			return fmt.Errorf("response header %q missing", name)
		}
	}
	return nil
}

// checkUnrouted checks the answer to a request that no operation of the
// document has: a 404 or 405 problem from the service's router, as the
// document's NotFound and MethodNotAllowed responses say, unless the request
// was refused before routing (414, 431), redirected to its clean path, or is
// a CORS preflight (which the document describes but does not list).
func (c *contractChecker) checkUnrouted(req *http.Request, opts *openapi3filter.Options, res *http.Response, resBody []byte) {
	p := req.URL.Path
	switch {
	case res.StatusCode == http.StatusMovedPermanently && cleanPath(p) != p:
		return
	case res.StatusCode == http.StatusNoContent && req.Method == http.MethodOptions &&
		req.Header.Get("Access-Control-Request-Method") != "":
		return
	}
	status, name := http.StatusNotFound, "NotFound"
	if c.pathHasOtherMethods(req) {
		status, name = http.StatusMethodNotAllowed, "MethodNotAllowed"
	}
	responses := c.doc.Components.Responses
	route := &routers.Route{Spec: c.doc, Path: p, Method: req.Method, Operation: &openapi3.Operation{
		Responses: openapi3.NewResponses(
			openapi3.WithStatus(status, responses[name]),
			openapi3.WithStatus(http.StatusRequestURITooLong, responses["URITooLong"]),
			openapi3.WithStatus(http.StatusRequestHeaderFieldsTooLarge, responses["RequestHeaderFieldsTooLarge"]),
		),
	}}
	c.checkResponse(&openapi3filter.RequestValidationInput{Request: req, Route: route, Options: opts}, res, resBody)
}

// pathHasOtherMethods reports whether the document has the request's path
// with another method, which is when ServeMux answers 405.
func (c *contractChecker) pathHasOtherMethods(req *http.Request) bool {
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
		if m == req.Method {
			continue
		}
		r := req.Clone(req.Context())
		r.Method = m
		if _, _, err := c.findRoute(r); err == nil {
			return true
		}
	}
	return false
}

// cleanPath is the path ServeMux redirects a request to (net/http's own
// cleanPath): a path that is not its own clean form gets a 301.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if strings.HasSuffix(p, "/") && np != "/" {
		np += "/"
	}
	return np
}

// acceptAnyBearer stands in for authentication in the validator: the request
// needs a Bearer token, and the service, not the test, decides whether it is good.
func acceptAnyBearer(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	scheme, token, _ := strings.Cut(in.RequestValidationInput.Request.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return errors.New("no Bearer token")
	}
	return nil
}

func abbreviate(b []byte) string {
	const max = 500
	if len(b) > max {
		return string(b[:max]) + "..."
	}
	return string(b)
}

// ---- the document itself ---------------------------------------------------

// routePattern matches the routes addRoutes registers: handle("GET /healthz", ...).
var routePattern = regexp.MustCompile(`handle\("([A-Z]+) (/[^"]*)"`)

func TestOpenAPIDocumentIsValid(t *testing.T) {
	doc, _, err := loadContract()
	if err != nil {
		t.Fatal(err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi is %q, want 3.1.0", doc.OpenAPI)
	}

	t.Run("every route is documented", func(t *testing.T) {
		src, err := os.ReadFile("routes.go")
		if err != nil {
			t.Fatal(err)
		}
		routes := routePattern.FindAllStringSubmatch(string(src), -1)
		if len(routes) == 0 {
			t.Fatal("found no handle(\"METHOD /path\", ...) lines in routes.go")
		}
		registered := map[string]bool{}
		for _, r := range routes {
			method, p := r[1], r[2]
			registered[method+" "+p] = true
			item := doc.Paths.Value(p)
			if item == nil || item.GetOperation(method) == nil {
				t.Errorf("routes.go registers %s %s; openapi.json does not document it", method, p)
			}
		}
		for p, item := range doc.Paths.Map() {
			for method := range item.Operations() {
				if !registered[method+" "+p] {
					t.Errorf("openapi.json documents %s %s; routes.go does not register it", method, p)
				}
			}
		}
	})

	t.Run("every operation is described and declares its errors", func(t *testing.T) {
		for p, item := range doc.Paths.Map() {
			for method, op := range item.Operations() {
				t.Run(method+" "+p, func(t *testing.T) { checkOperation(t, doc, p, item, method, op) })
			}
		}
	})

	t.Run("the responses for unknown routes are there", func(t *testing.T) {
		for _, name := range []string{"NotFound", "MethodNotAllowed", "URITooLong", "RequestHeaderFieldsTooLarge"} {
			if doc.Components.Responses[name] == nil {
				t.Errorf("components.responses.%s is missing; contractTransport needs it", name)
			}
		}
	})
}

// checkOperation checks that op has what a reader needs, and that it declares
// every error the service's middleware and handlers can give it.
func checkOperation(t *testing.T, doc *openapi3.T, p string, item *openapi3.PathItem, method string, op *openapi3.Operation) {
	if op.OperationID == "" {
		t.Error("no operationId")
	}
	if op.Summary == "" {
		t.Error("no summary")
	}

	params := map[string]bool{}
	for _, ps := range []openapi3.Parameters{item.Parameters, op.Parameters} {
		for _, ref := range ps {
			params[ref.Value.In+" "+ref.Value.Name] = true
		}
	}
	api := strings.HasPrefix(p, "/api/")
	want := []int{http.StatusRequestURITooLong, http.StatusRequestHeaderFieldsTooLarge, http.StatusInternalServerError}
	if api {
		// requireUser, limitRate, requireOwnPath and the query check run on every route under /api/.
		want = append(want, 400, 401, 403, 422, 429, 503)
		security := doc.Security
		if op.Security != nil {
			security = *op.Security
		}
		if len(security) == 0 {
			t.Error("a route under /api/ without security")
		}
		if !params["header X-Request-Id"] {
			t.Error("no X-Request-Id parameter")
		}
		if method != http.MethodGet && !params["header Idempotency-Key"] {
			t.Errorf("%s under /api/ without the Idempotency-Key parameter", method)
		}
	}
	if strings.Contains(p, "{id}") {
		want = append(want, 404)
	}
	if op.RequestBody != nil {
		want = append(want, 413, 415)
	}
	if params["header If-Match"] {
		want = append(want, 412)
	}
	if params["header Idempotency-Key"] {
		want = append(want, 409)
	}
	for _, status := range want {
		if op.Responses.Status(status) == nil {
			t.Errorf("does not declare %d", status)
		}
	}

	for code, ref := range op.Responses.Map() {
		resp := ref.Value
		if resp.Headers["X-Request-Id"] == nil {
			t.Errorf("response %s does not declare X-Request-Id", code)
		}
		status, err := strconv.Atoi(code)
		if err != nil || status < 400 {
			continue
		}
		types := slices.Sorted(maps.Keys(resp.Content))
		// MCP's protocol version 2026-07-28 gives some JSON-RPC errors an HTTP
		// status; their body stays a JSON-RPC response, as the version requires.
		jsonRPC := p == "/mcp" && slices.Equal(types, []string{"application/json", "application/problem+json"})
		if !slices.Equal(types, []string{"application/problem+json"}) && !jsonRPC {
			t.Errorf("error response %s has content %v, want application/problem+json only", code, types)
		}
	}
}

func TestOpenAPIServed(t *testing.T) {
	a := startAPI(t)

	onDisk, err := os.ReadFile("openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	res := mustStatus(t, a.do(t, "GET", "/openapi.json", nil), http.StatusOK)
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("GET /openapi.json: Content-Type %q, want application/json", ct)
	}
	if !bytes.Equal(res.Body, onDisk) {
		t.Errorf("GET /openapi.json serves %d bytes that differ from openapi.json (%d bytes)", len(res.Body), len(onDisk))
	}

	res = mustStatus(t, a.do(t, "GET", "/docs", nil), http.StatusOK)
	if ct := res.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("GET /docs: Content-Type %q, want text/html", ct)
	}
	if page := string(res.Body); !strings.Contains(strings.ToLower(page), "<html") || !strings.Contains(page, `"/openapi.json"`) {
		t.Errorf("GET /docs is not an HTML page that loads /openapi.json:\n%s", abbreviate(res.Body))
	}
}
