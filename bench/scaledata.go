package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/jackc/pgx/v5"
)

// The scale data: scaleUsers users with scaleTasksPerUser tasks each, and
// one user with heavyTasks, loaded with COPY straight into the database.
const (
	scaleUsers        = 10_000
	scaleTasksPerUser = 100
	firstScaleUser    = seedUsers + 1 // user ids go on from the seeded ones: "51", "52", ...
	heavyUser         = "heavy"
	heavyTasks        = 20_000
	vocabularySize    = 3_000
	// Tasks are written in rounds, as a busy service receives them: every
	// user's next task, and heavy's share, so each user's tasks are spread
	// over the whole table, not packed together.
	heavyPerRound = heavyTasks / scaleTasksPerUser
	rowsPerRound  = scaleUsers + heavyPerRound
	scaleRows     = rowsPerRound * scaleTasksPerUser
)

var scaleColumns = []string{"user_id", "title", "description", "completed", "completed_at",
	"priority", "tags", "due_date", "created_at", "updated_at"}

// scaleLayout says where the COPY put the tasks.
type scaleLayout struct {
	firstID    int64          // the id of the first row copied
	heavyWords map[string]int // how many of heavy's tasks contain each word
}

// users are the users of the scale data, with the ids the COPY gave their
// tasks: the n-th user's k-th task is firstID + k*rowsPerRound + n.
func (l scaleLayout) users(secret []byte) ([]user, error) {
	users := make([]user, scaleUsers)
	for n := range users {
		u, err := newUser(secret, strconv.Itoa(firstScaleUser+n))
		if err != nil {
			return nil, err
		}
		u.first, u.stride, u.tasks = l.firstID+int64(n), rowsPerRound, scaleTasksPerUser
		users[n] = u
	}
	return users, nil
}

// pgbenchSets rewrite the list and get scripts' choice of user and task
// from the seeded users to all users: seeded user u owns (u-1)*100+1..u*100,
// the others are laid out as users() says.
func (l scaleLayout) pgbenchSets() map[string]map[string]string {
	uid := fmt.Sprintf("random(1, %d)", seedUsers+scaleUsers)
	return map[string]map[string]string{
		"list": {"uid": uid},
		"get": {"uid": uid, "id": fmt.Sprintf("CASE WHEN :uid <= %d THEN (:uid - 1) * %d + random(1, %d) ELSE %d + random(0, %d) * %d + :uid - %d END",
			seedUsers, seedTasksPerUser, seedTasksPerUser, l.firstID, scaleTasksPerUser-1, rowsPerRound, firstScaleUser)},
	}
}

// taskGen makes tasks that read like real ones: titles of three to six
// words, some with a description, drawn from a vocabulary with Zipf's law,
// so that some words are in many tasks and most in few.
type taskGen struct {
	rng   *rand.Rand
	zipf  *rand.Zipf
	vocab []string
}

func newTaskGen(seed uint64) *taskGen {
	rng := rand.New(rand.NewPCG(seed, seed))
	vocab := vocabulary(vocabularySize, rng)
	return &taskGen{rng: rng, zipf: rand.NewZipf(rng, 1.07, 2, uint64(len(vocab)-1)), vocab: vocab}
}

func (g *taskGen) text(words int) string {
	var b strings.Builder
	for i := range words {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(g.vocab[g.zipf.Uint64()])
	}
	s := []rune(b.String())
	s[0] = unicode.ToUpper(s[0])
	return string(s)
}

// row is one task of user, created at created.
func (g *taskGen) row(userID string, created time.Time) []any {
	title := g.text(3 + g.rng.IntN(4))
	description := ""
	if g.rng.IntN(100) < 35 {
		description = g.text(8+g.rng.IntN(18)) + "."
	}
	updated := created
	if g.rng.IntN(100) < 30 {
		updated = created.Add(time.Duration(g.rng.Int64N(int64(10 * 24 * time.Hour))))
	}
	completed := g.rng.IntN(100) < 30
	var completedAt, due any
	if completed {
		completedAt = updated
	}
	if g.rng.IntN(100) < 40 {
		due = created.Add(time.Duration(1+g.rng.IntN(60)) * 24 * time.Hour).Truncate(time.Hour)
	}
	priority := []string{"none", "none", "none", "none", "low", "low", "medium", "medium", "medium", "high"}[g.rng.IntN(10)]
	taskTags := []string{}
	for _, i := range g.rng.Perm(len(tags))[:g.rng.IntN(4)] {
		taskTags = append(taskTags, tags[i])
	}
	return []any{userID, title, description, completed, completedAt, priority, taskTags, due, created, updated}
}

