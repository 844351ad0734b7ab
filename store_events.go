package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
)

// The statements of live events (events.go): tickets, and the register of
// open streams that bounds each user's streams across instances.

const (
	sqlCreateTicket = `
INSERT INTO event_tickets (ticket, user_id, token_expires, expires_at)
VALUES ($1, $2, $3, now() + make_interval(secs => $4))`
	// Redeeming deletes the ticket: it works once, on any instance.
	sqlRedeemTicket = `
DELETE FROM event_tickets WHERE ticket = $1 AND expires_at > now()
RETURNING user_id, token_expires`
	sqlPurgeTickets = `DELETE FROM event_tickets WHERE expires_at < now() - interval '1 minute'`
)

// CreateTicket records a ticket (its hash) for user, valid for ttl, for a
// stream that may last until tokenExpires.
func (q Queries) CreateTicket(ctx context.Context, ticket, user string, tokenExpires time.Time, ttl time.Duration) error {
	sum := sha256.Sum256([]byte(ticket))
	if _, err := q.db.Exec(ctx, sqlCreateTicket, sum[:], user, tokenExpires, ttl.Seconds()); err != nil {
		return dbFail("create an event ticket", err)
	}
	return nil
}

var errBadTicket = &Error{Code: CodeInvalidToken, Message: "The ticket is unknown, used already, or expired; ask for a new one."}

// RedeemTicket uses up a ticket and returns whom it was for.
func (q Queries) RedeemTicket(ctx context.Context, ticket string) (identity, error) {
	if len(ticket) == 0 || len(ticket) > 128 {
		return identity{}, errBadTicket
	}
	sum := sha256.Sum256([]byte(ticket))
	var id identity
	err := q.db.QueryRow(ctx, sqlRedeemTicket, sum[:]).Scan(&id.Sub, &id.Expires)
	if errors.Is(err, pgx.ErrNoRows) {
		return identity{}, errBadTicket
	}
	if err != nil {
		return identity{}, dbFail("redeem an event ticket", err)
	}
	return id, nil
}

const (
	// A stream that is not refreshed for this long no longer counts.
	streamStale = 45 * time.Second

	sqlLockUserStreams = `SELECT pg_advisory_xact_lock(hashtextextended('event_streams:' || $1, 0))`
	sqlCountStreams    = `
SELECT count(*) FROM event_streams WHERE user_id = $1 AND seen_at > now() - make_interval(secs => $2)`
	sqlOpenStream   = `INSERT INTO event_streams (user_id, instance) VALUES ($1, $2) RETURNING id`
	sqlCloseStream  = `DELETE FROM event_streams WHERE id = $1`
	sqlTouchStreams = `UPDATE event_streams SET seen_at = now() WHERE instance = $1`
	sqlPurgeStreams = `DELETE FROM event_streams WHERE seen_at < now() - interval '1 hour'`
)

var errTooManyStreams = &Error{Code: CodeRateLimited, RetryAfter: 5 * time.Second,
	Message: "This user has the maximum number of open event streams; close one first."}

// OpenStream registers a stream of user on instance, unless the user has max
// streams open already (errTooManyStreams). Run it in a transaction: the
// user's advisory lock makes concurrent opens count one after another.
func (q Queries) OpenStream(ctx context.Context, user, instance string, max int) (int64, error) {
	if _, err := q.db.Exec(ctx, sqlLockUserStreams, user); err != nil {
		return 0, dbFail("open a stream", err)
	}
	var open int
	if err := q.db.QueryRow(ctx, sqlCountStreams, user, streamStale.Seconds()).Scan(&open); err != nil {
		return 0, dbFail("open a stream", err)
	}
	if open >= max {
		return 0, errTooManyStreams
	}
	var id int64
	if err := q.db.QueryRow(ctx, sqlOpenStream, user, instance).Scan(&id); err != nil {
		return 0, dbFail("open a stream", err)
	}
	return id, nil
}

func (q Queries) CloseStream(ctx context.Context, id int64) error {
	if _, err := q.db.Exec(ctx, sqlCloseStream, id); err != nil {
		return dbFail("close a stream", err)
	}
	return nil
}

// TouchStreams marks the instance's streams as still open.
func (q Queries) TouchStreams(ctx context.Context, instance string) error {
	if _, err := q.db.Exec(ctx, sqlTouchStreams, instance); err != nil {
		return dbFail("refresh the open streams", err)
	}
	return nil
}

// PurgeEventRecords forgets expired tickets and the streams of dead instances.
func (q Queries) PurgeEventRecords(ctx context.Context) error {
	if _, err := q.db.Exec(ctx, sqlPurgeTickets); err != nil {
		return dbFail("purge event tickets", err)
	}
	if _, err := q.db.Exec(ctx, sqlPurgeStreams); err != nil {
		return dbFail("purge event streams", err)
	}
	return nil
}
