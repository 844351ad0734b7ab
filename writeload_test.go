package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// writeLoad is a concurrent write load on a running service, for the fault
// tests: each worker is a user of its own that creates, updates and deletes
// its own tasks. Like a careful client it repeats a write that got a 503 or
// no answer when a repeat is safe (updates, deletes, creates with an
// Idempotency-Key). It remembers what the service acknowledged (a 2xx), and
// which writes never got an acknowledgement, whose outcome is unknown.
// Afterwards, verify reads everything back and checks that every
// acknowledged write is there exactly as acknowledged.
type writeLoad struct {
	baseURL string
	client  *http.Client
	workers []*loadWorker
	acked   atomic.Int64 // writes answered with a 2xx
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	mu      sync.Mutex
	records []requestRecord
}

// requestRecord is one request of the load, as the client saw it.
type requestRecord struct {
	start, end time.Time
	worker     int
	method     string
	repeat     bool  // repeats a write that got no acknowledgement
	status     int   // 0: no response
	err        error // the transport's error, when there was no response
	problem    bool  // Content-Type: application/problem+json
	retryAfter string
}

func (r requestRecord) latency() time.Duration { return r.end.Sub(r.start) }

func (r requestRecord) String() string {
	if r.status == 0 {
		return fmt.Sprintf("%s at %s: no response (%v) after %s", r.method, r.start.Format("15:04:05.000"), r.err, r.latency())
	}
	return fmt.Sprintf("%s at %s: %d (problem+json %t, Retry-After %q) after %s", r.method,
		r.start.Format("15:04:05.000"), r.status, r.problem, r.retryAfter, r.latency())
}

// loadWorker is one user's share of the load. Only its goroutine touches it
// until the load has finished.
type loadWorker struct {
	n            int
	user, token  string
	rng          *rand.Rand
	ops          int
	acked        map[int64]taskJSON // the last acknowledged state of each task
	writable     []int64            // acknowledged tasks that may still be written
	deleted      map[int64]bool     // acknowledged deletes (or a 404 to a repeat)
	unknown      map[int64]unknownWrite
	unackCreates map[string]bool // titles of creates without an acknowledgement
	keyed        []keyedCreate   // creates sent with an Idempotency-Key
	load         *writeLoad
}

// unknownWrite is an update or delete that the load ended before it was
// acknowledged: it may or may not have happened. The task is not written again.
type unknownWrite struct {
	deleted bool     // a delete
	update  taskJSON // else the update's fields (title, priority, completed)
}

// keyedCreate is a create sent with an Idempotency-Key, and its 201 if it got one.
type keyedCreate struct {
	key, body string
	title     string
	ack       []byte // the acknowledged body; nil: no acknowledgement
}

var loadRuns atomic.Int64

// startWriteLoad starts workers against baseURL; tokens are signed with
// testSecret, so the service must use it.
func startWriteLoad(t *testing.T, baseURL string, workers int) *writeLoad {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	l := &writeLoad{
		baseURL: baseURL,
		client:  &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers}},
		cancel:  cancel,
	}
	run := loadRuns.Add(1)
	for i := range workers {
		user := fmt.Sprintf("load-%d-%d-%d", time.Now().UnixNano(), run, i)
		tok, err := mintToken([]byte(testSecret), user, "", "", time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		w := &loadWorker{
			n: i, user: user, token: tok, rng: rand.New(rand.NewPCG(uint64(i), uint64(run))),
			acked: map[int64]taskJSON{}, deleted: map[int64]bool{}, unknown: map[int64]unknownWrite{},
			unackCreates: map[string]bool{}, load: l,
		}
		l.workers = append(l.workers, w)
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for ctx.Err() == nil {
				w.step(ctx)
			}
		}()
	}
	t.Cleanup(l.finish)
	return l
}

// finish stops the load and waits for the requests in flight.
func (l *writeLoad) finish() {
	l.cancel()
	l.wg.Wait()
	l.client.CloseIdleConnections()
}

// waitAcked waits until n more writes than now have been acknowledged.
func (l *writeLoad) waitAcked(t *testing.T, n int64, limit time.Duration) {
	t.Helper()
	want := l.acked.Load() + n
	waitUntil(t, limit, fmt.Sprintf("%d acknowledged writes", want), func() bool { return l.acked.Load() >= want })
}

// recordsBetween are the requests that started at or after from and ended before to.
func (l *writeLoad) recordsBetween(from, to time.Time) []requestRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []requestRecord
	for _, r := range l.records {
		if !r.start.Before(from) && r.end.Before(to) {
			out = append(out, r)
		}
	}
	return out
}

// everyWorkerFailedSince reports whether every worker has had a request
// fail at or after since.
func (l *writeLoad) everyWorkerFailedSince(since time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	seen := map[int]bool{}
	for _, r := range l.records {
		if !r.end.Before(since) && r.status/100 != 2 {
			seen[r.worker] = true
		}
	}
	return len(seen) == len(l.workers)
}

