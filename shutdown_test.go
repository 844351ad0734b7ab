package main

import (
	"net/http"
	"testing"
	"time"
)

// On SIGTERM, behind a balancer: /readyz answers 503 at once while the
// instance still serves (SHUTDOWN_DRAIN), so the balancer takes it out of
// rotation before it stops accepting; event streams end at once.
func TestShutdownDrainsBeforeItStops(t *testing.T) {
	dbURL := newDatabase(t, true)
	s := startRun(t, map[string]string{"DATABASE_URL": dbURL, "BETTER_AUTH_SECRET": testSecret, "SHUTDOWN_DRAIN": "1500ms"})
	token, _ := mintToken([]byte(testSecret), "drain-user", "", "", time.Hour, time.Now())
	if res, err := http.Get(s.baseURL + "/readyz"); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("ready before: %v %v", res, err)
	}
	a := &testAPI{URL: s.baseURL, client: http.DefaultClient}
	stream := openStream(t, a, "/api/me/events", bearerHeader(token))
	stream.next(t, 5*time.Second, false)

	stopped := time.Now()
	s.stop()
	time.Sleep(300 * time.Millisecond)
	res, err := http.Get(s.baseURL + "/readyz")
	if err != nil || res.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/readyz during the drain: %v %v", res, err)
	}
	req, _ := http.NewRequest("GET", s.baseURL+"/api/me/tasks", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("a request during the drain: %v %v", res, err)
	}
	for {
		ev, ok := stream.next(t, 5*time.Second, true)
		if !ok {
			break
		}
		if ev.Comment != "" && time.Since(stopped) > time.Second {
			t.Fatalf("the stream lived on during the drain: %+v", ev)
		}
	}
	select {
	case err := <-s.done:
		s.done <- err // for startRun's cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after the drain")
	}
	if took := time.Since(stopped); took < 1500*time.Millisecond {
		t.Fatalf("stopped after %s, before the drain ended", took)
	}
	if _, err := http.Get(s.baseURL + "/healthz"); err == nil {
		t.Fatal("still accepting after the shutdown")
	}
}
