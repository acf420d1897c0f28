package storagetest_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/chronoforge/chronoforge/storage"
)

// Mutants: wrappers over a correct store (bbolt) that each break one promise of the
// contract. TestSuiteCatchesMutants runs the suite against every one of them and requires
// that the cases named with it fail, and that the same cases pass on the unbroken store.

// mutant is one broken store and the cases of the suite that must catch it.
type mutant struct {
	name string
	// wrap breaks the correct store s.
	wrap func(s storage.Storage) storage.Storage
	// caughtBy are the cases (subtests of "storage") that must fail, each with says in its
	// output, so a case failing for another reason does not count.
	caughtBy []string
	says     string
}

// The read methods a time mutant may be limited to.
const (
	onCreate = "CreateWorkflow"
	onGet    = "GetWorkflow"
	onFind   = "FindWorkflow"
	onLoad   = "Load"
	onList   = "ListWorkflows"
	onClaim  = "Claim"
	onRetry  = "Retry"
)

// timeMutant changes the times that the read methods of a correct store return.
type timeMutant struct {
	storage.Storage
	// on limits the workflow change to these methods; empty means every method.
	on       []string
	workflow func(w *storage.Workflow)
	step     func(s *storage.Step)
	record   func(e *storage.ErrorRecord)
}

func (m *timeMutant) w(method string, w storage.Workflow) storage.Workflow {
	if m.workflow != nil && (len(m.on) == 0 || slices.Contains(m.on, method)) {
		m.workflow(&w)
	}
	return w
}

func (m *timeMutant) ws(method string, ws []storage.Workflow) []storage.Workflow {
	for i := range ws {
		ws[i] = m.w(method, ws[i])
	}
	return ws
}

func (m *timeMutant) CreateWorkflow(ctx context.Context, nw storage.NewWorkflow) (storage.Workflow, bool, error) {
	w, created, err := m.Storage.CreateWorkflow(ctx, nw)
	return m.w(onCreate, w), created, err
}

func (m *timeMutant) GetWorkflow(ctx context.Context, id int64) (storage.Workflow, error) {
	w, err := m.Storage.GetWorkflow(ctx, id)
	return m.w(onGet, w), err
}

func (m *timeMutant) FindWorkflow(ctx context.Context, name, key string) (storage.Workflow, error) {
	w, err := m.Storage.FindWorkflow(ctx, name, key)
	return m.w(onFind, w), err
}

func (m *timeMutant) Load(ctx context.Context, id int64) (storage.Workflow, []storage.Step, error) {
	w, steps, err := m.Storage.Load(ctx, id)
	if m.step != nil {
		for i := range steps {
			m.step(&steps[i])
		}
	}
	return m.w(onLoad, w), steps, err
}

func (m *timeMutant) Claim(ctx context.Context, r storage.ClaimRequest) ([]storage.Workflow, error) {
	ws, err := m.Storage.Claim(ctx, r)
	return m.ws(onClaim, ws), err
}

func (m *timeMutant) Retry(ctx context.Context, id int64, r storage.RetryRequest) (storage.Workflow, error) {
	w, err := m.Storage.Retry(ctx, id, r)
	return m.w(onRetry, w), err
}

func (m *timeMutant) ListWorkflows(ctx context.Context, f storage.ListFilter) ([]storage.Workflow, error) {
	ws, err := m.Storage.ListWorkflows(ctx, f)
	return m.ws(onList, ws), err
}

func (m *timeMutant) ListErrors(ctx context.Context, id int64, limit int) ([]storage.ErrorRecord, error) {
	recs, err := m.Storage.ListErrors(ctx, id, limit)
	if m.record != nil {
		for i := range recs {
			m.record(&recs[i])
		}
	}
	return recs, err
}

// Changes of one time.

func zero(t *time.Time)    { *t = time.Time{} }
func seconds(t *time.Time) { *t = t.Truncate(time.Second) }
func millis(t *time.Time)  { *t = t.Truncate(time.Millisecond) }

// elsewhere moves a time to another zone: the same instant, not in UTC.
func elsewhere(t *time.Time) {
	if !t.IsZero() {
		*t = t.In(time.FixedZone("UTC-03:00", -3*3600))
	}
}

