package storagetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// testLoadWithSteps: 200 steps written by several SaveSteps calls all come back from one Load,
// ordered by step ID, with results byte for byte as written.
func testLoadWithSteps(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("bulk")
	const n, perCommit = 200, 50
	want := make(map[string]storage.Step, n)
	commitOf := make(map[string]int, n)
	for c := 0; c < n/perCommit; c++ {
		var batch []storage.Step
		for i := c * perCommit; i < (c+1)*perCommit; i++ {
			// Names in an order unlike the order of writing, so sorting by name is caught.
			s := step(fmt.Sprintf("step-%03d", (i*37)%n), payload(100+i, byte(i)))
			commitOf[s.Name] = c
			if i%10 == 0 {
				s = storage.Step{Name: s.Name, State: storage.StepPending, Attempts: 2, Meta: []byte(fmt.Sprintf(`{"wake":%d}`, i)), LastError: "boom"}
			}
			batch = append(batch, s)
			want[s.Name] = s
		}
		f.save(l, storage.Commit{Steps: batch, Now: at(time.Duration(c+1) * time.Second)})
	}

	got, steps := f.load(w.ID)
	require.Equal(t, w.ID, got.ID)
	require.Equal(t, storage.StateRunning, got.State)
	require.Len(t, steps, n, "Load must return every step")
	seen := make(map[string]bool, n)
	for i, s := range steps {
		if i > 0 {
			require.Greater(t, s.ID, steps[i-1].ID, "steps must be ordered by step ID")
		}
		require.Equal(t, w.ID, s.WorkflowID, "step %q workflow id", s.Name)
		require.False(t, seen[s.Name], "step %q returned twice", s.Name)
		seen[s.Name] = true
		ws, ok := want[s.Name]
		require.True(t, ok, "unknown step %q", s.Name)
		require.Equal(t, ws.State, s.State, "step %q state", s.Name)
		require.Equal(t, ws.Attempts, s.Attempts, "step %q attempts", s.Name)
		require.Equal(t, ws.LastError, s.LastError, "step %q last error", s.Name)
		requireBytes(t, ws.Result, s.Result, fmt.Sprintf("step %q result", s.Name))
		requireBytes(t, ws.Meta, s.Meta, fmt.Sprintf("step %q meta", s.Name))
	}
	// Steps written by a later commit were created later, so they sort after earlier ones.
	for i, s := range steps {
		require.Equal(t, i/perCommit, commitOf[s.Name], "step %q sorts among the steps of another commit", s.Name)
	}
}

// testStepReplaceKeepsID: a step written again under the same name is replaced in place: same
// ID, same position, new content, no duplicate.
func testStepReplaceKeepsID(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("replace")
	// One commit each, so the order of their IDs is the order of writing; names sort otherwise.
	for i, s := range []storage.Step{
		step("zulu", []byte("z1")),
		{Name: "alpha", State: storage.StepPending, Attempts: 1, Meta: []byte("m1"), LastError: "first try"},
		step("mike", []byte("m1")),
	} {
		f.save(l, storage.Commit{Steps: []storage.Step{s}, Now: at(time.Duration(i+1) * time.Second)})
	}
	_, before := f.load(w.ID)
	require.Len(t, before, 3)
	require.Equal(t, []string{"zulu", "alpha", "mike"}, stepNames(before), "steps in ID order")

	f.save(l, storage.Commit{Steps: []storage.Step{
		{Name: "alpha", State: storage.StepCompleted, Attempts: 2, Result: []byte("a2"), Meta: []byte("m2")},
	}, Now: at(5 * time.Second)})
	f.finish(l, storage.Finish{Commit: storage.Commit{Steps: []storage.Step{step("mike", []byte("m2")), step("bravo", []byte("b1"))}, Now: at(6 * time.Second)}, State: storage.StateCompleted})

	_, after := f.load(w.ID)
	require.Equal(t, []string{"zulu", "alpha", "mike", "bravo"}, stepNames(after), "replacing a step keeps its position and adds no record")
	for i := range before {
		require.Equal(t, before[i].ID, after[i].ID, "step %q keeps its ID", before[i].Name)
	}
	requireBytes(t, []byte("z1"), after[0].Result, "untouched step")
	require.Equal(t, storage.StepCompleted, after[1].State, "replaced step state")
	require.Equal(t, 2, after[1].Attempts, "replaced step attempts")
	requireBytes(t, []byte("a2"), after[1].Result, "replaced step result")
	requireBytes(t, []byte("m2"), after[1].Meta, "replaced step meta")
	require.Empty(t, after[1].LastError, "replaced step last error")
	requireBytes(t, []byte("m2"), after[2].Result, "step replaced by FinishRun")
}

func stepNames(steps []storage.Step) []string {
	out := make([]string, 0, len(steps))
	for _, s := range steps {
		out = append(out, s.Name)
	}
	return out
}

