package postgres

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/chronoforge/chronoforge/storage"
)

// Flow control (storage.FlowController). A flow is a row of the flows table; every claim
// reads the flows and the (flow, name) pairs of its names in its own statement, so a change
// applies from the next claim in every process. Claim takes one of three paths, each one
// round trip:
//
//   - the plain path, for names no workflow with a flow key was created with: one statement,
//     the claim from the runnable index as before flow control;
//   - the fast path, one statement, claims the due workflows without a flow and those of
//     flows without limits, in priority order, and never a workflow of a flow its own
//     snapshot finds limited;
//   - the limited path, two statements pipelined in one implicit transaction (after a third
//     that makes them use their generic plans: see genericPlans), first locks the
//     limited flows of the claimed names (FOR UPDATE, in key order), then, in a snapshot taken
//     after the locks were granted, counts each one's live runs and rate window and claims at
//     most the room left, besides what the fast path claims. Under READ COMMITTED one
//     statement has one snapshot, taken before any lock it waits for, so a single statement
//     could not see the claims of the transaction it waited for: the second statement can.
//
// Which path a claim takes is decided by tierCache, from what the last claim of the same
// names found. Each statement also finds which path the names need: a statement of a lower
// path claims nothing when they need a higher one, and that one follows at once (two round
// trips, once per change); a higher path finding a lower one enough makes the next claim
// take it. A wrong guess costs time, never a limit nor the order of a claim.

// claimTier is a claim path, in the order of what they handle.
type claimTier int32

const (
	// tierPlain: no workflow of the names has a flow key.
	tierPlain claimTier = iota
	// tierFast: some have, and no limited flow of theirs has due workflows.
	tierFast
	// tierLimited: a limited flow of the names has due workflows (or may have).
	tierLimited
)

// maxTierCache bounds the sets of names tierCache remembers; beyond it, it starts over.
const maxTierCache = 1024

// tierCache remembers, per set of claimed names, the path their last claim found they need.
type tierCache struct {
	mu sync.Mutex
	m  map[string]claimTier
}

// namesKey is the cache key of a claim's names, in the order given.
func namesKey(names []string) string { return strings.Join(names, "\x00") }

func (c *tierCache) get(key string) claimTier {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[key]
}

func (c *tierCache) set(key string, t claimTier) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxTierCache {
		c.m = map[string]claimTier{}
	}
	c.m[key] = t
}

// raise makes every remembered path at least t: this store changed a flow, so its next
// claims need not learn of it the slow way.
func (c *tierCache) raise(t claimTier) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, v := range c.m {
		c.m[k] = max(v, t)
	}
}

// flowLockKey is the advisory lock PutFlow holds while it counts and writes the flows of one
// schema and prefix.
func flowLockKey(schema, prefix string) int64 {
	h := fnv.New64a()
	h.Write([]byte("chronoforge.flows:" + schema + "." + prefix))
	return int64(h.Sum64())
}

// flowRow receives the columns of flowColumns.
type flowRow struct {
	f                           storage.Flow
	priority, concurrency, rate int32
	perNS                       int64
	updated                     pgtype.Timestamptz
}

func (r *flowRow) dest() []any {
	return []any{&r.f.Key, &r.priority, &r.concurrency, &r.rate, &r.perNS, &r.updated}
}

func (r *flowRow) flow() storage.Flow {
	f := r.f
	f.Priority, f.Concurrency, f.Rate = int(r.priority), int(r.concurrency), int(r.rate)
	f.Per = time.Duration(r.perNS)
	f.UpdatedAt = fromTS(r.updated)
	return f
}

