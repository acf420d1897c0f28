// Package bolt is the embedded chronoforge backend: a storage.Storage kept in one bbolt file.
//
// It suits a single process (the file is locked while open). Every method is exactly one
// bbolt transaction and the store starts no goroutines. Secondary indexes are buckets kept
// consistent in the same transaction as the row they index:
//
//	workflows     id                                  -> workflow record
//	keys          name 0x00 key                       -> id
//	runnable      run_at id                           -> name   (idle or running rows with a RunAt and no Flow)
//	states        state 0x00 id                       -> empty
//	finished      finished_at id                      -> empty  (final rows)
//	children      parent_step_id state 0x00 id        -> empty  (branch children: ParentStepID != 0)
//	branches      branch step id                      -> id     (the workflow owning a branch step)
//	steps         workflow id, step name              -> step record
//	errors        workflow id, error id               -> error record
//	messages      workflow id, message id             -> message record
//	mailbox       workflow id, topic 0x00, message id -> empty (unconsumed messages)
//	msgkeys       workflow id, message key            -> message id
//	flows         flow key                            -> flow record (with the count of claims in its log)
//	flowlog       flow key 0x00 claimed_at seq        -> count  (the claims of a rate window, store clock)
//	flowrunnable  name 0x00 flow 0x00 run_at id       -> empty (runnable rows with a Flow)
//	flowdue       run_at id                           -> name   (the same rows, in RunAt order)
//	flowrunning   flow key 0x00 lease_until id        -> empty  (running rows with a Flow)
//	flowcount     flow key                            -> count  (of the key's flowrunning entries)
//
// Runnable rows with a flow key (governed rows) are kept out of the runnable index, so a
// flow's held-back backlog never lies in the way of a claim of other workflows: the runnable
// index is the fast path of ungoverned rows, unchanged, and a claim reads a governed queue
// (one name and flow key) only as far as the flow's limits leave room. flowrunnable is keyed
// by name first, so its distinct name 0x00 flow 0x00 prefixes are the mapping from a name to
// the flow keys of its runnable rows, with no entry that could go stale. flowdue holds the
// same rows in RunAt order for Backlog. flowrunning is ordered by lease expiry within a key,
// so the running rows with an expired lease are the key's first entries and those with a
// live lease the rest: with flowcount's total, a claim learns how many are live from the
// expired ones, usually none, rather than by reading up to the concurrency limit of live ones.
//
// The mailbox index holds only the messages still waiting, so the next message of a topic is
// the first key of its prefix: one cursor Seek, however many messages the workflow holds or
// has consumed. A topic holds no control character, so the 0x00 after it ends the prefix.
//
// Ids are 8-byte big-endian and times are Unix nanoseconds with the sign bit flipped, so
// byte order is numeric order and a cursor walks each index in the order it needs.
package bolt

import (
	"errors"
	"fmt"
	"os"
	"time"

	bbolt "go.etcd.io/bbolt"
	bberrors "go.etcd.io/bbolt/errors"

	"github.com/chronoforge/chronoforge/storage"
)

var _ storage.Storage = (*Store)(nil)

// Store is a storage.Storage backed by one bbolt file. It is safe for concurrent use; write
// transactions are serialised by bbolt, reads run in parallel with them.
type Store struct {
	db   *bbolt.DB
	path string
	// clock is the store's own clock, by which leases expire (see storage.Storage): the file
	// lock keeps the store to one process, so that process's clock is the only one to agree
	// with. Requests' times decide only when a workflow is due. Tests may replace it before
	// use.
	clock func() time.Time
	// stats counts index reads for tests that bound them.
	stats stats
}

// systemClock is the process clock in UTC, without a monotonic reading (what is stored).
func systemClock() time.Time { return time.Now().UTC() }

// schemaVersion is written to the meta bucket. Open upgrades a file of an earlier version
// (see migrate) and refuses one of a later version, which this build could not keep
// consistent.
//
//	1  the first layout
//	2  the children index; workflow records of codec version 2 (wait data)
//	3  the branches index
//	4  mailboxes (the messages, mailbox and msgkeys buckets); workflow records of codec
//	   version 3 (tags). An older build refuses the file, as it would keep messages of
//	   deleted workflows.
//	5  flow control (the flows, flowlog, flowrunnable, flowdue, flowrunning and flowcount
//	   buckets); workflow records of codec version 4 (the flow key). An older build refuses
//	   the file, as it would leave governed rows out of its runnable index.
const schemaVersion = 5

var (
	bucketMeta      = []byte("meta")
	bucketWorkflows = []byte("workflows")
	bucketKeys      = []byte("keys")
	bucketRunnable  = []byte("runnable")
	bucketStates    = []byte("states")
	bucketFinished  = []byte("finished")
	bucketChildren  = []byte("children")
	bucketBranches  = []byte("branches")
	bucketSteps     = []byte("steps")
	bucketErrors    = []byte("errors")
	bucketMessages  = []byte("messages")
	bucketMailbox   = []byte("mailbox")
	bucketMsgKeys   = []byte("msgkeys")

	bucketFlows        = []byte("flows")
	bucketFlowLog      = []byte("flowlog")
	bucketFlowRunnable = []byte("flowrunnable")
	bucketFlowDue      = []byte("flowdue")
	bucketFlowRunning  = []byte("flowrunning")
	bucketFlowCount    = []byte("flowcount")

	metaVersion = []byte("version")
)

type options struct {
	timeout time.Duration
	noSync  bool
	mode    os.FileMode
}

// Option configures Open.
type Option func(*options)

