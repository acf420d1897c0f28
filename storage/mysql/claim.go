package mysql

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// Claim takes up to r.Limit runnable workflows (idle, or running with a lease expired by the
// server's clock, RunAt at or before r.Now, name in r.Names when set) and returns them leased
// to r.Owner in RunAt order, each with state running, a lease until the server's
// UTC_TIMESTAMP(6) plus r.TTL, RunAt of r.Now+r.TTL, and the next lease token.
//
// MySQL has no UPDATE ... RETURNING, so a claim is two statements whatever r.Limit is, and
// no explicit transaction:
//
//  1. one UPDATE joined to a derived table that picks the due rows of r.Names in run_at
//     order with FOR UPDATE SKIP LOCKED (rows another claim holds are skipped, not waited
//     for). It leases them and tags them with a random nonce and the run_at they had. Its
//     outer WHERE checks again that each row is runnable, on the row's latest version, so no
//     row is ever leased twice even if the derived table read an older one.
//  2. one SELECT of the rows tagged with that nonce, through the runnable index (their run_at
//     is r.Now+r.TTL), in the run_at order they were claimed in. It is skipped when
//     the UPDATE claimed nothing, so an idle poll is one statement.
//
// If the connection breaks while the UPDATE is on the wire, the nonce tells whether it was
// applied: the claim reads its rows back instead of claiming a second batch.
func (s *Store) Claim(ctx context.Context, r storage.ClaimRequest) ([]storage.Workflow, error) {
	if err := storage.ValidateClaim(r); err != nil {
		return nil, err
	}
	now := micro(r.Now)
	runAt := micro(now.Add(r.TTL))
	if err := s.ready(ctx); err != nil {
		return nil, err
	}
	nonce := rand.Int64N(math.MaxInt64-1) + 1
	query, args := s.claimQuery(r, now, runAt, nonce)

	var claimed int64
	for attempt := 1; ; attempt++ {
		res, err := s.db.ExecContext(ctx, query, args...)
		if err == nil {
			claimed, err = res.RowsAffected()
			if err != nil {
				return nil, fmt.Errorf("mysql: claim for %q: %w", r.Owner, err)
			}
			break
		}
		// Claims deadlock with each other by design (see claimQuery): the deadlock budget.
		if attempt >= attempts(err) || ctx.Err() != nil || !transient(err, idempotent) {
			return nil, fmt.Errorf("mysql: claim for %q: %w", r.Owner, err)
		}
		if !transient(err, once) {
			// The UPDATE may have been applied: its rows carry the nonce.
			got, rerr := s.readClaimed(ctx, r, runAt, nonce)
			if rerr != nil {
				return nil, fmt.Errorf("mysql: claim for %q: %w (then reading it back: %v)", r.Owner, err, rerr)
			}
			if len(got) > 0 {
				return got, nil
			}
		}
		if err := pause(ctx, attempt); err != nil {
			return nil, fmt.Errorf("mysql: claim for %q: %w", r.Owner, err)
		}
	}
	if claimed == 0 {
		return nil, nil
	}
	out, err := s.readClaimed(ctx, r, runAt, nonce)
	if err != nil {
		return nil, fmt.Errorf("mysql: claim for %q: read the claimed rows: %w", r.Owner, err)
	}
	return out, nil
}

