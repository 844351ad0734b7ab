package main

import (
	"encoding/json"
	"testing"
)

func TestAppendJSONStringIsJSON(t *testing.T) {
	for _, s := range []string{"", "plain", `quote " and \ backslash`, "new\nline\ttab\x01", "héllo ✓", "{2026-12-01,urgent}"} {
		b := appendJSONString(nil, []byte(s))
		var back string
		if err := json.Unmarshal(b, &back); err != nil || back != s {
			t.Errorf("%q -> %s -> %q, %v", s, b, back, err)
		}
	}
}
