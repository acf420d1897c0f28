package chaos

import (
	"strings"
	"testing"
	"time"

	bbolt "go.etcd.io/bbolt"

	"github.com/chronoforge/chronoforge/storage"
	"github.com/chronoforge/chronoforge/storage/bolt"
)

// The bbolt file after a fault: one process holds it at a time, so the parent looks at it
// only while no worker runs, after every kill of the kill scenarios (a process killed during
// a write) and after the disk-full scenario.

// checkBoltFile opens the file with bbolt itself, read only, and runs its consistency check,
// then opens it with storage/bolt; both must succeed. It returns the number of workflows the
// store holds completed.
func checkBoltFile(t *testing.T, path string) int {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("bbolt open %s: %v", path, err)
	}
	var problems []string
	err = db.View(func(tx *bbolt.Tx) error {
		for err := range tx.Check() {
			problems = append(problems, err.Error())
		}
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("bbolt check %s: %v", path, err)
	}
	if len(problems) > 0 {
		t.Fatalf("bbolt check %s: the file is corrupt: %s", path, strings.Join(problems, "; "))
	}
	s, err := bolt.Open(path, bolt.WithTimeout(30*time.Second))
	if err != nil {
		t.Fatalf("storage/bolt open %s: %v", path, err)
	}
	defer s.Close()
	done, err := listAll(t.Context(), s, storage.ListFilter{States: []storage.State{storage.StateCompleted}})
	if err != nil {
		t.Fatalf("storage/bolt %s: %v", path, err)
	}
	return len(done)
}

// checkFile checks the bbolt file of r between a kill of its worker and the restart: it must
// pass checkBoltFile and hold every workflow completed before the kill still completed.
func (r *run) checkFile() {
	r.t.Helper()
	n := checkBoltFile(r.t, r.path)
	if n < r.completed {
		r.t.Fatalf("kill %d: %d workflows completed, %d before it: a completed workflow was undone", r.fileChecks+1, n, r.completed)
	}
	r.completed = n
	r.fileChecks++
}
