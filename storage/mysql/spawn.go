package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// Branch units: spawning a batch of children under the parent's lease, and the capped count
// of a branch's children by state.

// SpawnBatch writes one batch of a branch's children in one transaction, fenced by the
// parent's lease like SaveSteps, with a fixed number of statements however many children
// the batch has: the fence (which also reads the branch step's ID when it is recorded), one
// upsert of r.Steps, one SELECT of the branch step's ID only when this batch records it
// first, one multi-row INSERT IGNORE of the children, one SELECT of the skipped children's
// holders only when some child was skipped, and one UPDATE of the parent row. The branch
// step must be among r.Steps or recorded already, else the error wraps storage.ErrInvalid.
// A child whose name and key a child of the same branch step holds already (including a
// repeat within the batch) is left as it is; one held under another parent step, or by a
// root, refuses the batch with a *storage.ConflictError. The others are idle, runnable at
// their RunAt (r.Now when zero) and linked to the branch step. Any error leaves the store
// unchanged.
func (s *Store) SpawnBatch(ctx context.Context, l storage.Lease, r storage.SpawnRequest) (storage.SpawnResult, error) {
	if err := storage.ValidateLease(l); err != nil {
		return storage.SpawnResult{}, err
	}
	if err := storage.ValidateSpawn(r); err != nil {
		return storage.SpawnResult{}, err
	}
	if err := s.ready(ctx); err != nil {
		return storage.SpawnResult{}, err
	}
	now := micro(r.Now)
	var out storage.SpawnResult
	pairs := s.cache.unknown(r.Children)
	err := s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		fc, err := s.fence(ctx, tx, l, r.Branch)
		if err != nil {
			return err
		}
		set, args, err := s.writeCommit(ctx, tx, l.WorkflowID, storage.Commit{Steps: r.Steps, Now: r.Now})
		if err != nil {
			return err
		}
		branchID := fc.branchID
		if branchID == 0 {
			err := tx.QueryRowContext(ctx, s.q.branchID, l.WorkflowID, bstr(r.Branch)).Scan(&branchID)
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("%w: branch step %q is neither in the batch nor recorded on workflow %d", storage.ErrInvalid, r.Branch, l.WorkflowID)
			}
			if err != nil {
				return err
			}
		}
		if len(pairs) > 0 {
			// New (name, flow key) pairs, stored with the children that bring them.
			ins := s.pairsInsert(pairs)
			if _, err := tx.ExecContext(ctx, ins.query, ins.args...); err != nil {
				return err
			}
		}
		inserted, err := s.insertChildren(ctx, tx, branchID, r.Children, now)
		if err != nil {
			return err
		}
		if inserted < distinctChildren(r.Children) {
			if err := s.checkHolders(ctx, tx, l.WorkflowID, r.Branch, branchID, fc.branchID == 0, r.Children); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, "UPDATE "+s.workflows+" SET "+strings.Join(set, ", ")+" WHERE id = ?", append(args, l.WorkflowID)...); err != nil {
			return err
		}
		out = storage.SpawnResult{BranchStepID: branchID, Inserted: inserted}
		return nil
	})
	if err != nil {
		return storage.SpawnResult{}, fmt.Errorf("mysql: spawn batch of branch %q: %w", r.Branch, err)
	}
	s.cache.addPairs(pairs)
	return out, nil
}

// insertChildren inserts the children that do not exist yet with one multi-row INSERT IGNORE
// (the unique name and key index skips the others) and returns how many it inserted.
// Every value was validated before, so IGNORE can only skip duplicates.
func (s *Store) insertChildren(ctx context.Context, tx *sql.Tx, branchID int64, children []storage.NewWorkflow, now time.Time) (int, error) {
	if len(children) == 0 {
		return 0, nil
	}
	const row = "?, ?, ?, 'idle', " + ts + ", ?, ?, " + tagsSQL + ", ?, " + ts + ", " + ts
	const cols = 10
	size := func(i int) int {
		c := &children[i]
		return len(c.Name) + len(c.Key) + len(c.Flow) + len(c.Input) + len(c.TraceContext) + tagsSize(c.Tags)
	}
	inserted := 0
	for _, c := range chunks(len(children), cols, size) {
		n := c[1] - c[0]
		args := make([]any, 0, n*cols)
		for i := c[0]; i < c[1]; i++ {
			child := &children[i]
			runAt := micro(child.RunAt)
			if runAt.IsZero() {
				runAt = now
			}
			args = append(args, bstr(child.Name), bstr(child.Key), child.Input, dbTime(runAt), child.TraceContext, branchID,
				encodeTags(child.Tags), nullStr(child.Flow), dbTime(now), dbTime(now))
		}
		query := "INSERT IGNORE INTO " + s.workflows +
			" (name, `key`, input, state, run_at, trace_context, parent_step_id, tags, flow, created_at, updated_at) VALUES " + rowsSQL(n, row)
		res, err := tx.ExecContext(ctx, query, args...)
		if err != nil {
			return 0, err
		}
		k, err := res.RowsAffected()
		if err != nil {
			return 0, err
		}
		inserted += int(k)
	}
	return inserted, nil
}

// distinctChildren counts the distinct names and keys of children.
func distinctChildren(children []storage.NewWorkflow) int {
	seen := make(map[[2]string]struct{}, len(children))
	for _, c := range children {
		seen[[2]string{c.Name, c.Key}] = struct{}{}
	}
	return len(seen)
}

