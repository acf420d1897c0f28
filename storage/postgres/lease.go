package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/chronoforge/chronoforge/storage"
)

// Claiming and the writes made under a lease. Each fenced write is one UPDATE whose WHERE
// clause is the fence (token, state running, lease not expired by the database's now()); the
// other writes of the unit hang off its RETURNING in CTEs, so when the fence fails nothing is
// written. Under READ COMMITTED a concurrent change of the row (a takeover, a cancel) makes
// the UPDATE wait and re-check the fence on the newest row version.

// Claim takes up to r.Limit runnable workflows, highest flow priority first, then in
// (run_at, id) order, in one round trip: one statement on the plain and the fast path, three
// pipelined in one implicit transaction on the limited path (see the flow control notes in
// flow.go). When the store guessed a path below what r.Names need, its statement claims
// nothing and the needed path follows at once: two round trips, once per change. The due
// rows are locked with FOR UPDATE SKIP LOCKED from the runnable index (rows without a flow)
// and from the governed index (rows with one, a (flow, name) pair at a time), so concurrent
// claims never take the same row; the rows of a limited flow are taken only under its flow's
// lock, at most the room its limits leave. A running row is runnable once its lease has
// expired by the database's clock. Each claimed row becomes running with a lease until the
// database's now() plus r.TTL, RunAt of r.Now+r.TTL and the next lease token; a wake due by
// r.Now is used up. Rows come back in claim order.
func (s *Store) Claim(ctx context.Context, r storage.ClaimRequest) ([]storage.Workflow, error) {
	if err := storage.ValidateClaim(r); err != nil {
		return nil, err
	}
	if err := s.ready(ctx); err != nil {
		return nil, err
	}
	names := make([]string, 0, len(r.Names))
	names = append(names, r.Names...)
	args := pgx.StrictNamedArgs{
		"owner": text(r.Owner), "ttl": interval(r.TTL), "run_at": ts(r.Now.Add(r.TTL)), "now": ts(r.Now),
		"names": names, "limit": r.Limit,
	}
	cacheKey := namesKey(names)
	tier := s.tiers.get(cacheKey)
	var out []claimed
	err := retry(ctx, once, func(ctx context.Context) error {
		// A statement of a lower tier than the names need claims nothing and says which
		// they need; that one follows at once. Each tier's statement claims all the names'
		// due workflows in order, so which one ran never shows in the result.
		for {
			var (
				need claimTier
				err  error
			)
			switch tier {
			case tierPlain:
				out, need, err = s.claimWith(ctx, s.q.claim, args)
			case tierFast:
				out, need, err = s.claimWith(ctx, s.q.claimFast, args)
			default:
				out, need, err = s.claimLimited(ctx, args)
			}
			if err != nil {
				return err
			}
			if need <= tier || tier == tierLimited {
				tier = need
				return nil
			}
			tier = need
		}
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: claim for %q: %w", r.Owner, err)
	}
	s.tiers.set(cacheKey, tier)
	slices.SortFunc(out, func(a, b claimed) int { return cmp.Compare(a.pos, b.pos) })
	s.maint.rowsClaimed(len(out)) // may vacuum, in the background
	ws := make([]storage.Workflow, len(out))
	for i, c := range out {
		ws[i] = c.w
	}
	return ws, nil
}

// claimed is a workflow a claim took, with its 1-based position in claim order.
type claimed struct {
	pos int32
	w   storage.Workflow
}

// claimWith runs a claim of one statement (the plain or the fast one) and returns what it
// claimed and the tier it found the names need.
func (s *Store) claimWith(ctx context.Context, sql string, args pgx.StrictNamedArgs) ([]claimed, claimTier, error) {
	rows, err := s.pool.Query(ctx, sql, args)
	if err != nil {
		return nil, 0, err
	}
	return scanClaimed(rows)
}

// genericPlans makes the statements after it in the same transaction run with their generic
// plans: the limited path's statements are large, and planning them for each claim's values
// took longer than running them (a server keeps a prepared statement's generic plan only when
// its estimated cost is close to the custom plans'). TestClaimFlowBacklogPlans checks that
// their generic plans use the indexes. It is set_config rather than SET LOCAL, which warns
// outside an explicit transaction block although it works in a pipeline's transaction. Over
// the simple protocol nothing is prepared, and the setting changes nothing.
const genericPlans = `SELECT set_config('plan_cache_mode', 'force_generic_plan', true)`

// claimLimited runs the limited path: genericPlans, lockFlows and claimLimited pipelined in
// one batch, which the server runs as one implicit transaction (one round trip, one commit).
// The tier it returns is the limited one while a limited flow of the names has due
// workflows, else the fast one while the names have a (flow, name) pair, else the plain one.
func (s *Store) claimLimited(ctx context.Context, args pgx.StrictNamedArgs) ([]claimed, claimTier, error) {
	batch := &pgx.Batch{}
	batch.Queue(genericPlans)
	batch.Queue(s.q.lockFlows, pgx.StrictNamedArgs{"names": args["names"], "now": args["now"], "limit": args["limit"]})
	batch.Queue(s.q.claimLimited, args)
	br := s.pool.SendBatch(ctx, batch)
	var (
		due     int64
		pairs   bool
		setting string
	)
	if _, err := br.Exec(); err != nil {
		_ = br.Close()
		return nil, 0, err
	}
	if err := br.QueryRow().Scan(&due, &pairs, &setting); err != nil {
		_ = br.Close()
		return nil, 0, err
	}
	rows, err := br.Query()
	if err != nil {
		_ = br.Close()
		return nil, 0, err
	}
	out, _, err := scanClaimed(rows)
	if err != nil {
		_ = br.Close()
		return nil, 0, err
	}
	tier := tierPlain
	switch {
	case due > 0:
		tier = tierLimited
	case pairs:
		tier = tierFast
	}
	return out, tier, br.Close()
}

// scanClaimed reads a claim statement's rows: the tier row (position 0) first, then the
// claimed workflows.
func scanClaimed(rows pgx.Rows) ([]claimed, claimTier, error) {
	defer rows.Close()
	var (
		out  []claimed
		pos  int32
		tier pgtype.Int4
		row  workflowRow
	)
	first := append([]any{&pos, &tier}, make([]any, len(workflowColumns))...)
	dest := append([]any{&pos, nil}, row.dest()...)
	seen := false
	for rows.Next() {
		if !seen {
			seen = true
			if err := rows.Scan(first...); err != nil {
				return nil, 0, err
			}
			if pos != 0 {
				return nil, 0, fmt.Errorf("claim: the first row is at position %d, not the tier's", pos)
			}
			continue
		}
		row = workflowRow{}
		if err := rows.Scan(dest...); err != nil {
			return nil, 0, err
		}
		out = append(out, claimed{pos, row.workflow()})
	}
	return out, claimTier(tier.Int32), rows.Err()
}

// Heartbeat extends a held lease to the database's now() plus ttl, and RunAt to now+ttl, in
// one fenced UPDATE.
func (s *Store) Heartbeat(ctx context.Context, l storage.Lease, ttl time.Duration, now time.Time) error {
	if err := storage.ValidateHeartbeat(l, ttl, now); err != nil {
		return err
	}
	if err := s.ready(ctx); err != nil {
		return err
	}
	args := pgx.StrictNamedArgs{"id": l.WorkflowID, "token": l.Token, "ttl": interval(ttl), "run_at": ts(now.Add(ttl))}
	err := s.fenced(ctx, l, func(ctx context.Context) (bool, error) {
		tag, err := s.pool.Exec(ctx, s.q.heartbeat, args)
		return tag.RowsAffected() == 1, err
	})
	if err != nil {
		return fmt.Errorf("postgres: heartbeat: %w", err)
	}
	return nil
}

// SaveSteps writes c under the lease l in one statement: the fence and the workflow row
// (values, last error), the step records upserted by name from arrays, and the error records
// appended, all or nothing.
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
	args := commitArgs(l, c)
	err := s.fenced(ctx, l, func(ctx context.Context) (bool, error) {
		var n int64
		err := s.pool.QueryRow(ctx, s.q.saveSteps, args).Scan(&n)
		return n == 1, err
	})
	if err != nil {
		return fmt.Errorf("postgres: save steps: %w", err)
	}
	return nil
}

