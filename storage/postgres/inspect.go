package postgres

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/chronoforge/chronoforge/storage"
)

// finalStates are the final states, whose children's finish times BranchCounts reads.
var finalStates = func() []string {
	var out []string
	for _, st := range storage.States {
		if st.Final() {
			out = append(out, string(st))
		}
	}
	return out
}()

// CountStates counts the newest q.Sample workflows (of q.Name) by name and state in one
// statement that walks the primary key backwards from the newest ID and stops one row past
// the sample (see queries.countStates), so its cost is bounded by the sample.
func (s *Store) CountStates(ctx context.Context, q storage.CountStatesQuery) (storage.StateCounts, error) {
	var out storage.StateCounts
	if err := storage.ValidateCountStates(q); err != nil {
		return out, err
	}
	if err := s.ready(ctx); err != nil {
		return out, err
	}
	sample := storage.CountSample(q)
	sql, args := s.q.countStates, pgx.StrictNamedArgs{"limit": sample + 1}
	if q.Name != "" {
		sql, args["name"] = s.q.countStatesName, q.Name
	}
	var groups []storage.SampledGroup
	err := retry(ctx, idempotent, func(ctx context.Context) error {
		groups = nil
		rows, err := s.pool.Query(ctx, sql, args)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				g     storage.SampledGroup
				state string
				n     int64
			)
			if err := rows.Scan(&g.Name, &state, &n, &g.MinID); err != nil {
				return err
			}
			g.State, g.Count = storage.State(state), int(n)
			groups = append(groups, g)
		}
		return rows.Err()
	})
	if err != nil {
		return storage.StateCounts{}, fmt.Errorf("postgres: count states (name %q, sample %d): %w", q.Name, sample, err)
	}
	return storage.SampledStateCounts(groups, sample), nil
}

// BranchCounts counts the children of q.StepID by state, each count stopped at the cap, and
// reads the finish times of its newest final children, in one statement over the children
// index (see queries.branchCounts).
func (s *Store) BranchCounts(ctx context.Context, q storage.BranchQuery) (storage.BranchStats, error) {
	var out storage.BranchStats
	if err := storage.ValidateBranchQuery(q); err != nil {
		return out, err
	}
	if err := s.ready(ctx); err != nil {
		return out, err
	}
	limit, recent := storage.BranchCap(q), storage.BranchRecent(q)
	args := pgx.StrictNamedArgs{
		"step": q.StepID, "cap": limit, "recent": recent, "states": strs(storage.States), "final": finalStates,
	}
	var (
		counts   map[storage.State]int
		finished []storage.FinishedChild
	)
	err := retry(ctx, idempotent, func(ctx context.Context) error {
		counts, finished = map[storage.State]int{}, nil
		rows, err := s.pool.Query(ctx, s.q.branchCounts, args)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				kind  int32
				state pgtype.Text
				n, id pgtype.Int8
				at    pgtype.Timestamptz
			)
			if err := rows.Scan(&kind, &state, &n, &id, &at); err != nil {
				return err
			}
			if kind == 0 {
				counts[storage.State(state.String)] = int(n.Int64)
			} else {
				finished = append(finished, storage.FinishedChild{ID: id.Int64, At: fromTS(at)})
			}
		}
		return rows.Err()
	})
	if err != nil {
		return storage.BranchStats{}, fmt.Errorf("postgres: branch counts of step %d: %w", q.StepID, err)
	}
	return storage.NewBranchStats(counts, limit, finished, recent), nil
}

// Backlog probes the runnable index from the oldest row due by now, at most
// storage.BacklogProbe rows, in one statement (see queries.backlog); whether a running
// row's lease has expired is judged by the database's clock, as Claim judges it.
func (s *Store) Backlog(ctx context.Context, now time.Time, limit int) (storage.Backlog, error) {
	var out storage.Backlog
	if err := storage.ValidateBacklog(now); err != nil {
		return out, err
	}
	if err := s.ready(ctx); err != nil {
		return out, err
	}
	args := pgx.StrictNamedArgs{
		"now": ts(now), "probe": storage.BacklogProbe, "probe_rows": storage.BacklogProbe + 1,
		"limit": storage.BacklogLimit(limit),
	}
	err := retry(ctx, idempotent, func(ctx context.Context) error {
		out = storage.Backlog{}
		rows, err := s.pool.Query(ctx, s.q.backlog, args)
		if err != nil {
			return err
		}
		defer rows.Close()
		var (
			kind        int32
			seen, due   pgtype.Int8
			oldest      pgtype.Timestamptz
			row         workflowRow
			summaryDest = append([]any{&kind, &seen, &due, &oldest}, make([]any, len(workflowColumns))...)
			expiredDest = append([]any{&kind, nil, nil, nil}, row.dest()...)
		)
		summary := false
		for rows.Next() {
			if !summary { // the first row (kind 0) is the summary
				if err := rows.Scan(summaryDest...); err != nil {
					return err
				}
				if kind != 0 {
					return fmt.Errorf("backlog: expired rows without the summary row")
				}
				out.Probed = seen.Int64 > storage.BacklogProbe
				out.Due, out.OldestDue, summary = int(due.Int64), fromTS(oldest), true
				continue
			}
			row = workflowRow{}
			if err := rows.Scan(expiredDest...); err != nil {
				return err
			}
			out.Expired = append(out.Expired, row.workflow())
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if !summary {
			return fmt.Errorf("backlog: no summary row")
		}
		return nil
	})
	if err != nil {
		return storage.Backlog{}, fmt.Errorf("postgres: backlog as of %v: %w", now, err)
	}
	slices.SortFunc(out.Expired, func(a, b storage.Workflow) int {
		return cmp.Or(a.RunAt.Compare(b.RunAt), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}
