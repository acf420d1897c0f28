package storagetest

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/chronoforge/chronoforge/storage"
)

// FuzzCreate is a fuzz target for a backend's CreateWorkflow over s, for the backend's own
// Fuzz function to call:
//
//	func FuzzCreate(f *testing.F) { storagetest.FuzzCreate(f, openStore(f)) }
//
// Whatever the name, key, input and tags, CreateWorkflow either stores a workflow that reads
// back byte for byte (or returns the one stored before under that name and key), or returns
// an error wrapping ErrInvalid or ErrTooLarge and writes nothing: the workflow found under
// that name and key, if any, is the same before and after. It never panics. Plain `go test`
// runs the seeds; `go test -fuzz FuzzCreate` explores.
func FuzzCreate(f *testing.F, s storage.Storage) {
	f.Add("orders", "k-1", []byte(`{"n":1}`), "tenant", "acme", int64(0))
	f.Add("orders", "k-1", []byte(`{"n":2}`), "", "", int64(60))
	f.Add("a$b", "k", []byte{0xff, 0x00}, "", "", int64(0))
	f.Add("bin", "k\x00nul", []byte{0xff, 0xfe, 0x00}, "t", "", int64(1))
	f.Add("ü", "ключ 🔑", []byte(nil), "k", "v\u2028", int64(-1<<40))
	f.Add("long", string(bytes.Repeat([]byte("k"), storage.MaxKeyLen+1)), []byte("x"), "", "", int64(0))
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, name, key string, input []byte, tagKey, tagValue string, runAfterSeconds int64) {
		ctx := t.Context()
		w := storage.NewWorkflow{Name: name, Key: key, Input: input, Now: now, RunAt: now.Add(time.Duration(runAfterSeconds) * time.Second)}
		if tagKey != "" || tagValue != "" {
			w.Tags = map[string]string{tagKey: tagValue}
		}
		before, beforeErr := s.FindWorkflow(ctx, name, key)
		got, created, err := s.CreateWorkflow(ctx, w)
		if err != nil {
			if !errors.Is(err, storage.ErrInvalid) && !errors.Is(err, storage.ErrTooLarge) {
				t.Fatalf("CreateWorkflow(%q, %q): error %v wraps neither ErrInvalid nor ErrTooLarge", name, key, err)
			}
			after, afterErr := s.FindWorkflow(ctx, name, key)
			if (beforeErr == nil) != (afterErr == nil) || (afterErr == nil && after.UpdatedAt != before.UpdatedAt) {
				t.Fatalf("a refused CreateWorkflow(%q, %q) wrote: before %v (%v), after %v (%v)", name, key, before.ID, beforeErr, after.ID, afterErr)
			}
			return
		}
		if created == (beforeErr == nil) {
			t.Fatalf("CreateWorkflow(%q, %q): created %v, but a workflow existed before: %v", name, key, created, beforeErr == nil)
		}
		found, err := s.FindWorkflow(ctx, name, key)
		if err != nil {
			t.Fatalf("FindWorkflow(%q, %q) after it was stored: %v", name, key, err)
		}
		want := w
		if !created {
			want.Input, want.Tags = before.Input, before.Tags
		}
		if found.ID != got.ID || found.Name != name || found.Key != key || !bytes.Equal(found.Input, want.Input) ||
			!maps.Equal(found.Tags, want.Tags) {
			t.Fatalf("stored %q %q input %q tags %v; read back %q %q input %q tags %v",
				name, key, want.Input, want.Tags, found.Name, found.Key, found.Input, found.Tags)
		}
	})
}

// fuzzNow is the time of every call the fuzz targets make.
var fuzzNow = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// refusedInput fails t unless err is nil or wraps ErrInvalid or ErrTooLarge with a message.
func refusedInput(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if !errors.Is(err, storage.ErrInvalid) && !errors.Is(err, storage.ErrTooLarge) {
		t.Fatalf("%s: error %v wraps neither ErrInvalid nor ErrTooLarge", what, err)
	}
	if err.Error() == "" {
		t.Fatalf("%s: an empty error message", what)
	}
}

// fuzzName returns a workflow name no other fuzz process or run uses, so targets that share
// a database do not see each other's workflows.
func fuzzName(what string) string {
	return fmt.Sprintf("fuzz-%s-%016x", what, rand.Uint64())
}

// mustCreate creates a due workflow for a fuzz target's fixture.
func mustCreate(tb testing.TB, s storage.Storage, name, key string) storage.Workflow {
	tb.Helper()
	w, _, err := s.CreateWorkflow(tb.Context(), storage.NewWorkflow{Name: name, Key: key, Input: []byte(`{}`), Now: fuzzNow, RunAt: fuzzNow})
	if err != nil {
		tb.Fatalf("create the fixture workflow %q %q: %v", name, key, err)
	}
	return w
}

