package mysql

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// CreateWorkflow stores a new idle workflow runnable at w.RunAt (w.Now when zero), or returns
// the existing workflow with the same name and key unchanged with created == false. The
// unique (name, key) index makes it atomic: one INSERT, and when it meets the index, one
// SELECT of the row that won.
func (s *Store) CreateWorkflow(ctx context.Context, w storage.NewWorkflow) (storage.Workflow, bool, error) {
	if err := storage.ValidateNew(w); err != nil {
		return storage.Workflow{}, false, err
	}
	if err := s.ready(ctx); err != nil {
		return storage.Workflow{}, false, err
	}
	now := micro(w.Now)
	runAt := micro(w.RunAt)
	if runAt.IsZero() {
		runAt = now
	}
	var (
		out     storage.Workflow
		created bool
	)
	// Idempotent: if a lost connection hides whether the INSERT committed, the next attempt
	// finds the row (created == false, the stored input is ours anyway).
	// A new (name, flow key) pair is stored before the workflow, so a claim that finds the
	// workflow can know its pair; repeated, the INSERT IGNORE changes nothing.
	pairs := s.cache.unknown([]storage.NewWorkflow{w})
	err := s.retry(ctx, idempotent, func(ctx context.Context) error {
		if len(pairs) > 0 {
			ins := s.pairsInsert(pairs)
			if _, err := s.db.ExecContext(ctx, ins.query, ins.args...); err != nil {
				return err
			}
		}
		res, err := s.db.ExecContext(ctx, s.q.insertWorkflow, bstr(w.Name), bstr(w.Key), w.Input, dbTime(runAt),
			w.TraceContext, nullID(w.ParentStepID), encodeTags(w.Tags), nullStr(w.Flow), dbTime(now), dbTime(now))
		if err == nil {
			id, err := res.LastInsertId()
			if err != nil {
				return err
			}
			out = storage.Workflow{
				ID:           id,
				Name:         w.Name,
				Key:          w.Key,
				Input:        slices.Clone(w.Input),
				State:        storage.StateIdle,
				RunAt:        runAt,
				ParentStepID: w.ParentStepID,
				TraceContext: slices.Clone(w.TraceContext),
				Tags:         cloneTags(w.Tags),
				Flow:         w.Flow,
				CreatedAt:    now,
				UpdatedAt:    now,
			}
			created = true
			return nil
		}
		if !isDup(err) {
			return err
		}
		created = false
		out, err = s.queryWorkflow(ctx, s.db, s.q.findWorkflow, bstr(w.Name), bstr(w.Key))
		if errors.Is(err, storage.ErrNotFound) {
			// Deleted between the INSERT and the SELECT (cleanup): insert again.
			return errVanished
		}
		return err
	})
	if err != nil {
		return storage.Workflow{}, false, fmt.Errorf("mysql: create workflow %q key %q: %w", w.Name, w.Key, err)
	}
	s.cache.addPairs(pairs)
	return out, created, nil
}

// GetWorkflow returns the workflow with the given id, or an error wrapping
// storage.ErrNotFound.
func (s *Store) GetWorkflow(ctx context.Context, id int64) (storage.Workflow, error) {
	if err := s.ready(ctx); err != nil {
		return storage.Workflow{}, err
	}
	var out storage.Workflow
	err := s.retry(ctx, idempotent, func(ctx context.Context) error {
		var err error
		out, err = s.queryWorkflow(ctx, s.db, s.q.getWorkflow, id)
		return err
	})
	if err != nil {
		return storage.Workflow{}, fmt.Errorf("mysql: workflow %d: %w", id, err)
	}
	return out, nil
}

