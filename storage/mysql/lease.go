package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// Writes made under a lease. Each one is a transaction that first locks the workflow row and
// checks the lease (SELECT ... FOR UPDATE, which also reads the server's clock), then writes,
// so a stale worker can never write after another has taken over, and a refused write leaves
// nothing behind.

// fenced is what the fence read from the locked workflow row.
type fenced struct {
	// wake is a wake received during the run (zero if none).
	wake time.Time
	// branchID is the ID of the branch step asked for, or 0 if it is not recorded.
	branchID int64
}

// fence locks the workflow row in tx and checks that l is its current lease, live by the
// server's clock read in the same statement, and that it is running; otherwise it returns the
// error storage.Fence gives. A missing workflow yields an error wrapping both
// storage.ErrNotFound and storage.ErrLeaseLost. With branch set it also reads that step's ID.
func (s *Store) fence(ctx context.Context, tx *sql.Tx, l storage.Lease, branch string) (fenced, error) {
	var (
		state, owner []byte
		cur          = storage.Workflow{ID: l.WorkflowID}
		now          time.Time
		f            fenced
		branchID     sql.NullInt64
		err          error
	)
	if branch == "" {
		err = tx.QueryRowContext(ctx, s.q.fence, l.WorkflowID).Scan(&state, &owner, &cur.LeaseToken, nt(&cur.LeaseUntil), nt(&f.wake), nt(&now))
	} else {
		err = tx.QueryRowContext(ctx, s.q.fenceBranch, bstr(branch), l.WorkflowID).Scan(&state, &owner, &cur.LeaseToken, nt(&cur.LeaseUntil), nt(&f.wake), nt(&now), &branchID)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return fenced{}, fmt.Errorf("workflow %d: %w: %w", l.WorkflowID, storage.ErrNotFound, storage.ErrLeaseLost)
	}
	if err != nil {
		return fenced{}, err
	}
	f.branchID = branchID.Int64
	cur.State, cur.LeaseOwner = storage.State(state), string(owner)
	if err := storage.Fence(l, cur, now); err != nil {
		return fenced{}, err
	}
	return f, nil
}

// Heartbeat extends a held lease to the server's clock plus ttl, and RunAt to now+ttl: one
// transaction of the fence and one UPDATE.
func (s *Store) Heartbeat(ctx context.Context, l storage.Lease, ttl time.Duration, now time.Time) error {
	if err := storage.ValidateHeartbeat(l, ttl, now); err != nil {
		return err
	}
	if err := s.ready(ctx); err != nil {
		return err
	}
	err := s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := s.fence(ctx, tx, l, ""); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, s.q.heartbeat, micros(ttl), dbTime(now.Add(ttl)), l.WorkflowID)
		return err
	})
	if err != nil {
		return fmt.Errorf("mysql: heartbeat: %w", err)
	}
	return nil
}

// SaveSteps writes c under the lease l in one transaction of at most four statements
// however many records c carries: the fence, one multi-row upsert of the step records (by
// workflow and name, keeping their IDs), one UPDATE of the workflow row (durable values when
// c.Values is non-nil, LastError, UpdatedAt) and one multi-row INSERT of the error records.
func (s *Store) SaveSteps(ctx context.Context, l storage.Lease, c storage.Commit) error {
	if err := storage.ValidateLease(l); err != nil {
		return err
	}
	if err := storage.ValidateCommit(c); err != nil {
		return err
	}
	if err := s.ready(ctx); err != nil {
		return err
	}
	err := s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := s.fence(ctx, tx, l, ""); err != nil {
			return err
		}
		set, args, err := s.writeCommit(ctx, tx, l.WorkflowID, c)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, "UPDATE "+s.workflows+" SET "+strings.Join(set, ", ")+" WHERE id = ?", append(args, l.WorkflowID)...)
		return err
	})
	if err != nil {
		return fmt.Errorf("mysql: save steps: %w", err)
	}
	return nil
}