// FuzzList is a fuzz target for ListWorkflows over s, for the backend's own Fuzz function:
//
//	func FuzzList(f *testing.F) { storagetest.FuzzList(f, openStore(f)) }
//
// Whatever the filter (name, key prefix, state, keyset cursors AfterID and BeforeID, order,
// limit, tags), ListWorkflows returns an error wrapping ErrInvalid or ErrTooLarge, or a page
// whose every workflow matches the filter, in strict ID order, at most ListLimit long. When
// the filter names the target's own fixture (twelve workflows in two states), the page is
// exactly the one the filter selects from it. It never panics.
func FuzzList(f *testing.F, s storage.Storage) {
	name := fuzzName("list")
	var fixture []storage.Workflow
	for i := range 12 {
		fixture = append(fixture, mustCreate(f, s, name, fmt.Sprintf("k%02d", i)))
	}
	// Half of them cancelled, so a state filter has something to tell apart.
	for i := 0; i < len(fixture); i += 2 {
		if err := s.Cancel(f.Context(), fixture[i].ID, fuzzNow); err != nil {
			f.Fatalf("cancel fixture workflow %d: %v", fixture[i].ID, err)
		}
		fixture[i].State = storage.StateCancelled
	}
	first := fixture[0].ID
	f.Add(true, "", "k0", "", int64(0), int64(0), false, 0, "", "")
	f.Add(true, "", "k", "cancelled", first+2, first+9, true, 3, "", "")
	f.Add(true, "", "", "idle", int64(-1), int64(-1), true, -5, "t", "v")
	f.Add(false, "a$b", "%_\\", "bogus", int64(1<<62), int64(1), false, 1<<30, "", "")
	f.Add(false, "", "x", "", int64(0), int64(0), false, 0, "", "")
	f.Add(false, "ü\x00", "\xff", "running", first, first, true, 1001, "k\x00", "")
	f.Fuzz(func(t *testing.T, own bool, name0, prefix, state string, after, before int64, desc bool, limit int, tagKey, tagValue string) {
		l := storage.ListFilter{Name: name0, KeyPrefix: prefix, AfterID: after, BeforeID: before, Desc: desc, Limit: limit}
		if own {
			l.Name = name
		}
		if state != "" {
			l.States = []storage.State{storage.State(state)}
		}
		if tagKey != "" || tagValue != "" {
			l.Tags = map[string]string{tagKey: tagValue}
		}
		got, err := s.ListWorkflows(t.Context(), l)
		if err != nil {
			refusedInput(t, fmt.Sprintf("ListWorkflows(%+v)", l), err)
			return
		}
		checkPage(t, l, got)
		if own {
			if want := selectPage(l, fixture); !slices.Equal(ids(got), ids(want)) {
				t.Fatalf("ListWorkflows(%+v) = %v, want %v", l, ids(got), ids(want))
			}
		}
	})
}

// checkPage fails t unless every workflow of page matches l and the page is in l's order
// and within its limit.
func checkPage(t *testing.T, l storage.ListFilter, page []storage.Workflow) {
	t.Helper()
	if len(page) > storage.ListLimit(l) {
		t.Fatalf("ListWorkflows(%+v) returned %d workflows, more than the limit %d", l, len(page), storage.ListLimit(l))
	}
	for i, w := range page {
		if !pageMatches(l, w) {
			t.Fatalf("ListWorkflows(%+v) returned workflow %d %q %q %s, which the filter does not select", l, w.ID, w.Name, w.Key, w.State)
		}
		if i > 0 && (page[i-1].ID < w.ID) == l.Desc {
			t.Fatalf("ListWorkflows(%+v): IDs %v out of order (desc %v)", l, ids(page), l.Desc)
		}
	}
}

// pageMatches reports whether l selects w: matches, plus the bounds it leaves to paging
// (BeforeID) and the key prefix.
func pageMatches(l storage.ListFilter, w storage.Workflow) bool {
	return matches(w, l) && (l.BeforeID <= 0 || w.ID < l.BeforeID) && strings.HasPrefix(w.Key, l.KeyPrefix)
}

// selectPage is the page ListWorkflows should return for l out of all, sorted by ID.
func selectPage(l storage.ListFilter, all []storage.Workflow) []storage.Workflow {
	var out []storage.Workflow
	for _, w := range all {
		if pageMatches(l, w) {
			out = append(out, w)
		}
	}
	if l.Desc {
		slices.Reverse(out)
	}
	return out[:min(len(out), storage.ListLimit(l))]
}