// loadScaleData copies scaleRows tasks into the database, brings the quota
// counts up to date, vacuums and analyzes, and checks where the ids went.
func loadScaleData(ctx context.Context, dbURL string, progress io.Writer) (scaleLayout, error) {
	layout := scaleLayout{heavyWords: map[string]int{}}
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return layout, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var before int64
	if err := conn.QueryRow(ctx, "SELECT coalesce(max(id), 0) FROM tasks").Scan(&before); err != nil {
		return layout, fmt.Errorf("scale: %w", err)
	}

	start := time.Now()
	if err := copyTasks(ctx, conn, &layout, progress); err != nil {
		return layout, err
	}
	fmt.Fprintf(progress, "copied %d tasks in %s\n", scaleRows, time.Since(start).Round(time.Second))
	for _, step := range []struct{ what, sql string }{
		// The quota counts must agree with the tasks, as the service keeps them.
		{"task_counts", `INSERT INTO task_counts (user_id, tasks)
SELECT user_id, count(*) FROM tasks GROUP BY user_id
ON CONFLICT (user_id) DO UPDATE SET tasks = excluded.tasks`},
		// As autovacuum would, eventually: statistics, the visibility map, and
		// the trigram index's pending list merged.
		{"VACUUM ANALYZE", "VACUUM ANALYZE"},
		// The load wrote gigabytes of WAL, so a checkpoint is under way, spread
		// over minutes (checkpoint_completion_target): left alone it writes
		// through the measurements that follow, and PostgreSQL alone measured
		// up to 1.9 times slower in some runs than in others. Finish it now.
		{"CHECKPOINT", "CHECKPOINT"},
	} {
		start := time.Now()
		if _, err := conn.Exec(ctx, step.sql); err != nil {
			return layout, fmt.Errorf("scale: %s: %w", step.what, err)
		}
		fmt.Fprintf(progress, "%s in %s\n", step.what, time.Since(start).Round(100*time.Millisecond))
	}
	if err := conn.QueryRow(ctx, "SELECT min(id) FROM tasks WHERE id > $1", before).Scan(&layout.firstID); err != nil {
		return layout, fmt.Errorf("scale: %w", err)
	}
	return layout, checkLayout(ctx, conn, layout)
}

func copyTasks(ctx context.Context, conn *pgx.Conn, layout *scaleLayout, progress io.Writer) error {
	gen := newTaskGen(5)
	// Creation times go forward with the rows, over the past year.
	step := 365 * 24 * time.Hour / scaleRows
	first := time.Now().Add(-365 * 24 * time.Hour).Truncate(time.Second)
	i := 0
	rows := pgx.CopyFromFunc(func() ([]any, error) {
		if i == scaleRows {
			return nil, nil
		}
		pos := i % rowsPerRound
		userID := heavyUser
		if pos < scaleUsers {
			userID = strconv.Itoa(firstScaleUser + pos)
		}
		row := gen.row(userID, first.Add(time.Duration(i)*step))
		if userID == heavyUser {
			countWords(layout.heavyWords, row[1].(string)+" "+row[2].(string))
		}
		if i++; i%200_000 == 0 {
			fmt.Fprintf(progress, "  %d tasks\n", i)
		}
		return row, nil
	})
	if _, err := conn.CopyFrom(ctx, pgx.Identifier{"tasks"}, scaleColumns, rows); err != nil {
		return fmt.Errorf("copy tasks: %w", err)
	}
	return nil
}

// countWords counts each distinct word of a task once.
func countWords(counts map[string]int, text string) {
	seen := map[string]bool{}
	for _, w := range strings.Fields(strings.ToLower(strings.TrimSuffix(text, "."))) {
		w = strings.TrimSuffix(w, ".")
		if !seen[w] {
			seen[w] = true
			counts[w]++
		}
	}
}

// checkLayout verifies that the n-th scale user's k-th task has the id
// firstID + k*rowsPerRound + n, as the load's get requests assume.
func checkLayout(ctx context.Context, conn *pgx.Conn, l scaleLayout) error {
	var total, misplaced int64
	err := conn.QueryRow(ctx, `
SELECT count(*),
       count(*) FILTER (WHERE CASE WHEN user_id = $5 THEN (id - $1) % $2 < $4
                                   ELSE (id - $1) % $2 <> user_id::bigint - $3 END)
FROM tasks WHERE id >= $1`, l.firstID, int64(rowsPerRound), int64(firstScaleUser), int64(scaleUsers), heavyUser).Scan(&total, &misplaced)
	if err != nil {
		return fmt.Errorf("check the ids: %w", err)
	}
	if total != scaleRows || misplaced != 0 {
		return fmt.Errorf("the copied tasks are not where the load expects them: %d rows (want %d), %d misplaced", total, scaleRows, misplaced)
	}
	return nil
}
