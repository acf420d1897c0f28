package sdk_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/chronoforge/chronoforge/sdk"
	"github.com/chronoforge/chronoforge/sdktest"
	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storage/memory"
)

// The SDK's fuzz targets: the calls that take outside data (Start's key, input and options,
// Send's topic, key and payload, flow limits, the positional cursors of SpawnEach's sources)
// and the stored fuzzPayloads the codec decodes into typed values. Their property: an error
// wrapping ErrInvalid, ErrTooLarge or ErrDecode (a decode failure fails the workflow, naming
// it), or success, nothing written on error, and never a panic. `make fuzz` explores; plain
// `go test` runs the seeds.

// refusedInput fails t unless err is nil or wraps ErrInvalid or ErrTooLarge.
func refusedInput(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil && !errors.Is(err, sdk.ErrInvalid) && !errors.Is(err, sdk.ErrTooLarge) {
		t.Fatalf("%s: error %v wraps neither ErrInvalid nor ErrTooLarge", what, err)
	}
}

// fuzzEcho is a workflow that returns its input, raw.
var fuzzEcho = sdk.New("fuzz-echo", func(c *sdk.Context, in json.RawMessage) (json.RawMessage, error) { return in, nil })

func FuzzStart(f *testing.F) {
	f.Add("k-1", []byte(`{"n":1}`), "tenant", "acme", int64(0))
	f.Add("", []byte(`1`), "", "", int64(0))
	f.Add("a$b", []byte(`"x"`), "", "", int64(time.Hour))
	f.Add("k", []byte(`{"n":`), "", "", int64(0))
	f.Add("k\x00", []byte{0xff}, "t\x00", "v", int64(-1))
	f.Add("ключ 🔑", []byte(` [1, 2] `), "k", "v\u2028", int64(1<<62))
	f.Add(strings.Repeat("k", storage.MaxKeyLen+1), []byte(`null`), "", "", int64(0))
	f.Fuzz(func(t *testing.T, key string, input []byte, tagKey, tagValue string, delay int64) {
		env := sdktest.New(t, fuzzEcho)
		ctx := t.Context()
		opts := []sdk.StartOption{sdk.StartAfter(time.Duration(delay))}
		if tagKey != "" || tagValue != "" {
			opts = append(opts, sdk.Tags(map[string]string{tagKey: tagValue}))
		}
		h, err := fuzzEcho.Start(ctx, env.Engine(), key, json.RawMessage(input), opts...)
		if err != nil {
			refusedInput(t, fmt.Sprintf("Start(%q, %q)", key, input), err)
			if ws, err := env.Store().ListWorkflows(ctx, storage.ListFilter{}); err != nil || len(ws) != 0 {
				t.Fatalf("a refused Start(%q, %q) wrote %d workflows (%v)", key, input, len(ws), err)
			}
			return
		}
		wf, err := env.Store().GetWorkflow(ctx, h.ID())
		if err != nil {
			t.Fatalf("GetWorkflow of the started %q: %v", key, err)
		}
		var compact bytes.Buffer
		if json.Compact(&compact, input) != nil || !bytes.Equal(wf.Input, compact.Bytes()) {
			t.Fatalf("Start(%q, %q) stored input %q", key, input, wf.Input)
		}
		if wf.Key != key || h.Key() != key || (len(opts) > 1 && !maps.Equal(wf.Tags, map[string]string{tagKey: tagValue})) {
			t.Fatalf("Start(%q) stored key %q tags %v; handle key %q", key, wf.Key, wf.Tags, h.Key())
		}
		// Stores keep microseconds.
		if want := env.Now().Add(time.Duration(delay)).Truncate(time.Microsecond); delay >= 0 && !wf.RunAt.Equal(want) {
			t.Fatalf("Start(%q, StartAfter(%v)) runs at %v, want %v", key, time.Duration(delay), wf.RunAt, want)
		}
	})
}

