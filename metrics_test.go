package main

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// scrape reads a's metrics as Prometheus would, and returns each sample's
// value by its line's name and labels (as written).
func scrape(t *testing.T, a *testAPI) map[string]float64 {
	t.Helper()
	srv := httptest.NewServer(promhttp.HandlerFor(a.metrics.registry, promhttp.HandlerOpts{}))
	defer srv.Close()
	res, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("sample %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

// count is the number of requests the duration histogram holds for one series.
func count(samples map[string]float64, method, route, status string) float64 {
	return samples[fmt.Sprintf(`http_server_request_duration_seconds_count{method=%q,route=%q,status_code=%q}`, method, route, status)]
}

// Each counter moves with what it counts; routes are patterns, and random
// paths all land in one "unmatched" series.
func TestMetrics(t *testing.T) {
	a := startAPI(t, func(o *apiOptions) { o.rateLimit = 1 })
	_, tok := a.newUser(t)
	before := scrape(t, a)

	task := a.createTask(t, tok, `{"title":"x"}`)
	a.do(t, "GET", taskURL(task.ID), nil, bearer(tok))
	a.do(t, "GET", "/api/me/tasks", nil)                  // no token
	a.do(t, "GET", "/api/me/tasks", nil, bearer("a.b.c")) // a bad token
	for range 4 {                                         // over the rate (a burst of 2)
		a.do(t, "GET", "/api/me/tasks/stats", nil, bearer(tok))
	}
	time.Sleep(2 * time.Second) // the bucket refills
	a.do(t, "POST", "/api/me/tasks", `{"title":"k"}`, bearer(tok), idemKey("m"))
	time.Sleep(time.Second)
	a.do(t, "POST", "/api/me/tasks", `{"title":"k"}`, bearer(tok), idemKey("m")) // replayed
	for range 1000 {
		a.do(t, "GET", fmt.Sprintf("/nope/%d", rand.Uint64()), nil)
	}
	stream := openStream(t, a, "/api/me/events", bearerHeader(a.token(t, "metrics-stream-user")))
	stream.next(t, 5*time.Second, false)
	after := scrape(t, a)

	moved := func(name string, want float64) {
		t.Helper()
		if got := after[name] - before[name]; got != want {
			t.Errorf("%s moved by %v, want %v", name, got, want)
		}
	}
	if got := count(after, "POST", "POST /api/{user_id}/tasks", "201"); got < 2 {
		t.Errorf("creates counted %v", got)
	}
	if got := count(after, "GET", "GET /api/{user_id}/tasks/{id}", "200"); got < 1 {
		t.Errorf("gets counted %v", got)
	}
	if got := count(after, "GET", "unmatched", "404") - count(before, "GET", "unmatched", "404"); got != 1000 {
		t.Errorf("unknown paths counted %v, want 1000", got)
	}
	series := 0
	for name := range after {
		if strings.HasPrefix(name, "http_server_request_duration_seconds_count{") {
			series++
			if strings.Contains(name, "/nope") || strings.Contains(name, "user-") {
				t.Errorf("a raw path or user in a label: %s", name)
			}
		}
	}
	if series > 20 {
		t.Errorf("%d duration series: the labels are not bounded", series)
	}
	moved(`tasks_auth_refusals_total{reason="unauthenticated"}`, 1)
	moved(`tasks_auth_refusals_total{reason="invalid_token"}`, 1)
	if got := after["tasks_rate_limited_total"] - before["tasks_rate_limited_total"]; got < 1 {
		t.Errorf("rate limited moved by %v", got)
	}
	moved("tasks_idempotent_replays_total", 1)
	moved("tasks_event_streams_open", 1)
	if after["tasks_db_pool_max_connections"] < 1 || after["tasks_db_pool_acquires_total"] <= before["tasks_db_pool_acquires_total"] {
		t.Errorf("pool gauges: max %v, acquires %v → %v", after["tasks_db_pool_max_connections"],
			before["tasks_db_pool_acquires_total"], after["tasks_db_pool_acquires_total"])
	}
	if count(after, "GET", eventsRoute, "200") != 0 {
		t.Error("an event stream was timed as a request")
	}

	// Events sent moves when a stream sends one.
	sentBefore := after["tasks_events_sent_total"]
	a.createTask(t, a.token(t, "metrics-stream-user"), `{"title":"for the stream"}`)
	stream.nextChange(t)
	if got := scrape(t, a)["tasks_events_sent_total"] - sentBefore; got != 1 {
		t.Errorf("events sent moved by %v, want 1", got)
	}
}

// METRICS_ADDR serves /metrics on its own listener.
func TestMetricsListener(t *testing.T) {
	dbURL := newDatabase(t, true)
	s := startRun(t, map[string]string{"DATABASE_URL": dbURL, "BETTER_AUTH_SECRET": testSecret, "SHUTDOWN_DRAIN": "0s",
		"METRICS_ADDR": "127.0.0.1:0"})
	if _, err := http.Get(s.baseURL + "/healthz"); err != nil {
		t.Fatal(err)
	}
	addr := ""
	waitFor(t, "the metrics listener's log line", func() bool {
		for _, line := range strings.Split(s.stderr.String(), "\n") {
			if strings.Contains(line, "metrics listening") {
				_, addr, _ = strings.Cut(line, "addr=")
				addr = strings.Fields(addr)[0]
			}
		}
		return addr != ""
	})
	res, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || !strings.Contains(string(b), `http_server_request_duration_seconds_count{method="GET",route="GET /healthz",status_code="200"} 1`) {
		t.Fatalf("%d\n%s", res.StatusCode, b)
	}
}

// The dashboard in docs/ charts only metrics the service exports.
func TestDashboardNamesExportedMetrics(t *testing.T) {
	a := startAPI(t)
	a.do(t, "GET", "/healthz", nil) // a histogram has no series before its first observation
	families, err := a.metrics.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, f := range families {
		exported[f.GetName()] = true
		if f.GetType().String() == "HISTOGRAM" {
			for _, suffix := range []string{"_bucket", "_count", "_sum"} {
				exported[f.GetName()+suffix] = true
			}
		}
	}
	b, err := os.ReadFile(filepath.Join("docs", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	names := regexp.MustCompile(`\b((?:http_server|tasks|process|go)_[a-z_]+)\{`).FindAllStringSubmatch(string(b), -1)
	if len(names) < 10 {
		t.Fatalf("only %d metric references in the dashboard", len(names))
	}
	for _, m := range names {
		if !exported[m[1]] {
			t.Errorf("the dashboard charts %s, which the service does not export", m[1])
		}
	}
}
