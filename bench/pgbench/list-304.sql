-- list-304: GET /api/{user}/tasks with If-None-Match naming the list's
-- current ETag: answered 304 from the user's feed position alone (store.go
-- sqlFeedPosition). benchsql_test.go checks the statement.
\set uid random(1, 50)
SELECT seq FROM task_counts WHERE user_id = :uid;