// FindWorkflow returns the workflow with the given name and key, or an error wrapping
// storage.ErrNotFound.
func (s *Store) FindWorkflow(ctx context.Context, name, key string) (storage.Workflow, error) {
	if err := storage.ValidateFind(name, key); err != nil {
		return storage.Workflow{}, err
	}
	if err := s.ready(ctx); err != nil {
		return storage.Workflow{}, err
	}
	var out storage.Workflow
	err := s.retry(ctx, idempotent, func(ctx context.Context) error {
		var err error
		out, err = s.queryWorkflow(ctx, s.db, s.q.findWorkflow, bstr(name), bstr(key))
		return err
	})
	if err != nil {
		return storage.Workflow{}, fmt.Errorf("mysql: workflow %q key %q: %w", name, key, err)
	}
	return out, nil
}

// queryer is what both *sql.DB and *sql.Tx offer.
type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// queryWorkflow reads one workflow row with query, or returns storage.ErrNotFound.
func (s *Store) queryWorkflow(ctx context.Context, q queryer, query string, args ...any) (storage.Workflow, error) {
	var r workflowRow
	err := q.QueryRowContext(ctx, query, args...).Scan(r.targets()...)
	if errors.Is(err, sql.ErrNoRows) {
		return storage.Workflow{}, storage.ErrNotFound
	}
	if err != nil {
		return storage.Workflow{}, err
	}
	return r.workflow(), nil
}

