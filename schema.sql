-- The database schema, as an ordered list of migrations.
--
-- Each "-- migration: N name" line starts version N. The migrator (migrate.go)
-- applies every version once, in order, each in its own transaction, and
-- records its checksum. Never edit a version that has been released: the
-- service refuses to start when an applied version's text has changed. Add a
-- new version instead.

-- migration: 1 create_tasks
CREATE EXTENSION IF NOT EXISTS pg_trgm; -- q: substring search through a trigram index

-- Each tag trimmed, 1..50 characters, no duplicates, at most 20: a CHECK can
-- look at array elements only through a function.
CREATE FUNCTION task_tags_valid(tags text[]) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_ndims(tags), 1) = 1
       AND cardinality(tags) <= 20
       AND NOT EXISTS (SELECT FROM unnest(tags) AS t(tag)
                       WHERE tag IS NULL OR char_length(tag) NOT BETWEEN 1 AND 50 OR tag <> btrim(tag))
       AND cardinality(tags) = (SELECT count(DISTINCT tag) FROM unnest(tags) AS t(tag))
$$;

CREATE TABLE tasks (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       text        NOT NULL CHECK (char_length(user_id) BETWEEN 1 AND 255),
    title         text        NOT NULL CHECK (char_length(title) BETWEEN 1 AND 200 AND title = btrim(title)),
    description   text        NOT NULL DEFAULT '' CHECK (char_length(description) <= 1000),
    completed     boolean     NOT NULL DEFAULT false,
    completed_at  timestamptz CHECK ((completed_at IS NOT NULL) = completed),
    priority      text        NOT NULL DEFAULT 'none' CHECK (priority IN ('none', 'low', 'medium', 'high')),
    priority_rank smallint    NOT NULL GENERATED ALWAYS AS (
                      CASE priority WHEN 'low' THEN 1 WHEN 'medium' THEN 2 WHEN 'high' THEN 3 ELSE 0 END
                  ) STORED,
    tags          text[]      NOT NULL DEFAULT '{}' CHECK (task_tags_valid(tags)),
    due_date      timestamptz,
    version       integer     NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Listing reads one user's tasks in one order: every sort has an index led by
-- user_id that yields rows in exactly that order (scanned backwards for asc),
-- so a page, and the keyset condition of the next one, is a short range scan.
CREATE INDEX tasks_user_created_at ON tasks (user_id, created_at DESC, id DESC);
CREATE INDEX tasks_user_updated_at ON tasks (user_id, updated_at DESC, id DESC);
CREATE INDEX tasks_user_priority   ON tasks (user_id, priority_rank DESC, id DESC);
CREATE INDEX tasks_user_title      ON tasks (user_id, (lower(title) COLLATE "C") DESC, id DESC);
-- Tasks without a due date come last in both orders: an infinity stands in for them.
CREATE INDEX tasks_user_due_asc    ON tasks (user_id, (coalesce(due_date, 'infinity')) ASC, id ASC);
CREATE INDEX tasks_user_due_desc   ON tasks (user_id, (coalesce(due_date, '-infinity')) DESC, id DESC);
-- q: case-insensitive substring of title or description. The planner combines
-- it with the user's rows, or, for a term most of the user's tasks contain,
-- reads them in order and stops at the page's end. (Leading this index with
-- user_id through btree_gin measured slower: the user's posting list is long.)
CREATE INDEX tasks_search ON tasks USING gin (title gin_trgm_ops, description gin_trgm_ops);

-- version, updated_at and completed_at belong to the server. An UPDATE sets
-- data fields only; this moves the server fields when, and only when, the data
-- changed, so an update that changes nothing leaves version and updated_at be.
CREATE FUNCTION tasks_before_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.title, NEW.description, NEW.completed, NEW.priority, NEW.tags, NEW.due_date)
       IS NOT DISTINCT FROM
       (OLD.title, OLD.description, OLD.completed, OLD.priority, OLD.tags, OLD.due_date) THEN
        RETURN OLD;
    END IF;
    NEW.id           := OLD.id;
    NEW.user_id      := OLD.user_id;
    NEW.created_at   := OLD.created_at;
    NEW.version      := OLD.version + 1;
    NEW.updated_at   := greatest(now(), OLD.updated_at);
    NEW.completed_at := CASE WHEN NOT NEW.completed THEN NULL
                             WHEN OLD.completed THEN OLD.completed_at
                             ELSE now() END;
    RETURN NEW;
