package storagetest

import (
	"bytes"
	"errors"
	"maps"
	"testing"
	"time"

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