// fuzzReceiver waits for one message on topic "t" and returns it, raw.
var fuzzReceiver = sdk.New("fuzz-receiver", func(c *sdk.Context, _ struct{}) (json.RawMessage, error) {
	return sdk.Receive[json.RawMessage](c, "m", "t")
})

func FuzzSend(f *testing.F) {
	f.Add("t", "", []byte(`{"n":1}`))
	f.Add("t", "k-1", []byte(`[1,2]`))
	f.Add("other", "", []byte(`1`))
	f.Add("", "", []byte(`1`))
	f.Add("a$b", "", []byte(`1`))
	f.Add("t", "\xff", []byte(`1`))
	f.Add("t", "", []byte(`{"n":`))
	f.Add("t\x00", "k\n", []byte{0xff})
	f.Fuzz(func(t *testing.T, topic, key string, payload []byte) {
		env := sdktest.New(t, fuzzReceiver)
		ctx := t.Context()
		h, err := fuzzReceiver.Start(ctx, env.Engine(), "k", struct{}{})
		if err != nil {
			t.Fatalf("start the fuzzReceiver: %v", err)
		}
		env.Drain() // it waits for the message
		before := env.Describe(h)
		err = sdk.Send(ctx, env.Engine(), h, topic, json.RawMessage(payload), sdk.MessageKey(key))
		env.Drain()
		after := env.Describe(h)
		if err != nil {
			refusedInput(t, fmt.Sprintf("Send(%q, %q, %q)", topic, key, payload), err)
			if after.State != sdk.StateIdle || !after.UpdatedAt.Equal(before.UpdatedAt) {
				t.Fatalf("a refused Send(%q, %q) changed the fuzzReceiver: %s at %v, then %s at %v", topic, key, before.State, before.UpdatedAt, after.State, after.UpdatedAt)
			}
			return
		}
		if topic != "t" {
			if after.State != sdk.StateIdle {
				t.Fatalf("a message on topic %q moved the fuzzReceiver of topic t to %s", topic, after.State)
			}
			return
		}
		got, err := sdktest.Result(env, h)
		var compact bytes.Buffer
		if err != nil || json.Compact(&compact, payload) != nil || !bytes.Equal(got, compact.Bytes()) {
			t.Fatalf("Send(%q) of %q: the fuzzReceiver returned %q, %v", topic, payload, got, err)
		}
	})
}

// fuzzOrder is the typed value FuzzStoredPayloads decodes stored bytes into.
type fuzzOrder struct {
	N int    `json:"n"`
	S string `json:"s"`
}

// fuzzPayloads sums the orders it decodes from its input, its step "a", its durable value "v" and
// its message "m" on topic "t".
var fuzzPayloads = sdk.New("fuzz-payloads", func(c *sdk.Context, in fuzzOrder) (int, error) {
	a, err := sdk.Step(c, "a", func(context.Context) (fuzzOrder, error) { return fuzzOrder{N: 1000}, nil })
	if err != nil {
		return 0, err
	}
	v, _, err := sdk.Get[fuzzOrder](c, "v")
	if err != nil {
		return 0, err
	}
	m, err := sdk.Receive[fuzzOrder](c, "m", "t")
	if err != nil {
		return 0, err
	}
	return in.N + a.N + v.N + m.N, nil
})

