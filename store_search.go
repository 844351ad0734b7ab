package main

import (
	"context"
	"strings"
	"time"
	"unicode/utf8"
)

// A listing with q returns the user's tasks whose title or description
// contains q, case-insensitively (API.md), in the listing's order. Two ways
// find a page of them, and each is cheap where the other is not:
//
//   - walking the listing's own index in order, checking each task, as a
//     listing without q reads: a term in 40 % of the user's tasks fills a page
//     of 100 within 250 of them, but a rare one reads all of them;
//   - the search index (task_search, migrations 7 and 8): the user's tasks that
//     hold every trigram of q, sorted: cheap for a rare term, but a term in
//     7,600 of them is 7,600 rows to fetch and sort.
//
// Neither a plan nor the planner can choose between them: PostgreSQL keeps
// no statistics of how many of one user's tasks contain a term. So search
// finds out as it goes (docs/performance.md, "Search"). Each of its
// statements answers the listing whole, from its own snapshot, or says
// that it could not.

// The extent of each step, in pages (the page size plus one).
const (
	searchHeadPages = 3  // the first step walks this far
	searchWalkPages = 30 // the second, this far
	searchCommon    = 15 // a term in 1 of this many tasks of the first step is walked for further
)

// search finds the page of a listing with q (searchIndexed) in up to three
// statements, as many round trips.
//
//  1. The head: the listing's first 3 pages' worth of tasks, walked in
//     order. A term in a third of them or more has its page there.
//  2. If 1 in 15 of those contain q, walking on is cheaper than the index
//     (the page lies within 15 pages' worth): the walk, from the start, to
//     30 pages' worth at most.
//  3. Otherwise, or if the walk runs out first, the search index.
//
// A head or walk that returns less than a page may have reached the end of
// the listing rather than of its extent; the index then finds the same
// tasks, cheaply, as there are few.
func (q Queries) search(ctx context.Context, lq listQuery) (TaskPage, error) {
	l := newListing(lq)
	sql := l.searchStatements()
	page, err := q.listPage(ctx, lq, sql(sqlSearchHead), l.args)
	if err != nil || page.More {
		return page, err
	}
	if len(page.Tasks)*searchCommon >= searchHeadPages*(lq.Limit+1) {
		if page, err = q.listPage(ctx, lq, sql(sqlSearchWalk), l.args); err != nil || page.More {
			return page, err
		}
	}
	return q.listPage(ctx, lq, sql(sqlSearchIndex), l.args)
}

// searchIndexed reports whether q has trigrams for the search index: three
// characters or more, which lower() keeps, so at least three bytes.
func searchIndexed(q string) bool {
	return utf8.RuneCountInString(q) >= 3
}

// searchContains is the condition that a task contains q ($N): what ILIKE
// '%q%' tests (in a UTF-8 database, ILIKE compares lower() of both sides),
// without a pattern to escape, and without the planner estimating a pattern
// against the column statistics, which took longer than the rest of the
// planning of a listing. Having no estimate, the planner takes it to hold
// for half the tasks, and walks.
func searchContains(q string) string {
	return "(strpos(lower(title), lower(" + q + ")) > 0 OR strpos(lower(description), lower(" + q + ")) > 0)"
}

// The statements of a search. {where} is the listing's conditions (filters,
// cursor) without q, {contains} searchContains, {n} the page size plus one.
// Each walk reads its tasks in a subquery bounded by a LIMIT, in order, and
// checks them above it, so that it stops at the page's end: the key is an
// output of the subquery, so the ORDER BY above needs no sort.
const (
	sqlSearchHead = `
SELECT {columns}, (SELECT seq FROM task_counts WHERE user_id = {user})
FROM (SELECT *, {key} AS k FROM tasks WHERE {where} ORDER BY {order} LIMIT 3 * {n}) tasks
WHERE {contains} ORDER BY k{dir}, id{dir} LIMIT {n}`

	// The LIMIT is a subquery so that the planner, which cannot see its
	// value, plans for a tenth of the tasks and walks the index in order:
	// told 30 pages of a few thousand, it would read and sort them all first.
	sqlSearchWalk = `
SELECT {columns}, (SELECT seq FROM task_counts WHERE user_id = {user})
FROM (SELECT *, {key} AS k FROM tasks WHERE {where} ORDER BY {order} LIMIT (SELECT 30 * {n})) tasks
WHERE {contains} ORDER BY k{dir}, id{dir} LIMIT {n}`

	// The candidates are the user's tasks with every trigram of q: the rows
	// of task_search (migration 8) whose keys hold q's, of this user (the
	// keys of users whose id hashes alike hold them too), then their tasks by
	// primary key. The innermost subquery keeps the candidates apart from
	// the cursor's condition, so that the planner never walks the listing's
	// index and looks up each task's keys instead. They are sorted, then
	// checked in order, only as many as the page takes. A search that finds
	// nothing still returns the user's feed position (the ETag), alone in a
	// row of NULLs, so ListTasks needs no second look.
	sqlSearchIndex = `
SELECT {columns}, feed.seq
FROM (SELECT seq FROM task_counts WHERE user_id = {user}) feed
LEFT JOIN (
    SELECT * FROM (
        SELECT *, {key} AS k FROM (
            SELECT tasks.* FROM task_search JOIN tasks ON tasks.id = task_search.task_id
            WHERE task_search.user_id = {user} AND task_search.keys @> task_trigrams({user}, {q}, '')
                AND tasks.user_id = {user} AND tasks.{live}
            OFFSET 0) tasks
        WHERE {where} ORDER BY {order} OFFSET 0) tasks
    WHERE {contains} ORDER BY k{dir}, id{dir} LIMIT {n}) tasks ON true
ORDER BY k{dir}, id{dir}`
)

// searchSQL is a statement of a search for this listing.
func (l listing) searchSQL(statement string) string { return l.searchStatements()(statement) }

// searchStatements writes the statements of a search for this listing, with
// one replacer for all of them.
func (l listing) searchStatements() func(statement string) string {
	r := strings.NewReplacer(
		"{columns}", taskColumns,
		"{live}", live,
		"{where}", l.where,
		"{contains}", l.contains,
		"{order}", l.order(),
		"{key}", l.key,
		"{dir}", l.dir,
		"{n}", l.limit,
		"{user}", l.user,
		"{q}", l.q,
	)
	return func(statement string) string { return r.Replace(strings.TrimPrefix(statement, "\n")) }
}

// CleanSearchIndex merges the search index's pending list into the index
// (searchclean.go). PostgreSQL lets only the index's owner do it.
func (q Queries) CleanSearchIndex(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := q.db.Exec(ctx, `SELECT gin_clean_pending_list('task_search_keys_gin')`); err != nil {
		return dbFail("merge the search index's pending list", err)
	}
	return nil
}