// FinishRun writes f's commit, sets the run's outcome and releases the lease in one
// transaction, fenced and shaped like SaveSteps. For idle, RunAt becomes the earlier of
// f.RunAt and a wake received during the run; for completed, failed and stalled, RunAt and
// the wait are cleared, and the final states get FinishedAt. Releasing the lease clears
// LeaseUntil; the owner and token stay as the record of the last lease, so tokens only grow.
func (s *Store) FinishRun(ctx context.Context, l storage.Lease, f storage.Finish) error {
	if err := storage.ValidateLease(l); err != nil {
		return err
	}
	if err := storage.ValidateFinish(f); err != nil {
		return err
	}
	if err := s.ready(ctx); err != nil {
		return err
	}
	now := micro(f.Now)
	err := s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		fc, err := s.fence(ctx, tx, l, "")
		if err != nil {
			return err
		}
		set, args, err := s.writeCommit(ctx, tx, l.WorkflowID, f.Commit)
		if err != nil {
			return err
		}
		var (
			runAt time.Time
			wait  storage.Wait
		)
		if f.State == storage.StateIdle {
			runAt = storage.Earliest(micro(f.RunAt), fc.wake)
			wait = f.Wait
		}
		set = append(set, "state = ?", "output = ?", "attempt = ?", "run_at = "+ts, "wait_kind = ?", "wait_step = ?",
			"wait_data = ?", "wake_at = NULL", "lease_until = NULL")
		args = append(args, bstr(string(f.State)), f.Output, f.Attempt, dbTime(runAt), bstr(string(wait.Kind)), bstr(wait.Step), wait.Data)
		if f.State.Final() {
			set = append(set, "finished_at = "+ts)
			args = append(args, dbTime(now))
		}
		_, err = tx.ExecContext(ctx, "UPDATE "+s.workflows+" SET "+strings.Join(set, ", ")+" WHERE id = ?", append(args, l.WorkflowID)...)
		return err
	})
	if err != nil {
		return fmt.Errorf("mysql: finish run as %s: %w", f.State, err)
	}
	return nil
}

// Release gives the lease l back: the workflow becomes idle and runnable at now, its progress
// unchanged. LeaseUntil is cleared; owner and token stay, as in FinishRun.
func (s *Store) Release(ctx context.Context, l storage.Lease, now time.Time) error {
	if err := storage.ValidateRelease(l, now); err != nil {
		return err
	}
	if err := s.ready(ctx); err != nil {
		return err
	}
	err := s.inTx(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := s.fence(ctx, tx, l, ""); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, s.q.release, dbTime(now), dbTime(now), l.WorkflowID)
		return err
	})
	if err != nil {
		return fmt.Errorf("mysql: release: %w", err)
	}
	return nil
}

// writeCommit writes c's step records and error records in tx and returns the assignments
// (and their arguments) that bring the workflow row up to date with c: UpdatedAt, the
// durable values when c.Values is non-nil, LastError when c has error records.
func (s *Store) writeCommit(ctx context.Context, tx *sql.Tx, workflowID int64, c storage.Commit) ([]string, []any, error) {
	now := micro(c.Now)
	if err := s.upsertSteps(ctx, tx, workflowID, c.Steps, now); err != nil {
		return nil, nil, err
	}
	if err := s.insertErrors(ctx, tx, workflowID, c.Errors, now); err != nil {
		return nil, nil, err
	}
	set := []string{"updated_at = " + ts}
	args := []any{dbTime(now)}
	if c.Values != nil {
		set = append(set, "`values` = ?")
		args = append(args, c.Values)
	}
	if len(c.Errors) > 0 {
		set = append(set, "last_error = ?")
		args = append(args, bstr(c.Errors[len(c.Errors)-1].Message))
	}
	return set, args, nil
}