// FuzzStoredPayloads writes arbitrary bytes where the SDK keeps fuzzPayloads (a workflow's input,
// a completed step's result, the durable values, a message), as a store written by another
// version or by hand would hold them, and runs the workflow, which decodes each into a typed
// value. It completes with the sum of what it decoded when every payload decodes (as
// encoding/json decodes it), and otherwise fails, its last error naming the decode failure;
// it never panics or hangs.
func FuzzStoredPayloads(f *testing.F) {
	f.Add([]byte(`{"n":1}`), []byte(`{"n":2}`), []byte(`{"v":{"n":3}}`), []byte(`{"n":4}`))
	f.Add([]byte(`{"n":1}`), []byte(`{"n":2}`), []byte(`{}`), []byte(`null`))
	f.Add([]byte(`{"n":"x"}`), []byte(`{"n":2}`), []byte(`{}`), []byte(`{}`))
	f.Add([]byte(`{}`), []byte(`[1]`), []byte(`{}`), []byte(`{}`))
	f.Add([]byte(`{}`), []byte(`{}`), []byte(`[]`), []byte(`{}`))
	f.Add([]byte(`{}`), []byte(`{}`), []byte(`{"v":"x"}`), []byte(`{}`))
	f.Add([]byte(`{}`), []byte(`{}`), []byte(`{}`), []byte(`{"n":1e3}`))
	f.Add([]byte{0xff}, []byte(nil), []byte(nil), []byte(nil))
	f.Add([]byte(`{"n":9223372036854775807}`), []byte(`{"n":1}`), []byte(`{"v":{"n":1,"s":"\ud800"}}`), []byte(` {"n" : -1} `))
	f.Fuzz(func(t *testing.T, input, result, values, message []byte) {
		env := sdktest.New(t, fuzzPayloads)
		id, ok := seedPayloads(t, env, input, result, values, message)
		if !ok {
			return // the store refused the bytes (too large): nothing to decode
		}
		env.Drain()
		d := env.Describe(sdk.WorkflowID(id))
		want, decodes := sumOrders(input, result, values, message)
		switch {
		case decodes && d.State == sdk.StateCompleted:
			h, err := fuzzPayloads.LookupID(t.Context(), env.Engine(), id)
			if err != nil {
				t.Fatalf("LookupID(%d): %v", id, err)
			}
			if got, err := sdktest.Result(env, h); err != nil || got != want {
				t.Fatalf("fuzzPayloads %q %q %q %q: result %d, %v; want %d", input, result, values, message, got, err, want)
			}
		case !decodes && d.State == sdk.StateFailed:
			if !strings.Contains(d.LastError, "cannot decode") {
				t.Fatalf("fuzzPayloads %q %q %q %q: failed with %q, which does not name the decode failure", input, result, values, message, d.LastError)
			}
		default:
			t.Fatalf("fuzzPayloads %q %q %q %q (decode: %v): workflow ended %s: %s", input, result, values, message, decodes, d.State, d.LastError)
		}
	})
}

// seedPayloads stores a fuzzPayloads workflow with the given input, its step "a" completed with
// result, its durable values and a message, directly in env's store. It reports false when
// the store refuses the bytes as too large.
func seedPayloads(t *testing.T, env *sdktest.Env, input, result, values, message []byte) (int64, bool) {
	t.Helper()
	ctx, st, now := t.Context(), env.Store(), env.Now()
	wf, _, err := st.CreateWorkflow(ctx, storage.NewWorkflow{Name: fuzzPayloads.Name(), Key: "k", Input: input, Now: now, RunAt: now})
	if errors.Is(err, storage.ErrTooLarge) {
		return 0, false
	}
	if err != nil {
		t.Fatalf("seed the workflow: %v", err)
	}
	claimed, err := st.Claim(ctx, storage.ClaimRequest{Owner: "seed", Limit: 1, Names: []string{fuzzPayloads.Name()}, TTL: time.Minute, Now: now})
	if err != nil || len(claimed) != 1 {
		t.Fatalf("claim the seeded workflow: %d, %v", len(claimed), err)
	}
	lease := claimed[0].Lease()
	step := storage.Step{Name: "a", State: storage.StepCompleted, Attempts: 1, Result: result, CreatedAt: now, CompletedAt: now}
	if err := st.SaveSteps(ctx, lease, storage.Commit{Steps: []storage.Step{step}, Values: values, Now: now}); errors.Is(err, storage.ErrTooLarge) {
		return 0, false
	} else if err != nil {
		t.Fatalf("seed the step and values: %v", err)
	}
	if err := st.Release(ctx, lease, now); err != nil {
		t.Fatalf("release the seeded workflow: %v", err)
	}
	if _, _, err := st.SendMessage(ctx, storage.NewMessage{WorkflowID: wf.ID, Topic: "t", Payload: message, Now: now}); errors.Is(err, storage.ErrTooLarge) {
		return 0, false
	} else if err != nil {
		t.Fatalf("seed the message: %v", err)
	}
	return wf.ID, true
}

