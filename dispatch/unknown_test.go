package dispatch

import (
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/storage"
)

func TestUnknownNamesAreReportedAndLeftAlone(t *testing.T) {
	t.Parallel()
	store := openStore(t)
	clock := newClock()
	now := clock.Now()
	create := func(name, key string, at time.Time) storage.Workflow {
		wf, created, err := store.CreateWorkflow(bg, storage.NewWorkflow{Name: name, Key: key, Input: []byte(`1`), RunAt: at, Now: now})
		require.NoError(t, err)
		require.True(t, created)
		return wf
	}
	foreign := []storage.Workflow{
		create("billing.invoice", "inv-1", now),
		create("billing.invoice", "inv-2", now),
		create("legacy.export", "exp-1", now),
	}
	create("billing.invoice", "not-due", now.Add(time.Hour)) // not due: not reported

	logs := &logBuffer{}
	echo := sdk.New("echo", func(c *sdk.Context, in string) (string, error) { return in, nil })
	eng, err := sdk.NewEngine(store, sdk.WithWorkflows(echo), sdk.WithClock(clock),
		sdk.WithLogger(slog.New(slog.NewTextHandler(logs, nil))))
	require.NoError(t, err)
	w := newWorker(t, eng, UnknownCheckEvery(time.Minute))
	r := run(t, w)

	h, err := echo.Start(bg, eng, "k", "mine")
	require.NoError(t, err)
	require.Equal(t, "mine", result(t, h))
	eventually(t, func() bool { return w.Stats().UnknownWorkflows == 3 }, "checked at start")
	eventually(t, func() bool { return clock.count(time.Minute) >= 1 }, "next check armed")
	out := logs.String()
	require.Contains(t, out, "workflow=billing.invoice count=2 example_key=inv-1")
	require.Contains(t, out, "workflow=legacy.export count=1 example_key=exp-1")
	require.Contains(t, out, "level=WARN")

	// A later check sees what changed meanwhile.
	create("legacy.export", "exp-2", now)
	clock.Advance(time.Minute)
	eventually(t, func() bool { return w.Stats().UnknownWorkflows == 4 }, "periodic check sees exp-2")
	require.NoError(t, r.stop(t))

	for _, f := range foreign {
		got := stored(t, store, f.ID)
		require.Equal(t, storage.StateIdle, got.State)
		require.True(t, got.RunAt.Equal(f.RunAt), "RunAt unchanged")
		require.Zero(t, got.LeaseToken, "never claimed")
		require.Empty(t, got.LeaseOwner)
	}
}
