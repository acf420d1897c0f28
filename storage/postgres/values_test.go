package postgres

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// TestFreeTextStored: error text that PostgreSQL's text type refuses (NUL bytes, invalid
// UTF-8) is stored with those bytes replaced rather than failing the write.
func TestFreeTextStored(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil)
	ctx := t.Context()
	now := time.Now()
	w, _, err := s.CreateWorkflow(ctx, storage.NewWorkflow{Name: "text", Key: "k", Now: now})
	require.NoError(t, err)
	got, err := s.Claim(ctx, storage.ClaimRequest{Owner: "owner\x00\xff", Limit: 1, TTL: time.Minute, Now: now})
	require.NoError(t, err)
	require.Len(t, got, 1)
	bad := "read \x00 from \xff\xfe"
	require.NoError(t, s.SaveSteps(ctx, got[0].Lease(), storage.Commit{
		Steps:  []storage.Step{{Name: "a", State: storage.StepPending, Attempts: 1, LastError: bad}},
		Errors: []storage.ErrorRecord{{Step: "a\x00", Type: "*T\xff", Message: bad, Attempt: 1}},
		Now:    now,
	}))
	want := "read \uFFFD from \uFFFD"
	lw, steps, err := s.Load(ctx, w.ID)
	require.NoError(t, err)
	require.Equal(t, want, lw.LastError)
	require.Equal(t, want, steps[0].LastError)
	errs, err := s.ListErrors(ctx, w.ID, 0)
	require.NoError(t, err)
	require.Equal(t, want, errs[0].Message)
	require.Equal(t, "a\uFFFD", errs[0].Step)
}

// TestMicrosecondTimes: times are kept to the microsecond (timestamptz); finer parts of a
// time passed in are dropped, never rounded up, so a claimed row is never due later than the
// worker computed. A lease's TTL is rounded up instead: a lease is never shorter than asked.
func TestMicrosecondTimes(t *testing.T) {
	t.Parallel()
	s := newStore(t, nil)
	now := time.Date(2030, 5, 6, 7, 8, 9, 123456789, time.FixedZone("CEST", 2*3600))
	w, _, err := s.CreateWorkflow(t.Context(), storage.NewWorkflow{Name: "time", Key: "k", Now: now})
	require.NoError(t, err)
	require.Equal(t, now.Truncate(time.Microsecond).UTC(), w.CreatedAt)
	require.Equal(t, time.UTC, w.RunAt.Location(), "times come back in UTC")
	got, err := s.Claim(t.Context(), storage.ClaimRequest{Owner: "w", Limit: 1, TTL: 999 * time.Nanosecond, Now: now})
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.False(t, got[0].RunAt.After(now.Add(999*time.Nanosecond)), "the claimed row is due again no later than computed")
	require.False(t, got[0].LeaseUntil.IsZero(), "a lease of under a microsecond is a lease")
}
