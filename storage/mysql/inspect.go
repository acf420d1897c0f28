package mysql

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

var _ storage.Inspector = (*Store)(nil)

// CountStates counts the newest q.Sample workflows (of q.Name) by name and state with one
// query: the newest Sample+1 rows by primary key, grouped, the extra oldest one dropped here.
// Without a name it walks the primary key backwards, Sample+1 rows. With a name no index is
// ordered by (name, id): the optimizer walks the primary key backwards skipping other names,
// or reads the name's range of an index and sorts it, so a rare name costs more than Sample
// rows. An index on name alone (InnoDB orders it by (name, id)) would bound it, at the cost
// of one more index entry per inserted workflow; for an occasional operator's query it is
// not added.
func (s *Store) CountStates(ctx context.Context, q storage.CountStatesQuery) (storage.StateCounts, error) {
	var out storage.StateCounts
	if err := storage.ValidateCountStates(q); err != nil {
		return out, err
	}
	if err := s.ready(ctx); err != nil {
		return out, err
	}
	sample := storage.CountSample(q)
	query, args := s.q.countStates, []any{sample + 1}
	if q.Name != "" {
		query, args = s.q.countStatesOf, []any{bstr(q.Name), sample + 1}
	}
	var groups []storage.SampledGroup
	err := s.retry(ctx, idempotent, func(ctx context.Context) error {
		groups = nil
		rows, err := s.db.QueryContext(ctx, query, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				name, state []byte
				n           int64
				g           storage.SampledGroup
			)
			if err := rows.Scan(&name, &state, &n, &g.MinID); err != nil {
				return err
			}
			g.Name, g.State, g.Count = string(name), storage.State(state), int(n)
			groups = append(groups, g)
		}
		return rows.Err()
	})
	if err != nil {
		return storage.StateCounts{}, fmt.Errorf("mysql: count states: %w", err)
	}
	return storage.SampledStateCounts(groups, sample), nil
}

// branchCountsArgs are the parameters of the BranchCounts query (see branchCountsSQL).
func branchCountsArgs(q storage.BranchQuery) []any {
	limit, recent := storage.BranchCap(q), storage.BranchRecent(q)
	var args []any
	for range storage.States {
		args = append(args, q.StepID, limit)
	}
	for _, st := range storage.States {
		if st.Final() {
			args = append(args, q.StepID, recent)
		}
	}
	return args
}

// BranchCounts counts the children of q.StepID by state, each count capped, with the finish
// times of the newest final ones, in one query over the children index: at most Cap rows of
// each state and Recent rows of each final state are read.
func (s *Store) BranchCounts(ctx context.Context, q storage.BranchQuery) (storage.BranchStats, error) {
	var out storage.BranchStats
	if err := storage.ValidateBranchQuery(q); err != nil {
		return out, err
	}
	if err := s.ready(ctx); err != nil {
		return out, err
	}
	limit, recent := storage.BranchCap(q), storage.BranchRecent(q)
	err := s.retry(ctx, idempotent, func(ctx context.Context) error {
		counts := map[storage.State]int{}
		var final []storage.FinishedChild
		rows, err := s.db.QueryContext(ctx, s.q.branchCounts, branchCountsArgs(q)...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				kind  int64
				state []byte
				n     sql.NullInt64
				at    time.Time
			)
			if err := rows.Scan(&kind, &state, &n, nt(&at)); err != nil {
				return err
			}
			if kind == 0 {
				counts[storage.State(state)] = int(n.Int64)
			} else {
				final = append(final, storage.FinishedChild{ID: n.Int64, At: at})
			}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		out = storage.NewBranchStats(counts, limit, final, recent)
		return nil
	})
	if err != nil {
		return storage.BranchStats{}, fmt.Errorf("mysql: branch counts of step %d: %w", q.StepID, err)
	}
	return out, nil
}

// Backlog looks at the BacklogProbe oldest due rows of the runnable index, with one query;
// leases expire by the server's clock, as Claim judges them.
func (s *Store) Backlog(ctx context.Context, now time.Time, limit int) (storage.Backlog, error) {
	var out storage.Backlog
	if err := storage.ValidateBacklog(now); err != nil {
		return out, err
	}
	if err := s.ready(ctx); err != nil {
		return out, err
	}
	limit = storage.BacklogLimit(limit)
	args := []any{dbTime(micro(now)), storage.BacklogProbe + 1, storage.BacklogProbe, storage.BacklogProbe, storage.BacklogProbe, limit}
	err := s.retry(ctx, idempotent, func(ctx context.Context) error {
		out = storage.Backlog{}
		rows, err := s.db.QueryContext(ctx, s.q.backlog, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				kind        int64
				probed, due sql.NullInt64
				oldest      time.Time
				wr          workflowRow
			)
			targets := append([]any{&kind, &probed, &due, nt(&oldest)}, wr.targets()...)
			if err := rows.Scan(targets...); err != nil {
				return err
			}
			if kind == 0 {
				out.Probed = probed.Int64 > storage.BacklogProbe
				out.Due, out.OldestDue = int(due.Int64), oldest
			} else {
				out.Expired = append(out.Expired, wr.workflow())
			}
		}
		return rows.Err()
	})
	if err != nil {
		return storage.Backlog{}, fmt.Errorf("mysql: backlog: %w", err)
	}
	return out, nil
}
