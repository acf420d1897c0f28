package sdk_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

var mirror = sdk.New("mirror", func(c *sdk.Context, in string) (string, error) { return in, nil })

func TestStartManyIsOneStorageCallPerBatchAndIdempotent(t *testing.T) {
	t.Parallel()
	e := newMemEnv(t, sdk.WithWorkflows(mirror))
	const n = 10000
	starts := make([]sdk.Start[string], n)
	for i := range starts {
		starts[i] = sdk.Start[string]{Key: fmt.Sprint("k", i), Input: fmt.Sprint("in", i)}
	}
	hs, err := mirror.StartMany(ctx, e.eng, starts)
	require.NoError(t, err)
	require.Len(t, hs, n)
	want := (n + sdk.DefaultStartBatch - 1) / sdk.DefaultStartBatch
	require.EqualValues(t, want, e.count.creates.Load(), "⌈N/batch⌉ storage calls")
	for i, h := range hs {
		require.Equal(t, fmt.Sprint("k", i), h.Key(), "handles follow the order of starts")
	}

	// Again, with one new key and changed inputs: the stored workflows win, one is created.
	starts[0].Input = "changed"
	starts = append(starts, sdk.Start[string]{Key: "new", Input: "fresh"})
	again, err := mirror.StartMany(ctx, e.eng, starts)
	require.NoError(t, err)
	require.Equal(t, hs[0].ID(), again[0].ID())
	require.EqualValues(t, 2*want+1, e.count.creates.Load())

	require.Equal(t, `"in0"`, string(e.state(again[0].ID()).Input), "the stored input wins")
	require.Equal(t, `"fresh"`, string(e.state(again[n].ID()).Input))
}

func TestStartManyRefusesBadStartsAndWritesNothing(t *testing.T) {
	t.Parallel()
	e := newMemEnv(t, sdk.WithWorkflows(mirror))
	for _, tc := range []struct {
		name   string
		starts []sdk.Start[string]
	}{
		{"duplicate key", []sdk.Start[string]{{Key: "a"}, {Key: "b"}, {Key: "a"}}},
		{"empty key", []sdk.Start[string]{{Key: "a"}, {Key: ""}}},
		{"'$' in key", []sdk.Start[string]{{Key: "a$b"}}},
		{"bad tag", []sdk.Start[string]{{Key: "a", Opts: []sdk.StartOption{sdk.Tags(map[string]string{"": "x"})}}}},
		{"negative delay", []sdk.Start[string]{{Key: "a", Opts: []sdk.StartOption{sdk.StartAfter(-time.Second)}}}},
	} {
		_, err := mirror.StartMany(ctx, e.eng, tc.starts)
		require.ErrorIs(t, err, sdk.ErrInvalid, tc.name)
	}
	page, err := e.store.ListWorkflows(ctx, storage.ListFilter{})
	require.NoError(t, err)
	require.Empty(t, page, "refused starts wrote nothing")
	require.Zero(t, e.count.creates.Load())
}

func TestStartAtAndStartAfterWithTheFakeClock(t *testing.T) {
	t.Parallel()
	e := newMemEnv(t, sdk.WithWorkflows(mirror))
	later, err := mirror.Start(ctx, e.eng, "at", "x", sdk.StartAt(t0.Add(time.Hour)))
	require.NoError(t, err)
	delayed, err := mirror.Start(ctx, e.eng, "after", "y", sdk.StartAfter(10*time.Minute), sdk.Tags(map[string]string{"tenant": "acme"}))
	require.NoError(t, err)
	now, err := mirror.Start(ctx, e.eng, "now", "z")
	require.NoError(t, err)

	require.Equal(t, 1, e.drain(), "only the workflow without a start time runs")
	d, err := delayed.Describe(ctx)
	require.NoError(t, err)
	require.Equal(t, sdk.StateIdle, d.State)
	require.Equal(t, t0.Add(10*time.Minute), d.RunAt)
	require.Equal(t, map[string]string{"tenant": "acme"}, d.Tags)

	e.clock.Advance(10 * time.Minute)
	require.Equal(t, 1, e.drain())
	e.clock.Advance(50*time.Minute - time.Microsecond)
	require.Equal(t, 0, e.drain(), "StartAt is respected to the microsecond")
	e.clock.Advance(time.Microsecond)
	require.Equal(t, 1, e.drain())
	for _, h := range []*sdk.Handle[string]{later, delayed, now} {
		d, err := h.Describe(ctx)
		require.NoError(t, err)
		require.Equal(t, sdk.StateCompleted, d.State, h.Key())
		require.True(t, d.State.Final())
	}
}

func TestHandlesByIDAndByKey(t *testing.T) {
	t.Parallel()
	e := newMemEnv(t, sdk.WithWorkflows(mirror))
	h, err := mirror.Start(ctx, e.eng, "k", "v")
	require.NoError(t, err)
	byID, err := mirror.LookupID(ctx, e.eng, h.ID())
	require.NoError(t, err)
	byKey, err := mirror.Lookup(ctx, e.eng, "k")
	require.NoError(t, err)
	require.Equal(t, h.ID(), byID.ID())
	require.Equal(t, h.ID(), byKey.ID())
	_, err = mirror.LookupID(ctx, e.eng, h.ID()+100)
	require.ErrorIs(t, err, sdk.ErrNotFound)
	other := sdk.New("other", func(c *sdk.Context, in string) (string, error) { return in, nil })
	_, err = other.LookupID(ctx, e.eng, h.ID())
	require.ErrorIs(t, err, sdk.ErrNotFound, "an id of another workflow name is not found")
}

func TestListFiltersByTagsAndState(t *testing.T) {
	t.Parallel()
	e := newMemEnv(t, sdk.WithWorkflows(mirror))
	for i := range 6 {
		tags := map[string]string{"tenant": []string{"acme", "globex"}[i%2]}
		_, err := mirror.Start(ctx, e.eng, fmt.Sprint("k", i), "x", sdk.Tags(tags), sdk.StartAfter(time.Duration(i%3)*time.Hour))
		require.NoError(t, err)
	}
	e.drain() // k0 and k3 run now
	acme, err := e.eng.List(ctx, sdk.Filter{Tags: map[string]string{"tenant": "acme"}})
	require.NoError(t, err)
	require.Len(t, acme, 3)
	for _, d := range acme {
		require.Equal(t, "acme", d.Tags["tenant"])
	}
	done, err := e.eng.List(ctx, sdk.Filter{Name: "mirror", States: []sdk.State{sdk.StateCompleted}})
	require.NoError(t, err)
	require.Len(t, done, 2)
	_, err = e.eng.List(ctx, sdk.Filter{Tags: map[string]string{"bad\nkey": ""}})
	require.ErrorIs(t, err, sdk.ErrInvalid)
}
