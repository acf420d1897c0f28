package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/chronoforge/chronoforge/storage"
)

// createAttempts bounds how often CreateWorkflow runs again after losing a race with a
// concurrent create of the same name and key (see queries.create).
const createAttempts = 5

// CreateWorkflow stores a new idle workflow runnable at w.RunAt (w.Now when zero), or returns
// the stored workflow with the same name and key unchanged with created == false. One
// statement inserts or reads; the unique (name, key) constraint makes concurrent creates
// agree on one row. A new workflow due by w.Now is announced to listeners.
func (s *Store) CreateWorkflow(ctx context.Context, w storage.NewWorkflow) (storage.Workflow, bool, error) {
	if err := storage.ValidateNew(w); err != nil {
		return storage.Workflow{}, false, err
	}
	if err := s.ready(ctx); err != nil {
		return storage.Workflow{}, false, err
	}
	runAt := w.RunAt
	if runAt.IsZero() {
		runAt = w.Now
	}
	parent := pgtype.Int8{Int64: w.ParentStepID, Valid: w.ParentStepID != 0}
	args := pgx.StrictNamedArgs{
		"name": w.Name, "key": w.Key, "input": w.Input, "trace": w.TraceContext,
		"tags": encodeTags(w.Tags), "parent": parent, "run_at": ts(runAt), "now": ts(w.Now), "flow": w.Flow,
	}
	var (
		out     storage.Workflow
		created bool
	)
	err := retry(ctx, once, func(ctx context.Context) error {
		for range createAttempts {
			var row workflowRow
			dest := append([]any{&created}, row.dest()...)
			err := s.pool.QueryRow(ctx, s.q.create, args).Scan(dest...)
			if errors.Is(err, pgx.ErrNoRows) {
				continue // the conflicting row committed after our snapshot: look again
			}
			if err != nil {
				return err
			}
			out = row.workflow()
			return nil
		}
		return fmt.Errorf("the row of this name and key kept changing during %d attempts", createAttempts)
	})
	if err != nil {
		return storage.Workflow{}, false, fmt.Errorf("postgres: create workflow %q key %q: %w", w.Name, w.Key, err)
	}
	return out, created, nil
}

// CreateWorkflows creates each workflow of ws whose name and key are not stored yet and
// returns every one of them, in the order of ws, in one statement: an INSERT ... SELECT FROM
// unnest(...) ON CONFLICT DO NOTHING over the whole batch, which also reads the rows that
// existed (see createBatch). The statement is its own transaction, so the batch is created
// all or nothing. A workflow a concurrent transaction committed while the statement ran is
// skipped by the insert but invisible to its read: only then does a second statement run,
// for the workflows it missed (reading them, or creating any that vanished meanwhile).
// Listeners are told when a new workflow is due by its Now.
func (s *Store) CreateWorkflows(ctx context.Context, ws []storage.NewWorkflow) ([]storage.Workflow, []bool, error) {
	if err := storage.ValidateCreateBatch(ws); err != nil {
		return nil, nil, err
	}
	if err := s.ready(ctx); err != nil {
		return nil, nil, err
	}
	out, created := make([]storage.Workflow, len(ws)), make([]bool, len(ws))
	todo := make([]int, len(ws)) // positions in ws still to be answered
	for i := range todo {
		todo[i] = i
	}
	inserted := 0
	for range createAttempts {
		args := createBatchArgs(ws, todo)
		type result struct {
			w       storage.Workflow
			created bool
			ok      bool
		}
		var got []result
		err := retry(ctx, once, func(ctx context.Context) error {
			got = make([]result, len(todo))
			rows, err := s.pool.Query(ctx, s.q.createBatch, args)
			if err != nil {
				return err
			}
			defer rows.Close()
			var (
				ord   int64
				isNew bool
				row   workflowRow
			)
			dest := append([]any{&ord, &isNew}, row.dest()...)
			for rows.Next() {
				row = workflowRow{}
				if err := rows.Scan(dest...); err != nil {
					return err
				}
				if ord < 1 || int(ord) > len(got) {
					return fmt.Errorf("create batch: position %d outside the batch of %d", ord, len(got))
				}
				// A row found and one inserted for the same position means the found one
				// was deleted concurrently before the insert: the inserted one is the answer.
				if r := &got[ord-1]; !r.ok || isNew {
					*r = result{row.workflow(), isNew, true}
				}
			}
			return rows.Err()
		})
		if err != nil {
			return nil, nil, fmt.Errorf("postgres: create %d workflows (first %q key %q): %w", len(ws), ws[0].Name, ws[0].Key, err)
		}
		var missed []int
		for j, r := range got {
			i := todo[j]
			if !r.ok {
				missed = append(missed, i)
				continue
			}
			out[i], created[i] = r.w, r.created
			if r.created {
				inserted++
			}
		}
		if todo = missed; len(todo) == 0 {
			// Bulk creation grows the table like a fan-out: count it for table maintenance.
			s.maint.childrenSpawned(inserted)
			return out, created, nil
		}
	}
	return nil, nil, fmt.Errorf("postgres: create %d workflows: the rows of %d names and keys kept changing during %d attempts",
		len(ws), len(todo), createAttempts)
}