// testSaveStepsValues: durable values are replaced only by a commit that carries them.
func testSaveStepsValues(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("values")
	require.Empty(t, w.Values, "a new workflow has no values")

	v1 := []byte(`{"attempt":1,"cart":["a","b"]}`)
	f.save(l, storage.Commit{Values: v1, Now: at(time.Second)})
	requireJSON(t, v1, f.get(w.ID).Values, "values after the first commit")

	f.save(l, storage.Commit{Steps: []storage.Step{step("a", nil)}, Now: at(2 * time.Second)})
	requireJSON(t, v1, f.get(w.ID).Values, "a commit without values keeps them")

	v2 := []byte(`{"attempt":2}`)
	f.save(l, storage.Commit{Values: v2, Now: at(3 * time.Second)})
	requireJSON(t, v2, f.get(w.ID).Values, "a commit with values replaces them")

	f.finish(l, storage.Finish{Commit: storage.Commit{Now: at(4 * time.Second)}, State: storage.StateCompleted})
	requireJSON(t, v2, f.get(w.ID).Values, "a finish without values keeps them")
}

// testSaveStepsErrors: error records are appended, listed oldest first, and the newest message
// shows on the workflow as LastError.
func testSaveStepsErrors(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("errors")
	other, lo := f.start("other")

	e1 := storage.ErrorRecord{Step: "charge", Attempt: 1, Type: "*net.OpError", Message: "dial: timeout", Values: []byte(`{"a":1}`)}
	e2 := storage.ErrorRecord{Step: "charge", Attempt: 2, Type: "*net.OpError", Message: "connection reset"}
	e3 := storage.ErrorRecord{Attempt: 1, Type: "*errors.errorString", Message: "workflow failed"}
	f.save(l, storage.Commit{
		Steps:  []storage.Step{{Name: "charge", State: storage.StepPending, Attempts: 1, LastError: e1.Message}},
		Errors: []storage.ErrorRecord{e1},
		Now:    at(time.Second),
	})
	require.Equal(t, e1.Message, f.get(w.ID).LastError)
	f.save(l, storage.Commit{Errors: []storage.ErrorRecord{e2}, Now: at(2 * time.Second)})
	f.save(l, storage.Commit{Errors: []storage.ErrorRecord{e3}, Now: at(3 * time.Second)})
	f.save(lo, storage.Commit{Errors: []storage.ErrorRecord{{Message: "elsewhere"}}, Now: at(2 * time.Second)})

	require.Equal(t, e3.Message, f.get(w.ID).LastError, "LastError is the newest error record's message")
	got, err := f.s.ListErrors(f.ctx, w.ID, 0)
	require.NoError(t, err)
	require.Len(t, got, 3)
	for i, want := range []storage.ErrorRecord{e1, e2, e3} {
		require.NotZero(t, got[i].ID)
		if i > 0 {
			require.Greater(t, got[i].ID, got[i-1].ID, "error records oldest first")
		}
		require.Equal(t, w.ID, got[i].WorkflowID)
		require.Equal(t, want.Step, got[i].Step, "error %d step", i)
		require.Equal(t, want.Attempt, got[i].Attempt, "error %d attempt", i)
		require.Equal(t, want.Type, got[i].Type, "error %d type", i)
		require.Equal(t, want.Message, got[i].Message, "error %d message", i)
		requireJSON(t, want.Values, got[i].Values, fmt.Sprintf("error %d values", i))
	}
	_, steps := f.load(w.ID)
	require.Len(t, steps, 1)
	require.Equal(t, e1.Message, steps[0].LastError)

	firstTwo, err := f.s.ListErrors(f.ctx, w.ID, 2)
	require.NoError(t, err)
	require.Equal(t, []int64{got[0].ID, got[1].ID}, []int64{firstTwo[0].ID, firstTwo[1].ID}, "a limited listing gives the oldest")
	require.Len(t, firstTwo, 2)

	others, err := f.s.ListErrors(f.ctx, other.ID, 0)
	require.NoError(t, err)
	require.Len(t, others, 1, "error records belong to their own workflow")
	require.Equal(t, "elsewhere", others[0].Message)
}

// testListErrorsLimit: a limit of 0 lists the 100 oldest records; a larger limit lists more.
func testListErrorsLimit(t *testing.T, factory Factory) {
	f := newFixture(t, factory)
	w, l := f.start("many-errors")
	const commits, perCommit = 3, 50
	for c := range commits {
		recs := make([]storage.ErrorRecord, perCommit)
		for i := range recs {
			recs[i] = storage.ErrorRecord{Step: "poll", Attempt: c*perCommit + i + 1, Message: fmt.Sprintf("commit %d", c)}
		}
		f.save(l, storage.Commit{Errors: recs, Now: at(time.Duration(c+1) * time.Second)})
	}

	def, err := f.s.ListErrors(f.ctx, w.ID, 0)
	require.NoError(t, err)
	require.Len(t, def, 100, "limit 0 means 100")
	for i, e := range def {
		require.Equal(t, fmt.Sprintf("commit %d", i/perCommit), e.Message, "record %d: oldest first", i)
	}
	all, err := f.s.ListErrors(f.ctx, w.ID, 500)
	require.NoError(t, err)
	require.Len(t, all, commits*perCommit)
	require.Equal(t, "commit 2", all[len(all)-1].Message, "newest last")
}
