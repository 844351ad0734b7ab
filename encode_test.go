package main

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"
)

// The hand-written timestamp encoder agrees with time.AppendFormat on the
// whole accepted range, leap days and century years included, and beyond.
func TestAppendTimeMatchesLayout(t *testing.T) {
	times := []time.Time{minTimestamp, maxTimestamp, time.Date(2026, 11, 26, 1, 11, 38, 123456789, time.FixedZone("x", -7*3600)),
		time.Date(999, 1, 2, 3, 4, 5, 6000, time.UTC), time.Unix(0, 0), time.Date(2024, 2, 29, 23, 59, 59, 999999000, time.UTC),
		time.Date(2000, 3, 1, 0, 0, 0, 0, time.UTC), time.Date(1900, 2, 28, 12, 0, 0, 0, time.UTC),
		// outside the accepted range: never stored, still a valid string
		maxTimestamp.Add(time.Microsecond), minTimestamp.Add(-time.Microsecond)}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		times = append(times, time.UnixMicro(minTimestamp.UnixMicro()+rng.Int64N(maxTimestamp.UnixMicro()-minTimestamp.UnixMicro())).Add(time.Duration(rng.IntN(1000))))
	}
	for _, tm := range times {
		want := `"` + tm.UTC().Format(timeLayout) + `"`
		if got := string(appendTime(nil, tm)); got != want {
			t.Fatalf("%v: got %s, want %s", tm, got, want)
		}
	}
}

// A task encodes to JSON that encoding/json reads back field for field.
func TestAppendTaskRoundTrip(t *testing.T) {
	due := time.Date(2027, 1, 2, 3, 4, 5, 600000, time.UTC)
	task := Task{ID: 42, UserID: "u\"1", Title: "a \\ \u2028 <b>", Description: "line\nnext\ttab\x01", Completed: true,
		CompletedAt: &due, Priority: "high", Tags: []string{"x", "ü"}, Version: 7, CreatedAt: due, UpdatedAt: due}
	var got taskJSON
	if err := json.Unmarshal(appendTask(nil, &task), &got); err != nil {
		t.Fatal(err)
	}
	if got.ID != 42 || got.UserID != task.UserID || got.Title != task.Title || got.Description != task.Description ||
		!got.Completed || *got.CompletedAt != "2027-01-02T03:04:05.000600Z" || got.DueDate != nil || got.Version != 7 ||
		len(got.Tags) != 2 || got.Tags[1] != "ü" {
		t.Fatalf("round trip: %+v", got)
	}
}