// claimQuery builds the claiming UPDATE and its arguments. The derived table picks the rows:
// for no names, the first due rows of the run_at index; for one name, the first due rows of
// that name's range of the (name, run_at) index; for several, the first due rows of each
// name's range, merged by run_at. So a claim reads and locks only rows of its names, at most
// r.Limit of each, however many other rows are due. A running row whose lease is live by the
// server's clock is passed over (and, as InnoDB locks what a locking read passes, locked
// until the claim ends): it is due only for a caller whose clock runs ahead.
//
// Concurrent claims deadlock with each other now and then, by design: under REPEATABLE READ
// a scan that reaches the end of a name's due rows locks the gap after them, and the rows a
// claim takes move into that gap (their run_at becomes r.Now+r.TTL), so two claims that both
// scanned to the end wait for each other's gap. InnoDB rolls one back and Claim runs it again
// with the deadlock budget of every unit (see attempts).
func (s *Store) claimQuery(r storage.ClaimRequest, now, runAt time.Time, nonce int64) (string, []any) {
	names := slices.Compact(slices.Sorted(slices.Values(r.Names)))
	var b strings.Builder
	args := make([]any, 0, 10+3*len(names))
	pick := func(name string) {
		b.WriteString("SELECT id, run_at FROM " + s.workflows)
		if name == "" {
			b.WriteString(" FORCE INDEX (runnable) WHERE")
		} else {
			b.WriteString(" FORCE INDEX (claim) WHERE name = ? AND")
			args = append(args, bstr(name))
		}
		b.WriteString(" run_at <= " + ts + " AND state IN ('idle', 'running') AND " + expired("") +
			" ORDER BY run_at, id LIMIT ? FOR UPDATE SKIP LOCKED")
		args = append(args, dbTime(now), r.Limit)
	}
	b.WriteString("UPDATE (")
	switch len(names) {
	case 0:
		pick("")
	case 1:
		pick(names[0])
	default:
		b.WriteString("SELECT id, run_at FROM (")
		for i, name := range names {
			if i > 0 {
				b.WriteString(" UNION ALL ")
			}
			b.WriteString("(")
			pick(name)
			b.WriteString(")")
		}
		b.WriteString(") AS u ORDER BY run_at, id LIMIT ?")
		args = append(args, r.Limit)
	}
	// STRAIGHT_JOIN: read the few picked rows first, then each workflow row by primary key.
	b.WriteString(") AS c STRAIGHT_JOIN " + s.workflows + " AS w ON w.id = c.id" +
		" SET w.claim_run_at = c.run_at, w.claim_nonce = ?, w.state = 'running', w.lease_owner = ?," +
		" w.lease_token = w.lease_token + 1, w.lease_until = " + storeNow + " + INTERVAL ? MICROSECOND," +
		" w.run_at = " + ts + ", w.updated_at = " + ts + "," +
		// A run starting now covers every wake due by now; a later one is kept for FinishRun.
		" w.wake_at = IF(w.wake_at > " + ts + ", w.wake_at, NULL)" +
		" WHERE w.state IN ('idle', 'running') AND w.run_at <= " + ts + " AND " + expired("w."))
	args = append(args, nonce, bstr(r.Owner), micros(r.TTL), dbTime(runAt), dbTime(now), dbTime(now), dbTime(now))
	return b.String(), args
}

// expired is the condition that the row (of the alias prefix) holds no live lease by the
// server's clock: it is idle, or its lease ran out at or before the statement's start.
func expired(alias string) string {
	return "(" + alias + "state = 'idle' OR " + alias + "lease_until <= " + storeNow + ")"
}

// micros is a lease TTL in whole microseconds, rounded up: the server keeps microseconds, and
// a lease must never be shorter than asked for (nor empty).
func micros(d time.Duration) int64 {
	return int64((d + time.Microsecond - 1) / time.Microsecond)
}

// readClaimed reads the rows a claim tagged with nonce (and gave runAt), at most r.Limit of
// them.
func (s *Store) readClaimed(ctx context.Context, r storage.ClaimRequest, runAt time.Time, nonce int64) ([]storage.Workflow, error) {
	var out []storage.Workflow
	err := s.retry(ctx, idempotent, func(ctx context.Context) error {
		rows, err := s.db.QueryContext(ctx, s.q.claimed, dbTime(runAt), nonce)
		if err != nil {
			return err
		}
		out, err = scanWorkflows(rows)
		return err
	})
	if len(out) > r.Limit {
		// Only after an UPDATE sent twice because the first one's fate was unknown: the
		// extra rows stay leased to r.Owner and come back when their lease expires.
		out = out[:r.Limit]
	}
	return out, err
}

// pause sleeps before attempt+1 of a transient failure, or returns ctx's error. The pause
// grows from firstBackoff and is drawn at random from [d, 2d) with 2d at most maxBackoff, so
// units that failed together (the two sides of a deadlock) retry apart, also at the cap.
func pause(ctx context.Context, attempt int) error {
	d := min(firstBackoff<<min(attempt-1, 5), maxBackoff/2)
	d += rand.N(d)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
