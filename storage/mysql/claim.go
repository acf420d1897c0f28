package mysql

import (
	"context"
	"encoding/hex"
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
// to r.Owner, highest flow priority first, then in RunAt order, each with state running, a
// lease until the server's UTC_TIMESTAMP(6) plus r.TTL, RunAt of r.Now+r.TTL, and the next
// lease token.
//
// When no flow with a limit governs workflows of r.Names (as the flow cache sees it), MySQL
// having no UPDATE ... RETURNING, a claim is two statements whatever r.Limit is, and no
// explicit transaction:
//
//  1. one UPDATE joined to a derived table that picks the due rows of r.Names in run_at
//     order with FOR UPDATE SKIP LOCKED (rows another claim holds are skipped, not waited
//     for). It leases them and tags them with a random nonce and the run_at they had. Its
//     outer WHERE checks again that each row is runnable, on the row's latest version, so no
//     row is ever leased twice even if the derived table read an older one.
//  2. one SELECT of the rows tagged with that nonce, through the runnable index (their run_at
//     is r.Now+r.TTL), in the order they were claimed in. It is skipped when the UPDATE
//     claimed nothing, so an idle poll is one statement.
//
// If the connection breaks while the UPDATE is on the wire, the nonce tells whether it was
// applied: the claim reads its rows back instead of claiming a second batch.
//
// Workflows with a flow key are picked from their own index, per (name, flow key) pair, so a
// flow's held-back backlog is never walked. Those of keys without a limit join the UPDATE
// above, ordered by their flow's priority; its outer WHERE refuses a row whose key the flows
// table limits at that moment (a read that locks the flows row in share mode, so a PutFlow
// waits for the claim, or the claim for the PutFlow). When a key with a limit is relevant,
// the claim is one transaction instead (see claimLimited).
func (s *Store) Claim(ctx context.Context, r storage.ClaimRequest) ([]storage.Workflow, error) {
	if err := storage.ValidateClaim(r); err != nil {
		return nil, err
	}
	now := micro(r.Now)
	runAt := micro(now.Add(r.TTL))
	if err := s.ready(ctx); err != nil {
		return nil, err
	}
	if s.cache.stale(s.reloadEvery) {
		if err := s.reloadFlows(ctx); err != nil {
			return nil, fmt.Errorf("mysql: claim for %q: %w", r.Owner, err)
		}
	}
	names := slices.Compact(slices.Sorted(slices.Values(r.Names)))
	pairs, limited := s.cache.plan(names)
	if len(limited) > 0 {
		out, err := s.claimLimited(ctx, r, names, pairs, limited, now, runAt)
		if err != nil {
			return nil, fmt.Errorf("mysql: claim for %q: %w", r.Owner, err)
		}
		return out, nil
	}
	nonce := rand.Int64N(math.MaxInt64-1) + 1
	query, args := s.claimQuery(r, names, pairs, now, runAt, nonce)
	readBack := s.q.claimed
	if len(pairs) > 0 {
		readBack = s.q.claimedByPriority
	}

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
			got, rerr := s.readClaimed(ctx, r, readBack, runAt, nonce)
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
	out, err := s.readClaimed(ctx, r, readBack, runAt, nonce)
	if err != nil {
		return nil, fmt.Errorf("mysql: claim for %q: read the claimed rows: %w", r.Owner, err)
	}
	return out, nil
}

// picker writes the picks of a claim: the derived tables that read and lock the first due
// rows of one index range each.
type picker struct {
	s    *Store
	b    strings.Builder
	args []any
	now  any
}

// free writes the pick of the due rows without a flow: for no name, the first of the free
// index; for a name, the first of that name's range of the claim index. Each row comes with
// a NULL flow when withFlow is set.
func (p *picker) free(name string, limit int, withFlow bool) {
	p.b.WriteString("SELECT id, run_at")
	if withFlow {
		p.b.WriteString(", NULL AS flow")
	}
	p.b.WriteString(" FROM " + p.s.workflows)
	if name == "" {
		p.b.WriteString(" FORCE INDEX (free) WHERE")
	} else {
		p.b.WriteString(" FORCE INDEX (claim) WHERE name = ? AND")
		p.args = append(p.args, bstr(name))
	}
	p.b.WriteString(" free_at <= " + ts + " AND state IN ('idle', 'running') AND " + expired("") +
		" ORDER BY free_at, id LIMIT ? FOR UPDATE SKIP LOCKED")
	p.args = append(p.args, p.now, limit)
}

// governed writes the pick of the first due rows of one (name, flow key) pair, from its range
// of the flow_claim index.
func (p *picker) governed(pair flowPair, limit int) {
	p.b.WriteString("SELECT id, run_at, flow FROM " + p.s.workflows + " FORCE INDEX (flow_claim)" +
		" WHERE flow = ? AND name = ? AND flow_at <= " + ts + " AND state IN ('idle', 'running') AND " + expired("") +
		" ORDER BY flow_at, id LIMIT ? FOR UPDATE SKIP LOCKED")
	p.args = append(p.args, bstr(pair.key), bstr(pair.name), p.now, limit)
}

// union writes the picks (each a function writing one) as one UNION ALL.
func (p *picker) union(picks []func()) {
	for i, pick := range picks {
		if i > 0 {
			p.b.WriteString(" UNION ALL ")
		}
		p.b.WriteString("(")
		pick()
		p.b.WriteString(")")
	}
}

// claimQuery builds the claiming UPDATE and its arguments. The derived table picks the rows:
// for no names, the first due rows of the free index; for one name, the first due rows of
// that name's range of the (name, free_at) index; for several, the first due rows of each
// name's range, merged by run_at. So a claim reads and locks only rows of its names, at most
// r.Limit of each, however many other rows are due. A running row whose lease is live by the
// server's clock is passed over (and, as InnoDB locks what a locking read passes, locked
// until the claim ends): it is due only for a caller whose clock runs ahead. With pairs (of
// flow keys the cache does not know to be limited), the first due rows of each pair join the
// merge, which orders by the priority of their flow first.
//
// Concurrent claims deadlock with each other now and then, by design: under REPEATABLE READ
// a scan that reaches the end of a name's due rows locks the gap after them, and the rows a
// claim takes move into that gap (their run_at becomes r.Now+r.TTL), so two claims that both
// scanned to the end wait for each other's gap. InnoDB rolls one back and Claim runs it again
// with the deadlock budget of every unit (see attempts).
func (s *Store) claimQuery(r storage.ClaimRequest, names []string, pairs []flowPair, now, runAt time.Time, nonce int64) (string, []any) {
	p := &picker{s: s, now: dbTime(now), args: make([]any, 0, 10+3*len(names)+4*len(pairs))}
	p.b.WriteString("UPDATE (")
	switch {
	case len(pairs) > 0:
		var picks []func()
		if len(names) == 0 {
			picks = append(picks, func() { p.free("", r.Limit, true) })
		}
		for _, name := range names {
			picks = append(picks, func() { p.free(name, r.Limit, true) })
		}
		for _, pair := range pairs {
			picks = append(picks, func() { p.governed(pair, r.Limit) })
		}
		p.b.WriteString("SELECT u.id, u.run_at FROM (")
		p.union(picks)
		p.b.WriteString(") AS u LEFT JOIN " + s.flows + " AS f ON f.`key` = u.flow" +
			" ORDER BY COALESCE(f.priority, 0) DESC, u.run_at, u.id LIMIT ?")
		p.args = append(p.args, r.Limit)
	case len(names) == 0:
		p.free("", r.Limit, false)
	case len(names) == 1:
		p.free(names[0], r.Limit, false)
	default:
		var picks []func()
		for _, name := range names {
			picks = append(picks, func() { p.free(name, r.Limit, false) })
		}
		p.b.WriteString("SELECT id, run_at FROM (")
		p.union(picks)
		p.b.WriteString(") AS u ORDER BY run_at, id LIMIT ?")
		p.args = append(p.args, r.Limit)
	}
	// STRAIGHT_JOIN: read the few picked rows first, then each workflow row by primary key.
	p.b.WriteString(") AS c STRAIGHT_JOIN " + s.workflows + " AS w ON w.id = c.id" +
		" SET w.claim_run_at = c.run_at, w.claim_nonce = ?, w.state = 'running', w.lease_owner = ?," +
		" w.lease_token = w.lease_token + 1, w.lease_until = " + storeNow + " + INTERVAL ? MICROSECOND," +
		" w.run_at = " + ts + ", w.updated_at = " + ts + "," +
		// A run starting now covers every wake due by now; a later one is kept for FinishRun.
		" w.wake_at = IF(w.wake_at > " + ts + ", w.wake_at, NULL)" +
		" WHERE w.state IN ('idle', 'running') AND w.run_at <= " + ts + " AND " + expired("w."))
	p.args = append(p.args, nonce, bstr(r.Owner), micros(r.TTL), dbTime(runAt), dbTime(now), dbTime(now), dbTime(now))
	if len(pairs) > 0 {
		p.b.WriteString(" AND " + s.notLimited(nil))
	}
	return p.b.String(), p.args
}

// notLimited is the condition that the row w has no flow, or one of the keys held (whose
// flows rows the claim locked, their limits applied), or one the flows table does not limit.
// The flows row is read with a shared lock, held until the claim's transaction ends, at
// every isolation level: a PutFlow that would limit the key waits for the claim, or the
// claim sees its limit, so a claim of the key made under the limit counts every run made
// before. It is a scalar subquery, one primary key lookup per key: MariaDB turns a NOT
// EXISTS into a materialised scan of the whole flows table, which would lock every row.
func (s *Store) notLimited(held []string) string {
	cond := "(w.flow IS NULL"
	if len(held) > 0 {
		cond += " OR w.flow IN (" + quoteKeys(held) + ")"
	}
	return cond + " OR NOT COALESCE((SELECT g.concurrency > 0 OR g.rate > 0 FROM " + s.flows + " AS g" +
		" WHERE g.`key` = w.flow LOCK IN SHARE MODE), FALSE))"
}

// quoteKeys writes flow keys as SQL hex literals (X'...'): validated names, but bytes all the
// same, so nothing in them can escape.
func quoteKeys(keys []string) string {
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("X'" + hex.EncodeToString([]byte(k)) + "'")
	}
	return b.String()
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

// readClaimed reads the rows a claim tagged with nonce (and gave runAt) with query (claimed
// or claimedByPriority), at most r.Limit of them.
func (s *Store) readClaimed(ctx context.Context, r storage.ClaimRequest, query string, runAt time.Time, nonce int64) ([]storage.Workflow, error) {
	var out []storage.Workflow
	err := s.retry(ctx, idempotent, func(ctx context.Context) error {
		rows, err := s.db.QueryContext(ctx, query, dbTime(runAt), nonce)
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