// FinishRun writes f's commit, sets the run's outcome and releases the lease in one
// statement, fenced like SaveSteps. For idle, RunAt becomes the earlier of f.RunAt and a wake
// received during the run, and the wait is stored; for completed, failed and stalled, RunAt
// and the wait are cleared, and the final states get FinishedAt. LeaseUntil is cleared; owner
// and token stay as the record of the last lease. A workflow runnable at once is announced.
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
	args := finishArgs(l, f)
	err := s.fenced(ctx, l, func(ctx context.Context) (bool, error) {
		var n, notified int64
		err := s.pool.QueryRow(ctx, s.q.finishRun, args).Scan(&n, &notified)
		return n == 1, err
	})
	if err != nil {
		return fmt.Errorf("postgres: finish run as %s: %w", f.State, err)
	}
	return nil
}

// finishArgs are the arguments of the finishRun statement for the run of l ending with f.
func finishArgs(l storage.Lease, f storage.Finish) pgx.StrictNamedArgs {
	args := commitArgs(l, f.Commit)
	wait, runAt := f.Wait, f.RunAt
	if f.State != storage.StateIdle {
		wait, runAt = storage.Wait{}, time.Time{}
	}
	args["state"] = string(f.State)
	args["output"] = f.Output
	args["attempt"] = int32(f.Attempt)
	args["run_at"] = ts(runAt)
	args["wait_kind"], args["wait_step"], args["wait_data"] = text(string(wait.Kind)), text(wait.Step), wait.Data
	return args
}

