package mysql

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// TestDSNVariants runs one workflow's life over pools whose DSN differ in what the backend
// must not depend on: parseTime, loc and interpolateParams. Times come back as the same
// instants (truncated to the microsecond), payloads byte for byte.
func TestDSNVariants(t *testing.T) {
	t.Parallel()
	for _, parseTime := range []bool{true, false} {
		for _, interpolate := range []bool{true, false} {
			for _, loc := range []*time.Location{time.UTC, time.FixedZone("UTC+5:30", 5*3600+1800)} {
				name := fmt.Sprintf("parseTime=%v,interpolateParams=%v,loc=%s", parseTime, interpolate, loc)
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					cfg := serverConfig(t)
					cfg.ParseTime, cfg.InterpolateParams, cfg.Loc = parseTime, interpolate, loc
					cfg.MaxAllowedPacket = 64 << 20 // the driver's default, larger than the server's
					s := newStore(t, openDB(t, cfg, 2))
					lifeCycle(t, s)
				})
			}
		}
	}
}

// lifeCycle creates, claims, writes, wakes and finishes one workflow, checking every time and
// payload read back.
func lifeCycle(t *testing.T, s *Store) {
	ctx := context.Background()
	odd := at(123456789 * time.Nanosecond) // sub-microsecond digits are truncated
	want := at(123456 * time.Microsecond)
	input := payload(3<<20, 7) // binary, and large enough to need long data when prepared

	w, created, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "dsn", Key: "k", Input: input, RunAt: odd, Now: odd})
	require.NoError(t, err)
	require.True(t, created)
	require.True(t, want.Equal(w.RunAt), "run at %v", w.RunAt)
	got, err := s.GetWorkflow(ctx, w.ID)
	require.NoError(t, err)
	require.Equal(t, w, got, "the created workflow reads back exactly as returned")

	before := time.Now()
	claimed := claimAll(t, s, odd, 1)
	require.Len(t, claimed, 1)
	l := claimed[0].Lease()
	require.True(t, want.Add(time.Minute).Equal(claimed[0].RunAt), "run at %v", claimed[0].RunAt)
	// The lease runs by the server's clock, UTC whatever loc says; the test server is local,
	// so it reads about what this process does (a shift by loc's offset would be hours).
	require.WithinRange(t, l.Until, before.Add(time.Minute-5*time.Minute), time.Now().Add(time.Minute+5*time.Minute), "lease until %v", l.Until)
	require.Equal(t, time.UTC, l.Until.Location())
	require.Equal(t, input, claimed[0].Input)

	result := payload(1<<20, 9)
	st := storage.Step{Name: "s", State: storage.StepCompleted, Attempts: 1, Result: result, CreatedAt: odd, CompletedAt: odd.Add(time.Second)}
	require.NoError(t, s.SaveSteps(ctx, l, storage.Commit{Steps: []storage.Step{st}, Now: odd.Add(time.Second)}))
	woken, err := s.Wake(ctx, w.ID, odd.Add(2*time.Second))
	require.NoError(t, err)
	require.True(t, woken)
	require.NoError(t, s.FinishRun(ctx, l, storage.Finish{Commit: storage.Commit{Now: odd.Add(3 * time.Second)}, State: storage.StateIdle, RunAt: odd.Add(time.Hour)}))

	loaded, steps, err := s.Load(ctx, w.ID)
	require.NoError(t, err)
	require.True(t, want.Add(2*time.Second).Equal(loaded.RunAt), "the wake during the run: %v", loaded.RunAt)
	require.True(t, want.Add(3*time.Second).Equal(loaded.UpdatedAt), "updated at %v", loaded.UpdatedAt)
	require.True(t, want.Equal(loaded.CreatedAt), "created at %v", loaded.CreatedAt)
	require.Len(t, steps, 1)
	require.True(t, want.Equal(steps[0].CreatedAt), "step created at %v", steps[0].CreatedAt)
	require.True(t, want.Add(time.Second).Equal(steps[0].CompletedAt), "step completed at %v", steps[0].CompletedAt)
	require.Equal(t, result, steps[0].Result)
	require.Equal(t, time.UTC, loaded.RunAt.Location(), "times come back in UTC")
}

// payload is n bytes of binary data with every byte value, so escaping is exercised.
func payload(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i) ^ seed
	}
	return b
}

// TestNamesAndKeysAreExact: names, keys and step names compare byte for byte: case, '$',
// trailing spaces and multi-byte text are significant, unlike under MySQL's PAD SPACE
// collations.
func TestNamesAndKeysAreExact(t *testing.T) {
	t.Parallel()
	s := newStore(t, sharedDB(t))
	ctx := context.Background()
	keys := []string{"k", "k ", "K", "k$a", "k$A", "ключ", "ключ ", "e\u0301", "\u00e9"}
	ids := map[string]int64{}
	for _, k := range keys {
		ids[k] = create(t, s, "job", k, at(0)).ID
	}
	require.Len(t, ids, len(keys))
	for _, k := range keys {
		w, err := s.FindWorkflow(ctx, "job", k)
		require.NoError(t, err, "key %q", k)
		require.Equal(t, ids[k], w.ID, "key %q", k)
		require.Equal(t, k, w.Key)
	}
	_, err := s.FindWorkflow(ctx, "Job", "k")
	require.ErrorIs(t, err, storage.ErrNotFound, "names are case-sensitive")

	got := claimAll(t, s, at(0), 1, "job")
	require.Len(t, got, 1)
	names := []string{"a", "a ", "A", "sleep$a"}
	var steps []storage.Step
	for _, n := range names {
		steps = append(steps, storage.Step{Name: n, State: storage.StepCompleted, Result: []byte(n)})
	}
	require.NoError(t, s.SaveSteps(ctx, got[0].Lease(), storage.Commit{Steps: steps, Now: at(time.Second)}))
	_, loaded, err := s.Load(ctx, got[0].ID)
	require.NoError(t, err)
	require.Len(t, loaded, len(names))
	for i, st := range loaded {
		require.Equal(t, names[i], st.Name)
		require.Equal(t, []byte(names[i]), st.Result)
	}
}