// recordsOverlapping are the requests that were in flight at some time in [from, to].
func (l *writeLoad) recordsOverlapping(from, to time.Time) []requestRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []requestRecord
	for _, r := range l.records {
		if !r.end.Before(from) && !r.start.After(to) {
			out = append(out, r)
		}
	}
	return out
}

// request sends one request and reads the response whole; it gives up after
// longer than any request may take, so a hang shows as an error.
func (w *loadWorker) request(method, path, body, key string) (requestRecord, http.Header, []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), requestDeadline+5*time.Second)
	defer cancel()
	rec := requestRecord{worker: w.n, method: method}
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, w.load.baseURL+path, rd)
	if err != nil {
		panic(err)
	}
	req.Header.Set("Authorization", "Bearer "+w.token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	rec.start = time.Now()
	res, err := w.load.client.Do(req)
	var b []byte
	if err == nil {
		b, err = io.ReadAll(res.Body)
		res.Body.Close()
	}
	rec.end = time.Now()
	if err != nil {
		rec.err = err
		return rec, nil, nil
	}
	rec.status = res.StatusCode
	rec.problem = res.Header.Get("Content-Type") == "application/problem+json"
	rec.retryAfter = res.Header.Get("Retry-After")
	return rec, res.Header, b
}

// write is a request of the load, recorded; it returns the status (0 when
// there was no response) and the body.
func (w *loadWorker) write(method, path, body, key string, repeat bool) (int, []byte) {
	rec, _, b := w.request(method, path, body, key)
	rec.repeat = repeat
	w.load.mu.Lock()
	w.load.records = append(w.load.records, rec)
	w.load.mu.Unlock()
	if rec.status/100 == 2 {
		w.load.acked.Add(1)
	}
	return rec.status, b
}

// step runs one write.
func (w *loadWorker) step(ctx context.Context) {
	w.ops++
	switch r := w.rng.IntN(10); {
	case len(w.writable) < 5 || r < 5:
		w.create(ctx)
	case r < 8:
		w.update(ctx)
	default:
		w.delete(ctx)
	}
}

// retry sends a write until it gets an answer other than a 503 (or no
// answer at all), as a careful client does, or the load ends (status 0).
// Only writes that are safe to repeat are retried.
func (w *loadWorker) retry(ctx context.Context, method, path, body, key string) (int, []byte) {
	for repeat := false; ctx.Err() == nil; repeat = true {
		status, b := w.write(method, path, body, key, repeat)
		if status != 0 && status != http.StatusServiceUnavailable {
			return status, b
		}
		// Sooner than Retry-After asks, to keep the pressure on.
		select {
		case <-ctx.Done():
		case <-time.After(20 * time.Millisecond):
		}
	}
	return 0, nil
}

// create sends a new task. A third of the creates carry an Idempotency-Key
// and are retried until acknowledged; the others are sent once, since a
// repeat could create the task twice.
func (w *loadWorker) create(ctx context.Context) {
	title := fmt.Sprintf("w%d op%d", w.n, w.ops)
	body, _ := json.Marshal(map[string]any{
		"title": title, "description": "made by the write load", "priority": priorities[w.rng.IntN(4)],
		"tags": []string{fmt.Sprintf("t%d", w.rng.IntN(5))},
	})
	var status int
	var b []byte
	key := ""
	if w.ops%3 == 0 {
		key = fmt.Sprintf("%s-create-%d", w.user, w.ops)
		status, b = w.retry(ctx, "POST", "/api/me/tasks", string(body), key)
	} else {
		status, b = w.write("POST", "/api/me/tasks", string(body), "", false)
	}
	var ack []byte
	if status == http.StatusCreated {
		var task taskJSON
		if json.Unmarshal(b, &task) == nil && task.ID > 0 {
			w.acked[task.ID] = task
			w.writable = append(w.writable, task.ID)
			ack = b
		}
	}
	if ack == nil {
		w.unackCreates[title] = true
	}
	if key != "" {
		w.keyed = append(w.keyed, keyedCreate{key: key, body: string(body), title: title, ack: ack})
	}
}

// pick chooses one of the writable tasks: its id and its index in writable.
func (w *loadWorker) pick() (int64, int) {
	i := w.rng.IntN(len(w.writable))
	return w.writable[i], i
}

// update changes a task's fields, retrying: a repeat of an update that
// already happened changes nothing more.
func (w *loadWorker) update(ctx context.Context) {
	id, i := w.pick()
	want := w.acked[id]
	want.Title = fmt.Sprintf("w%d op%d", w.n, w.ops)
	want.Priority = priorities[w.rng.IntN(4)]
	want.Completed = w.rng.IntN(2) == 0
	body, _ := json.Marshal(map[string]any{"title": want.Title, "priority": want.Priority, "completed": want.Completed})
	status, b := w.retry(ctx, "PATCH", fmt.Sprintf("/api/me/tasks/%d", id), string(body), "")
	if status == http.StatusOK {
		var task taskJSON
		if json.Unmarshal(b, &task) == nil && task.ID == id {
			w.acked[id] = task
			return
		}
	}
	w.unknown[id] = unknownWrite{update: want}
	w.writable = slices.Delete(w.writable, i, i+1)
}