// allWorkflowTimes applies change to every time of a workflow.
func allWorkflowTimes(change func(*time.Time)) func(*storage.Workflow) {
	return func(w *storage.Workflow) {
		for _, t := range []*time.Time{&w.CreatedAt, &w.UpdatedAt, &w.FinishedAt, &w.RunAt, &w.LeaseUntil} {
			change(t)
		}
	}
}

// allStepTimes applies change to every time of a step record.
func allStepTimes(change func(*time.Time)) func(*storage.Step) {
	return func(s *storage.Step) {
		for _, t := range []*time.Time{&s.CreatedAt, &s.UpdatedAt, &s.CompletedAt} {
			change(t)
		}
	}
}

// timeMutants are the stores that lose, truncate or move the times they return.
func timeMutants() []mutant {
	workflowOn := func(name string, on []string, change func(*storage.Workflow), says string, caughtBy ...string) mutant {
		return mutant{name: name, says: says, caughtBy: caughtBy, wrap: func(s storage.Storage) storage.Storage {
			return &timeMutant{Storage: s, on: on, workflow: change}
		}}
	}
	workflow := func(name string, change func(*storage.Workflow), says string, caughtBy ...string) mutant {
		return workflowOn(name, nil, change, says, caughtBy...)
	}
	step := func(name string, change func(*storage.Step), says string, caughtBy ...string) mutant {
		return mutant{name: name, says: says, caughtBy: caughtBy, wrap: func(s storage.Storage) storage.Storage {
			return &timeMutant{Storage: s, step: change}
		}}
	}
	record := func(name string, change func(*storage.ErrorRecord), says string, caughtBy ...string) mutant {
		return mutant{name: name, says: says, caughtBy: caughtBy, wrap: func(s storage.Storage) storage.Storage {
			return &timeMutant{Storage: s, record: change}
		}}
	}
	createdZero := func(w *storage.Workflow) { w.CreatedAt = time.Time{} }

	ms := []mutant{
		workflow("workflow-times-truncated-to-seconds", allWorkflowTimes(seconds), ".123456 +0000 UTC, got", "TimesRun", "TimesControl"),
		workflow("workflow-times-truncated-to-milliseconds", allWorkflowTimes(millis), ".123456 +0000 UTC, got", "TimesRun", "TimesControl"),
		workflow("workflow-times-not-in-utc", allWorkflowTimes(elsewhere), "want a time in UTC", "TimesUTC"),
		workflow("workflow-created-at-zeroed", createdZero, "created at: want", "TimesRun", "TimesControl"),
		workflow("workflow-updated-at-zeroed", func(w *storage.Workflow) { w.UpdatedAt = time.Time{} }, "updated at: want", "TimesRun", "TimesControl"),
		workflow("workflow-updated-at-not-kept", func(w *storage.Workflow) { w.UpdatedAt = w.CreatedAt }, "updated at: want", "TimesRun", "TimesControl"),
		workflow("workflow-finished-at-zeroed", func(w *storage.Workflow) { w.FinishedAt = time.Time{} }, "finished at: want", "TimesRun", "TimesControl"),
		workflow("workflow-run-at-truncated-to-seconds", func(w *storage.Workflow) { seconds(&w.RunAt) }, "run at: want", "TimesRun", "TimesControl"),

		step("step-times-zeroed-on-load", allStepTimes(zero), "created at: want", "TimesSteps"),
		step("step-created-at-zeroed", func(s *storage.Step) { s.CreatedAt = time.Time{} }, "created at: want", "TimesSteps"),
		step("step-updated-at-zeroed", func(s *storage.Step) { s.UpdatedAt = time.Time{} }, "updated at: want", "TimesSteps"),
		step("step-completed-at-zeroed", func(s *storage.Step) { s.CompletedAt = time.Time{} }, "completed at: want", "TimesSteps"),
		step("step-created-at-not-kept", func(s *storage.Step) { s.CreatedAt = s.UpdatedAt }, "created at: want", "TimesSteps"),
		step("step-updated-at-not-kept", func(s *storage.Step) { s.UpdatedAt = s.CreatedAt }, "updated at: want", "TimesSteps"),
		step("step-times-truncated-to-seconds", allStepTimes(seconds), ".123456 +0000 UTC, got", "TimesSteps"),
		step("step-times-truncated-to-milliseconds", allStepTimes(millis), ".123456 +0000 UTC, got", "TimesSteps"),
		step("step-times-not-in-utc", allStepTimes(elsewhere), "want a time in UTC", "TimesUTC"),

		record("error-created-at-zeroed", func(e *storage.ErrorRecord) { e.CreatedAt = time.Time{} }, "created at of the error record", "TimesErrors"),
		record("error-created-at-truncated-to-milliseconds", func(e *storage.ErrorRecord) { millis(&e.CreatedAt) }, "created at of the error record", "TimesErrors"),
		record("error-created-at-not-in-utc", func(e *storage.ErrorRecord) { elsewhere(&e.CreatedAt) }, "want a time in UTC", "TimesUTC"),
	}
	// A workflow's CreatedAt lost on one read method only.
	for _, c := range []struct {
		on       string
		caughtBy []string
	}{
		{onCreate, []string{"TimesRun"}},
		{onGet, []string{"TimesRun", "TimesControl"}},
		{onFind, []string{"TimesRun", "TimesControl"}},
		{onLoad, []string{"TimesRun", "TimesControl"}},
		{onList, []string{"TimesRun", "TimesControl"}},
		{onClaim, []string{"TimesRun"}},
		{onRetry, []string{"TimesControl"}},
	} {
		ms = append(ms, workflowOn("workflow-created-at-zeroed-by-"+c.on, []string{c.on}, createdZero, "created at: want", c.caughtBy...))
	}
	return ms
}

