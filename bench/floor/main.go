// Command floor answers the bench's get (GET /api/{user_id}/tasks/{id}) with
// the least work a Go service built like tasks-api can do: net/http's
// ServeMux, a pgx pool, the service's own statement for a get (FLOOR_SQL: $1
// the task's id, $2 the user's), and the row's values written out as JSON
// strings as they arrive. No authentication, validation, access log,
// deadline or error mapping. `go run ./bench -floor` measures its CPU per
// request beside the service's and PostgreSQL's: what net/http and pgx alone
// cost on the machine, under which no service on them can go.
//
// It is a yardstick, not a service: it answers nothing else, trusts its
// input, and must never be deployed.
package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"

	"github.com/jackc/pgx/v5/pgxpool"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "floor:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	query := os.Getenv("FLOOR_SQL")
	if query == "" {
		return errors.New("FLOOR_SQL is empty")
	}
	pool, err := pgxpool.New(ctx, os.Getenv("DATABASE_URL"))
	if err != nil {
		return err
	}
	defer pool.Close()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	mux.Handle("GET /api/{user_id}/tasks/{id}", getTask(pool, query))
	srv := &http.Server{Addr: "127.0.0.1:" + os.Getenv("PORT"), Handler: mux}
	go func() {
		<-ctx.Done()
		_ = srv.Shutdown(context.Background())
	}()
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// getTask runs query for the path's task and user and writes the row as
// {"column": "value as text", ...}.
func getTask(pool *pgxpool.Pool, query string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
		if err != nil {
			http.Error(w, "bad task id", http.StatusBadRequest)
			return
		}
		rows, err := pool.Query(r.Context(), query, id, r.PathValue("user_id"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		body := make([]byte, 0, 1024)
		fields := rows.FieldDescriptions()
		for rows.Next() {
			body = append(body, '{')
			for i, v := range rows.RawValues() {
				if i > 0 {
					body = append(body, ',')
				}
				body = append(appendJSONString(body, []byte(fields[i].Name)), ':')
				if v == nil {
					body = append(body, "null"...)
				} else {
					body = appendJSONString(body, v)
				}
			}
			body = append(body, '}')
		}
		if err := rows.Err(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if len(body) == 0 {
			http.Error(w, "no such task", http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}
}

// appendJSONString appends s as a JSON string: quotes, backslashes and
// control characters escaped, everything else as it is.
func appendJSONString(b, s []byte) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