// sumOrders is what the fuzzPayloads workflow returns for these stored bytes, and whether every
// one of them decodes. Empty values are no values: the store keeps none.
func sumOrders(input, result, values, message []byte) (int, bool) {
	var in, a, v, m fuzzOrder
	if json.Unmarshal(input, &in) != nil || json.Unmarshal(result, &a) != nil || json.Unmarshal(message, &m) != nil {
		return 0, false
	}
	if len(values) > 0 {
		var all map[string]json.RawMessage
		if json.Unmarshal(values, &all) != nil {
			return 0, false
		}
		if raw, ok := all["v"]; ok && json.Unmarshal(raw, &v) != nil {
			return 0, false
		}
	}
	return in.N + a.N + v.N + m.N, true
}

// FuzzSourceCursor gives the positional sources (SliceSource, SeqSource) any stored cursor
// and page size: both refuse the cursor with an error wrapping ErrDecode, or both read, page
// by page from it to the end, exactly the items from the cursor's offset on, each page at
// most limit long.
func FuzzSourceCursor(f *testing.F) {
	f.Add([]byte(nil), 3)
	f.Add([]byte(`0`), 1)
	f.Add([]byte(`7`), 5)
	f.Add([]byte(`10`), 1)
	f.Add([]byte(`-1`), 1)
	f.Add([]byte(`9223372036854775807`), 1000)
	f.Add([]byte(`1e3`), 1)
	f.Add([]byte(`"2"`), 1)
	f.Add([]byte(` 2 `), 1)
	f.Fuzz(func(t *testing.T, cursor []byte, limit int) {
		if limit < 1 || limit > storage.MaxSpawnBatch {
			return // SpawnEach refuses such a batch size before it reads a page
		}
		items := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
		seq := func(yield func(int) bool) {
			for _, v := range items {
				if !yield(v) {
					return
				}
			}
		}
		fromSlice, err := readAll(t, sdk.SliceSource(items), cursor, limit)
		fromSeq, seqErr := readAll(t, sdk.SeqSource(seq), cursor, limit)
		if (err == nil) != (seqErr == nil) {
			t.Fatalf("cursor %q: SliceSource %v, SeqSource %v", cursor, err, seqErr)
		}
		if err != nil {
			if !errors.Is(err, sdk.ErrDecode) || !errors.Is(seqErr, sdk.ErrDecode) {
				t.Fatalf("cursor %q: errors %v and %v do not wrap ErrDecode", cursor, err, seqErr)
			}
			return
		}
		var off int
		if len(cursor) > 0 {
			_ = json.Unmarshal(cursor, &off)
		}
		want := items[min(off, len(items)):]
		if fmt.Sprint(fromSlice) != fmt.Sprint(want) || fmt.Sprint(fromSeq) != fmt.Sprint(want) {
			t.Fatalf("from cursor %q by %d: SliceSource read %v, SeqSource %v; want %v", cursor, limit, fromSlice, fromSeq, want)
		}
	})
}

// readAll reads src page by page from cursor until an empty page, as SpawnEach does, and
// returns the values read. It fails t on a page longer than limit, a keyed item, or a source
// that does not end.
func readAll(t *testing.T, src sdk.Source[int], cursor []byte, limit int) ([]int, error) {
	t.Helper()
	var out []int
	for range 100 {
		page, next, err := src.Page(t.Context(), cursor, limit)
		if err != nil {
			return out, err
		}
		if len(page) == 0 {
			return out, nil
		}
		if len(page) > limit {
			t.Fatalf("a page of %d items for a limit of %d", len(page), limit)
		}
		for _, it := range page {
			if it.Key != "" {
				t.Fatalf("a positional source gave item %v a key %q", it.Value, it.Key)
			}
			out = append(out, it.Value)
		}
		cursor = next
	}
	t.Fatalf("the source did not end after 100 pages from cursor %q", cursor)
	return nil, nil
}