// checkHolders runs when INSERT IGNORE skipped some children: it reads the workflows that
// hold a child's name and key under another parent step than branchID (or as a root), and
// returns a *storage.ConflictError naming the first in batch order if there is one. The read
// locks (LOCK IN SHARE MODE), so it sees the latest committed rows, as INSERT IGNORE did,
// not the transaction's snapshot: a key another transaction took meanwhile is found too.
// newBranch says the branch step was recorded by this batch, which a conflict refuses.
func (s *Store) checkHolders(ctx context.Context, tx *sql.Tx, parentID int64, branch string, branchID int64, newBranch bool, children []storage.NewWorkflow) error {
	query, args := s.holdersQuery(children, branchID)
	rows, err := tx.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	order := make(map[[2]string]int, len(children))
	for i, c := range children {
		if _, ok := order[[2]string{c.Name, c.Key}]; !ok {
			order[[2]string{c.Name, c.Key}] = i
		}
	}
	var first *storage.ConflictError
	firstAt, n := len(children), 0
	for rows.Next() {
		var (
			id         int64
			name, key  []byte
			parentStep sql.NullInt64
		)
		if err := rows.Scan(&id, &name, &key, &parentStep); err != nil {
			return err
		}
		n++
		if at, ok := order[[2]string{string(name), string(key)}]; ok && at < firstAt {
			firstAt = at
			first = &storage.ConflictError{ID: id, Name: string(name), Key: string(key), ParentStepID: parentStep.Int64}
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if first == nil {
		return nil
	}
	first.WorkflowID, first.Branch, first.BranchStepID, first.Others = parentID, branch, branchID, n-1
	if newBranch {
		first.BranchStepID = 0
	}
	return first
}

// holdersInList is the most keys one IN list of holdersQuery holds. MariaDB turns an IN list
// of 1,000 constants or more (in_predicate_conversion_threshold) into a join with a derived
// table that it reads the workflows table to match, a full scan; shorter lists, OR-ed, stay
// range reads of the (name, key) index on MariaDB and MySQL alike.
const holdersInList = 500

// holdersQuery builds checkHolders' query: the children's keys grouped by name, so each name
// is ranges of the unique (name, key) index, less the rows linked to branchID.
func (s *Store) holdersQuery(children []storage.NewWorkflow, branchID int64) (string, []any) {
	match, args := nameKeyMatch(children)
	return "SELECT id, name, `key`, parent_step_id FROM " + s.workflows + " WHERE (" + match +
		") AND NOT (parent_step_id <=> ?) LOCK IN SHARE MODE", append(args, branchID)
}

// nameKeyMatch returns a condition matching the names and keys of ws (a pair given twice
// counts once) and its arguments: the keys grouped by name in IN lists of at most
// holdersInList keys, OR-ed together, so it reads ranges of the unique (name, key) index.
func nameKeyMatch(ws []storage.NewWorkflow) (string, []any) {
	var names []string
	keys := map[string][]string{}
	seen := map[[2]string]bool{}
	for _, w := range ws {
		if seen[[2]string{w.Name, w.Key}] {
			continue
		}
		seen[[2]string{w.Name, w.Key}] = true
		if _, ok := keys[w.Name]; !ok {
			names = append(names, w.Name)
		}
		keys[w.Name] = append(keys[w.Name], w.Key)
	}
	var b strings.Builder
	args := make([]any, 0, len(seen)+len(seen)/holdersInList+len(names)+1)
	for _, name := range names {
		for part := range slices.Chunk(keys[name], holdersInList) {
			if b.Len() > 0 {
				b.WriteString(" OR ")
			}
			b.WriteString("(name = ? AND `key` IN (" + placeholders(len(part)) + "))")
			args = append(args, bstr(name))
			for _, k := range part {
				args = append(args, bstr(k))
			}
		}
	}
	return b.String(), args
}

// CountChildren counts the children of q.StepIDs in q.States, stopping at q.Cap, with one
// query whose inner LIMIT bounds the rows it reads from the (parent_step_id, state) index.
// Repeated step IDs or states count once.
func (s *Store) CountChildren(ctx context.Context, q storage.ChildQuery) (int, error) {
	if err := storage.ValidateChildQuery(q); err != nil {
		return 0, err
	}
	if err := s.ready(ctx); err != nil {
		return 0, err
	}
	query, args := s.countQuery(q)
	var n int
	err := s.retry(ctx, idempotent, func(ctx context.Context) error {
		return s.db.QueryRowContext(ctx, query, args...).Scan(&n)
	})
	if err != nil {
		return 0, fmt.Errorf("mysql: count children: %w", err)
	}
	return n, nil
}

// countQuery builds CountChildren's query and arguments.
func (s *Store) countQuery(q storage.ChildQuery) (string, []any) {
	stepIDs := slices.Compact(slices.Sorted(slices.Values(q.StepIDs)))
	states := slices.Compact(slices.Sorted(slices.Values(q.States)))
	args := make([]any, 0, len(stepIDs)+len(states)+1)
	for _, id := range stepIDs {
		args = append(args, id)
	}
	for _, st := range states {
		args = append(args, bstr(string(st)))
	}
	args = append(args, q.Cap)
	query := "SELECT COUNT(*) FROM (SELECT 1 FROM " + s.workflows +
		" WHERE parent_step_id IN (" + placeholders(len(stepIDs)) + ") AND state IN (" + placeholders(len(states)) + ")" +
		" LIMIT ?) AS t"
	return query, args
}
