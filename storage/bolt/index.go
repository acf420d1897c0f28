package bolt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	bbolt "go.etcd.io/bbolt"
	bberrors "go.etcd.io/bbolt/errors"

	"github.com/chronoforge/chronoforge/storage"
)

// Keys and index maintenance. Every key is built in a fresh slice: bbolt requires keys and
// values passed to Put to stay untouched for the rest of the transaction.

func idKey(id int64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), uint64(id))
}

func beUint(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

// timeBits orders times bytewise: flipping the sign bit of the nanoseconds makes negative
// (pre-1970) times sort before positive ones.
func timeBits(t time.Time) uint64 { return uint64(t.UnixNano()) ^ (1 << 63) }

// timeIDKey is time then id: the key of the runnable and finished indexes.
func timeIDKey(t time.Time, id int64) []byte {
	b := make([]byte, 0, 16)
	b = binary.BigEndian.AppendUint64(b, timeBits(t))
	return binary.BigEndian.AppendUint64(b, uint64(id))
}

// keyTime is the time at the head of a timeIDKey.
func keyTime(k []byte) time.Time { return time.Unix(0, int64(beUint(k)^(1<<63))).UTC() }

func nameKey(name, key string) []byte {
	b := make([]byte, 0, len(name)+1+len(key))
	b = append(b, name...)
	b = append(b, 0)
	return append(b, key...)
}

func stateKey(s storage.State, id int64) []byte {
	b := make([]byte, 0, len(s)+9)
	b = append(b, s...)
	b = append(b, 0)
	return binary.BigEndian.AppendUint64(b, uint64(id))
}

// parentKey is a branch step id, a state and a workflow id: the key of the children index.
// The prefix parentStatePrefix(step, state) selects one branch's children in one state, in
// ID order.
func parentKey(stepID int64, s storage.State, id int64) []byte {
	return binary.BigEndian.AppendUint64(parentStatePrefix(stepID, s), uint64(id))
}

func parentStatePrefix(stepID int64, s storage.State) []byte {
	b := make([]byte, 0, 8+len(s)+9)
	b = binary.BigEndian.AppendUint64(b, uint64(stepID))
	b = append(b, s...)
	return append(b, 0)
}

// childKey is a parent id followed by suffix: step and error records live under their
// workflow's id, so a prefix scan finds all of them.
func childKey(id int64, suffix []byte) []byte {
	b := make([]byte, 0, 8+len(suffix))
	b = binary.BigEndian.AppendUint64(b, uint64(id))
	return append(b, suffix...)
}

// flowPairPrefix is name 0x00 flow 0x00: the prefix of one name's runnable rows of one flow
// key in the flowrunnable index. Neither a name nor a flow key holds a control character, so
// the two 0x00 bytes end them.
func flowPairPrefix(name, flow string) []byte {
	b := make([]byte, 0, len(name)+len(flow)+2+16)
	b = append(b, name...)
	b = append(b, 0)
	b = append(b, flow...)
	return append(b, 0)
}

// flowRunnableKey is a governed row's key in the flowrunnable index.
func flowRunnableKey(r *record) []byte {
	return append(flowPairPrefix(r.Name, r.Flow), timeIDKey(r.RunAt, r.ID)...)
}

// flowPrefix is flow 0x00: the prefix of one flow key in the flowrunning and flowlog indexes.
func flowPrefix(flow string) []byte {
	b := make([]byte, 0, len(flow)+1+16)
	b = append(b, flow...)
	return append(b, 0)
}

// flowRunningKey is a running governed row's key in the flowrunning index: its flow key, its
// lease expiry and its id.
func flowRunningKey(r *record) []byte {
	return append(flowPrefix(r.Flow), timeIDKey(r.LeaseUntil, r.ID)...)
}

// governed reports whether r has a flow key: its runnable entries are in the flow indexes
// rather than the runnable index, and while running it is in the flowrunning index.
func governed(r *record) bool { return r.Flow != "" }

// flowRunning reports whether r counts in the flowrunning index.
func flowRunning(r *record) bool { return governed(r) && r.State == storage.StateRunning }

func runnable(r *record) bool {
	return !r.RunAt.IsZero() && (r.State == storage.StateIdle || r.State == storage.StateRunning)
}

func finished(r *record) bool { return r.State.Final() && !r.FinishedAt.IsZero() }

// isChild reports whether r is a branch child, kept in the children index.
func isChild(r *record) bool { return r.ParentStepID != 0 }

// txn gives one bbolt transaction typed access to the buckets.
type txn struct {
	tx        *bbolt.Tx
	workflows *bbolt.Bucket
	keys      *bbolt.Bucket
	runnable  *bbolt.Bucket
	states    *bbolt.Bucket
	finished  *bbolt.Bucket
	children  *bbolt.Bucket
	branches  *bbolt.Bucket
	steps     *bbolt.Bucket
	errors    *bbolt.Bucket
	messages  *bbolt.Bucket
	mailbox   *bbolt.Bucket
	msgKeys   *bbolt.Bucket
	// The flow control buckets (see the package doc).
	flows        *bbolt.Bucket
	flowLog      *bbolt.Bucket
	flowRunnable *bbolt.Bucket
	flowDue      *bbolt.Bucket
	flowRunning  *bbolt.Bucket
	flowCount    *bbolt.Bucket
	// stats counts the store's index reads that tests bound; nil in a transaction of Open.
	stats *stats
}

// stats counts index reads whose number a test bounds, in operations rather than time.
type stats struct {
	// mailboxKeys counts the keys of the mailbox index that ConsumeMessage read.
	mailboxKeys atomic.Int64
	// childKeys counts the keys of the children index that BranchCounts read.
	childKeys atomic.Int64
	// prefixKeys counts the keys of the keys index that a ListWorkflows by key prefix read.
	prefixKeys atomic.Int64
	// flowKeys counts the keys of the flow indexes (flowrunnable, flowrunning, flowlog) that
	// Claim and ListFlows read.
	flowKeys atomic.Int64
}

// flowRead counts n keys of the flow indexes read, when the transaction counts.
func (t *txn) flowRead(n int) {
	if t.stats != nil {
		t.stats.flowKeys.Add(int64(n))
	}
}

func newTxn(tx *bbolt.Tx) *txn {
	return &txn{
		tx:        tx,
		workflows: tx.Bucket(bucketWorkflows),
		keys:      tx.Bucket(bucketKeys),
		runnable:  tx.Bucket(bucketRunnable),
		states:    tx.Bucket(bucketStates),
		finished:  tx.Bucket(bucketFinished),
		children:  tx.Bucket(bucketChildren),
		branches:  tx.Bucket(bucketBranches),
		steps:     tx.Bucket(bucketSteps),
		errors:    tx.Bucket(bucketErrors),
		messages:  tx.Bucket(bucketMessages),
		mailbox:   tx.Bucket(bucketMailbox),
		msgKeys:   tx.Bucket(bucketMsgKeys),

		flows:        tx.Bucket(bucketFlows),
		flowLog:      tx.Bucket(bucketFlowLog),
		flowRunnable: tx.Bucket(bucketFlowRunnable),
		flowDue:      tx.Bucket(bucketFlowDue),
		flowRunning:  tx.Bucket(bucketFlowRunning),
		flowCount:    tx.Bucket(bucketFlowCount),
	}
}

// view and update run fn in one read or write transaction.
func (s *Store) view(fn func(t *txn) error) error {
	return closed(s.db.View(func(tx *bbolt.Tx) error { return fn(s.txn(tx)) }))
}

func (s *Store) update(fn func(t *txn) error) error {
	return closed(s.db.Update(func(tx *bbolt.Tx) error { return fn(s.txn(tx)) }))
}

// txn wraps a transaction of s.
func (s *Store) txn(tx *bbolt.Tx) *txn {
	t := newTxn(tx)
	t.stats = &s.stats
	return t
}

// closed turns bbolt's error for a closed file into the contract's storage.ErrClosed.
func closed(err error) error {
	if errors.Is(err, bberrors.ErrDatabaseNotOpen) {
		return fmt.Errorf("%w: %v", storage.ErrClosed, err)
	}
	return err
}

// batch runs fn in a write transaction that bbolt may share with concurrent callers (group
// commit: one fsync for the writes of many runs). fn must only depend on the transaction's
// contents, as bbolt runs it again on its own if another function in the batch fails.
func (s *Store) batch(fn func(t *txn) error) error {
	return closed(s.db.Batch(func(tx *bbolt.Tx) error { return fn(s.txn(tx)) }))
}

// get loads a workflow or returns an error wrapping storage.ErrNotFound.
func (t *txn) get(id int64) (*record, error) {
	if id > 0 {
		if v := t.workflows.Get(idKey(id)); v != nil {
			r, err := decodeWorkflow(v)
			if err != nil {
				return nil, fmt.Errorf("workflow %d: %w", id, err)
			}
			return r, nil
		}
	}
	return nil, fmt.Errorf("workflow %d: %w", id, storage.ErrNotFound)
}

// put writes r and moves its index entries from where old had them (old is nil for a new
// row). Every change of a workflow goes through here, so the indexes cannot drift.
func (t *txn) put(old, r *record) error {
	if old != nil {
		if err := t.unindexKeys(old); err != nil {
			return err
		}
	}
	// The flow key never changes, so a row that was and is running keeps its count.
	if was, is := old != nil && flowRunning(old), flowRunning(r); was != is {
		delta := int64(1)
		if was {
			delta = -1
		}
		if err := t.countRunning(r.Flow, delta); err != nil {
			return err
		}
	}
	if err := t.workflows.Put(idKey(r.ID), encodeWorkflow(r)); err != nil {
		return err
	}
	if err := t.states.Put(stateKey(r.State, r.ID), nil); err != nil {
		return err
	}
	if runnable(r) && !governed(r) {
		if err := t.runnable.Put(timeIDKey(r.RunAt, r.ID), []byte(r.Name)); err != nil {
			return err
		}
	}
	if runnable(r) && governed(r) {
		if err := t.flowRunnable.Put(flowRunnableKey(r), nil); err != nil {
			return err
		}
		if err := t.flowDue.Put(timeIDKey(r.RunAt, r.ID), []byte(r.Name)); err != nil {
			return err
		}
	}
	if flowRunning(r) {
		if err := t.flowRunning.Put(flowRunningKey(r), nil); err != nil {
			return err
		}
	}
	if finished(r) {
		if err := t.finished.Put(timeIDKey(r.FinishedAt, r.ID), nil); err != nil {
			return err
		}
	}
	if isChild(r) {
		if err := t.children.Put(parentKey(r.ParentStepID, r.State, r.ID), nil); err != nil {
			return err
		}
	}
	return nil
}

// unindex removes every index entry of r, a row being deleted.
func (t *txn) unindex(r *record) error {
	if flowRunning(r) {
		if err := t.countRunning(r.Flow, -1); err != nil {
			return err
		}
	}
	return t.unindexKeys(r)
}

// unindexKeys removes the index entries of r, leaving the flowcount index to the caller.
func (t *txn) unindexKeys(r *record) error {
	if err := t.states.Delete(stateKey(r.State, r.ID)); err != nil {
		return err
	}
	if runnable(r) && !governed(r) {
		if err := t.runnable.Delete(timeIDKey(r.RunAt, r.ID)); err != nil {
			return err
		}
	}
	if runnable(r) && governed(r) {
		if err := t.flowRunnable.Delete(flowRunnableKey(r)); err != nil {
			return err
		}
		if err := t.flowDue.Delete(timeIDKey(r.RunAt, r.ID)); err != nil {
			return err
		}
	}
	if flowRunning(r) {
		if err := t.flowRunning.Delete(flowRunningKey(r)); err != nil {
			return err
		}
	}
	if finished(r) {
		if err := t.finished.Delete(timeIDKey(r.FinishedAt, r.ID)); err != nil {
			return err
		}
	}
	if isChild(r) {
		if err := t.children.Delete(parentKey(r.ParentStepID, r.State, r.ID)); err != nil {
			return err
		}
	}
	return nil
}

// countRunning adds delta to the count of flow's entries in the flowrunning index; a count
// that drops to zero is deleted.
func (t *txn) countRunning(flow string, delta int64) error {
	n := t.runningCount(flow) + delta
	if n < 0 {
		return fmt.Errorf("flow %q: %d running rows counted", flow, n)
	}
	if n == 0 {
		return t.flowCount.Delete([]byte(flow))
	}
	return t.flowCount.Put([]byte(flow), idKey(n))
}

// runningCount is the number of flow's entries in the flowrunning index, live or expired.
func (t *txn) runningCount(flow string) int64 {
	v := t.flowCount.Get([]byte(flow))
	if len(v) != 8 {
		return 0
	}
	return int64(beUint(v))
}

// prefixKeys returns the keys of b that start with prefix. Deleting behind a live cursor can
// skip keys in bbolt, so deletions collect first.
func prefixKeys(b *bbolt.Bucket, prefix []byte) [][]byte {
	var keys [][]byte
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		keys = append(keys, append([]byte{}, k...))
	}
	return keys
}