END
$$;

CREATE TRIGGER tasks_before_update BEFORE UPDATE ON tasks
    FOR EACH ROW EXECUTE FUNCTION tasks_before_update();

-- migration: 2 quota_and_idempotency_keys
-- How many tasks each user has, for MAX_TASKS_PER_USER. A create increments
-- the user's row only while it is under the quota, in the same statement as
-- the insert; the row lock serialises one user's concurrent creates, so a race
-- at the limit cannot overshoot it. A delete decrements it in its statement.
CREATE TABLE task_counts (
    user_id text    PRIMARY KEY,
    tasks   integer NOT NULL CHECK (tasks >= 0)
);
INSERT INTO task_counts (user_id, tasks)
SELECT user_id, count(*) FROM tasks GROUP BY user_id;

-- A request made with an Idempotency-Key and the response it got, replayed to
-- a retry of the same request for 24 hours. Written in the transaction of the
-- change it guards, so the two commit together or not at all.
CREATE TABLE idempotency_keys (
    user_id    text        NOT NULL,
    key        text        NOT NULL,
    method     text        NOT NULL,
    path       text        NOT NULL,
    body_hash  bytea       NOT NULL, -- SHA-256 of the request body
    status     smallint    NOT NULL,
    headers    jsonb       NOT NULL, -- the response headers worth replaying
    body       bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);

-- migration: 3 trash_and_change_feed
-- The trash and the change feed (API.md "Trash", "Changes (sync)").
--
-- On a large table: both columns are added without rewriting it (a NULL, and
-- a constant default, are recorded in the catalog only); the two indexes are
-- built while writes to tasks wait (SHARE lock), reads go on. See the README
-- for the measured time per million tasks.
ALTER TABLE tasks ADD COLUMN deleted_at timestamptz; -- NULL: live; else in the trash since then
ALTER TABLE tasks ADD COLUMN change_seq bigint NOT NULL DEFAULT 0;

-- Each user's change counter. A write takes the next value while it holds the
-- user's row lock, which it keeps until it commits: one user's positions are
-- handed out in commit order, so a reader that sees position N has seen every
-- position below it. (A global sequence read with seq > token would miss a
-- transaction that took a lower number and committed later.) Tasks written
-- before this migration keep position 0: a full sync reads them.
ALTER TABLE task_counts ADD COLUMN seq bigint NOT NULL DEFAULT 0;

-- The feed: one user's tasks in the order of their latest change.
CREATE INDEX tasks_user_change ON tasks (user_id, change_seq, id);
-- The trash, most recently deleted first; small, so a partial index.
CREATE INDEX tasks_user_trash ON tasks (user_id, deleted_at DESC, id DESC) WHERE deleted_at IS NOT NULL;

-- A task deleted for good leaves its position behind for the feed: the one it
-- took when it went to the trash, so a client whose token predates that hears
-- of the delete. Kept for SYNC_RETENTION after the task went to the trash.
CREATE TABLE task_tombstones (
    user_id    text        NOT NULL,
    task_id    bigint      NOT NULL,
    seq        bigint      NOT NULL,
    deleted_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, seq)
);
CREATE INDEX task_tombstones_deleted_at ON task_tombstones (deleted_at);

-- The key that signs sync tokens, the same for every instance.
CREATE TABLE service_keys (
    name text  PRIMARY KEY,
    key  bytea NOT NULL
);
INSERT INTO service_keys (name, key)
VALUES ('sync_token', decode(md5(gen_random_uuid()::text) || md5(gen_random_uuid()::text), 'hex'));

