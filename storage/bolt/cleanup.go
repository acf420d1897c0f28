package bolt

import (
	"bytes"
	"context"
	"fmt"

	bbolt "go.etcd.io/bbolt"

	"github.com/chronoforge/chronoforge/storage"
)

// DeleteFinished deletes up to r.Limit (0 means 1,000) final workflows whose FinishedAt is
// before r.Before, oldest first, with their key, steps, error records and index entries, in
// one write transaction. It returns how many workflows it deleted.
func (s *Store) DeleteFinished(ctx context.Context, r storage.CleanupRequest) (int, error) {
	if err := storage.ValidateCleanup(r); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	limit := storage.CleanupLimit(r)
	cutoff := timeIDKey(r.Before, 0) // id 0 is never used, so this sorts before every row at Before
	var deleted int
	err := s.update(func(t *txn) error {
		var ids []int64
		c := t.finished.Cursor()
		for k, _ := c.First(); k != nil && len(ids) < limit && bytes.Compare(k, cutoff) < 0; k, _ = c.Next() {
			ids = append(ids, int64(beUint(k[8:])))
		}
		for _, id := range ids {
			if err := t.delete(id); err != nil {
				return err
			}
		}
		deleted = len(ids)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("bolt: delete finished before %v: %w", r.Before, err)
	}
	return deleted, nil
}

// delete removes a workflow with everything stored under it.
func (t *txn) delete(id int64) error {
	r, err := t.get(id)
	if err != nil {
		return err
	}
	if err := t.unindex(r); err != nil {
		return err
	}
	if err := t.keys.Delete(nameKey(r.Name, r.Key)); err != nil {
		return err
	}
	if err := t.workflows.Delete(idKey(id)); err != nil {
		return err
	}
	if err := t.unindexBranches(id); err != nil {
		return err
	}
	for _, b := range []*bbolt.Bucket{t.steps, t.errors} {
		for _, k := range prefixKeys(b, idKey(id)) {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
	}
	return nil
}