// delete deletes a task, retrying: a 404 on a repeat means an earlier
// attempt deleted it.
func (w *loadWorker) delete(ctx context.Context) {
	id, i := w.pick()
	w.writable = slices.Delete(w.writable, i, i+1)
	switch status, _ := w.retry(ctx, "DELETE", fmt.Sprintf("/api/me/tasks/%d", id), "", ""); status {
	case http.StatusNoContent, http.StatusNotFound:
		delete(w.acked, id)
		w.deleted[id] = true
	default:
		w.unknown[id] = unknownWrite{deleted: true}
	}
}

// loadTally counts what verify checked.
type loadTally struct {
	creates, updates, deletes int // acknowledged, as counted by the service's answers
	present                   int // tasks verified exactly as acknowledged
	deletedAbsent             int // acknowledged deletes verified absent
	unknownWrites             int // writes without an acknowledgement, resolved either way
	unackedCreatesStored      int // creates without an acknowledgement that did happen
}

// verify reads every worker's tasks through the API and checks each against
// what was acknowledged: an acknowledged task is there exactly as its last
// acknowledgement showed it; an acknowledged delete left nothing; a write
// without an acknowledgement either happened whole or not at all; and no task
// exists that no request created. It also checks the user's quota counter.
func (l *writeLoad) verify(t *testing.T, directURL string) loadTally {
	t.Helper()
	var tally loadTally
	conn, err := pgx.Connect(t.Context(), directURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for _, w := range l.workers {
		stored := l.listAll(t, w)
		for id, want := range w.acked {
			got, ok := stored[id]
			u, isUnknown := w.unknown[id]
			switch {
			case isUnknown && u.deleted && !ok:
				tally.unknownWrites++
			case isUnknown && !u.deleted && ok && got.Title == u.update.Title:
				// The unacknowledged update happened, whole.
				if got.Priority != u.update.Priority || got.Completed != u.update.Completed || got.Version != want.Version+1 {
					t.Errorf("user %s task %d: half an update: got %+v, sent %+v on top of version %d", w.user, id, got, u.update, want.Version)
				}
				tally.unknownWrites++
			case !ok:
				t.Errorf("user %s task %d: acknowledged as %+v, but it is gone", w.user, id, want)
			case !reflect.DeepEqual(got, want):
				t.Errorf("user %s task %d:\n got %+v\nwant %+v (the last acknowledgement)", w.user, id, got, want)
			default:
				if isUnknown {
					tally.unknownWrites++
				} else {
					tally.present++
				}
			}
			delete(stored, id)
		}
		for id := range w.deleted {
			if _, ok := stored[id]; ok {
				t.Errorf("user %s task %d: its delete was acknowledged, but it is there", w.user, id)
			} else {
				tally.deletedAbsent++
			}
		}
		// What is left must come from creates that got no acknowledgement, each at most once.
		for id, got := range stored {
			if !w.unackCreates[got.Title] {
				t.Errorf("user %s task %d (%q): no request created it", w.user, id, got.Title)
			}
			delete(w.unackCreates, got.Title)
			tally.unackedCreatesStored++
		}
		var counted, rows int
		if err := conn.QueryRow(t.Context(), `
SELECT coalesce((SELECT tasks FROM task_counts WHERE user_id = $1), 0), (SELECT count(*) FROM tasks WHERE user_id = $1 AND deleted_at IS NULL)`,
			w.user).Scan(&counted, &rows); err != nil {
			t.Fatal(err)
		}
		if counted != rows {
			t.Errorf("user %s: task_counts says %d, but %d live tasks are stored", w.user, counted, rows)
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.records {
		if r.status/100 != 2 {
			continue
		}
		switch r.method {
		case "POST":
			tally.creates++
		case "PATCH":
			tally.updates++
		case "DELETE":
			tally.deletes++
		}
	}
	return tally
}

var nextLink = regexp.MustCompile(`<([^>]+)>;\s*rel="next"`)

// listAll reads all of w's tasks through the API, page by page.
func (l *writeLoad) listAll(t *testing.T, w *loadWorker) map[int64]taskJSON {
	t.Helper()
	all := map[int64]taskJSON{}
	for path := "/api/me/tasks?limit=500"; path != ""; {
		rec, h, b := w.request("GET", path, "", "")
		if rec.status != http.StatusOK {
			t.Fatalf("GET %s: %s %s", path, rec, b)
		}
		var page []taskJSON
		if err := json.Unmarshal(b, &page); err != nil {
			t.Fatal(err)
		}
		for _, task := range page {
			if _, dup := all[task.ID]; dup {
				t.Fatalf("task %d listed twice", task.ID)
			}
			all[task.ID] = task
		}
		path = ""
		if m := nextLink.FindStringSubmatch(h.Get("Link")); m != nil {
			path = m[1]
		}
	}
	return all
}

// waitUntil polls cond until it holds, failing the test after limit.
func waitUntil(t *testing.T, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > limit {
			t.Fatalf("waited %s for %s", limit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}