// createBatchArgs are the array parameters of createBatch for the workflows of ws at the
// positions pick, in that order.
func createBatchArgs(ws []storage.NewWorkflow, pick []int) pgx.StrictNamedArgs {
	n := len(pick)
	names, keys, tags, flows := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	inputs, traces := make([][]byte, n), make([][]byte, n)
	parents := make([]int64, n)
	runAt, nows := make([]pgtype.Timestamptz, n), make([]pgtype.Timestamptz, n)
	for j, i := range pick {
		w := ws[i]
		names[j], keys[j], tags[j], flows[j] = w.Name, w.Key, encodeTags(w.Tags), w.Flow
		inputs[j], traces[j] = w.Input, w.TraceContext
		parents[j] = w.ParentStepID
		runAt[j], nows[j] = ts(w.RunAt), ts(w.Now)
	}
	return pgx.StrictNamedArgs{
		"names": names, "keys": keys, "inputs": inputs, "traces": traces, "tags": tags,
		"parents": parents, "run_at": runAt, "nows": nows, "flows": flows,
	}
}

// GetWorkflow returns the workflow with the given id, or an error wrapping
// storage.ErrNotFound.
func (s *Store) GetWorkflow(ctx context.Context, id int64) (storage.Workflow, error) {
	w, err := s.one(ctx, s.q.get, pgx.StrictNamedArgs{"id": id})
	if err != nil {
		return storage.Workflow{}, fmt.Errorf("postgres: workflow %d: %w", id, err)
	}
	return w, nil
}

// FindWorkflow returns the workflow with the given name and key, or an error wrapping
// storage.ErrNotFound.
func (s *Store) FindWorkflow(ctx context.Context, name, key string) (storage.Workflow, error) {
	if err := storage.ValidateFind(name, key); err != nil {
		return storage.Workflow{}, err
	}
	w, err := s.one(ctx, s.q.find, pgx.StrictNamedArgs{"name": name, "key": key})
	if err != nil {
		return storage.Workflow{}, fmt.Errorf("postgres: workflow %q key %q: %w", name, key, err)
	}
	return w, nil
}

// one reads the single workflow a query selects, or returns storage.ErrNotFound.
func (s *Store) one(ctx context.Context, sql string, args pgx.StrictNamedArgs) (storage.Workflow, error) {
	if err := s.ready(ctx); err != nil {
		return storage.Workflow{}, err
	}
	var out []storage.Workflow
	err := retry(ctx, idempotent, func(ctx context.Context) error {
		rows, err := s.pool.Query(ctx, sql, args)
		if err != nil {
			return err
		}
		out, err = scanWorkflows(rows, 0)
		return err
	})
	if err != nil {
		return storage.Workflow{}, err
	}
	if len(out) == 0 {
		return storage.Workflow{}, storage.ErrNotFound
	}
	return out[0], nil
}