// FinishRuns ends many runs in one round trip and one transaction: the finishRun statement
// of every valid end, pipelined in one batch, which PostgreSQL runs in one implicit
// transaction (one commit). Each statement is fenced by its own lease; a refused one changes
// nothing and is explained afterwards, with one more read, like FinishRun's.
func (s *Store) FinishRuns(ctx context.Context, ends []storage.RunEnd) ([]error, error) {
	if err := storage.ValidateRunEnds(ends); err != nil {
		return nil, err
	}
	if err := s.ready(ctx); err != nil {
		return nil, err
	}
	errs := make([]error, len(ends))
	var queued []int
	batch := &pgx.Batch{}
	for i, e := range ends {
		if err := storage.ValidateLease(e.Lease); err != nil {
			errs[i] = err
			continue
		}
		if err := storage.ValidateFinish(e.Finish); err != nil {
			errs[i] = err
			continue
		}
		batch.Queue(s.q.finishRun, finishArgs(e.Lease, e.Finish))
		queued = append(queued, i)
	}
	if len(queued) == 0 {
		return errs, nil
	}
	written := make([]bool, len(queued))
	err := retry(ctx, once, func(ctx context.Context) error {
		br := s.pool.SendBatch(ctx, batch)
		for j := range queued {
			var n, notified int64
			if err := br.QueryRow().Scan(&n, &notified); err != nil {
				_ = br.Close()
				return err
			}
			written[j] = n == 1
		}
		return br.Close()
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: finish %d runs: %w", len(queued), err)
	}
	for j, i := range queued {
		if written[j] {
			continue
		}
		errs[i] = fmt.Errorf("postgres: finish run as %s: %w", ends[i].Finish.State, s.refused(ctx, ends[i].Lease))
	}
	return errs, nil
}

// Release gives the lease l back in one fenced statement: the workflow becomes idle and
// runnable at now, its progress unchanged, and listeners are told.
func (s *Store) Release(ctx context.Context, l storage.Lease, now time.Time) error {
	if err := storage.ValidateRelease(l, now); err != nil {
		return err
	}
	if err := s.ready(ctx); err != nil {
		return err
	}
	args := leaseArgs(l, now)
	err := s.fenced(ctx, l, func(ctx context.Context) (bool, error) {
		var n, notified int64
		err := s.pool.QueryRow(ctx, s.q.release, args).Scan(&n, &notified)
		return n == 1, err
	})
	if err != nil {
		return fmt.Errorf("postgres: release: %w", err)
	}
	return nil
}

// errLeaseHolds is what refuse reports when the lease holds although the write was refused:
// SpawnBatch adds a condition to its fence (the branch step exists); for the other writes
// the row changed between the write and the read.
var errLeaseHolds = errors.New("the lease holds")

// fenced runs a fenced statement (write reports whether its fence matched) and, when the
// fence did not match, reads the row to say why.
func (s *Store) fenced(ctx context.Context, l storage.Lease, write func(ctx context.Context) (bool, error)) error {
	var ok bool
	err := retry(ctx, once, func(ctx context.Context) error {
		var err error
		ok, err = write(ctx)
		return err
	})
	if err != nil {
		return err
	}
	if ok {
		return nil
	}
	return s.refused(ctx, l)
}

// refused explains a fenced write under l that matched no row: refuse's answer, where a lease
// that holds again by the time it looks means it changed during the write.
func (s *Store) refused(ctx context.Context, l storage.Lease) error {
	err := s.refuse(ctx, l)
	if errors.Is(err, errLeaseHolds) {
		return fmt.Errorf("workflow %d: the lease changed during the write: %w", l.WorkflowID, storage.ErrLeaseLost)
	}
	return err
}

// refuse explains a fence that did not match: a missing workflow (ErrNotFound and
// ErrLeaseLost), or what storage.Fence says of the row and the database's clock, both read
// now, after the refused write (the clock has only moved on since, so an expired lease is
// still expired). If the lease still holds, it returns errLeaseHolds.
func (s *Store) refuse(ctx context.Context, l storage.Lease) error {
	var (
		state, owner string
		cur          = storage.Workflow{ID: l.WorkflowID}
		until, now   pgtype.Timestamptz
		found        = true
	)
	err := retry(ctx, idempotent, func(ctx context.Context) error {
		err := s.pool.QueryRow(ctx, s.q.fenceState, pgx.StrictNamedArgs{"id": l.WorkflowID}).Scan(&state, &owner, &cur.LeaseToken, &until, &now)
		if errors.Is(err, pgx.ErrNoRows) {
			found = false
			return nil
		}
		return err
	})
	switch {
	case err != nil:
		return fmt.Errorf("workflow %d: read the lease after a refused write: %w", l.WorkflowID, err)
	case !found:
		return fmt.Errorf("workflow %d: %w: %w", l.WorkflowID, storage.ErrNotFound, storage.ErrLeaseLost)
	}
	cur.State, cur.LeaseOwner, cur.LeaseUntil = storage.State(state), owner, fromTS(until)
	if err := storage.Fence(l, cur, fromTS(now)); err != nil {
		return err
	}
	return errLeaseHolds
}