// FuzzFlowLimits gives WithFlowGroup any group key and limits: NewEngine refuses them with an
// error wrapping ErrInvalid, or registers them, and SyncFlows then stores exactly those
// limits.
func FuzzFlowLimits(f *testing.F) {
	f.Add("tenants", 0, 2, 5, int64(time.Second))
	f.Add("g", 3, 0, 0, int64(0))
	f.Add("", 0, 0, 0, int64(0))
	f.Add("a$b", -1, -1, 1, int64(0))
	f.Add("g\x00", storage.MaxPriority+1, 0, 0, int64(0))
	f.Add("g", 0, storage.MaxConcurrency+1, storage.MaxRate+1, int64(storage.MaxPer+1))
	f.Add("g", 0, 0, 1, int64(storage.MinPer-1))
	f.Fuzz(func(t *testing.T, group string, priority, concurrency, rate int, per int64) {
		l := sdk.Limits{Priority: priority, Concurrency: concurrency, Rate: rate, Per: time.Duration(per)}
		member := sdk.New("fuzz-member", func(c *sdk.Context, _ struct{}) (int, error) { return 0, nil }, sdk.InFlowGroup(group))
		st := memory.New()
		defer func() { _ = st.Close() }()
		eng, err := sdk.NewEngine(st, sdk.WithWorkflows(member), sdk.WithFlowGroup(group, l), sdk.WithLogger(quietLogger()))
		if err != nil {
			refusedInput(t, fmt.Sprintf("NewEngine(WithFlowGroup(%q, %+v))", group, l), err)
			if err == nil || errors.Is(err, sdk.ErrTooLarge) {
				t.Fatalf("NewEngine(WithFlowGroup(%q, %+v)): %v, want an error wrapping ErrInvalid", group, l, err)
			}
			return
		}
		if err := eng.SyncFlows(t.Context()); err != nil {
			t.Fatalf("SyncFlows of the accepted group %q %+v: %v", group, l, err)
		}
		flows, err := eng.Flows(t.Context())
		if err != nil {
			t.Fatalf("Flows: %v", err)
		}
		for _, fl := range flows {
			if fl.Key == group {
				if fl.Priority != l.Priority || fl.Concurrency != l.Concurrency || fl.Rate != l.Rate || fl.Per != l.Per {
					t.Fatalf("WithFlowGroup(%q, %+v) stored %+v", group, l, fl.Flow)
				}
				return
			}
		}
		t.Fatalf("WithFlowGroup(%q, %+v): no stored flow after SyncFlows (flows %+v)", group, l, flows)
	})
}