// PutFlow stores f under f.Key (see storage.FlowController) in one transaction of two
// statements pipelined in one round trip: the first takes an advisory lock of the store's
// flows, so concurrent PutFlows of new keys count each other and never exceed
// storage.MaxFlows, the second inserts or replaces the row.
func (s *Store) PutFlow(ctx context.Context, f storage.Flow, ifMissing bool, now time.Time) (storage.Flow, bool, error) {
	if err := storage.ValidateFlow(f, now); err != nil {
		return storage.Flow{}, false, err
	}
	if err := s.ready(ctx); err != nil {
		return storage.Flow{}, false, err
	}
	args := pgx.StrictNamedArgs{
		"key": f.Key, "priority": int32(f.Priority), "concurrency": int32(f.Concurrency), "rate": int32(f.Rate),
		"per_ns": int64(f.Per), "now": ts(now), "if_missing": ifMissing, "max": storage.MaxFlows,
	}
	var (
		out   storage.Flow
		wrote bool
		found bool
	)
	err := retry(ctx, once, func(ctx context.Context) error {
		found = false
		batch := &pgx.Batch{}
		batch.Queue("SELECT pg_advisory_xact_lock($1)", flowLockKey(s.schema, s.prefix))
		batch.Queue(s.q.putFlow, args)
		br := s.pool.SendBatch(ctx, batch)
		if _, err := br.Exec(); err != nil {
			_ = br.Close()
			return err
		}
		var (
			kind int32
			row  flowRow
		)
		err := br.QueryRow().Scan(append([]any{&kind}, row.dest()...)...)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			_ = br.Close()
			return err
		default:
			out, wrote, found = row.flow(), kind == 1, true
		}
		return br.Close()
	})
	if err != nil {
		return storage.Flow{}, false, fmt.Errorf("postgres: put flow %q: %w", f.Key, err)
	}
	if !found {
		return storage.Flow{}, false, fmt.Errorf("postgres: put flow %q: %w: the store holds %d flows already", f.Key, storage.ErrTooLarge, storage.MaxFlows)
	}
	if wrote && f.Limited() {
		s.tiers.raise(tierLimited) // the next claims of its names lock it; others learn they need not
	}
	return out, wrote, nil
}

// DeleteFlow removes the flow stored under key in one statement.
func (s *Store) DeleteFlow(ctx context.Context, key string) (bool, error) {
	if err := storage.ValidateFlowKey(key); err != nil {
		return false, err
	}
	if err := s.ready(ctx); err != nil {
		return false, err
	}
	var gone bool
	err := retry(ctx, once, func(ctx context.Context) error {
		tag, err := s.pool.Exec(ctx, s.q.deleteFlow, pgx.StrictNamedArgs{"key": key})
		gone = tag.RowsAffected() == 1
		return err
	})
	if err != nil {
		return false, fmt.Errorf("postgres: delete flow %q: %w", key, err)
	}
	return gone, nil
}

// ListFlows returns every stored flow in key order with its counts, in one statement: each
// count reads the governed index, at most storage.FlowProbe rows per name of the key.
func (s *Store) ListFlows(ctx context.Context, now time.Time) ([]storage.FlowState, error) {
	if err := storage.ValidateListFlows(now); err != nil {
		return nil, err
	}
	if err := s.ready(ctx); err != nil {
		return nil, err
	}
	var out []storage.FlowState
	err := retry(ctx, idempotent, func(ctx context.Context) error {
		out = out[:0]
		rows, err := s.pool.Query(ctx, s.q.listFlows, pgx.StrictNamedArgs{"now": ts(now), "probe": storage.FlowProbe})
		if err != nil {
			return err
		}
		defer rows.Close()
		var (
			row          flowRow
			running, due int64
		)
		dest := append(row.dest(), &running, &due)
		for rows.Next() {
			row = flowRow{}
			if err := rows.Scan(dest...); err != nil {
				return err
			}
			st := storage.FlowState{Flow: row.flow(), Running: int(min(running, storage.FlowProbe)), Due: int(min(due, storage.FlowProbe))}
			st.Capped = st.Running == storage.FlowProbe || st.Due == storage.FlowProbe
			out = append(out, st)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: list flows: %w", err)
	}
	return out, nil
}