// Load returns the workflow and all its step records, ordered by step ID, from one query
// (the workflow row and the step rows in a UNION ALL), so from one snapshot.
func (s *Store) Load(ctx context.Context, id int64) (storage.Workflow, []storage.Step, error) {
	if err := s.ready(ctx); err != nil {
		return storage.Workflow{}, nil, err
	}
	var (
		out   storage.Workflow
		steps []storage.Step
		found bool
	)
	nw, ns := len(workflowColumns), len(stepColumns)
	err := retry(ctx, idempotent, func(ctx context.Context) error {
		found, steps = false, nil
		rows, err := s.pool.Query(ctx, s.q.load, pgx.StrictNamedArgs{"id": id})
		if err != nil {
			return err
		}
		defer rows.Close()
		var (
			kind int32
			wr   workflowRow
			sr   stepRow
		)
		// Row 0 fills the workflow columns, the others the step columns; nil skips a column.
		wdest := append(append([]any{&kind, nil}, wr.dest()...), make([]any, ns)...)
		sdest := append(make([]any, 2+nw), sr.dest()...)
		sdest[0] = &kind
		for rows.Next() {
			if !found {
				if err := rows.Scan(wdest...); err != nil {
					return err
				}
				if kind != 0 {
					return fmt.Errorf("load: step rows without their workflow row")
				}
				out, found = wr.workflow(), true
				continue
			}
			sr = stepRow{}
			if err := rows.Scan(sdest...); err != nil {
				return err
			}
			steps = append(steps, sr.step())
		}
		return rows.Err()
	})
	if err != nil {
		return storage.Workflow{}, nil, fmt.Errorf("postgres: load workflow %d: %w", id, err)
	}
	if !found {
		return storage.Workflow{}, nil, fmt.Errorf("postgres: load workflow %d: %w", id, storage.ErrNotFound)
	}
	return out, steps, nil
}

