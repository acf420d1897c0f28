package mysql

import (
	"context"
	"fmt"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// DeleteFinished deletes up to r.Limit (0 means 1,000) final workflows whose FinishedAt is
// before r.Before, oldest first, with one DELETE: their steps and error records go with them
// (ON DELETE CASCADE). It returns how many workflows it deleted.
func (s *Store) DeleteFinished(ctx context.Context, r storage.CleanupRequest) (int, error) {
	if err := storage.ValidateCleanup(r); err != nil {
		return 0, err
	}
	if err := s.ready(ctx); err != nil {
		return 0, err
	}
	limit := storage.CleanupLimit(r)
	// Stored times are whole microseconds, so "before r.Before" is "before r.Before rounded
	// up to the microsecond".
	before := micro(r.Before)
	if before.Before(r.Before) {
		before = before.Add(time.Microsecond)
	}
	var deleted int64
	// Not idempotent: a second DELETE after a lost reply would delete the next batch.
	err := s.retry(ctx, once, func(ctx context.Context) error {
		res, err := s.db.ExecContext(ctx, s.q.deleteFinished, dbTime(before), limit)
		if err != nil {
			return err
		}
		deleted, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("mysql: delete finished before %v: %w", r.Before, err)
	}
	return int(deleted), nil
}