// notifierFault is how a notifier mutant breaks storage.Notifier.
type notifierFault int

const (
	faultNone         notifierFault = iota
	faultSilent                     // never sends
	faultCreateOnly                 // sends for creates only
	faultNeverCloses                // keeps a channel open after its context ended
	faultClosesAll                  // the end of one listener's context closes every channel
	faultFirstOnly                  // only the first listener receives
	faultBlocks                     // a send waits for the listener to read
	faultNotCoalesced               // queues a value per change
)

// notifier adds a storage.Notifier to a store without one: after each write that makes a
// workflow runnable (create, spawn, wake, retry, release) it sends to every listener,
// coalesced, never blocking, and closes a listener's channel when its context ends. With a
// fault it breaks that promise in one way.
type notifier struct {
	storage.Storage
	fault notifierFault

	mu    sync.Mutex
	subs  map[chan struct{}]context.Context
	first chan struct{}
}

var _ storage.Notifier = (*notifier)(nil)

func (n *notifier) Listen(ctx context.Context) (<-chan struct{}, error) {
	size := 1
	switch n.fault {
	case faultBlocks:
		size = 0
	case faultNotCoalesced:
		size = 1024
	}
	ch := make(chan struct{}, size)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.subs == nil {
		n.subs = map[chan struct{}]context.Context{}
		n.first = ch
	}
	n.subs[ch] = ctx
	context.AfterFunc(ctx, func() { n.stop(ch) })
	return ch, nil
}

