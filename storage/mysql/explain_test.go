package mysql

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// planRow is one row of EXPLAIN: the table read and the index used for it.
type planRow struct {
	table, accessType, key, extra string
}

// explain returns the plan of query. MySQL and MariaDB print different columns, so they are
// found by name.
func explain(t *testing.T, db *sql.DB, query string, args ...any) []planRow {
	t.Helper()
	rows, err := db.QueryContext(context.Background(), "EXPLAIN "+query, args...)
	require.NoError(t, err)
	defer rows.Close()
	cols, err := rows.Columns()
	require.NoError(t, err)
	var out []planRow
	for rows.Next() {
		vals := make([]sql.NullString, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		require.NoError(t, rows.Scan(ptrs...))
		var r planRow
		for i, c := range cols {
			switch strings.ToLower(c) {
			case "table":
				r.table = vals[i].String
			case "type":
				r.accessType = vals[i].String
			case "key":
				r.key = vals[i].String
			case "extra":
				r.extra = vals[i].String
			}
		}
		out = append(out, r)
	}
	require.NoError(t, rows.Err())
	return out
}

// TestIndexesUsed checks with EXPLAIN that the capped child count reads the
// (parent_step_id, state) index, that a spawn's read of who holds skipped keys uses the
// (name, key) index, and that a claim picks its rows from the free (free_at) or claim (name, free_at) index, on a table large
// enough for the optimizer to care.
func TestIndexesUsed(t *testing.T) {
	t.Parallel()
	db := sharedDB(t)
	s := newStore(t, db)
	ctx := context.Background()

	parent := create(t, s, "parent", "p", at(0))
	got := claimAll(t, s, at(0), 1, "parent")
	require.Len(t, got, 1)
	l := got[0].Lease()
	var branches []int64
	for b := range 4 {
		children := make([]storage.NewWorkflow, 1000)
		for i := range children {
			children[i] = storage.NewWorkflow{Name: "child", Key: fmt.Sprintf("p$b%d$i_%d", b, i), RunAt: at(time.Duration(i) * time.Second)}
		}
		name := fmt.Sprintf("branch$b%d", b)
		res, err := s.SpawnBatch(ctx, l, storage.SpawnRequest{
			Branch: name, Steps: []storage.Step{{Name: name, State: storage.StepPending}}, Children: children, Now: at(time.Second),
		})
		require.NoError(t, err)
		require.Equal(t, 1000, res.Inserted)
		branches = append(branches, res.BranchStepID)
	}
	_, err := db.ExecContext(ctx, "ANALYZE TABLE "+s.workflows)
	require.NoError(t, err)

	query, args := s.countQuery(storage.ChildQuery{StepIDs: branches[:2], States: []storage.State{storage.StateIdle, storage.StateRunning}, Cap: 100})
	plan := explain(t, db, query, args...)
	t.Logf("CountChildren plan: %+v", plan)
	require.True(t, usesIndex(plan, "children"), "CountChildren must read the (parent_step_id, state) index: %+v", plan)
	n, err := s.CountChildren(ctx, storage.ChildQuery{StepIDs: branches[:2], States: []storage.State{storage.StateIdle}, Cap: 100})
	require.NoError(t, err)
	require.Equal(t, 100, n)

	// The read of who holds skipped children's keys finds them through the unique (name, key)
	// index, also past MariaDB's conversion of long IN lists into a join. (Which range of it
	// is the optimizer's choice: with more keys than this table has rows it rightly scans.)
	for _, n := range []int{3, 1000} {
		children := make([]storage.NewWorkflow, n)
		for i := range children {
			children[i] = storage.NewWorkflow{Name: "child", Key: fmt.Sprintf("p$b0$i_%d", i)}
		}
		query, args := s.holdersQuery(children, branches[1])
		plan = explain(t, db, query, args...)
		t.Logf("SpawnBatch holders plan for %d children: %+v", n, plan)
		require.True(t, usesIndex(plan, "name_key"), "%d children: the holders' read must use the (name, key) index: %+v", n, plan)
		for _, r := range plan {
			if !strings.HasPrefix(r.table, "<") {
				require.NotEqual(t, "ALL", r.accessType, "%d children: no full scan of %s: %+v", n, r.table, plan)
			}
		}
	}

	// CreateWorkflows reads its batch back through the unique (name, key) index too.
	for _, n := range []int{3, 1000} {
		ws := make([]storage.NewWorkflow, n)
		for i := range ws {
			ws[i] = storage.NewWorkflow{Name: "child", Key: fmt.Sprintf("p$b1$i_%d", i)}
		}
		query, args := s.nameKeyQuery(ws)
		plan = explain(t, db, query, args...)
		t.Logf("CreateWorkflows read-back plan for %d workflows: %+v", n, plan)
		require.True(t, usesIndex(plan, "name_key"), "%d workflows: the read-back must use the (name, key) index: %+v", n, plan)
		for _, r := range plan {
			if !strings.HasPrefix(r.table, "<") {
				require.NotEqual(t, "ALL", r.accessType, "%d workflows: no full scan of %s: %+v", n, r.table, plan)
			}
		}
	}

	for i := range 20 {
		putFlow(t, s, storage.Flow{Key: fmt.Sprint("k", i), Priority: i})
	}
	// The claiming UPDATE picks rows from the (name, free_at) index for its names, from the
	// free_at index for any name, from the (flow, name, flow_at) index for a (name, flow)
	// pair, and then reaches each row by primary key.
	for _, tc := range []struct {
		names []string
		pairs []flowPair
		index string
	}{
		{nil, nil, "free"},
		{[]string{"child"}, nil, "claim"},
		{[]string{"child", "parent", "other"}, nil, "claim"},
		{[]string{"child"}, []flowPair{{"child", "k"}}, "flow_claim"},
		{nil, []flowPair{{"child", "k"}, {"other", "k"}}, "flow_claim"},
	} {
		claim, claimArgs := s.claimQuery(storage.ClaimRequest{Owner: "w", Limit: 10, Names: tc.names, TTL: time.Minute}, slices.Sorted(slices.Values(tc.names)), tc.pairs, at(10*time.Second), at(time.Minute), 1)
		plan = explain(t, db, claim, claimArgs...)
		t.Logf("Claim plan for names %v: %+v", tc.names, plan)
		require.True(t, usesIndex(plan, tc.index), "names %v: the claim must pick rows from the %s index: %+v", tc.names, tc.index, plan)
		require.True(t, usesIndex(plan, "PRIMARY"), "names %v: and then reach each row by primary key: %+v", tc.names, plan)
		for _, r := range plan {
			if !strings.HasPrefix(r.table, "<") { // <derived2>, <union2,3>: the picked rows
				require.NotEqual(t, "ALL", r.accessType, "names %v: no full scan of %s: %+v", tc.names, r.table, plan)
			}
		}
	}
	require.NotZero(t, parent.ID)
}

func usesIndex(plan []planRow, key string) bool {
	for _, r := range plan {
		if r.key == key {
			return true
		}
	}
	return false
}

// TestConsumeUsesIndex checks with EXPLAIN that ConsumeMessage finds the next message of a
// topic by a seek of the (workflow_id, topic, consumed, id) index, in its order (no sort),
// among many workflows' messages on many topics, many of them consumed.
func TestConsumeUsesIndex(t *testing.T) {
	t.Parallel()
	db := sharedDB(t)
	s := newStore(t, db)
	ctx := context.Background()

	ws := make([]storage.NewWorkflow, 50)
	for i := range ws {
		ws[i] = storage.NewWorkflow{Name: "mbox", Key: fmt.Sprint(i), Now: at(0)}
	}
	out, _, err := s.CreateWorkflows(ctx, ws)
	require.NoError(t, err)
	// 50 workflows × 4 topics × 20 messages, the first half of each topic consumed.
	var b strings.Builder
	var args []any
	b.WriteString("INSERT INTO " + s.messages + " (workflow_id, topic, payload, consumed, created_at) VALUES ")
	first := true
	for _, w := range out {
		for topic := range 4 {
			for i := range 20 {
				if !first {
					b.WriteString(", ")
				}
				first = false
				b.WriteString("(?, ?, '1', ?, ?)")
				args = append(args, w.ID, fmt.Sprint("topic", topic), i < 10, dbTime(at(0)))
			}
		}
	}
	_, err = db.ExecContext(ctx, b.String(), args...)
	require.NoError(t, err)
	_, err = db.ExecContext(ctx, "ANALYZE TABLE "+s.messages)
	require.NoError(t, err)

	plan := explain(t, db, s.q.nextMessage, bstr("recv"), out[25].ID, bstr("topic2"))
	t.Logf("ConsumeMessage's next message plan: %+v", plan)
	require.True(t, usesIndex(plan, "next_message"), "the next message must be a seek of the next_message index: %+v", plan)
	for _, r := range plan {
		require.NotEqual(t, "ALL", r.accessType, "no full scan of %s: %+v", r.table, plan)
		require.NotContains(t, r.extra, "filesort", "the index gives the id order: %+v", plan)
	}

	// And it does take the first unconsumed one.
	l := claimOne(t, s, "mbox", at(0))
	var want int64
	require.NoError(t, db.QueryRowContext(ctx, "SELECT MIN(id) FROM "+s.messages+" WHERE workflow_id = ? AND topic = 'topic2' AND NOT consumed", l.WorkflowID).Scan(&want))
	msg, ok, err := s.ConsumeMessage(ctx, l, storage.ConsumeRequest{Commit: storage.Commit{Now: at(time.Second)}, Topic: "topic2", Step: "recv"})
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, want, msg.ID)
}
