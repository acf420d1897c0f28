package mysql

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// DeleteFinished deletes up to r.Limit (0 means 1,000) final workflows in r.States whose
// FinishedAt is before r.Before, oldest first, in one transaction of three statements: lock
// the batch (skipping rows another cleanup holds), delete at most r.StepBudget of its step
// rows, delete the batch's workflows left without steps; their error records and messages go
// with them (ON DELETE CASCADE), in the same statement.
func (s *Store) DeleteFinished(ctx context.Context, r storage.CleanupRequest) (storage.CleanupResult, error) {
	var res storage.CleanupResult
	if err := storage.ValidateCleanup(r); err != nil {
		return res, err
	}
	if err := s.ready(ctx); err != nil {
		return res, err
	}
	limit, budget, states := storage.CleanupLimit(r), storage.CleanupSteps(r), storage.CleanupStates(r)
	// Stored times are whole microseconds, so "before r.Before" is "before r.Before rounded
	// up to the microsecond".
	before := micro(r.Before)
	if before.Before(r.Before) {
		before = before.Add(time.Microsecond)
	}
	args := []any{dbTime(before)}
	for _, st := range states {
		args = append(args, string(st))
	}
	args = append(args, limit)
	selectBatch := fmt.Sprintf(s.q.deleteFinished, placeholders(len(states)))
	err := s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res = storage.CleanupResult{}
		ids, err := scanIDs(tx.QueryContext(ctx, selectBatch, args...))
		if err != nil || len(ids) == 0 {
			return err
		}
		in := placeholders(len(ids))
		idArgs := make([]any, 0, len(ids)+1)
		for _, id := range ids {
			idArgs = append(idArgs, id)
		}
		sr, err := tx.ExecContext(ctx, fmt.Sprintf(s.q.deleteSteps, in), append(idArgs, budget)...)
		if err != nil {
			return err
		}
		steps, err := sr.RowsAffected()
		if err != nil {
			return err
		}
		wr, err := tx.ExecContext(ctx, fmt.Sprintf(s.q.deleteEmptied, in), idArgs...)
		if err != nil {
			return err
		}
		deleted, err := wr.RowsAffected()
		if err != nil {
			return err
		}
		res = storage.CleanupResult{Deleted: int(deleted), Steps: int(steps), More: int(deleted) < len(ids)}
		return nil
	})
	if err != nil {
		return storage.CleanupResult{}, fmt.Errorf("mysql: delete finished before %v: %w", r.Before, err)
	}
	return res, nil
}

// scanIDs reads a column of IDs and closes the rows.
func scanIDs(rows *sql.Rows, err error) ([]int64, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}