-- Every change of a task (the trash included) takes the user's next position
-- and keeps the live count of the quota right: going to the trash frees a
-- slot, a restore takes one (the restore checks the quota first, holding the
-- user's row). A create takes its position in its own statement.
CREATE OR REPLACE FUNCTION tasks_before_update() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    live_delta integer := 0;
BEGIN
    IF (NEW.title, NEW.description, NEW.completed, NEW.priority, NEW.tags, NEW.due_date, NEW.deleted_at)
       IS NOT DISTINCT FROM
       (OLD.title, OLD.description, OLD.completed, OLD.priority, OLD.tags, OLD.due_date, OLD.deleted_at) THEN
        RETURN OLD;
    END IF;
    NEW.id           := OLD.id;
    NEW.user_id      := OLD.user_id;
    NEW.created_at   := OLD.created_at;
    NEW.version      := OLD.version + 1;
    NEW.updated_at   := greatest(now(), OLD.updated_at);
    NEW.completed_at := CASE WHEN NOT NEW.completed THEN NULL
                             WHEN OLD.completed THEN OLD.completed_at
                             ELSE now() END;
    IF OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL THEN
        live_delta := -1;
    ELSIF OLD.deleted_at IS NOT NULL AND NEW.deleted_at IS NULL THEN
        live_delta := 1;
    END IF;
    -- Every user with a task has a row: the create statement makes it.
    UPDATE task_counts SET tasks = tasks + live_delta, seq = seq + 1
    WHERE user_id = NEW.user_id
    RETURNING seq INTO NEW.change_seq;
    RETURN NEW;
END
$$;

-- migration: 4 event_streams
-- Live events (API.md "Live events (SSE)").
--
-- A browser's EventSource cannot send an Authorization header, so it opens
-- its stream with a ticket: single use, valid 60 seconds, bound to the user
-- and to the expiry of the token that asked for it. Only the ticket's
-- SHA-256 is kept, so the table gives away no usable ticket. Any instance
-- redeems it.
CREATE TABLE event_tickets (
    ticket        bytea       PRIMARY KEY,
    user_id       text        NOT NULL,
    token_expires timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL
);
CREATE INDEX event_tickets_expires_at ON event_tickets (expires_at);

-- The open streams, across instances, for SSE_MAX_STREAMS_PER_USER. Each
-- instance refreshes seen_at of its own streams; a row left by an instance
-- that died stops counting when it is no longer refreshed.
CREATE TABLE event_streams (
    id       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id  text        NOT NULL,
    instance text        NOT NULL,
    seen_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX event_streams_user ON event_streams (user_id, seen_at);
CREATE INDEX event_streams_instance ON event_streams (instance);

-- migration: 5 recurrence_and_reminders
-- Recurring tasks and reminders (API.md "Recurring tasks and reminders").
--
-- On a large table: every column is added without rewriting it (NULL, or a
-- constant default, is recorded in the catalog only); the CHECKs read the
-- table once, under the migration's lock, and rewrite nothing.
ALTER TABLE tasks ADD COLUMN recurrence_rule text;    -- NULL: the task does not recur
ALTER TABLE tasks ADD COLUMN recurrence_tz text;
ALTER TABLE tasks ADD COLUMN recurrence_from text;
ALTER TABLE tasks ADD COLUMN reminders text[] NOT NULL DEFAULT '{}'; -- ISO 8601 durations before due_date
-- Set when a task is created as the next occurrence of another: its series
-- (the first task's id; a task that starts a series reads its own id), its
-- index in the series (for COUNT; NULL: the first), and the wall-clock time
-- the rule gave it in its zone (it differs from due_date's when that time
-- fell in a spring-forward gap, and the series must go on from the former).
ALTER TABLE tasks ADD COLUMN series_id bigint;
ALTER TABLE tasks ADD COLUMN occurrence integer;
ALTER TABLE tasks ADD COLUMN occurrence_wall timestamp;
-- Set once, when completing the task created its next occurrence: however
-- often it is completed, uncompleted or retried, it creates no other.
ALTER TABLE tasks ADD COLUMN next_occurrence_id bigint;

ALTER TABLE tasks ADD CONSTRAINT tasks_recurrence_whole CHECK (
    (recurrence_rule IS NULL) = (recurrence_tz IS NULL) AND (recurrence_rule IS NULL) = (recurrence_from IS NULL)
    AND recurrence_from IN ('due', 'completion'));
ALTER TABLE tasks ADD CONSTRAINT tasks_reminders_valid CHECK (
    coalesce(array_ndims(reminders), 1) = 1 AND cardinality(reminders) <= 5);
-- A recurrence and reminders are reckoned from the due date. The service maps
-- this constraint, by name, to a validation error of due_date: it holds on
-- the merged row of a partial update, which only the database sees.
ALTER TABLE tasks ADD CONSTRAINT tasks_due_date_needed CHECK (
    due_date IS NOT NULL OR (recurrence_rule IS NULL AND cardinality(reminders) = 0));

-- The recurrence and the reminders are data: changing them is a change (a
-- version, a feed position). The bookkeeping columns are not.
CREATE OR REPLACE FUNCTION tasks_before_update() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    live_delta integer := 0;
BEGIN
    IF (NEW.title, NEW.description, NEW.completed, NEW.priority, NEW.tags, NEW.due_date, NEW.deleted_at,
        NEW.recurrence_rule, NEW.recurrence_tz, NEW.recurrence_from, NEW.reminders)
       IS NOT DISTINCT FROM
       (OLD.title, OLD.description, OLD.completed, OLD.priority, OLD.tags, OLD.due_date, OLD.deleted_at,
        OLD.recurrence_rule, OLD.recurrence_tz, OLD.recurrence_from, OLD.reminders) THEN
        RETURN OLD;
    END IF;
    NEW.id           := OLD.id;
    NEW.user_id      := OLD.user_id;
    NEW.created_at   := OLD.created_at;
    NEW.version      := OLD.version + 1;
    NEW.updated_at   := greatest(now(), OLD.updated_at);
    NEW.completed_at := CASE WHEN NOT NEW.completed THEN NULL
                             WHEN OLD.completed THEN OLD.completed_at
                             ELSE now() END;
    IF OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL THEN
        live_delta := -1;
    ELSIF OLD.deleted_at IS NOT NULL AND NEW.deleted_at IS NULL THEN
        live_delta := 1;
    END IF;
    -- Every user with a task has a row: the create statement makes it.
    UPDATE task_counts SET tasks = tasks + live_delta, seq = seq + 1
    WHERE user_id = NEW.user_id
    RETURNING seq INTO NEW.change_seq;
    RETURN NEW;
END
$$;

-- A task's armed and fired reminders: one row per moment. A trigger keeps
-- the unfired ones in step with the task; the scheduler (reminders.go) fires
-- them, giving each the user's next feed position (seq), so an event stream
-- sends it in order with the changes and resumes past it without a repeat.
CREATE TABLE task_reminders (
    task_id   bigint      NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    user_id   text        NOT NULL,
    remind_at timestamptz NOT NULL,
    due_date  timestamptz NOT NULL, -- the due date it was armed for
    fired_at  timestamptz,          -- NULL: armed
    seq       bigint,               -- the feed position it fired at
    PRIMARY KEY (task_id, remind_at)
);
-- The scheduler's round reads the armed reminders that came due: with
-- 100,000 armed it reads only those (README: "Reminders").
CREATE INDEX task_reminders_armed ON task_reminders (remind_at) WHERE fired_at IS NULL;
-- A user's fired reminders in feed order: streams and GET /reminders.
CREATE INDEX task_reminders_fired ON task_reminders (user_id, seq) WHERE seq IS NOT NULL;
CREATE INDEX task_reminders_fired_at ON task_reminders (fired_at) WHERE fired_at IS NOT NULL;

-- Re-arms a task's reminders when its due date, reminders, completion or
-- trash state changes: the unfired ones go, and while the task is live, not
-- completed and due, one is armed per reminder still ahead. A reminder that
-- fired stays fired (the key keeps the same moment from firing twice).
CREATE FUNCTION tasks_arm_reminders() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        DELETE FROM task_reminders WHERE task_id = NEW.id AND fired_at IS NULL;
    END IF;
    IF NEW.deleted_at IS NULL AND NOT NEW.completed AND NEW.due_date IS NOT NULL THEN
        INSERT INTO task_reminders (task_id, user_id, remind_at, due_date)
        SELECT NEW.id, NEW.user_id, at, NEW.due_date
        FROM (SELECT DISTINCT NEW.due_date - make_interval(secs => extract(epoch FROM r::interval)) AS at
              FROM unnest(NEW.reminders) AS r) moments
        WHERE at > now()
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END
$$;

-- Only tasks with reminders, before or after, pay for the trigger.
CREATE TRIGGER tasks_arm_reminders_insert AFTER INSERT ON tasks
    FOR EACH ROW WHEN (cardinality(NEW.reminders) > 0) EXECUTE FUNCTION tasks_arm_reminders();
CREATE TRIGGER tasks_arm_reminders_update AFTER UPDATE ON tasks
    FOR EACH ROW WHEN ((cardinality(OLD.reminders) > 0 OR cardinality(NEW.reminders) > 0) AND
        (OLD.due_date, OLD.reminders, OLD.completed, OLD.deleted_at)
        IS DISTINCT FROM (NEW.due_date, NEW.reminders, NEW.completed, NEW.deleted_at))
    EXECUTE FUNCTION tasks_arm_reminders();

-- migration: 6 cheaper_writes
-- The same rule for tags, checked for a fraction of the cost. A LANGUAGE sql
-- function that cannot be inlined (this one has subqueries) is parsed and
-- planned again by every statement that calls it, and every write of a task
-- calls it in the CHECK: perf showed ~40 % of a toggle's backend CPU there.
-- plpgsql keeps its compiled body for the session, and these are simple
-- expressions it evaluates without the executor.
--
-- On a large table: replacing a function's body rewrites nothing and
-- re-checks no row; the constraint refers to the function, not its text.
CREATE OR REPLACE FUNCTION task_tags_valid(tags text[]) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    tag text;
    i   integer;
BEGIN
    IF tags IS NULL THEN
        RETURN NULL;
    END IF;
    IF cardinality(tags) = 0 THEN
        RETURN true;
    END IF;
    IF array_ndims(tags) <> 1 OR cardinality(tags) > 20 THEN
        RETURN false;
    END IF;
    -- Each tag trimmed, 1..50 characters, and its first occurrence.
    i := array_lower(tags, 1);
    FOREACH tag IN ARRAY tags LOOP
        IF tag IS NULL OR char_length(tag) NOT BETWEEN 1 AND 50 OR tag <> btrim(tag)
           OR array_position(tags, tag) <> i THEN
            RETURN false;
        END IF;
        i := i + 1;
    END LOOP;
    RETURN true;
END
$$;

-- The listing and search indexes hold live tasks only. Every list, count and
-- search reads live tasks (deleted_at IS NULL), and a task going to the
-- trash then writes no entry into them: its new row version enters the
-- primary key, the feed's and the trash's indexes, three of ten. Built under
-- new names first, so reads go on until the old ones are dropped at the end.
--
-- The trigram index keeps a pending list of 256 kB instead of 4 MB: the
-- write that finds the list full merges it into the index itself, and a
-- 4 MB merge held that write, and the user's writes queued behind its row
-- locks, for 100-250 ms every few seconds under write load (bench
-- -openloop). A small list keeps the batching and bounds the stall.
--
-- On a large table: each CREATE INDEX reads the table once while writes to
-- tasks wait (SHARE lock), reads go on; the DROPs at the end take the table's
-- ACCESS EXCLUSIVE lock for a moment, then the transaction commits. README:
-- "Migrations" gives the time per million tasks.
CREATE INDEX tasks_user_created_at_live ON tasks (user_id, created_at DESC, id DESC) WHERE deleted_at IS NULL;
CREATE INDEX tasks_user_updated_at_live ON tasks (user_id, updated_at DESC, id DESC) WHERE deleted_at IS NULL;
CREATE INDEX tasks_user_priority_live   ON tasks (user_id, priority_rank DESC, id DESC) WHERE deleted_at IS NULL;
CREATE INDEX tasks_user_title_live      ON tasks (user_id, (lower(title) COLLATE "C") DESC, id DESC) WHERE deleted_at IS NULL;
CREATE INDEX tasks_user_due_asc_live    ON tasks (user_id, (coalesce(due_date, 'infinity')) ASC, id ASC) WHERE deleted_at IS NULL;
CREATE INDEX tasks_user_due_desc_live   ON tasks (user_id, (coalesce(due_date, '-infinity')) DESC, id DESC) WHERE deleted_at IS NULL;
CREATE INDEX tasks_search_live ON tasks USING gin (title gin_trgm_ops, description gin_trgm_ops) WITH (gin_pending_list_limit = 256)
    WHERE deleted_at IS NULL;
DROP INDEX tasks_user_created_at, tasks_user_updated_at, tasks_user_priority, tasks_user_title,
           tasks_user_due_asc, tasks_user_due_desc, tasks_search;
ALTER INDEX tasks_user_created_at_live RENAME TO tasks_user_created_at;
ALTER INDEX tasks_user_updated_at_live RENAME TO tasks_user_updated_at;
ALTER INDEX tasks_user_priority_live   RENAME TO tasks_user_priority;
ALTER INDEX tasks_user_title_live      RENAME TO tasks_user_title;
ALTER INDEX tasks_user_due_asc_live    RENAME TO tasks_user_due_asc;
ALTER INDEX tasks_user_due_desc_live   RENAME TO tasks_user_due_desc;
ALTER INDEX tasks_search_live          RENAME TO tasks_search;

-- migration: 7 search_by_user
-- q searches one user's tasks, but the trigram index of title and
-- description held every user's: for a term in 1 % of a user's 20,000 tasks
-- it found ~10,000 candidates across all users, to be matched against the
-- user's rows (5-12 ms). This index is nearly the user's own: its keys are
-- the trigrams of lower(title) and lower(description), as bytes (UTF-8),
-- each marked with 4 bits of a hash of user_id. A task that contains q has
-- every key of q's trigrams (the same function of the user and q), so the
-- index yields the user's tasks with all of q's trigrams, and those of the
-- users whose ids hash alike (1 in 16); the listing checks user_id and q on
-- each (store_search.go).
--
-- plpgsql: an index expression is evaluated for every row version a write
-- makes, and plpgsql keeps its plan for the session (a LANGUAGE sql function
-- with a subquery is planned again by every statement). Why 4 bits of the
-- user: each bit doubles the distinct keys, and a write's keys then land on
-- pages no other write of the batch touches. Measured on 1,000,000 tasks
-- (docs/performance.md, "Search"): 8 bits found a rare term 0-30 % faster
-- than 4, but wrote 1.4-3x the WAL per write; 4 bits writes 1.0-2x what the
-- trigram index it replaces did. Its pending list is as small as that one's
-- (migration 6).
--
-- On a large table: CREATE INDEX reads the table once while writes to tasks
-- wait (SHARE lock), reads go on; the index is bigger than the trigram index
-- and its build slower (README: "Migrations" gives the time per million
-- tasks). The DROP takes the table's ACCESS EXCLUSIVE lock for a moment.
CREATE FUNCTION task_search_keys(user_id text, title text, description text) RETURNS integer[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE STRICT COST 1000 AS $$
DECLARE
    u integer := (hashtext(user_id) & 15) << 24;
BEGIN
    RETURN ARRAY(SELECT u | (get_byte(b, i) << 16) | (get_byte(b, i + 1) << 8) | get_byte(b, i + 2)
                 FROM (VALUES (convert_to(lower(title), 'UTF8')), (convert_to(lower(description), 'UTF8'))) AS f(b),
                      generate_series(0, length(b) - 3) AS i);
END
$$;

CREATE INDEX tasks_search_keys ON tasks USING gin (task_search_keys(user_id, title, description))
    WITH (gin_pending_list_limit = 256) WHERE deleted_at IS NULL;
DROP INDEX tasks_search;

-- migration: 8 search_keys_table
-- The search index of migration 7 was an index on tasks, so every write
-- that made a new row version of a live task wrote its keys again: a
-- toggle, a restore, any edit, not only those of the title or description.
-- Most writes change neither, and the keys cost a toggle 40 % of
-- PostgreSQL's CPU (pgbench, docs/performance.md, "Search"). The keys move
-- to a table of their own, one row per task, trashed or not: written when
-- a task is inserted and when its title or description changes (in
-- tasks_before_update, which every update calls already), deleted with the
-- task. A search reads the user's candidates there and their tasks by
-- primary key (store_search.go).
--
-- The keys carry 8 bits of the user now (task_trigrams), not 4: a
-- candidate costs a row of task_search to read besides its task, and with 4
-- bits 15 in 20 of a common word's candidates were other users' (1 in 16
-- users shares a user's bits; 1 in 256 now). 8 bits scatter a write's keys
-- over more of the index's pages, which migration 7 measured at 1.4-3x the
-- WAL per write, but only inserts and edits of the text write keys now.
--
-- On a large table: tasks is locked against writes (SHARE) while the keys
-- of every task are computed and indexed, reads go on; README:
-- "Migrations" gives the time per million tasks. The DROP takes the table's
-- ACCESS EXCLUSIVE lock for a moment.
LOCK TABLE tasks IN SHARE MODE;

CREATE FUNCTION task_trigrams(user_id text, title text, description text) RETURNS integer[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE STRICT AS $$
DECLARE
    -- The user's 8 bits in the top byte, signed so that the shift stays in
    -- range; the trigram's 3 bytes below.
    u integer := ((hashtext(user_id) & 255) - 128) << 24;
BEGIN
    RETURN ARRAY(SELECT u | (get_byte(b, i) << 16) | (get_byte(b, i + 1) << 8) | get_byte(b, i + 2)
                 FROM (VALUES (convert_to(lower(title), 'UTF8')), (convert_to(lower(description), 'UTF8'))) AS f(b),
                      generate_series(0, length(b) - 3) AS i);
END
$$;


CREATE TABLE task_search (
    task_id bigint PRIMARY KEY,
    user_id text NOT NULL,
    keys    integer[] NOT NULL
);

INSERT INTO task_search (task_id, user_id, keys)
SELECT id, user_id, task_trigrams(user_id, title, description) FROM tasks;

CREATE INDEX task_search_keys_gin ON task_search USING gin (keys) WITH (gin_pending_list_limit = 256);

CREATE OR REPLACE FUNCTION tasks_before_update() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    live_delta integer := 0;
BEGIN
    IF (NEW.title, NEW.description, NEW.completed, NEW.priority, NEW.tags, NEW.due_date, NEW.deleted_at,
        NEW.recurrence_rule, NEW.recurrence_tz, NEW.recurrence_from, NEW.reminders)
       IS NOT DISTINCT FROM
       (OLD.title, OLD.description, OLD.completed, OLD.priority, OLD.tags, OLD.due_date, OLD.deleted_at,
        OLD.recurrence_rule, OLD.recurrence_tz, OLD.recurrence_from, OLD.reminders) THEN
        RETURN OLD;
    END IF;
    NEW.id           := OLD.id;
    NEW.user_id      := OLD.user_id;
    NEW.created_at   := OLD.created_at;
    NEW.version      := OLD.version + 1;
    NEW.updated_at   := greatest(now(), OLD.updated_at);
    NEW.completed_at := CASE WHEN NOT NEW.completed THEN NULL
                             WHEN OLD.completed THEN OLD.completed_at
                             ELSE now() END;
    IF OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL THEN
        live_delta := -1;
    ELSIF OLD.deleted_at IS NOT NULL AND NEW.deleted_at IS NULL THEN
        live_delta := 1;
    END IF;
    -- Every user with a task has a row: the create statement makes it.
    UPDATE task_counts SET tasks = tasks + live_delta, seq = seq + 1
    WHERE user_id = NEW.user_id
    RETURNING seq INTO NEW.change_seq;
    IF (NEW.title, NEW.description) IS DISTINCT FROM (OLD.title, OLD.description) THEN
        UPDATE task_search SET keys = task_trigrams(NEW.user_id, NEW.title, NEW.description)
        WHERE task_id = NEW.id;
    END IF;
    RETURN NEW;
END
$$;

-- Inserts and deletes come one at a time from requests, and by the
-- thousand from a purge or a bulk load: one statement per statement.
CREATE FUNCTION task_search_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO task_search (task_id, user_id, keys)
    SELECT id, user_id, task_trigrams(user_id, title, description) FROM inserted;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_search_insert AFTER INSERT ON tasks REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION task_search_insert();

CREATE FUNCTION task_search_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM task_search WHERE task_id IN (SELECT id FROM deleted);
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_search_delete AFTER DELETE ON tasks REFERENCING OLD TABLE AS deleted
    FOR EACH STATEMENT EXECUTE FUNCTION task_search_delete();

CREATE FUNCTION task_search_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE task_search;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_search_truncate AFTER TRUNCATE ON tasks
    FOR EACH STATEMENT EXECUTE FUNCTION task_search_truncate();

-- task_search_keys stays: an instance of the previous version, still
-- serving during a rolling deploy, names it in its search statement, which
-- keeps answering (slowly, without its index) until that instance stops.
DROP INDEX tasks_search_keys;

-- migration: 9 conditions_compiled_once
-- PostgreSQL keeps a trigger's WHEN condition and a CHECK constraint as
-- text, and parses and compiles them again in every statement that writes
-- the table (per statement execution, not per session): perf showed
-- pg_strtok, the node parser, at the top of an update's backend profile,
-- for the ten CHECKs of tasks (9.5 kB of node text) and the reminders
-- triggers' conditions. They move into plpgsql, which compiles once per
-- session: the reminders triggers test their conditions first thing and
-- return at once for a write that changes no reminder; nine CHECKs become
-- one call of task_row_valid, the same conditions in one expression (a
-- CHECK fails when a condition is false, and an AND of them is false when
-- one is). tasks_due_date_needed stays apart: the service maps it by name
-- to a validation error. Single-client pgbench, PostgreSQL's CPU per
-- transaction: update 0.49 -> 0.44 ms, toggle 0.42 -> 0.31, create 0.39
-- -> 0.31 (three runs each, interleaved).
--
-- On a large table: nothing is rewritten or read again. The new CHECK is
-- added NOT VALID (enforced on every write from now on, not checked against
-- the rows already there): those rows passed the same conditions in the
-- constraints it replaces, dropped in this same transaction, and checking
-- them again would hold the table's ACCESS EXCLUSIVE lock, reads waiting,
-- for a full read of it.
DROP TRIGGER tasks_arm_reminders_insert ON tasks;
DROP TRIGGER tasks_arm_reminders_update ON tasks;

CREATE OR REPLACE FUNCTION tasks_arm_reminders() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        -- Only tasks with reminders, before or after, pay for the rest.
        IF cardinality(OLD.reminders) = 0 AND cardinality(NEW.reminders) = 0
           OR (OLD.due_date, OLD.reminders, OLD.completed, OLD.deleted_at)
              IS NOT DISTINCT FROM (NEW.due_date, NEW.reminders, NEW.completed, NEW.deleted_at) THEN
            RETURN NULL;
        END IF;
        DELETE FROM task_reminders WHERE task_id = NEW.id AND fired_at IS NULL;
    ELSIF cardinality(NEW.reminders) = 0 THEN
        RETURN NULL;
    END IF;
    IF NEW.deleted_at IS NULL AND NOT NEW.completed AND NEW.due_date IS NOT NULL THEN
        INSERT INTO task_reminders (task_id, user_id, remind_at, due_date)
        SELECT NEW.id, NEW.user_id, at, NEW.due_date
        FROM (SELECT DISTINCT NEW.due_date - make_interval(secs => extract(epoch FROM r::interval)) AS at
              FROM unnest(NEW.reminders) AS r) moments
        WHERE at > now()
        ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER tasks_arm_reminders_insert AFTER INSERT ON tasks
    FOR EACH ROW EXECUTE FUNCTION tasks_arm_reminders();
CREATE TRIGGER tasks_arm_reminders_update AFTER UPDATE ON tasks
    FOR EACH ROW EXECUTE FUNCTION tasks_arm_reminders();

CREATE FUNCTION task_row_valid(user_id text, title text, description text, completed boolean,
    completed_at timestamptz, priority text, tags text[], version integer,
    recurrence_rule text, recurrence_tz text, recurrence_from text, reminders text[]) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN char_length(user_id) BETWEEN 1 AND 255
        AND char_length(title) BETWEEN 1 AND 200 AND title = btrim(title)
        AND char_length(description) <= 1000
        AND (completed_at IS NOT NULL) = completed
        AND priority IN ('none', 'low', 'medium', 'high')
        AND task_tags_valid(tags)
        AND version >= 1
        AND (recurrence_rule IS NULL) = (recurrence_tz IS NULL) AND (recurrence_rule IS NULL) = (recurrence_from IS NULL)
        AND recurrence_from IN ('due', 'completion')
        AND coalesce(array_ndims(reminders), 1) = 1 AND cardinality(reminders) <= 5;
END
$$;

ALTER TABLE tasks
    DROP CONSTRAINT tasks_user_id_check, DROP CONSTRAINT tasks_title_check, DROP CONSTRAINT tasks_description_check,
    DROP CONSTRAINT tasks_check, DROP CONSTRAINT tasks_priority_check, DROP CONSTRAINT tasks_tags_check,
    DROP CONSTRAINT tasks_version_check, DROP CONSTRAINT tasks_recurrence_whole, DROP CONSTRAINT tasks_reminders_valid,
    ADD CONSTRAINT tasks_row_valid CHECK (task_row_valid(user_id, title, description, completed, completed_at,
        priority, tags, version, recurrence_rule, recurrence_tz, recurrence_from, reminders)) NOT VALID;