// FuzzRetryPolicy runs a step that fails its first attempts under a retry policy of any
// name, attempts, delays and jitter: an invalid policy fails the workflow with an error
// naming it (ErrInvalid); a valid one completes the workflow when the step fails fewer times
// than MaxAttempts and stalls it otherwise. Delay(n) stays within 0..Cap (when set) and never
// shrinks as n grows.
func FuzzRetryPolicy(f *testing.F) {
	f.Add("", 3, int64(time.Second), int64(time.Minute), false, uint8(2))
	f.Add("net", 1, int64(0), int64(0), true, uint8(1))
	f.Add("p", 0, int64(1), int64(1), false, uint8(0))
	f.Add("p", 2, int64(-1), int64(0), false, uint8(1))
	f.Add("p\x00\xff", 4, int64(time.Hour), int64(-5), true, uint8(3))
	f.Add("\xff", 2, int64(time.Millisecond), int64(0), false, uint8(3))
	f.Add(strings.Repeat("n", storage.MaxMeta), 3, int64(time.Millisecond), int64(0), false, uint8(2))
	f.Fuzz(func(t *testing.T, name string, attempts int, base, capacity int64, jitter bool, fails uint8) {
		// Delays up to a day and a few attempts: the run fits the Env's virtual horizon.
		attempts, n := attempts%8, int(fails%5)
		p := sdk.Policy{Name: name, MaxAttempts: attempts, Base: time.Duration(base % int64(24*time.Hour)),
			Cap: time.Duration(capacity % int64(24*time.Hour)), Jitter: jitter}
		if p.Base >= 0 && p.Cap >= 0 {
			checkDelays(t, p)
		}
		wf := sdk.New("fuzz-retry", func(c *sdk.Context, _ struct{}) (int, error) {
			return sdk.Step(c, "s", func(context.Context) (int, error) {
				if n > 0 {
					n--
					return 0, errors.New("not yet")
				}
				return 7, nil
			}, sdk.WithRetry(p))
		})
		env := sdktest.New(t, wf)
		failures := n
		h, err := wf.Start(t.Context(), env.Engine(), "k", struct{}{})
		if err != nil {
			t.Fatalf("start: %v", err)
		}
		env.Drain()
		d := env.Describe(h)
		valid := p.MaxAttempts >= 1 && p.Base >= 0 && p.Cap >= 0 && len(p.Name) <= sdk.MaxUserName && utf8.ValidString(p.Name)
		switch {
		case !valid:
			if d.State != sdk.StateFailed || !strings.Contains(d.LastError, "invalid input") {
				t.Fatalf("policy %+v is invalid, but the workflow is %s: %q", p, d.State, d.LastError)
			}
		case failures < p.MaxAttempts:
			if d.State != sdk.StateCompleted {
				t.Fatalf("policy %+v, %d failures: the workflow is %s, not completed: %q", p, failures, d.State, d.LastError)
			}
		default:
			if d.State != sdk.StateStalled {
				t.Fatalf("policy %+v, %d failures: the workflow is %s, not stalled: %q", p, failures, d.State, d.LastError)
			}
		}
	})
}

// checkDelays fails t unless p's delays are within 0..Cap and never shrink.
func checkDelays(t *testing.T, p sdk.Policy) {
	t.Helper()
	last := time.Duration(0)
	for n := 1; n <= 70; n++ {
		d := p.Delay(n)
		if d < last || d < 0 || (p.Cap > 0 && d > p.Cap) {
			t.Fatalf("%+v: Delay(%d) = %v after %v", p, n, d, last)
		}
		last = d
	}
}

// TestRetryPolicyNames: a retry policy whose name would not survive the step record (invalid
// UTF-8, which JSON stores as another key so the budget never ran out and the step was
// retried forever; or a name that made the record too large to write, so every run failed)
// is refused, failing the workflow with ErrInvalid (found by FuzzRetryPolicy).
func TestRetryPolicyNames(t *testing.T) {
	for _, name := range []string{"\xff", strings.Repeat("n", sdk.MaxUserName+1)} {
		wf := sdk.New("names", func(c *sdk.Context, _ struct{}) (int, error) {
			return sdk.Step(c, "s", func(context.Context) (int, error) { return 0, errors.New("always") },
				sdk.WithRetry(sdk.Policy{Name: name, MaxAttempts: 2, Base: time.Millisecond}))
		})
		env := sdktest.New(t, wf)
		h, err := wf.Start(t.Context(), env.Engine(), "k", struct{}{})
		if err != nil {
			t.Fatalf("start: %v", err)
		}
		env.Drain()
		if d := env.Describe(h); d.State != sdk.StateFailed || !strings.Contains(d.LastError, "retry policy name") {
			t.Fatalf("policy name %.20q: workflow %s: %q; want failed naming the policy", name, d.State, d.LastError)
		}
	}
	_, err := sdk.NewEngine(memory.New(), sdk.WithStepRetry(sdk.Policy{Name: "\xff", MaxAttempts: 1}))
	if !errors.Is(err, sdk.ErrInvalid) {
		t.Fatalf("NewEngine(WithStepRetry(a policy named \\xff)) = %v, want ErrInvalid", err)
	}
}