// Load returns the workflow and all its step records, ordered by step ID, from one query.
func (s *Store) Load(ctx context.Context, id int64) (storage.Workflow, []storage.Step, error) {
	if err := s.ready(ctx); err != nil {
		return storage.Workflow{}, nil, err
	}
	var (
		out   storage.Workflow
		steps []storage.Step
	)
	err := s.retry(ctx, idempotent, func(ctx context.Context) error {
		out, steps = storage.Workflow{}, nil
		rows, err := s.db.QueryContext(ctx, s.q.load, id, id)
		if err != nil {
			return err
		}
		defer rows.Close()
		found := false
		for rows.Next() {
			var (
				kind int64
				wr   workflowRow
				sr   stepRow
			)
			targets := append(append([]any{&kind}, wr.targets()...), sr.targets()...)
			if err := rows.Scan(targets...); err != nil {
				return err
			}
			if kind == 0 {
				out, found = wr.workflow(), true
			} else {
				steps = append(steps, sr.step())
			}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if !found {
			return storage.ErrNotFound
		}
		return nil
	})
	if err != nil {
		return storage.Workflow{}, nil, fmt.Errorf("mysql: load workflow %d: %w", id, err)
	}
	slices.SortFunc(steps, func(a, b storage.Step) int { return cmp.Compare(a.ID, b.ID) })
	return out, steps, nil
}

// ListWorkflows returns one page of workflows matching f, between f.AfterID and f.BeforeID,
// in ascending ID order or, with f.Desc, descending, with one query. A key prefix is a range
// of the (name, key) index: the key column is VARBINARY, so the match is byte for byte.
func (s *Store) ListWorkflows(ctx context.Context, f storage.ListFilter) ([]storage.Workflow, error) {
	if err := storage.ValidateList(f); err != nil {
		return nil, err
	}
	if err := s.ready(ctx); err != nil {
		return nil, err
	}
	dueBy, ok := storage.DueByBound(f.DueBy)
	if !ok {
		return nil, nil // nothing stored is due that early
	}
	query, args := s.listQuery(f, dueBy)

	var out []storage.Workflow
	err := s.retry(ctx, idempotent, func(ctx context.Context) error {
		rows, err := s.db.QueryContext(ctx, query, args...)
		if err != nil {
			return err
		}
		out, err = scanWorkflows(rows)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("mysql: list workflows: %w", err)
	}
	return out, nil
}

// listQuery builds the ListWorkflows query for f and its DueBy bound.
func (s *Store) listQuery(f storage.ListFilter, dueBy time.Time) (string, []any) {
	limit := storage.ListLimit(f)
	var b strings.Builder
	args := make([]any, 0, 8+len(f.States)+len(f.NotNames))
	b.WriteString("SELECT " + workflowColumns + " FROM " + s.workflows + " WHERE id > ?")
	args = append(args, max(f.AfterID, 0))
	if f.BeforeID > 0 {
		b.WriteString(" AND id < ?")
		args = append(args, f.BeforeID)
	}
	if f.Name != "" {
		b.WriteString(" AND name = ?")
		args = append(args, bstr(f.Name))
	}
	if f.KeyPrefix != "" {
		// A range, not LIKE: no wildcard or escape to quote, and VARBINARY compares bytes.
		b.WriteString(" AND `key` >= ?")
		args = append(args, bstr(f.KeyPrefix))
		if end, ok := prefixEnd(f.KeyPrefix); ok {
			b.WriteString(" AND `key` < ?")
			args = append(args, end)
		}
	}
	if len(f.States) > 0 {
		b.WriteString(" AND state IN (" + placeholders(len(f.States)) + ")")
		for _, st := range f.States {
			args = append(args, bstr(string(st)))
		}
	}
	if len(f.NotNames) > 0 {
		b.WriteString(" AND name NOT IN (" + placeholders(len(f.NotNames)) + ")")
		for _, n := range f.NotNames {
			args = append(args, bstr(n))
		}
	}
	if !dueBy.IsZero() {
		b.WriteString(" AND run_at <= " + ts)
		args = append(args, dbTime(dueBy))
	}
	if f.ParentStepID != 0 {
		b.WriteString(" AND parent_step_id = ?")
		args = append(args, f.ParentStepID)
	}
	if len(f.Tags) > 0 {
		// Every tag of the filter with the same value (a missing tag or NULL tags match
		// nothing); the filter is encoded exactly as the stored tags are (see encodeTags).
		b.WriteString(" AND JSON_CONTAINS(tags, " + tagsSQL + ")")
		args = append(args, jsonText(f.Tags))
	}
	if f.Desc {
		b.WriteString(" ORDER BY id DESC LIMIT ?")
	} else {
		b.WriteString(" ORDER BY id LIMIT ?")
	}
	args = append(args, limit)
	return b.String(), args
}

// prefixEnd returns the least byte string greater than every string that starts with
// prefix (the prefix without its trailing 0xFF bytes, its last byte incremented), or false
// when there is none (the prefix is all 0xFF bytes).
func prefixEnd(prefix string) ([]byte, bool) {
	end := []byte(prefix)
	for len(end) > 0 {
		if last := len(end) - 1; end[last] < 0xFF {
			end[last]++
			return end, true
		}
		end = end[:len(end)-1]
	}
	return nil, false
}

// ListErrors returns the error records of a workflow, oldest first, at most limit (0 means
// 100), with one query. It returns an error wrapping storage.ErrNotFound for an unknown
// workflow.
func (s *Store) ListErrors(ctx context.Context, workflowID int64, limit int) ([]storage.ErrorRecord, error) {
	if err := s.ready(ctx); err != nil {
		return nil, err
	}
	limit = storage.ErrorsLimit(limit)
	var out []storage.ErrorRecord
	err := s.retry(ctx, idempotent, func(ctx context.Context) error {
		out = nil
		rows, err := s.db.QueryContext(ctx, s.q.listErrors, workflowID, limit)
		if err != nil {
			return err
		}
		defer rows.Close()
		found := false
		for rows.Next() {
			found = true
			var (
				id, wid, attempt         sql.NullInt64
				step, typ, msg, snapshot []byte
				e                        storage.ErrorRecord
			)
			if err := rows.Scan(&id, &wid, &step, &attempt, &typ, &msg, &snapshot, nt(&e.CreatedAt)); err != nil {
				return err
			}
			if !id.Valid {
				continue // the workflow has no error records
			}
			e.ID, e.WorkflowID, e.Step, e.Attempt = id.Int64, wid.Int64, string(step), int(attempt.Int64)
			e.Type, e.Message, e.Values = string(typ), string(msg), snapshot
			out = append(out, e)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if !found {
			return storage.ErrNotFound
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("mysql: list errors of workflow %d: %w", workflowID, err)
	}
	return out, nil
}