// stop ends a listener whose context ended.
func (n *notifier) stop(ch chan struct{}) {
	if n.fault == faultNeverCloses || n.fault == faultBlocks {
		return // a blocked send may still be in flight: closing would make it panic
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for c := range n.subs {
		if c == ch || n.fault == faultClosesAll {
			delete(n.subs, c)
			close(c)
		}
	}
}

// notify tells the listeners that a workflow may have become runnable.
func (n *notifier) notify(create bool) {
	if n.fault == faultSilent || (n.fault == faultCreateOnly && !create) {
		return
	}
	n.mu.Lock()
	subs := make(map[chan struct{}]context.Context, len(n.subs))
	for ch, ctx := range n.subs {
		if n.fault != faultFirstOnly || ch == n.first {
			subs[ch] = ctx
		}
	}
	n.mu.Unlock()
	for ch, ctx := range subs {
		if n.fault == faultBlocks {
			select {
			case ch <- struct{}{}:
			case <-ctx.Done():
			}
			continue
		}
		n.mu.Lock()
		if _, live := n.subs[ch]; live {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
		n.mu.Unlock()
	}
}

func (n *notifier) CreateWorkflow(ctx context.Context, nw storage.NewWorkflow) (storage.Workflow, bool, error) {
	w, created, err := n.Storage.CreateWorkflow(ctx, nw)
	if err == nil && created {
		n.notify(true)
	}
	return w, created, err
}

func (n *notifier) SpawnBatch(ctx context.Context, l storage.Lease, r storage.SpawnRequest) (storage.SpawnResult, error) {
	res, err := n.Storage.SpawnBatch(ctx, l, r)
	if err == nil && res.Inserted > 0 {
		n.notify(true)
	}
	return res, err
}

func (n *notifier) Wake(ctx context.Context, id int64, at time.Time) (bool, error) {
	woken, err := n.Storage.Wake(ctx, id, at)
	if err == nil && woken {
		n.notify(false)
	}
	return woken, err
}

func (n *notifier) Retry(ctx context.Context, id int64, r storage.RetryRequest) (storage.Workflow, error) {
	w, err := n.Storage.Retry(ctx, id, r)
	if err == nil {
		n.notify(false)
	}
	return w, err
}

func (n *notifier) Release(ctx context.Context, l storage.Lease, now time.Time) error {
	err := n.Storage.Release(ctx, l, now)
	if err == nil {
		n.notify(false)
	}
	return err
}

// notifierMutants are the notifiers that break storage.Notifier's promises.
func notifierMutants() []mutant {
	m := func(name string, fault notifierFault, says string, caughtBy ...string) mutant {
		return mutant{name: name, says: says, caughtBy: caughtBy, wrap: func(s storage.Storage) storage.Storage {
			return &notifier{Storage: s, fault: fault}
		}}
	}
	return []mutant{
		m("notifier-silent", faultSilent, "listeners received nothing",
			"NotifyCreate", "NotifyWake", "NotifyRetry", "NotifyRelease", "NotifyCoalesced", "NotifyListeners", "NotifyCreateBatch", "NotifySendMessage"),
		m("notifier-on-create-only", faultCreateOnly, "listeners received nothing", "NotifyWake", "NotifyRetry", "NotifyRelease", "NotifySendMessage"),
		m("notifier-never-closes", faultNeverCloses, "was not closed", "NotifyListeners"),
		m("notifier-one-end-closes-all", faultClosesAll, "channel closed instead of receiving", "NotifyListeners"),
		m("notifier-first-listener-only", faultFirstOnly, "listeners received nothing", "NotifyListeners"),
		m("notifier-blocks-the-store", faultBlocks, "sends must never block the store", "NotifyCoalesced"),
		m("notifier-not-coalesced", faultNotCoalesced, "notifications must coalesce", "NotifyCoalesced"),
	}
}

// correctNotifier is the notifier without a fault: the control of the notifier mutants.
func correctNotifier(s storage.Storage) storage.Storage { return &notifier{Storage: s} }

func (n *notifier) CreateWorkflows(ctx context.Context, ws []storage.NewWorkflow) ([]storage.Workflow, []bool, error) {
	out, created, err := n.Storage.CreateWorkflows(ctx, ws)
	if err == nil && slices.Contains(created, true) {
		n.notify(true)
	}
	return out, created, err
}

// SendMessage notifies for every stored message: a wake it may have caused is not visible to
// a wrapper, and a notifier may send when nothing became runnable.
func (n *notifier) SendMessage(ctx context.Context, m storage.NewMessage) (storage.Message, bool, error) {
	msg, created, err := n.Storage.SendMessage(ctx, m)
	if err == nil && created {
		n.notify(false)
	}
	return msg, created, err
}

// mailFault is how a mailbox mutant breaks the contract of CreateWorkflows, tags or
// mailboxes.
type mailFault int

const (
	faultSendWakesNoWaiter mailFault = iota // a message never wakes an idle workflow waiting on its topic
	faultConsumeRepeats                     // every other consume answers the last message again
	faultFenceHidden                        // a consume refused by the fence reports an empty mailbox
	faultKeyPerTopic                        // message keys are unique per topic, not per workflow
	faultBatchLoop                          // CreateWorkflows creates one by one, not all or nothing
	faultTagsFilterIgnored                  // ListWorkflows ignores ListFilter.Tags
	faultTagsEmptyNotNil                    // a workflow without tags is returned with an empty map
)

// mailMutant breaks one promise of CreateWorkflows, tags or mailboxes over a correct store.
type mailMutant struct {
	storage.Storage
	fault mailFault

	mu    sync.Mutex
	calls map[string]int
	last  map[string]storage.Message
}

// topicKey names one workflow's topic.
func topicKey(id int64, topic string) string { return fmt.Sprint(id, "/", topic) }

func (m *mailMutant) SendMessage(ctx context.Context, nm storage.NewMessage) (storage.Message, bool, error) {
	switch m.fault {
	case faultSendWakesNoWaiter:
		// Sent on a topic of its own and taken back from it, the message is kept and consumed
		// as before, but matches no wait.
		nm.Topic = hidden(nm.Topic)
		msg, created, err := m.Storage.SendMessage(ctx, nm)
		msg.Topic = shown(msg.Topic)
		return msg, created, err
	case faultKeyPerTopic:
		key := nm.Key
		if key != "" {
			nm.Key = nm.Topic + "/" + key
		}
		msg, created, err := m.Storage.SendMessage(ctx, nm)
		if err == nil {
			msg.Key = key
		}
		return msg, created, err
	}
	return m.Storage.SendMessage(ctx, nm)
}

// hidden and shown move a topic to one no wait names, and back.
func hidden(topic string) string { return "~" + topic }
func shown(topic string) string  { return strings.TrimPrefix(topic, "~") }

func (m *mailMutant) ConsumeMessage(ctx context.Context, l storage.Lease, r storage.ConsumeRequest) (storage.Message, bool, error) {
	switch m.fault {
	case faultSendWakesNoWaiter:
		r.Topic = hidden(r.Topic)
		msg, ok, err := m.Storage.ConsumeMessage(ctx, l, r)
		msg.Topic = shown(msg.Topic)
		return msg, ok, err
	case faultFenceHidden:
		msg, ok, err := m.Storage.ConsumeMessage(ctx, l, r)
		if errors.Is(err, storage.ErrLeaseLost) || errors.Is(err, storage.ErrCancelled) {
			return storage.Message{}, false, nil
		}
		return msg, ok, err
	case faultConsumeRepeats:
		k := topicKey(l.WorkflowID, r.Topic)
		m.mu.Lock()
		if m.calls == nil {
			m.calls, m.last = map[string]int{}, map[string]storage.Message{}
		}
		m.calls[k]++
		last, had := m.last[k]
		again := had && m.calls[k]%2 == 0
		m.mu.Unlock()
		if again {
			c := r.Commit
			c.Steps = append(slices.Clone(c.Steps), storage.Step{Name: r.Step, State: storage.StepCompleted, Attempts: 1, Result: last.Payload})
			if err := m.Storage.SaveSteps(ctx, l, c); err != nil {
				return storage.Message{}, false, err
			}
			last.ConsumedBy, last.ConsumedAt = r.Step, r.Now.UTC()
			return last, true, nil
		}
		msg, ok, err := m.Storage.ConsumeMessage(ctx, l, r)
		if ok {
			m.mu.Lock()
			m.last[k] = msg
			m.mu.Unlock()
		}
		return msg, ok, err
	}
	return m.Storage.ConsumeMessage(ctx, l, r)
}

func (m *mailMutant) CreateWorkflows(ctx context.Context, ws []storage.NewWorkflow) ([]storage.Workflow, []bool, error) {
	if m.fault != faultBatchLoop {
		out, created, err := m.Storage.CreateWorkflows(ctx, ws)
		return m.tagged(out), created, err
	}
	if len(ws) == 0 || len(ws) > storage.MaxCreateBatch {
		return nil, nil, fmt.Errorf("%w: %d workflows", storage.ErrInvalid, len(ws))
	}
	seen := map[[2]string]bool{}
	for _, w := range ws {
		if seen[[2]string{w.Name, w.Key}] {
			return nil, nil, fmt.Errorf("%w: %q key %q twice", storage.ErrInvalid, w.Name, w.Key)
		}
		seen[[2]string{w.Name, w.Key}] = true
	}
	out, created := make([]storage.Workflow, 0, len(ws)), make([]bool, 0, len(ws))
	for _, w := range ws {
		got, c, err := m.Storage.CreateWorkflow(ctx, w)
		if err != nil {
			return nil, nil, err // the workflows before it stay created
		}
		out, created = append(out, got), append(created, c)
	}
	return out, created, nil
}

// tagged applies faultTagsEmptyNotNil to workflows read back.
func (m *mailMutant) tagged(ws []storage.Workflow) []storage.Workflow {
	if m.fault == faultTagsEmptyNotNil {
		for i := range ws {
			if ws[i].Tags == nil {
				ws[i].Tags = map[string]string{}
			}
		}
	}
	return ws
}

// one applies faultTagsEmptyNotNil to one workflow read back.
func (m *mailMutant) one(w storage.Workflow) storage.Workflow {
	return m.tagged([]storage.Workflow{w})[0]
}

func (m *mailMutant) CreateWorkflow(ctx context.Context, nw storage.NewWorkflow) (storage.Workflow, bool, error) {
	w, created, err := m.Storage.CreateWorkflow(ctx, nw)
	return m.one(w), created, err
}

func (m *mailMutant) GetWorkflow(ctx context.Context, id int64) (storage.Workflow, error) {
	w, err := m.Storage.GetWorkflow(ctx, id)
	return m.one(w), err
}

func (m *mailMutant) FindWorkflow(ctx context.Context, name, key string) (storage.Workflow, error) {
	w, err := m.Storage.FindWorkflow(ctx, name, key)
	return m.one(w), err
}

func (m *mailMutant) Load(ctx context.Context, id int64) (storage.Workflow, []storage.Step, error) {
	w, steps, err := m.Storage.Load(ctx, id)
	return m.one(w), steps, err
}

func (m *mailMutant) ListWorkflows(ctx context.Context, f storage.ListFilter) ([]storage.Workflow, error) {
	if m.fault == faultTagsFilterIgnored {
		f.Tags = nil
	}
	ws, err := m.Storage.ListWorkflows(ctx, f)
	return m.tagged(ws), err
}

// mailMutants are the stores that break CreateWorkflows, tags or mailboxes.
func mailMutants() []mutant {
	m := func(name string, fault mailFault, says string, caughtBy ...string) mutant {
		return mutant{name: name, says: says, caughtBy: caughtBy, wrap: func(s storage.Storage) storage.Storage {
			return &mailMutant{Storage: s, fault: fault}
		}}
	}
	return []mutant{
		m("send-wakes-no-waiter", faultSendWakesNoWaiter, "run at after a message on the topic waited on", "MessageWakesWaiter"),
		m("consume-repeats-a-message", faultConsumeRepeats, "messages are consumed in ID order", "MessageOrderConcurrent"),
		m("consume-hides-the-fence", faultFenceHidden, "ConsumeMessage with token", "MessageConsumeFenced"),
		m("message-key-per-topic", faultKeyPerTopic, "send 2 with a key the workflow holds", "MessageIdempotentKey"),
		m("create-batch-one-by-one", faultBatchLoop, "a refused batch stored", "CreateBatchAllOrNothing"),
		m("list-ignores-tags", faultTagsFilterIgnored, "ListWorkflows", "ListTags"),
		m("no-tags-as-empty-map", faultTagsEmptyNotNil, "tags", "TagsRoundTrip", "CreateBatch"),
		flowMutant("flow-limits-ignored", func(f *storage.Flow) { f.Concurrency, f.Rate, f.Per = 0, 0, 0 }, "a concurrency of 3 lets 3 run", "FlowConcurrency"),
		flowMutant("flow-priority-ignored", func(f *storage.Flow) { f.Priority = 0 }, "the high priority first", "FlowPriority"),
	}
}

// flowStore is a store that enforces flows, as the flow mutants wrap it.
type flowStore interface {
	storage.Storage
	storage.FlowController
}

// flowBreaker is a store that stores every flow changed by breakFlow, while it returns the
// flow it was given: limits or priorities that are reported but not enforced.
type flowBreaker struct {
	flowStore
	breakFlow func(*storage.Flow)
}

func (m *flowBreaker) PutFlow(ctx context.Context, f storage.Flow, ifMissing bool, now time.Time) (storage.Flow, bool, error) {
	broken := f
	m.breakFlow(&broken)
	_, wrote, err := m.flowStore.PutFlow(ctx, broken, ifMissing, now)
	f.UpdatedAt = now
	return f, wrote, err
}

// flowMutant is a mutant whose flows are stored changed by breakFlow.
func flowMutant(name string, breakFlow func(*storage.Flow), says string, caughtBy ...string) mutant {
	return mutant{name: name, says: says, caughtBy: caughtBy, wrap: func(s storage.Storage) storage.Storage {
		return &flowBreaker{flowStore: s.(flowStore), breakFlow: breakFlow}
	}}
}

// mailCases are the cases the mailbox mutants are checked against.
func mailCases() []string {
	seen := map[string]bool{}
	var out []string
	for _, m := range mailMutants() {
		for _, c := range m.caughtBy {
			if !seen[c] {
				seen[c] = true
				out = append(out, c)
			}
		}
	}
	return out
}
