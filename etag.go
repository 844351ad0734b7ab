package main

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"time"
)

// Weak ETags of lists and stats (API.md "Conditional lists"). Both are made
// of the user's feed position, which moves with every change of the user's
// tasks, so checking If-None-Match needs one small indexed read and no task.
// They also name the user (a hash), so a browser cache shared by two users
// of one device cannot answer one with the other's list.

// listETag is the ETag of every listing of the user's tasks at position seq.
func listETag(user string, seq int64) string {
	return `W/"l` + strconv.FormatInt(seq, 10) + "-" + userTag(user) + `"`
}

// statsETag is the ETag of the stats at position seq. The overdue count also
// grows as time passes: the tag says until when it holds (the earliest due
// date still ahead; 0 for none).
func statsETag(user string, seq int64, nextOverdue *time.Time) string {
	until := int64(0)
	if nextOverdue != nil {
		until = nextOverdue.UnixMicro()
	}
	return `W/"s` + strconv.FormatInt(seq, 10) + "-" + strconv.FormatInt(until, 10) + "-" + userTag(user) + `"`
}

func userTag(user string) string {
	sum := sha256.Sum256([]byte(user))
	return hex.EncodeToString(sum[:6])
}

// listStillCurrent reports whether If-None-Match names the list ETag of the
// user's current position.
func listStillCurrent(values []string, user string, seq int64) bool {
	want := listETag(user, seq)
	return anyEntityTag(values, func(tag string) bool { return tag == want })
}

// statsStillCurrent returns the stats ETag of If-None-Match that names the
// user's current position and whose overdue count still holds at now, if any.
func statsStillCurrent(values []string, user string, seq int64, now time.Time) (string, bool) {
	prefix := `W/"s` + strconv.FormatInt(seq, 10) + "-"
	suffix := "-" + userTag(user) + `"`
	var found string
	ok := anyEntityTag(values, func(tag string) bool {
		middle, ok := strings.CutPrefix(tag, prefix)
		if !ok {
			return false
		}
		if middle, ok = strings.CutSuffix(middle, suffix); !ok {
			return false
		}
		until, err := strconv.ParseInt(middle, 10, 64)
		if err == nil && (until == 0 || now.UnixMicro() < until) {
			found = tag
			return true
		}
		return false
	})
	return found, ok
}

// anyEntityTag reports whether match holds for one of the entity tags of the
// If-None-Match values, compared weakly (RFC 9110: the W/ does not matter).
func anyEntityTag(values []string, match func(tag string) bool) bool {
	for _, v := range values {
		for _, tag := range strings.Split(v, ",") {
			tag = strings.TrimSpace(tag)
			if !strings.HasPrefix(tag, "W/") {
				tag = "W/" + tag
			}
			if match(tag) {
				return true
			}
		}
	}
	return false
}
