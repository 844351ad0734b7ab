package main

import (
	"strings"
	"testing"
)

// A pool's check passes when each counted transaction used a task, with at
// most one uncounted per client, and says what went wrong otherwise.
func TestCheckPoolUse(t *testing.T) {
	pool := deletePool{first: 100, last: 199}
	for _, c := range []struct {
		used, transactions int
		ok                 bool
	}{
		{used: 50, transactions: 50, ok: true},
		{used: 58, transactions: 50, ok: true}, // 8 clients, each cut off after committing
		{used: 59, transactions: 50},
		{used: 49, transactions: 50}, // a transaction found its task gone
	} {
		err := checkPoolUse("deleted", c.used, c.transactions, 8, pool)
		if (err == nil) != c.ok {
			t.Errorf("used %d of %d transactions: error %v, want ok %v", c.used, c.transactions, err, c.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "deleted") || err != nil && !strings.Contains(err.Error(), "(100..199)") {
			t.Errorf("error %q does not say what and which pool", err)
		}
	}
}