// ListWorkflows returns one page of workflows matching f with IDs between f.AfterID and
// f.BeforeID (when set), the lowest in ascending ID order or, with f.Desc, the highest in
// descending order, from one query whose WHERE clause has only the conditions f sets.
func (s *Store) ListWorkflows(ctx context.Context, f storage.ListFilter) ([]storage.Workflow, error) {
	if err := storage.ValidateList(f); err != nil {
		return nil, err
	}
	dueBy, ok := storage.DueByBound(f.DueBy)
	if !ok {
		return nil, nil // nothing stored is due that early
	}
	f.DueBy = dueBy
	if err := s.ready(ctx); err != nil {
		return nil, err
	}
	sql, args := s.listQuery(f)
	var out []storage.Workflow
	err := retry(ctx, idempotent, func(ctx context.Context) error {
		rows, err := s.pool.Query(ctx, sql, args)
		if err != nil {
			return err
		}
		out, err = scanWorkflows(rows, 0)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: list workflows: %w", err)
	}
	return out, nil
}

// listQuery builds the query of ListWorkflows from fixed fragments, one per condition f sets.
func (s *Store) listQuery(f storage.ListFilter) (string, pgx.StrictNamedArgs) {
	where := []string{"id > @after"}
	args := pgx.StrictNamedArgs{"after": max(f.AfterID, 0), "limit": storage.ListLimit(f)}
	if f.BeforeID > 0 {
		where = append(where, "id < @before")
		args["before"] = f.BeforeID
	}
	if f.Name != "" {
		where = append(where, "name = @name")
		args["name"] = f.Name
	}
	if f.KeyPrefix != "" {
		where = append(where, s.q.keyPrefix)
		args["prefix_len"] = utf8.RuneCountInString(f.KeyPrefix)
		args["key_prefix"] = f.KeyPrefix
	}
	switch states := strs(f.States); len(states) {
	case 0:
	case 1:
		// Equality, unlike "= ANY", lets the children index return a branch's children of
		// one state in ID order.
		where = append(where, "state = @state")
		args["state"] = states[0]
	default:
		where = append(where, "state = ANY(@states::text[])")
		args["states"] = states
	}
	if len(f.NotNames) > 0 {
		where = append(where, "NOT (name = ANY(@not_names::text[]))")
		args["not_names"] = f.NotNames
	}
	if !f.DueBy.IsZero() {
		// Only idle and running rows have a run_at; saying so lets the runnable index serve.
		where = append(where, "run_at <= @due_by::timestamptz AND state IN ('idle', 'running')")
		args["due_by"] = ts(f.DueBy)
	}
	if f.ParentStepID != 0 {
		where = append(where, "parent_step_id = @parent")
		args["parent"] = f.ParentStepID
	}
	if len(f.Tags) > 0 {
		// Containment: every tag asked for, with the same value. No index serves it (see
		// the migration that added tags); the other conditions and the walk in ID order
		// bound what is read.
		where = append(where, "tags @> @tags::jsonb")
		args["tags"] = encodeTags(f.Tags)
	}
	order := " ORDER BY id LIMIT @limit"
	if f.Desc {
		order = " ORDER BY id DESC LIMIT @limit"
	}
	return s.q.listColumns + " WHERE " + strings.Join(where, " AND ") + order, args
}

// ListErrors returns the error records of a workflow, oldest first, at most limit (0 means
// 100). It returns an error wrapping storage.ErrNotFound for an unknown workflow.
func (s *Store) ListErrors(ctx context.Context, workflowID int64, limit int) ([]storage.ErrorRecord, error) {
	if err := s.ready(ctx); err != nil {
		return nil, err
	}
	limit = storage.ErrorsLimit(limit)
	var (
		out   []storage.ErrorRecord
		found bool
	)
	err := retry(ctx, idempotent, func(ctx context.Context) error {
		out, found = nil, false
		rows, err := s.pool.Query(ctx, s.q.listErrors, pgx.StrictNamedArgs{"id": workflowID, "limit": limit})
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			found = true
			var (
				id, wid        pgtype.Int8
				attempt        pgtype.Int4
				step, typ, msg pgtype.Text
				values         []byte
				created        pgtype.Timestamptz
			)
			if err := rows.Scan(&id, &wid, &step, &attempt, &typ, &msg, &values, &created); err != nil {
				return err
			}
			if !id.Valid {
				continue // the workflow has no error records
			}
			out = append(out, storage.ErrorRecord{
				ID: id.Int64, WorkflowID: wid.Int64, Step: step.String, Attempt: int(attempt.Int32),
				Type: typ.String, Message: msg.String, Values: values, CreatedAt: fromTS(created),
			})
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: list errors of workflow %d: %w", workflowID, err)
	}
	if !found {
		return nil, fmt.Errorf("postgres: list errors of workflow %d: %w", workflowID, storage.ErrNotFound)
	}
	return out, nil
}

// DeleteFinished deletes up to r.Limit (0 means 1,000) final workflows in r.States whose
// FinishedAt is before r.Before, oldest first, in one transaction of two statements: the
// first locks the batch (skipping rows another cleanup holds, so concurrent cleanups share
// the work) and deletes at most r.StepBudget of its step rows, the second deletes the batch's
// workflows left without steps; their error records and messages go with them (ON DELETE
// CASCADE, in the same statement).
func (s *Store) DeleteFinished(ctx context.Context, r storage.CleanupRequest) (storage.CleanupResult, error) {
	var res storage.CleanupResult
	if err := storage.ValidateCleanup(r); err != nil {
		return res, err
	}
	if err := s.ready(ctx); err != nil {
		return res, err
	}
	args := pgx.StrictNamedArgs{
		"before": ts(r.Before), "limit": storage.CleanupLimit(r),
		"budget": storage.CleanupSteps(r), "states": strs(storage.CleanupStates(r)),
	}
	err := retry(ctx, once, func(ctx context.Context) error {
		return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			var ids []int64
			var steps int64
			if err := tx.QueryRow(ctx, s.q.deleteFinished, args).Scan(&ids, &steps); err != nil {
				return err
			}
			res = storage.CleanupResult{Steps: int(steps)}
			if len(ids) == 0 {
				return nil
			}
			tag, err := tx.Exec(ctx, s.q.deleteEmptied, pgx.StrictNamedArgs{"ids": ids})
			if err != nil {
				return err
			}
			res.Deleted = int(tag.RowsAffected())
			res.More = res.Deleted < len(ids)
			return nil
		})
	})
	if err != nil {
		return storage.CleanupResult{}, fmt.Errorf("postgres: delete finished before %v: %w", r.Before, err)
	}
	return res, nil
}

// strs converts states to strings for a text[] parameter, deduplicated.
func strs[S ~string](in []S) []string {
	out := make([]string, 0, len(in))
	for _, v := range in {
		if !slices.Contains(out, string(v)) {
			out = append(out, string(v))
		}
	}
	return out
}
