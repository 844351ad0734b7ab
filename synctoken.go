package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"hash"
	"sync"
	"time"
)

// A sync token says where a client's copy of the feed stands: a position of
// the user's feed or, during a full sync, the position the sync started at
// and the last task it returned. It is signed with a key shared by every
// instance (service_keys) over the user's id, so a token that is garbage,
// forged or another user's does not decode, and it carries when it was
// issued, so one older than SYNC_RETENTION is refused (410) rather than
// trusted to tombstones that may be gone.
type syncToken struct {
	Full     bool  // a full sync in progress
	Seq      int64 // the position: the feed continues after it (full: where it started)
	AfterSeq int64 // full sync: the last task returned, by position
	AfterID  int64 // and id
	Issued   time.Time
}

const (
	syncTokenVersion = 1
	syncTokenMACSize = 16
	maxSyncTokenLen  = 128
)

var (
	errSyncTokenInvalid = errors.New("is not a sync token this service issued for this user")
	errSyncTokenExpired = errors.New("is older than the sync retention")
)

// syncTokens encodes and checks tokens with the shared key.
type syncTokens struct {
	key       []byte
	retention time.Duration
	now       func() time.Time
	macs      *sync.Pool // of *tokenMAC keyed with key; nil: a new one each time
}

// tokenMAC is an HMAC keyed once and reused: keying one costs two SHA-256
// blocks and five allocations, twice per request of the feed.
type tokenMAC struct {
	h   hash.Hash
	buf []byte // the message: the user, a zero byte, the body
	sum []byte
}

func newTokenMACs(key []byte) *sync.Pool {
	return &sync.Pool{New: func() any { return &tokenMAC{h: hmac.New(sha256.New, key)} }}
}

func (s syncTokens) encode(user string, t syncToken) string {
	b := []byte{syncTokenVersion, 0}
	if t.Full {
		b[1] = 1
	}
	b = binary.AppendUvarint(b, uint64(t.Seq))
	if t.Full {
		b = binary.AppendUvarint(b, uint64(t.AfterSeq))
		b = binary.AppendUvarint(b, uint64(t.AfterID))
	}
	b = binary.AppendUvarint(b, uint64(t.Issued.Unix()))
	b = s.appendMAC(b, user, b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// decode checks the token's signature for user, then its age.
func (s syncTokens) decode(user, text string) (syncToken, error) {
	var t syncToken
	if len(text) == 0 || len(text) > maxSyncTokenLen {
		return t, errSyncTokenInvalid
	}
	b, err := base64.RawURLEncoding.DecodeString(text)
	if err != nil || len(b) < 2+syncTokenMACSize {
		return t, errSyncTokenInvalid
	}
	body, sum := b[:len(b)-syncTokenMACSize], b[len(b)-syncTokenMACSize:]
	var want [sha256.Size]byte
	if !hmac.Equal(sum, s.appendMAC(want[:0], user, body)) || body[0] != syncTokenVersion || body[1] > 1 {
		return t, errSyncTokenInvalid
	}
	t.Full = body[1] == 1
	fields := []*int64{&t.Seq}
	if t.Full {
		fields = append(fields, &t.AfterSeq, &t.AfterID)
	}
	var issued int64
	fields = append(fields, &issued)
	rest := body[2:]
	for _, f := range fields {
		v, n := binary.Uvarint(rest)
		if n <= 0 || v > 1<<62 {
			return t, errSyncTokenInvalid
		}
		*f, rest = int64(v), rest[n:]
	}
	if len(rest) != 0 {
		return t, errSyncTokenInvalid
	}
	t.Issued = time.Unix(issued, 0)
	if s.now().Sub(t.Issued) > s.retention {
		return t, errSyncTokenExpired
	}
	return t, nil
}

// appendMAC appends the MAC of body for user to dst.
func (s syncTokens) appendMAC(dst []byte, user string, body []byte) []byte {
	var m *tokenMAC
	if s.macs != nil {
		m = s.macs.Get().(*tokenMAC)
		defer s.macs.Put(m)
		m.h.Reset()
	} else {
		m = &tokenMAC{h: hmac.New(sha256.New, s.key)}
	}
	m.buf = append(append(append(m.buf[:0], user...), 0), body...)
	m.h.Write(m.buf)
	m.sum = m.h.Sum(m.sum[:0])
	return append(dst, m.sum[:syncTokenMACSize]...)
}