// FuzzSendMessage is a fuzz target for SendMessage over s, for the backend's own Fuzz
// function. Whatever the topic, key and payload, SendMessage to an idle workflow either
// stores the message (so sending it again with the same key stores nothing) or returns an
// error wrapping ErrInvalid or ErrTooLarge and writes nothing: the workflow is unchanged and
// its key stays free (a valid send with the same key stores a new message). It never panics.
func FuzzSendMessage(f *testing.F, s storage.Storage) {
	name := fuzzName("send")
	f.Add("orders", "", []byte(`{"n":1}`))
	f.Add("orders", "k-1", []byte(nil))
	f.Add("", "k", []byte("x"))
	f.Add("t\x00", "", []byte{0xff})
	f.Add("t", "\xff\xfe", []byte("x"))
	f.Add("ü🔑", "k\u2028", []byte{0, 1, 2})
	f.Add(strings.Repeat("t", storage.MaxTopicLen+1), "", []byte("x"))
	f.Add("t", strings.Repeat("k", storage.MaxMessageKeyLen+1), []byte("x"))
	f.Fuzz(func(t *testing.T, topic, key string, payload []byte) {
		ctx := t.Context()
		w := mustCreate(t, s, name, fmt.Sprintf("%016x", rand.Uint64()))
		m := storage.NewMessage{WorkflowID: w.ID, Topic: topic, Key: key, Payload: payload, Now: fuzzNow}
		msg, created, err := s.SendMessage(ctx, m)
		if err == nil {
			if !created || msg.Topic != topic || !bytes.Equal(msg.Payload, payload) {
				t.Fatalf("SendMessage(%q, %q, %q) to a new workflow = created %v topic %q payload %q", topic, key, payload, created, msg.Topic, msg.Payload)
			}
			if key != "" {
				if _, again, err := s.SendMessage(ctx, m); err != nil || again {
					t.Fatalf("SendMessage(%q, key %q) again = created %v, %v; want nothing stored", topic, key, again, err)
				}
			}
			return
		}
		refusedInput(t, fmt.Sprintf("SendMessage(%q, %q, %d bytes)", topic, key, len(payload)), err)
		after, err := s.GetWorkflow(ctx, w.ID)
		if err != nil {
			t.Fatalf("GetWorkflow(%d) after a refused send: %v", w.ID, err)
		}
		if !after.UpdatedAt.Equal(w.UpdatedAt) || !after.RunAt.Equal(w.RunAt) || after.State != w.State {
			t.Fatalf("a refused SendMessage(%q, %q) changed workflow %d: %+v, then %+v", topic, key, w.ID, w, after)
		}
		if key != "" && storage.ValidateMessage(storage.NewMessage{WorkflowID: w.ID, Topic: "t", Key: key, Now: fuzzNow}) == nil {
			if _, created, err := s.SendMessage(ctx, storage.NewMessage{WorkflowID: w.ID, Topic: "t", Key: key, Now: fuzzNow}); err != nil || !created {
				t.Fatalf("a refused SendMessage(%q, key %q) kept its key: a valid send with it = created %v, %v", topic, key, created, err)
			}
		}
	})
}

// FuzzPutFlow is a fuzz target for PutFlow over s, whose backend must implement
// storage.FlowController, for the backend's own Fuzz function. Whatever the key and limits,
// PutFlow either stores the flow as given (ListFlows shows it so; the period may lose its
// digits below a microsecond, as times do) or returns an error
// wrapping ErrInvalid or ErrTooLarge and leaves the key's stored flow as it was. It never
// panics.
func FuzzPutFlow(f *testing.F, s storage.Storage) {
	fc, ok := s.(storage.FlowController)
	if !ok {
		f.Skip("the store has no flow control")
	}
	f.Add("orders", 0, 0, 0, int64(0))
	f.Add("orders", -3, 2, 5, int64(time.Second))
	f.Add("", 0, 0, 0, int64(0))
	f.Add("a$b", storage.MaxPriority+1, -1, 1, int64(0))
	f.Add("k\x00", 0, 0, 0, int64(time.Minute))
	f.Add("ü", storage.MinPriority, storage.MaxConcurrency+1, storage.MaxRate+1, int64(storage.MaxPer+1))
	f.Add("r", 1, 1, 1, int64(storage.MinPer-1))
	f.Fuzz(func(t *testing.T, key string, priority, concurrency, rate int, per int64) {
		ctx := t.Context()
		// Half of the keys are the fuzzer's own; the others exist, so a refusal must keep them.
		if key == "" || key[0]%2 == 0 {
			key = fuzzName("flow") + key
		}
		before, beforeOK := flowOf(t, fc, key)
		fl := storage.Flow{Key: key, Priority: priority, Concurrency: concurrency, Rate: rate, Per: time.Duration(per)}
		_, _, err := fc.PutFlow(ctx, fl, false, fuzzNow)
		after, afterOK := flowOf(t, fc, key)
		if err != nil {
			refusedInput(t, fmt.Sprintf("PutFlow(%+v)", fl), err)
			if beforeOK != afterOK || before != after {
				t.Fatalf("a refused PutFlow(%+v) wrote: before %+v (%v), after %+v (%v)", fl, before, beforeOK, after, afterOK)
			}
			return
		}
		// Like times, a period may lose its digits below a microsecond.
		fl.UpdatedAt = after.UpdatedAt
		if after.Per == fl.Per.Truncate(time.Microsecond) {
			fl.Per = after.Per
		}
		if !afterOK || after != fl {
			t.Fatalf("PutFlow(%+v) stored %+v (found %v)", fl, after, afterOK)
		}
		if _, err := fc.DeleteFlow(ctx, key); err != nil {
			t.Fatalf("DeleteFlow(%q): %v", key, err)
		}
	})
}