// WithTimeout bounds how long Open waits for the file lock held by another process
// (default 1s). A non-positive d waits indefinitely.
func WithTimeout(d time.Duration) Option {
	return func(o *options) { o.timeout = d }
}

// WithNoSync skips fsync after each commit. A crash of the machine (not just the process)
// may then lose or corrupt recent commits; use it for tests and benchmarks only.
func WithNoSync() Option {
	return func(o *options) { o.noSync = true }
}

// WithFileMode sets the permissions of a newly created file (default 0600).
func WithFileMode(mode os.FileMode) Option {
	return func(o *options) { o.mode = mode }
}

// Open opens (creating if needed) the store at path and creates its buckets. It takes an
// exclusive lock on the file; if the lock stays held by another process (or another open
// Store in this one) for the timeout, it returns an error wrapping storage.ErrLocked.
// Workflows that a crashed process left running become runnable at once (see recoverLeases).
func Open(path string, opts ...Option) (*Store, error) {
	o := options{timeout: time.Second, mode: 0o600}
	for _, opt := range opts {
		opt(&o)
	}
	timeout := o.timeout
	if timeout < 0 {
		timeout = 0 // bbolt: zero waits indefinitely
	}
	db, err := bbolt.Open(path, o.mode, &bbolt.Options{Timeout: timeout, NoSync: o.noSync})
	if err != nil {
		if errors.Is(err, bberrors.ErrTimeout) {
			return nil, fmt.Errorf("bolt: open %s: another process holds the file lock (waited %v): %w", path, o.timeout, storage.ErrLocked)
		}
		return nil, fmt.Errorf("bolt: open %s: %w", path, err)
	}
	db.MaxBatchDelay = batchDelay
	if err := db.Update(initBuckets); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("bolt: open %s: %w", path, err)
	}
	s := &Store{db: db, path: path, clock: systemClock}
	if err := s.update(func(t *txn) error { return recoverLeases(t, s.clock()) }); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("bolt: open %s: recover leases: %w", path, err)
	}
	return s, nil
}

// recoverLeases makes every workflow left running by an earlier process runnable at once.
// The file lock proves that process is gone, so its leases can never be renewed; waiting for
// them to expire would only delay the restart. A lease's expiry is moved back to now, the
// store's clock, and RunAt to the moment of the run's last write (UpdatedAt, by its caller's
// clock), which every later claim's Now has passed; the token still fences.
func recoverLeases(t *txn, now time.Time) error {
	prefix := stateKey(storage.StateRunning, 0)[:len(storage.StateRunning)+1]
	for _, k := range prefixKeys(t.states, prefix) {
		old, err := t.get(int64(beUint(k[len(prefix):])))
		if err != nil {
			return err
		}
		w := *old
		w.LeaseUntil = storage.Earliest(now, old.LeaseUntil)
		w.RunAt = storage.Earliest(old.UpdatedAt, old.RunAt)
		if err := t.put(old, &w); err != nil {
			return err
		}
	}
	return nil
}

func initBuckets(tx *bbolt.Tx) error {
	// Check the version before creating anything, so a file of a later version is untouched.
	meta, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return fmt.Errorf("create bucket %s: %w", bucketMeta, err)
	}
	var version uint64 // 0: a new file
	if v := meta.Get(metaVersion); v != nil {
		if len(v) != 8 || beUint(v) < 1 || beUint(v) > schemaVersion {
			return fmt.Errorf("file has schema version %x, this build reads 1..%d", v, schemaVersion)
		}
		version = beUint(v)
	}
	for _, name := range [][]byte{bucketWorkflows, bucketKeys, bucketRunnable, bucketStates, bucketFinished, bucketChildren, bucketBranches, bucketSteps, bucketErrors, bucketMessages, bucketMailbox, bucketMsgKeys,
		bucketFlows, bucketFlowLog, bucketFlowRunnable, bucketFlowDue, bucketFlowRunning, bucketFlowCount} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	if version == schemaVersion {
		return nil
	}
	if version != 0 {
		if err := migrate(newTxn(tx), version); err != nil {
			return fmt.Errorf("upgrade from schema version %d: %w", version, err)
		}
	}
	return meta.Put(metaVersion, idKey(schemaVersion))
}

// migrate upgrades a file written at schema version from, in the transaction that opens it.
// Old records stay as they are: the codec reads every earlier version. Versions 4 and 5 only
// add buckets, which initBuckets creates: no record of an earlier version has a flow key.
func migrate(t *txn, from uint64) error {
	if from < 2 {
		// Version 1 did not store ParentStepID, so the children index starts empty; indexing
		// any row that has one anyway keeps the index exact whatever wrote the file.
		c := t.workflows.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			r, err := decodeWorkflow(v)
			if err != nil {
				return fmt.Errorf("workflow %d: %w", beUint(k), err)
			}
			if isChild(r) {
				if err := t.children.Put(parentKey(r.ParentStepID, r.State, r.ID), nil); err != nil {
					return err
				}
			}
		}
	}
	if from < 3 {
		if err := indexBranchesFrom(t); err != nil {
			return fmt.Errorf("branches index: %w", err)
		}
	}
	return nil
}

// Path returns the file the store was opened on.
func (s *Store) Path() string { return s.path }

// Close closes the file and releases its lock. Methods called after Close return an error.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("bolt: close %s: %w", s.path, err)
	}
	return nil
}

// batchDelay is how long a run's final write waits for others to share its transaction
// (bbolt's Batch). Short enough to add no noticeable latency to one run, long enough for the
// concurrent runs of a worker to share one fsync (BENCHMARKS.md).
const batchDelay = 200 * time.Microsecond
