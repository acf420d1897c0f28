package mysql

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/chronoforge/chronoforge/storage"
)

// CreateWorkflows creates the workflows of ws that do not exist yet and returns every one of
// them, created or found, in the order of ws, in one transaction of two statements however
// many workflows ws holds: one multi-row INSERT IGNORE (the unique (name, key) index skips
// those that exist), tagging the rows it inserts with a random nonce of the call, and one
// SELECT ... LOCK IN SHARE MODE of all of them by name and key, which reads the latest
// committed rows and keeps them from cleanup until the commit. The nonce tells the rows
// this call created (created[i] == true) from those that existed. Any error before the
// commit leaves the store unchanged.
func (s *Store) CreateWorkflows(ctx context.Context, ws []storage.NewWorkflow) (_ []storage.Workflow, _ []bool, err error) {
	if err := storage.ValidateCreateBatch(ws); err != nil {
		return nil, nil, err
	}
	if err := s.ready(ctx); err != nil {
		return nil, nil, err
	}
	nonce := rand.Int64N(math.MaxInt64-1) + 1
	inserts := s.createInserts(ws, nonce)
	query, args := s.nameKeyQuery(ws)
	out, created := make([]storage.Workflow, len(ws)), make([]bool, len(ws))
	// New (name, flow key) pairs are stored in the same transaction, before the workflows.
	if pairs := s.cache.unknown(ws); len(pairs) > 0 {
		inserts = append([]statement{s.pairsInsert(pairs)}, inserts...)
		defer func() {
			if err == nil {
				s.cache.addPairs(pairs)
			}
		}()
	}
	err = s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		for _, ins := range inserts {
			if _, err := tx.ExecContext(ctx, ins.query, ins.args...); err != nil {
				return err
			}
		}
		rows, err := tx.QueryContext(ctx, query, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		type found struct {
			w     storage.Workflow
			nonce int64
		}
		byKey := make(map[[2]string]found, len(ws))
		for rows.Next() {
			var (
				r     workflowRow
				batch sql.NullInt64
			)
			if err := rows.Scan(append(r.targets(), &batch)...); err != nil {
				return err
			}
			w := r.workflow()
			byKey[[2]string{w.Name, w.Key}] = found{w, batch.Int64}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		for i, w := range ws {
			f, ok := byKey[[2]string{w.Name, w.Key}]
			if !ok {
				// Skipped as a duplicate, then gone: the shared lock of the duplicate check
				// keeps cleanup away, so this is not expected; run the unit again.
				return errVanished
			}
			out[i], created[i] = f.w, f.nonce == nonce
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("mysql: create %d workflows (first %q key %q): %w", len(ws), ws[0].Name, ws[0].Key, err)
	}
	return out, created, nil
}

// statement is one SQL statement with its arguments.
type statement struct {
	query string
	args  []any
}

// createInserts builds CreateWorkflows' INSERT IGNORE: one statement unless the batch is too
// large for the server's limits (see chunks). Every value was validated, so IGNORE can only
// skip duplicates.
func (s *Store) createInserts(ws []storage.NewWorkflow, nonce int64) []statement {
	const row = "?, ?, ?, 'idle', " + ts + ", ?, ?, " + tagsSQL + ", ?, ?, " + ts + ", " + ts
	const cols = 11
	size := func(i int) int {
		w := &ws[i]
		return len(w.Name) + len(w.Key) + len(w.Flow) + len(w.Input) + len(w.TraceContext) + tagsSize(w.Tags)
	}
	var out []statement
	for _, c := range chunks(len(ws), cols, size) {
		n := c[1] - c[0]
		args := make([]any, 0, n*cols)
		for i := c[0]; i < c[1]; i++ {
			w := &ws[i]
			now := micro(w.Now)
			runAt := micro(w.RunAt)
			if runAt.IsZero() {
				runAt = now
			}
			args = append(args, bstr(w.Name), bstr(w.Key), w.Input, dbTime(runAt), w.TraceContext, nullID(w.ParentStepID),
				encodeTags(w.Tags), nullStr(w.Flow), nonce, dbTime(now), dbTime(now))
		}
		out = append(out, statement{
			query: "INSERT IGNORE INTO " + s.workflows +
				" (name, `key`, input, state, run_at, trace_context, parent_step_id, tags, flow, create_nonce, created_at, updated_at) VALUES " +
				rowsSQL(n, row),
			args: args,
		})
	}
	return out
}

// nameKeyQuery builds CreateWorkflows' read of its workflows: their keys grouped by name, in
// IN lists of at most holdersInList keys OR-ed together, so each is a set of point reads of
// the unique (name, key) index (see holdersInList), with the create nonce after the workflow
// columns. It locks in share mode: it reads the latest committed rows, not a snapshot.
func (s *Store) nameKeyQuery(ws []storage.NewWorkflow) (string, []any) {
	match, args := nameKeyMatch(ws)
	return "SELECT " + workflowColumns + ", create_nonce FROM " + s.workflows + " WHERE " + match + " LOCK IN SHARE MODE", args
}