// flowOf returns the stored flow of key, if any, as ListFlows shows it.
func flowOf(t *testing.T, fc storage.FlowController, key string) (storage.Flow, bool) {
	t.Helper()
	flows, err := fc.ListFlows(t.Context(), fuzzNow)
	if err != nil {
		t.Fatalf("ListFlows: %v", err)
	}
	for _, st := range flows {
		if st.Key == key {
			st.Flow.UpdatedAt = st.Flow.UpdatedAt.UTC()
			return st.Flow, true
		}
	}
	return storage.Flow{}, false
}

// FuzzClaim is a fuzz target for Claim's lease owner over s, for the backend's own Fuzz
// function. Whatever the owner, Claim either takes the one due workflow of a fresh name under
// a lease whose owner reads back as Claim returned it (byte for byte when the owner is text:
// valid UTF-8 without NUL; PostgreSQL stores others with U+FFFD in place of what its text
// columns refuse), or returns an error wrapping ErrInvalid or ErrTooLarge and leaves the
// workflow unclaimed. It never panics.
func FuzzClaim(f *testing.F, s storage.Storage) {
	f.Add("worker-1")
	f.Add("")
	f.Add("host-12-\x00")
	f.Add("\xff\xfe")
	f.Add("ü🔑\u2028\n")
	f.Add(strings.Repeat("o", storage.MaxOwnerLen+1))
	f.Fuzz(func(t *testing.T, owner string) {
		ctx := t.Context()
		name := fuzzName("claim") // a refused claim leaves its workflow due: the next uses another name
		w := mustCreate(t, s, name, "k")
		got, err := s.Claim(ctx, storage.ClaimRequest{Owner: owner, Limit: 1, Names: []string{name}, TTL: time.Minute, Now: fuzzNow})
		if err != nil {
			refusedInput(t, fmt.Sprintf("Claim(owner %q)", owner), err)
			after, err := s.GetWorkflow(ctx, w.ID)
			if err != nil {
				t.Fatalf("GetWorkflow(%d) after a refused claim: %v", w.ID, err)
			}
			if after.State != storage.StateIdle || after.LeaseToken != w.LeaseToken {
				t.Fatalf("a refused Claim(owner %q) took workflow %d: state %s, token %d", owner, w.ID, after.State, after.LeaseToken)
			}
			// Out of the runnable queue: a claim examines a bounded number of other names'
			// due workflows.
			if err := s.Cancel(ctx, w.ID, fuzzNow); err != nil {
				t.Fatalf("cancel workflow %d: %v", w.ID, err)
			}
			return
		}
		text := utf8.ValidString(owner) && !strings.ContainsRune(owner, 0)
		if len(got) != 1 || got[0].ID != w.ID || (text && got[0].LeaseOwner != owner) {
			t.Fatalf("Claim(owner %q) = %d workflows (%v), want workflow %d with that owner", owner, len(got), leaseOwners(got), w.ID)
		}
		read, err := s.GetWorkflow(ctx, w.ID)
		if err != nil || read.LeaseOwner != got[0].LeaseOwner || read.LeaseToken != got[0].LeaseToken {
			t.Fatalf("workflow %d claimed by %q as %q token %d reads back owner %q token %d (%v)",
				w.ID, owner, got[0].LeaseOwner, got[0].LeaseToken, read.LeaseOwner, read.LeaseToken, err)
		}
	})
}

// leaseOwners returns the ID and lease owner of each workflow, for messages.
func leaseOwners(ws []storage.Workflow) []string {
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = fmt.Sprintf("%d by %q", w.ID, w.LeaseOwner)
	}
	return out
}
