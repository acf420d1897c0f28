package storagetest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// testCloseRefusesLaterCalls: after Close every method returns ErrClosed and writes nothing,
// and a second Close returns nil.
func testCloseRefusesLaterCalls(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w := f.create("closing", "k", at(0))
	require.NoError(t, f.s.Close(), "Close")
	_, err := f.s.GetWorkflow(f.ctx, w.ID)
	require.ErrorIs(t, err, storage.ErrClosed, "GetWorkflow after Close")
	_, _, err = f.s.CreateWorkflow(f.ctx, storage.NewWorkflow{Name: "closing", Key: "k2", Now: at(0)})
	require.ErrorIs(t, err, storage.ErrClosed, "CreateWorkflow after Close")
	_, err = f.s.Claim(f.ctx, storage.ClaimRequest{Owner: "w", Limit: 1, TTL: time.Minute, Now: at(0)})
	require.ErrorIs(t, err, storage.ErrClosed, "Claim after Close")
	_, err = f.s.ListErrors(f.ctx, w.ID, 0)
	require.ErrorIs(t, err, storage.ErrClosed, "ListErrors after Close")
	require.NoError(t, f.s.Close(), "a second Close returns nil")
}

// testListErrorsUnknown: ListErrors of an unknown workflow is ErrNotFound, of a workflow
// without errors an empty list.
func testListErrorsUnknown(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w := f.create("quiet", "k", at(0))
	errs, err := f.s.ListErrors(f.ctx, w.ID, 0)
	require.NoError(t, err)
	require.Empty(t, errs)
	_, err = f.s.ListErrors(f.ctx, w.ID+1000, 0)
	require.ErrorIs(t, err, storage.ErrNotFound, "ListErrors of an unknown workflow")
}