// upsertSteps inserts or replaces step records by (workflow, name) with one multi-row
// INSERT ... ON DUPLICATE KEY UPDATE. A replaced record keeps its ID and CreatedAt; a new one
// gets the next ID, in the order of steps. A completed record without CompletedAt keeps the
// one it had (else now): only then are the stored completion times read first.
func (s *Store) upsertSteps(ctx context.Context, tx *sql.Tx, workflowID int64, steps []storage.Step, now time.Time) error {
	if len(steps) == 0 {
		return nil
	}
	completed := make([]time.Time, len(steps))
	var need []string
	for i, st := range steps {
		completed[i] = micro(st.CompletedAt)
		if st.State == storage.StepCompleted && st.CompletedAt.IsZero() {
			need = append(need, st.Name)
		}
	}
	if len(need) > 0 {
		prev, err := s.completionTimes(ctx, tx, workflowID, need)
		if err != nil {
			return err
		}
		// Later records of the same name see what earlier ones wrote, as if written in turn.
		for i, st := range steps {
			if st.State == storage.StepCompleted && st.CompletedAt.IsZero() {
				completed[i] = storage.Earliest(prev[st.Name], now)
			}
			prev[st.Name] = completed[i]
		}
	}
	const row = "?, ?, ?, ?, ?, ?, ?, " + ts + ", " + ts + ", " + ts
	const cols = 10
	size := func(i int) int {
		st := &steps[i]
		return len(st.Name) + len(st.Result) + len(st.Meta) + len(st.LastError)
	}
	for _, c := range chunks(len(steps), cols, size) {
		n := c[1] - c[0]
		args := make([]any, 0, n*cols)
		for i := c[0]; i < c[1]; i++ {
			st := &steps[i]
			created := micro(st.CreatedAt)
			if created.IsZero() {
				created = now
			}
			args = append(args, workflowID, bstr(st.Name), bstr(string(st.State)), st.Attempts, st.Result, st.Meta,
				bstr(st.LastError), dbTime(created), dbTime(now), dbTime(completed[i]))
		}
		query := "INSERT INTO " + s.steps +
			" (workflow_id, name, state, attempts, result, meta, last_error, created_at, updated_at, completed_at) VALUES " +
			rowsSQL(n, row) +
			" ON DUPLICATE KEY UPDATE state = VALUES(state), attempts = VALUES(attempts), result = VALUES(result)," +
			" meta = VALUES(meta), last_error = VALUES(last_error), updated_at = VALUES(updated_at)," +
			" completed_at = VALUES(completed_at)"
		if _, err := tx.ExecContext(ctx, query, args...); err != nil {
			return err
		}
	}
	return nil
}

// completionTimes reads the stored CompletedAt of the named steps of a workflow.
func (s *Store) completionTimes(ctx context.Context, tx *sql.Tx, workflowID int64, names []string) (map[string]time.Time, error) {
	args := make([]any, 0, 1+len(names))
	args = append(args, workflowID)
	for _, n := range names {
		args = append(args, bstr(n))
	}
	rows, err := tx.QueryContext(ctx, "SELECT name, completed_at FROM "+s.steps+" WHERE workflow_id = ? AND name IN ("+placeholders(len(names))+")", args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make(map[string]time.Time, len(names))
	for rows.Next() {
		var (
			name []byte
			at   time.Time
		)
		if err := rows.Scan(&name, nt(&at)); err != nil {
			return nil, err
		}
		out[string(name)] = at
	}
	return out, rows.Err()
}

// insertErrors appends error records with one multi-row INSERT; their IDs grow in the order
// given.
func (s *Store) insertErrors(ctx context.Context, tx *sql.Tx, workflowID int64, recs []storage.ErrorRecord, now time.Time) error {
	if len(recs) == 0 {
		return nil
	}
	const row = "?, ?, ?, ?, ?, ?, " + ts
	const cols = 7
	size := func(i int) int {
		e := &recs[i]
		return len(e.Step) + len(e.Type) + len(e.Message) + len(e.Values)
	}
	for _, c := range chunks(len(recs), cols, size) {
		n := c[1] - c[0]
		args := make([]any, 0, n*cols)
		for i := c[0]; i < c[1]; i++ {
			e := &recs[i]
			created := micro(e.CreatedAt)
			if created.IsZero() {
				created = now
			}
			args = append(args, workflowID, bstr(e.Step), e.Attempt, bstr(e.Type), bstr(e.Message), e.Values, dbTime(created))
		}
		query := "INSERT INTO " + s.errors + " (workflow_id, step, attempt, type, message, `values`, created_at) VALUES " + rowsSQL(n, row)
		if _, err := tx.ExecContext(ctx, query, args...); err != nil {
			return err
		}
	}
	return nil
}
