//go:build unix

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"tasks-api/internal/testbed"
)

// Scale-out, for real: two instances of the built service on one
// PostgreSQL, HAProxy in front of them (the configuration of
// docs/scale-out.md), every request through the balancer.
//
//   - Event streams of two users, spread over both instances, receive every
//     change made through either, within a second, in feed order, none lost,
//     none repeated.
//   - An Idempotency-Key sent twice, landing on different instances, creates
//     once and replays.
//   - A rolling restart (SIGTERM, wait for the exit, start again, wait until
//     HAProxy sees it up; one instance after the other) under a write and
//     read load: not one request fails, and every stream resumes on the
//     other instance and ends with every change, exactly once, in order.
//   - kill -9 of an instance under a write load: requests in flight to it may
//     fail, but no acknowledged write is lost, and its streams resume on the
//     other instance with nothing lost.
func TestScaleOut(t *testing.T) {
	if testing.Short() {
		t.Skip("a long fault test")
	}
	if _, err := testbed.FindHAProxy(); err != nil {
		t.Skip(err)
	}
	c := startCluster(t, 2)

	t.Run("every stream gets every change", func(t *testing.T) { testStreamsAcrossInstances(t, c) })
	t.Run("an Idempotency-Key holds across instances", func(t *testing.T) { testIdempotencyAcrossInstances(t, c) })
	t.Run("rolling restart under load", func(t *testing.T) { testRollingRestart(t, c) })
	t.Run("kill -9 under load", func(t *testing.T) { testKilledInstance(t, c) })
}

// docs/scale-out.md shows the HAProxy configuration this test runs, for
// two instances at 10.0.0.1 and 10.0.0.2.
func TestScaleOutDocShowsTheTestedConfig(t *testing.T) {
	b, err := os.ReadFile("docs/scale-out.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(b), "```haproxy\n")
	block, _, closed := strings.Cut(block, "```")
	if !ok || !closed {
		t.Fatal("docs/scale-out.md has no ```haproxy block")
	}
	want := testbed.HAProxyConfig("*:80", "127.0.0.1:8404", []string{"10.0.0.1:8000", "10.0.0.2:8000"})
	if block != want {
		t.Fatalf("docs/scale-out.md shows\n%s\nbut the test runs\n%s", block, want)
	}
}

var scaleUsers atomic.Int64

// newScaleUser is a user of its own and its token.
func newScaleUser(t *testing.T) (string, string) {
	t.Helper()
	user := fmt.Sprintf("scale-%d-%d", os.Getpid(), scaleUsers.Add(1))
	tok, err := mintToken([]byte(testSecret), user, "", "", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return user, tok
}

// fromTheStart is a token of the start of user's feed: a stream that
// resumes from it replays every change the user ever made.
func (c *cluster) fromTheStart(user string) string {
	return c.tokens.encode(user, syncToken{Seq: 0, Issued: time.Now()})
}

func testStreamsAcrossInstances(t *testing.T, c *cluster) {
	type account struct {
		user, token string
		streams     []*resumingStream
	}
	var accounts []*account
	for range 2 {
		user, tok := newScaleUser(t)
		a := &account{user: user, token: tok}
		// Open streams until the user has three, on both instances.
		on := map[string]bool{}
		for i := 0; i < 10 && (len(a.streams) < 3 || len(on) < len(c.instances)); i++ {
			s := c.openResumingStream(user, tok, "")
			a.streams = append(a.streams, s)
			on[s.connections()[0].servedBy] = true
		}
		if len(on) < len(c.instances) {
			t.Fatalf("%d streams of %s all landed on %v", len(a.streams), user, on)
		}
		accounts = append(accounts, a)
	}

	// Each write of each user, through the balancer, must reach every
	// stream of that user within a second of its acknowledgement.
	var slowest time.Duration
	writesOn := map[string]int{}
	writes := 0
	write := func(a *account, method, path, body string, want int) apiResult {
		t.Helper()
		r := c.do(t.Context(), method, path, a.token, body)
		if r.status != want {
			t.Fatalf("%s %s: %s, want %d", method, path, r, want)
		}
		writesOn[r.servedBy]++
		writes++
		return r
	}
	expect := func(a *account, id int64, version int, what string) {
		t.Helper()
		acked := time.Now()
		for _, s := range a.streams {
			deadline := time.Now().Add(5 * time.Second)
			ok, at := s.has(id, version)
			for ; !ok && time.Now().Before(deadline); ok, at = s.has(id, version) {
				time.Sleep(time.Millisecond)
			}
			if !ok {
				t.Fatalf("%s (task %d, version %d) did not reach a stream of %s (opened on %s) within 5s",
					what, id, version, a.user, s.connections()[0].servedBy)
			}
			delay := max(0, at.Sub(acked))
			slowest = max(slowest, delay)
			if delay > time.Second {
				t.Errorf("%s reached a stream of %s %s after its acknowledgement; the contract says within a second", what, a.user, delay)
			}
		}
	}
	for round := range 2 {
		for _, a := range accounts {
			one := write(a, "POST", "/api/me/tasks", fmt.Sprintf(`{"title":"one, round %d"}`, round), http.StatusCreated)
			t1 := taskOf(t, one)
			expect(a, t1.ID, t1.Version, "a create")
			two := taskOf(t, write(a, "POST", "/api/me/tasks", `{"title":"two"}`, http.StatusCreated))
			expect(a, two.ID, two.Version, "a create")
			p := taskOf(t, write(a, "PATCH", taskURL(t1.ID), `{"title":"one, renamed"}`, http.StatusOK))
			expect(a, p.ID, p.Version, "an update")
			d := taskOf(t, write(a, "PATCH", taskURL(two.ID)+"/complete", "", http.StatusOK))
			expect(a, d.ID, d.Version, "a completion")
			write(a, "DELETE", taskURL(t1.ID), "", http.StatusNoContent)
			expect(a, t1.ID, 0, "a delete (to the trash)")
			r := taskOf(t, write(a, "POST", fmt.Sprintf("/api/me/trash/%d/restore", t1.ID), "", http.StatusOK))
			expect(a, r.ID, r.Version, "a restore")
			write(a, "DELETE", taskURL(two.ID), "", http.StatusNoContent)
			expect(a, two.ID, 0, "a delete (to the trash)")
			write(a, "DELETE", fmt.Sprintf("/api/me/trash/%d", two.ID), "", http.StatusNoContent)
			expect(a, two.ID, 0, "a delete for good")
		}
	}
	if len(writesOn) < len(c.instances) {
		t.Errorf("the writes all went to %v", writesOn)
	}
	changes := 0
	for _, a := range accounts {
		for _, s := range a.streams {
			s.check(t)
			changes += s.changes
			s.stop()
		}
	}
	t.Logf("%d writes (by instance: %v) reached %d streams of 2 users on both instances: %d change events, "+
		"the slowest %s after its acknowledgement", writes, writesOn, len(accounts[0].streams)+len(accounts[1].streams),
		changes, slowest.Round(time.Microsecond))
}

func taskOf(t *testing.T, r apiResult) taskJSON {
	t.Helper()
	var task taskJSON
	if err := json.Unmarshal(r.body, &task); err != nil || task.ID == 0 {
		t.Fatalf("not a task: %s (%v)", r, err)
	}
	return task
}

func testIdempotencyAcrossInstances(t *testing.T, c *cluster) {
	user, tok := newScaleUser(t)
	key := fmt.Sprintf("scale-out-%d", time.Now().UnixNano())
	body := `{"title":"created once, whichever instance answers"}`
	first := c.do(t.Context(), "POST", "/api/me/tasks", tok, body, "Idempotency-Key", key)
	if first.status != http.StatusCreated || first.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("first: %s (replayed %q)", first, first.header.Get("Idempotent-Replayed"))
	}
	served := []string{first.servedBy}
	for i := 0; i < 6 && len(slices.Compact(slices.Sorted(slices.Values(served)))) < len(c.instances); i++ {
		again := c.do(t.Context(), "POST", "/api/me/tasks", tok, body, "Idempotency-Key", key)
		if again.status != http.StatusCreated || again.header.Get("Idempotent-Replayed") != "true" || string(again.body) != string(first.body) {
			t.Fatalf("repeat on %s: %s (replayed %q), want a replay of %s", again.servedBy, again, again.header.Get("Idempotent-Replayed"), first.body)
		}
		served = append(served, again.servedBy)
	}
	if len(slices.Compact(slices.Sorted(slices.Values(served)))) < len(c.instances) {
		t.Fatalf("the repeats all went to the same instance: %v", served)
	}
	if n := len(c.liveTasks(user)); n != 1 {
		t.Fatalf("%d tasks, want 1", n)
	}
	t.Logf("one create, answered by %v in turn", served)
}

func testRollingRestart(t *testing.T, c *cluster) {
	load := startWriteLoad(t, c.lb.URL(), 6)
	var streams []*resumingStream
	for _, w := range load.workers {
		streams = append(streams, c.openResumingStream(w.user, w.token, c.fromTheStart(w.user)))
	}
	reads := startReadLoad(t, c, load, 3)
	load.waitAcked(t, 100, 30*time.Second)

	for i := range c.instances {
		signalled := time.Now()
		exit := make(chan time.Duration, 1)
		go func() { exit <- c.terminate(i) }()
		down := c.waitStatus(i, "DOWN")
		exited := <-exit
		if t.Failed() {
			return
		}
		c.start(i)
		up := c.waitStatus(i, "UP")
		t.Logf("s%d: HAProxy saw it down %s after SIGTERM; it exited after %s; started again, up %s later",
			i+1, down.Round(time.Millisecond), exited.Round(time.Millisecond), up.Round(time.Millisecond))
		_ = signalled
		load.waitAcked(t, 100, 30*time.Second)
	}
	load.finish()
	reads.finish()

	failed := 0
	for _, r := range load.recordsBetween(time.Time{}, time.Now()) {
		if r.status/100 != 2 || r.repeat {
			failed++
			if failed <= 10 {
				t.Errorf("a write failed: %s", r)
			}
		}
	}
	for _, f := range reads.failures() {
		failed++
		t.Errorf("a read failed: %s", f)
	}
	connections := 0
	for _, s := range streams {
		n := s.check(t)
		if n < 2 {
			t.Errorf("the stream of %s never had to resume: %+v", s.user, s.connections())
		}
		connections += n
		s.stop()
	}
	tally := load.verify(t, c.dbURL)
	t.Logf("%d writes and %d reads through the balancer, %d failed; %d streams made %d connections and ended equal to the database; "+
		"verified %d tasks exactly as acknowledged, %d deletes absent",
		len(load.recordsBetween(time.Time{}, time.Now())), reads.count.Load(), failed, len(streams), connections,
		tally.present, tally.deletedAbsent)
}

func testKilledInstance(t *testing.T, c *cluster) {
	load := startWriteLoad(t, c.lb.URL(), 6)
	var streams []*resumingStream
	for _, w := range load.workers {
		streams = append(streams, c.openResumingStream(w.user, w.token, c.fromTheStart(w.user)))
	}
	load.waitAcked(t, 100, 30*time.Second)

	const victim = 0
	killed := time.Now()
	c.instances[victim].kill(t)
	down := c.waitStatus(victim, "DOWN")
	c.start(victim)
	up := c.waitStatus(victim, "UP")
	load.waitAcked(t, 100, 30*time.Second)
	load.finish()

	var failed []string
	for _, r := range load.recordsOverlapping(killed, killed.Add(down)) {
		if r.status/100 != 2 {
			failed = append(failed, r.String())
		}
	}
	for _, r := range load.recordsBetween(killed.Add(down), time.Now()) {
		if r.status/100 != 2 {
			t.Errorf("a write failed after HAProxy had seen s%d down: %s", victim+1, r)
		}
	}
	tally := load.verify(t, c.dbURL)
	replayed := verifyKeyedCreates(t, load, c.dbURL)
	connections, broken := 0, 0
	for _, s := range streams {
		opens := s.connections()
		for _, o := range opens {
			if o.status == 0 || o.status == http.StatusBadGateway {
				broken++ // in flight to the killed instance: allowed
			}
		}
		connections += s.checkAllowing(t, func(o streamOpen) bool { return o.status == 0 || o.status == http.StatusBadGateway })
		s.stop()
	}
	t.Logf("s%d killed: HAProxy saw it down after %s, up again %s after the restart; %d requests failed meanwhile %v; "+
		"verified %d acknowledged creates, %d updates, %d deletes (%d tasks exactly as acknowledged, %d unacknowledged writes resolved whole), "+
		"%d keyed creates replayed; %d streams made %d connections (%d broken by the kill) and ended equal to the database",
		victim+1, down.Round(time.Millisecond), up.Round(time.Millisecond), len(failed), failed,
		tally.creates, tally.updates, tally.deletes, tally.present, tally.unknownWrites, replayed,
		len(streams), connections, broken)
}

// readLoad reads through the balancer as the load's users: their lists, and
// an incremental sync of the change feed that follows its next token. Every
// read must answer 200.
type readLoad struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	count  atomic.Int64
	mu     sync.Mutex
	failed []string
}

func startReadLoad(t *testing.T, c *cluster, users *writeLoad, readers int) *readLoad {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &readLoad{cancel: cancel}
	for n := range readers {
		r.wg.Go(func() {
			next := map[string]string{}
			for i := n; ctx.Err() == nil; i++ {
				w := users.workers[i%len(users.workers)]
				path := "/api/me/tasks?limit=20"
				if i%2 == 1 {
					path = "/api/me/changes?limit=100"
					if since := next[w.user]; since != "" {
						path += "&since=" + since
					}
				}
				res := c.do(context.Background(), "GET", path, w.token, "")
				r.count.Add(1)
				if res.status != http.StatusOK {
					r.mu.Lock()
					r.failed = append(r.failed, fmt.Sprintf("GET %s at %s: %s", path, time.Now().Format("15:04:05.000"), res))
					r.mu.Unlock()
					continue
				}
				if strings.Contains(path, "/changes") {
					var f feedJSON
					if err := json.Unmarshal(res.body, &f); err == nil {
						next[w.user] = f.Next
					}
				}
			}
		})
	}
	t.Cleanup(r.finish)
	return r
}

func (r *readLoad) finish() {
	r.cancel()
	r.wg.Wait()
}

func (r *readLoad) failures() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.failed)
}
